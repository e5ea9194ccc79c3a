//! Deterministic cohorts: a device's rank in a rollout is a hash of (rollout id, device id), and
//! stage k takes every target whose rank is below the stage's threshold.
//!
//! When a stage opens, its threshold is set to take exactly the lowest-ranked targets it reaches
//! ([`stage_reach`]: ⌈share × targets⌉ for a percent stage, at least one device more than the
//! stage before), so a plan means the same device counts on a bench of 5 as a share of 100,000.
//! Because the rank depends on nothing else, re-evaluating never reshuffles (a device in the 1%
//! stays in every later stage), two replicas agree without talking, and a device provisioned
//! after the rollout started lands in a uniformly random place, so late joiners spread evenly
//! over the stages. A different rollout id gives an independent order, so the same devices are
//! not always the canaries.

use sha2::{Digest, Sha256};

/// Ranks are 32-bit; thresholds are one more (so "everyone" is representable).
pub const RANK_SPACE: u64 = 1 << 32;

/// A device's rank in a rollout, uniform over `0..2^32`.
pub fn rank(rollout_id: i64, device_id: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"fota-cohort-v1");
    h.update(rollout_id.to_le_bytes());
    h.update(device_id.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// How many targets a stage reaches, cumulatively: a percent stage ⌈share × targets⌉ (1% of 20
/// targets is 1 device, not 0.2), a count stage its count; always at least one more than the
/// stage before (`previous`) while any target is left, and never more than the targets. So every
/// stage of a plan takes at least one device until the targets run out, and a small fleet gets
/// whole devices, not empty canaries.
pub fn stage_reach(
    percent_bp: Option<i64>,
    device_count: Option<i64>,
    targets: u64,
    previous: u64,
) -> u64 {
    let asked = match (percent_bp, device_count) {
        (Some(bp), _) => {
            let bp = u128::from(u64::try_from(bp.clamp(0, 10_000)).unwrap_or(10_000));
            let share = (u128::from(targets) * bp).div_ceil(10_000);
            u64::try_from(share).unwrap_or(u64::MAX)
        }
        (None, Some(n)) => u64::try_from(n).unwrap_or(0),
        (None, None) => 0,
    };
    asked.max(previous.saturating_add(1)).min(targets)
}

/// The cumulative reach of every stage of a plan (each `(percent_bp, device_count)`) over
/// `targets`, by [`stage_reach`]. A stage whose reach equals the one before takes no device:
/// the targets ran out before it.
pub fn plan_reach(
    stages: impl IntoIterator<Item = (Option<i64>, Option<i64>)>,
    targets: u64,
) -> Vec<u64> {
    let mut previous = 0;
    stages
        .into_iter()
        .map(|(bp, count)| {
            previous = stage_reach(bp, count, targets, previous);
            previous
        })
        .collect()
}

/// The threshold that takes exactly the `count` lowest ranks of `ranks` (a stage reaching
/// `count` targets). `ranks` need not be sorted. Reaching every rank gives [`RANK_SPACE`], so
/// every device provisioned later joins too.
pub fn threshold_for_count(ranks: &mut [u32], count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    if count as usize >= ranks.len() {
        return RANK_SPACE;
    }
    ranks.sort_unstable();
    // Everything up to and including the count-th lowest rank.
    u64::from(ranks[count as usize - 1]) + 1
}

/// How many of `ranks` a threshold takes.
pub fn reached(ranks: &[u32], threshold: u64) -> u64 {
    ranks.iter().filter(|&&r| is_in(r, threshold)).count() as u64
}

/// `10 of 200 targets (5%)`: how far a stage reaches, in words (the audit log's).
pub fn reach_text(reach: u64, targets: u64, percent_bp: Option<i64>) -> String {
    match percent_bp {
        // `{}` of an f64 writes 1 for 1.0 and 0.5 for 0.5.
        Some(bp) => format!("{reach} of {targets} targets ({}%)", bp as f64 / 100.0),
        None => format!("{reach} of {targets} targets"),
    }
}

/// Whether a rank is inside a threshold.
pub fn is_in(rank: u32, threshold: u64) -> bool {
    u64::from(rank) < threshold
}

/// The threshold a stage reaches (as stored: a signed 64-bit integer), given its cumulative
/// size in basis points or in devices, the ranks of every target that may be offered, and the
/// threshold of the stage before (0 for the first stage); with the number of targets it
/// reaches. A threshold never shrinks.
pub fn stage_threshold(
    percent_bp: Option<i64>,
    device_count: Option<i64>,
    ranks: &mut [u32],
    previous_threshold: i64,
) -> (i64, u64) {
    let previous_threshold = u64::try_from(previous_threshold).unwrap_or(0);
    let previous = reached(ranks, previous_threshold);
    let reach = stage_reach(percent_bp, device_count, ranks.len() as u64, previous);
    let t = threshold_for_count(ranks, reach).max(previous_threshold);
    (i64::try_from(t).unwrap_or(i64::MAX), reach.max(previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("SL-{i:06}")).collect()
    }

    #[test]
    fn every_stage_of_a_plan_takes_a_device_until_the_targets_run_out() {
        let default = [100, 1000, 5000, 10_000].map(|bp| (Some(bp), None));
        // The default plan on the fleets a first rollout meets, and on a large one.
        assert_eq!(plan_reach(default, 1), [1, 1, 1, 1]);
        assert_eq!(plan_reach(default, 5), [1, 2, 3, 5]);
        assert_eq!(plan_reach(default, 20), [1, 2, 10, 20]);
        assert_eq!(plan_reach(default, 200), [2, 20, 100, 200]);
        assert_eq!(plan_reach(default, 10_000), [100, 1000, 5000, 10_000]);
        // Count stages are capped at the targets; mixed plans still grow.
        let counts = [(None, Some(10)), (None, Some(100)), (Some(10_000), None)];
        assert_eq!(plan_reach(counts, 50), [10, 50, 50]);
        assert_eq!(
            plan_reach([(None, Some(30)), (Some(1000), None)], 100),
            [30, 31]
        );
        assert_eq!(stage_reach(Some(1), None, 1, 0), 1, "0.01% of one device");
        assert_eq!(stage_reach(Some(10_000), None, 0, 0), 0, "no targets");
    }

    #[test]
    fn a_stage_takes_exactly_its_reach_and_never_reshuffles() {
        let devices = ids(20_000);
        let ranks: Vec<u32> = devices.iter().map(|d| rank(7, d)).collect();
        let mut previous = 0;
        for (bp, expected) in [(100, 200), (1000, 2000), (5000, 10_000), (10_000, 20_000)] {
            let (t, reach) = stage_threshold(Some(bp), None, &mut ranks.clone(), previous);
            assert_eq!(reach, expected);
            assert_eq!(reached(&ranks, u64::try_from(t).unwrap()), expected);
            assert!(t >= previous, "a threshold never shrinks");
            previous = t;
        }
        assert_eq!(
            u64::try_from(previous).unwrap(),
            RANK_SPACE,
            "100% is everyone"
        );
        // Devices provisioned later: about the same share of them falls inside the 10% stage.
        let (t10, _) = stage_threshold(Some(1000), None, &mut ranks.clone(), 0);
        let late: Vec<String> = (0..20_000).map(|i| format!("LATE-{i}")).collect();
        let inside = late
            .iter()
            .filter(|d| is_in(rank(7, d), u64::try_from(t10).unwrap()))
            .count();
        assert!(inside.abs_diff(2_000) <= 200, "{inside}");
    }

    #[test]
    fn different_rollouts_pick_different_canaries() {
        let devices = ids(10_000);
        let canaries = |rollout: i64| {
            let mut ranks: Vec<u32> = devices.iter().map(|d| rank(rollout, d)).collect();
            let t = threshold_for_count(&mut ranks, 100);
            devices
                .iter()
                .filter(|d| is_in(rank(rollout, d), t))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (a, b) = (canaries(1), canaries(2));
        assert_eq!(a.len(), 100);
        let common = a.iter().filter(|d| b.contains(d)).count();
        assert!(common < a.len() / 4, "{common} of {} shared", a.len());
    }

    #[test]
    fn absolute_counts_take_exactly_that_many() {
        let devices = ids(5_000);
        let mut ranks: Vec<u32> = devices.iter().map(|d| rank(3, d)).collect();
        for count in [1u64, 10, 123, 4_999, 5_000, 9_000] {
            let t = threshold_for_count(&mut ranks.clone(), count);
            assert_eq!(reached(&ranks, t), count.min(5_000), "count {count}");
        }
        assert_eq!(threshold_for_count(&mut ranks, 0), 0);
    }

    #[test]
    fn stage_thresholds_follow_the_stage_size() {
        let mut ranks = vec![5, 1, 9];
        assert_eq!(
            stage_threshold(Some(10_000), None, &mut ranks, 0),
            (1 << 32, 3)
        );
        assert_eq!(stage_threshold(None, Some(2), &mut ranks, 0), (6, 2));
        // 1% of 3 devices is one device; the next 1% stage still takes one more.
        assert_eq!(stage_threshold(Some(100), None, &mut ranks, 0), (2, 1));
        assert_eq!(stage_threshold(Some(100), None, &mut ranks, 2), (6, 2));
        // Nothing left: the threshold stays.
        assert_eq!(
            stage_threshold(Some(100), None, &mut ranks, 1 << 32),
            (1 << 32, 3)
        );
    }
}
