//! Deterministic cohorts: a device's rank in a rollout is a hash of (rollout id, device id), and
//! stage k takes every target whose rank is below the stage's threshold.
//!
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

/// The rank threshold for a cumulative share in basis points (10000 = 100%): ranks below it are
/// in. 100% is `RANK_SPACE`, so every rank is below it.
pub fn threshold_for_basis_points(bp: u32) -> u64 {
    let bp = u64::from(bp.min(10_000));
    bp * RANK_SPACE / 10_000
}

/// The threshold that takes exactly the `count` lowest ranks of `ranks` (a cumulative absolute
/// stage). `ranks` need not be sorted.
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

/// Whether a rank is inside a threshold.
pub fn is_in(rank: u32, threshold: u64) -> bool {
    u64::from(rank) < threshold
}

/// The threshold a stage reaches (as stored: a signed 64-bit integer), given its cumulative
/// size in basis points or in devices and the ranks of every target that may be offered (only
/// a count stage needs them).
pub fn stage_threshold(
    percent_bp: Option<i64>,
    device_count: Option<i64>,
    ranks: &mut [u32],
) -> i64 {
    let t = match (percent_bp, device_count) {
        (Some(bp), _) => threshold_for_basis_points(u32::try_from(bp).unwrap_or(10_000)),
        (None, Some(n)) => threshold_for_count(ranks, u64::try_from(n).unwrap_or(0)),
        (None, None) => 0,
    };
    i64::try_from(t).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("SL-{i:06}")).collect()
    }

    #[test]
    fn every_stage_is_within_one_percent_of_what_was_asked() {
        let devices = ids(100_000);
        let ranks: Vec<u32> = devices.iter().map(|d| rank(42, d)).collect();
        for bp in [100, 500, 1000, 2500, 5000, 10_000] {
            let t = threshold_for_basis_points(bp);
            let inside = ranks.iter().filter(|&&r| is_in(r, t)).count();
            let asked = 100_000 * bp as usize / 10_000;
            let tolerance = 1_000; // 1% of the fleet
            assert!(
                inside.abs_diff(asked) <= tolerance,
                "{bp} bp: {inside} devices, asked {asked}"
            );
        }
        assert_eq!(
            ranks
                .iter()
                .filter(|&&r| is_in(r, threshold_for_basis_points(10_000)))
                .count(),
            100_000,
            "100% is everyone"
        );
        assert_eq!(ranks.iter().filter(|&&r| is_in(r, 0)).count(), 0);
    }

    #[test]
    fn stages_never_reshuffle_and_late_joiners_spread_evenly() {
        let devices = ids(20_000);
        let t1 = threshold_for_basis_points(100);
        let t10 = threshold_for_basis_points(1000);
        for d in &devices {
            let r = rank(7, d);
            assert_eq!(r, rank(7, d), "stable");
            if is_in(r, t1) {
                assert!(is_in(r, t10), "{d} left the cohort when the rollout grew");
            }
        }
        // Devices provisioned later: the same share of them falls in the 10% stage.
        let late: Vec<String> = (0..20_000).map(|i| format!("LATE-{i}")).collect();
        let inside = late.iter().filter(|d| is_in(rank(7, d), t10)).count();
        assert!(inside.abs_diff(2_000) <= 200, "{inside}");
    }

    #[test]
    fn different_rollouts_pick_different_canaries() {
        let devices = ids(10_000);
        let t = threshold_for_basis_points(100);
        let a: Vec<_> = devices.iter().filter(|d| is_in(rank(1, d), t)).collect();
        let b: Vec<_> = devices.iter().filter(|d| is_in(rank(2, d), t)).collect();
        let common = a.iter().filter(|d| b.contains(d)).count();
        assert!(common < a.len() / 4, "{common} of {} shared", a.len());
    }

    #[test]
    fn absolute_counts_take_exactly_that_many() {
        let devices = ids(5_000);
        let mut ranks: Vec<u32> = devices.iter().map(|d| rank(3, d)).collect();
        for count in [1u64, 10, 123, 4_999, 5_000, 9_000] {
            let t = threshold_for_count(&mut ranks.clone(), count);
            let inside = ranks.iter().filter(|&&r| is_in(r, t)).count() as u64;
            assert_eq!(inside, count.min(5_000), "count {count}");
        }
        assert_eq!(threshold_for_count(&mut ranks, 0), 0);
    }

    #[test]
    fn stage_thresholds_follow_the_stage_size() {
        let mut ranks = vec![5, 1, 9];
        assert_eq!(stage_threshold(Some(10_000), None, &mut ranks), 1 << 32);
        assert_eq!(stage_threshold(None, Some(2), &mut ranks), 6);
        assert_eq!(stage_threshold(None, None, &mut ranks), 0);
    }
}
