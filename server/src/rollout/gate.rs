//! Health gates: the pure decision of whether a rollout halts, advances, completes or waits,
//! from counts of device states. No I/O, so every rule is tested directly.
//!
//! - A **failure** is a failure report (download or verification failed), a bootloader rollback,
//!   or a device that took the offer and then went silent past its confirmation deadline.
//! - The **minimum sample** never exceeds the devices there are to decide: for advancing, the
//!   stage's own cohort (devices offered in it, plus those inside it not offered yet); for
//!   halting, the cohorts so far. A plan asking 20 on a bench of 5 devices applies 5 (and says
//!   so), so it neither waits forever nor shrugs off its only canary failing.
//! - **Halt** when failures exceed the stage's maximum rate of `max(decided, minimum sample)`
//!   devices, counted over the whole rollout (a late crash in an earlier cohort still counts).
//!   Using at least the minimum sample as the denominator keeps one unlucky device in a canary
//!   of 100 from halting a good release, while a canary where everything fails halts after a
//!   handful of reports.
//! - **Advance** when the current stage's own cohort has at least the minimum sample decided,
//!   its failure rate is within the limit, the bake time has passed, and the stage advances
//!   automatically or an operator approved it. Never before the minimum sample.
//! - **Halt on resets** when the new release resets unexpectedly (watchdogs, faults, brown-out)
//!   more often per device-hour than the stage's limit allows: `max_reset_ratio` times the
//!   baseline (the same rate among the rollout's targets still on the old release over the same
//!   window), once the new release has run at least the stage's minimum device-hours, on at
//!   least two devices, and only when the count is beyond what the limit explains by chance
//!   (a Poisson tail below [`RESET_CONFIDENCE`]). A device contributes at most
//!   [`MAX_RESETS_PER_DEVICE_HOUR`](crate::domain::resets::MAX_RESETS_PER_DEVICE_HOUR) resets an
//!   hour. This is the release that boots, confirms, and then crashes
//!   every few minutes: without it, it would walk every stage.
//! - **Complete** at the last stage when no target is left undecided.

use crate::domain::{ResetFigures, StateCounts};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The health gate of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthGate {
    /// Decided devices the stage's cohort needs before it may advance.
    pub min_sample: u64,
    /// Largest tolerated failure rate, in parts per million (50_000 = 5%).
    pub max_failure_ppm: u32,
    /// Seconds a device has from the offer to confirming before it counts as failed.
    pub confirm_deadline_s: i64,
    /// Largest tolerated ratio of the new release's unexpected-reset rate to the baseline's, in
    /// percent (200 = 2 x); 0 turns the check off.
    #[serde(default)]
    pub max_reset_ratio_pct: u32,
    /// Device-seconds the new release must have run before its resets may halt it.
    #[serde(default)]
    pub min_device_s: u64,
}

/// How unlikely the new release's reset count must be under its limit before the gate halts:
/// a chance below 1 in 1,000 that a release resetting exactly at the limit would show as many.
pub const RESET_CONFIDENCE: f64 = 0.001;

/// The numbers behind a halt on resets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResetCrossing {
    /// The counts and exposures.
    pub figures: ResetFigures,
    /// Unexpected resets per device-hour on the new release.
    pub new_rate: f64,
    /// The baseline's rate per device-hour.
    pub base_rate: f64,
    /// The limit, a ratio to the baseline (2.0 = twice).
    pub max_ratio: f64,
    /// Resets the limit would explain over the new release's device-hours.
    pub expected_at_limit: f64,
    /// The chance of seeing at least this many at the limit.
    pub chance: f64,
}

impl fmt::Display for ResetCrossing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = &self.figures;
        write!(
            f,
            "{} on {} in {:.1} device-hours on the new release = {:.3}/device-hour, {:.1} x the baseline's {:.4}/device-hour ({} in {:.1} device-hours on the old release), above the {:.1} x limit (chance at the limit {:.1e})",
            Count(x.new_resets, "unexpected reset", "unexpected resets"),
            Count(x.new_devices, "device", "devices"),
            x.new_hours(),
            self.new_rate,
            self.new_rate / self.base_rate,
            self.base_rate,
            x.base_resets,
            x.base_hours(),
            self.max_ratio,
            self.chance,
        )
    }
}

/// P(N >= n) for N Poisson with mean `mu`.
pub fn poisson_tail(n: u64, mu: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    if mu <= 0.0 {
        return 0.0;
    }
    let nf = n as f64;
    // ln n! (exact below 30, Stirling's series above: error < 1e-10).
    let ln_fact = if n < 30 {
        (2..=n).map(|k| (k as f64).ln()).sum::<f64>()
    } else {
        nf * nf.ln() - nf + 0.5 * (2.0 * std::f64::consts::PI * nf).ln() + 1.0 / (12.0 * nf)
            - 1.0 / (360.0 * nf * nf * nf)
    };
    if nf <= mu {
        // The bulk: 1 - P(N < n), summed directly.
        let mut term = (-mu).exp();
        let mut below = 0.0;
        for k in 0..n {
            below += term;
            term *= mu / (k + 1) as f64;
        }
        return (1.0 - below).clamp(0.0, 1.0);
    }
    let mut term = (-mu + nf * mu.ln() - ln_fact).exp();
    let mut sum = 0.0;
    let mut k = nf;
    for _ in 0..100_000 {
        sum += term;
        k += 1.0;
        term *= mu / k;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum.clamp(0.0, 1.0)
}

/// Whether `figures` cross `gate`'s reset limit, and by how much.
pub fn resets_cross(gate: &HealthGate, figures: &ResetFigures) -> Option<ResetCrossing> {
    if gate.max_reset_ratio_pct == 0
        || figures.new_device_s == 0
        || figures.new_device_s < gate.min_device_s
        || figures.new_devices < 2
    {
        return None;
    }
    let max_ratio = f64::from(gate.max_reset_ratio_pct) / 100.0;
    let base_rate = figures.base_rate();
    let expected_at_limit = max_ratio * base_rate * figures.new_hours();
    if (figures.new_resets as f64) <= expected_at_limit {
        return None;
    }
    let chance = poisson_tail(figures.new_resets, expected_at_limit);
    (chance < RESET_CONFIDENCE).then(|| ResetCrossing {
        figures: *figures,
        new_rate: figures.new_rate(),
        base_rate,
        max_ratio,
        expected_at_limit,
        chance,
    })
}

/// Why a rollout halted: the numbers that crossed the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HaltReason {
    /// Stage number (1-based, as everywhere in the API) when it halted.
    pub stage: u32,
    /// Failures over the whole rollout.
    pub failures: u64,
    /// Of which: failure reports.
    pub failed: u64,
    /// Of which: bootloader rollbacks.
    pub rolled_back: u64,
    /// Of which: silent past the deadline.
    pub timed_out: u64,
    /// Decided devices over the whole rollout.
    pub decided: u64,
    /// Observed failure rate, ppm of `max(decided, min_sample)`.
    pub rate_ppm: u64,
    /// The gate's limit, ppm.
    pub max_failure_ppm: u32,
    /// The minimum sample the gate applied (the plan's, capped at the devices in the cohorts so
    /// far).
    pub min_sample: u64,
    /// Set when unexpected resets on the new release crossed the stage's reset limit (then the
    /// failure figures above are within their limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets: Option<ResetCrossing>,
}

/// A count with its noun: "1 failure", "3 failures".
struct Count<N>(N, &'static str, &'static str);

impl<N: fmt::Display + PartialEq + From<u8>> fmt::Display for Count<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.0 == N::from(1) { self.1 } else { self.2 };
        write!(f, "{} {noun}", self.0)
    }
}

fn percent(ppm: u64) -> f64 {
    ppm as f64 / 10_000.0
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(resets) = &self.resets {
            return write!(f, "stage {}: {resets}", self.stage);
        }
        write!(
            f,
            "stage {}: {} ({} failed, {} rolled back, {} silent) among {} = {:.1}% (of at least the minimum sample {}), above the {:.1}% limit",
            self.stage,
            Count(self.failures, "failure", "failures"),
            self.failed,
            self.rolled_back,
            self.timed_out,
            Count(self.decided, "decided device", "decided devices"),
            percent(self.rate_ppm),
            self.min_sample,
            percent(u64::from(self.max_failure_ppm)),
        )
    }
}

/// What to do with a rollout now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Stop offering, at once.
    Halt(HaltReason),
    /// Move to the next stage.
    Advance,
    /// The last stage is done: every target has an outcome.
    Complete,
    /// Nothing to do yet; what the gate waits for.
    Wait(Wait),
}

/// What a gate waits for before it advances or completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The stage's cohort has fewer decided devices than the minimum sample.
    Sample {
        /// Decided devices of the stage.
        decided: u64,
        /// The minimum sample applied: the plan's, capped at the stage's cohort.
        needed: u64,
        /// The plan's minimum sample.
        asked: u64,
        /// Offered in this stage and not decided yet.
        in_flight: u64,
        /// Inside the cohorts and not offered yet (they have not checked in since).
        not_offered: u64,
    },
    /// The stage has not run for its bake time yet.
    Bake {
        /// Seconds left.
        left_s: i64,
        /// The stage's bake time.
        bake_s: i64,
    },
    /// A manual stage, healthy and baked, waits for an operator.
    Approval,
    /// The last stage waits for every target to have an outcome (and for its bake time).
    LastStage {
        /// Offered and not decided.
        in_flight: u64,
        /// Not offered yet.
        not_offered: u64,
        /// Seconds of bake time left.
        bake_left_s: i64,
    },
}

/// `90s`, `12m 30s`, `2h 5m`.
pub fn duration_text(s: i64) -> String {
    let s = s.max(0);
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

impl Wait {
    /// What the gate of rollout `id` waits for, in words an operator can act on.
    pub fn describe(&self, id: i64) -> String {
        match self {
            Wait::Approval => format!(
                "waiting for approval: the stage is healthy and baked; fota rollout approve {id}"
            ),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Sample {
                decided,
                needed,
                asked,
                in_flight,
                not_offered,
            } => {
                write!(
                    f,
                    "minimum sample: {decided} of {} decided in this stage",
                    Count(*needed, "device", "devices")
                )?;
                if needed < asked {
                    write!(
                        f,
                        " (the plan asks {asked}; capped at the {needed} devices of the stage)"
                    )?;
                }
                write!(
                    f,
                    "; {in_flight} updating, {not_offered} not offered yet (they have not checked in)"
                )
            }
            Wait::Bake { left_s, bake_s } => write!(
                f,
                "baking: {} left of {}",
                duration_text(*left_s),
                duration_text(*bake_s)
            ),
            Wait::Approval => f.write_str(
                "waiting for approval: the stage is healthy and baked; fota rollout approve",
            ),
            Wait::LastStage {
                in_flight,
                not_offered,
                bake_left_s,
            } => {
                write!(
                    f,
                    "last stage: {in_flight} devices updating, {not_offered} not offered yet"
                )?;
                if *bake_left_s > 0 {
                    write!(f, "; baking {} more", duration_text(*bake_left_s))?;
                }
                Ok(())
            }
        }
    }
}

/// Everything the gate looks at.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// Current stage index (0-based).
    pub stage: u32,
    /// Whether it is the last stage.
    pub is_last: bool,
    /// The current stage's gate.
    pub gate: &'a HealthGate,
    /// Bake time of the current stage.
    pub bake_s: i64,
    /// Whether the stage advances without approval.
    pub auto_advance: bool,
    /// Whether an operator approved advancing past this stage.
    pub approved: bool,
    /// Counts over the whole rollout.
    pub whole: &'a StateCounts,
    /// Counts over the devices offered during this stage.
    pub stage_counts: &'a StateCounts,
    /// Eligible devices inside the cohorts so far (not offered yet).
    pub eligible_in_cohort: u64,
    /// Seconds since the stage started.
    pub stage_age_s: i64,
    /// Unexpected resets on both sides of the rollout, when counted.
    pub resets: Option<&'a ResetFigures>,
}

/// Devices that took an offer (in flight or decided): skipped devices never decide.
fn offered(c: &StateCounts) -> u64 {
    c.in_flight() + c.decided()
}

impl GateInput<'_> {
    /// The minimum sample for advancing: the plan's, capped at the stage's cohort (devices
    /// offered in this stage, plus those inside the cohorts not offered yet).
    pub fn stage_min_sample(&self) -> u64 {
        let cohort = offered(self.stage_counts) + self.eligible_in_cohort;
        self.gate.min_sample.min(cohort)
    }

    /// The least denominator of the halting rate: the plan's minimum sample, capped at the
    /// devices of the cohorts so far.
    pub fn halt_min_sample(&self) -> u64 {
        let cohorts = offered(self.whole) + self.eligible_in_cohort;
        self.gate.min_sample.min(cohorts)
    }
}

/// Whether the gate needs [`GateInput::eligible_in_cohort`] counted (a query over the cohort):
/// at the last stage, and while fewer devices took an offer in the stage than the plan's
/// minimum sample (only then can the cap bind). Otherwise 0 decides the same.
pub fn needs_eligible_count(gate: &HealthGate, stage_counts: &StateCounts, is_last: bool) -> bool {
    is_last || offered(stage_counts) < gate.min_sample
}

/// How far the gate needs [`GateInput::eligible_in_cohort`] counted: the devices the stage's
/// minimum sample still lacks in offers, at least 1. Every verdict is the same with the count
/// stopped there. The minimum samples are `min(min_sample, offered + eligible)` over the stage
/// and over the whole rollout, which offered at least as many; once `eligible` reaches
/// `min_sample - offered(stage)` both are `min_sample` either way. The last stage asks only
/// whether any is left (`0` stays `0`). What stops short is the `not_offered` figure of a
/// [`Wait`], which the status counts in full.
pub fn eligible_count_limit(gate: &HealthGate, stage_counts: &StateCounts) -> u64 {
    gate.min_sample.saturating_sub(offered(stage_counts)).max(1)
}

/// Decide.
pub fn evaluate(input: &GateInput<'_>) -> Verdict {
    let g = input.gate;
    let w = input.whole;
    let min_sample = input.halt_min_sample();
    let denominator = w.decided().max(min_sample).max(1);
    let rate_ppm = w.failures() * 1_000_000 / denominator;
    // failures / denominator > max  <=>  failures * 1e6 > max * denominator (exact, no rounding).
    if w.failures() > 0
        && u128::from(w.failures()) * 1_000_000
            > u128::from(g.max_failure_ppm) * u128::from(denominator)
    {
        return Verdict::Halt(HaltReason {
            stage: input.stage + 1,
            failures: w.failures(),
            failed: w.failed,
            rolled_back: w.rolled_back,
            timed_out: w.timed_out,
            decided: w.decided(),
            rate_ppm,
            max_failure_ppm: g.max_failure_ppm,
            min_sample,
            resets: None,
        });
    }
    if let Some(crossing) = input.resets.and_then(|f| resets_cross(g, f)) {
        return Verdict::Halt(HaltReason {
            stage: input.stage + 1,
            failures: w.failures(),
            failed: w.failed,
            rolled_back: w.rolled_back,
            timed_out: w.timed_out,
            decided: w.decided(),
            rate_ppm,
            max_failure_ppm: g.max_failure_ppm,
            min_sample,
            resets: Some(crossing),
        });
    }
    let s = input.stage_counts;
    let bake_left_s = (input.bake_s - input.stage_age_s).max(0);
    if input.is_last {
        if input.eligible_in_cohort == 0 && w.in_flight() == 0 && bake_left_s == 0 {
            return Verdict::Complete;
        }
        return Verdict::Wait(Wait::LastStage {
            in_flight: w.in_flight(),
            not_offered: input.eligible_in_cohort,
            bake_left_s,
        });
    }
    let needed = input.stage_min_sample();
    if s.decided() < needed {
        return Verdict::Wait(Wait::Sample {
            decided: s.decided(),
            needed,
            asked: g.min_sample,
            in_flight: s.in_flight(),
            not_offered: input.eligible_in_cohort,
        });
    }
    if bake_left_s > 0 {
        return Verdict::Wait(Wait::Bake {
            left_s: bake_left_s,
            bake_s: input.bake_s,
        });
    }
    if !input.auto_advance && !input.approved {
        return Verdict::Wait(Wait::Approval);
    }
    Verdict::Advance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_the_reasons_agree_with_their_nouns() {
        assert_eq!(Count(1u64, "failure", "failures").to_string(), "1 failure");
        assert_eq!(Count(0u64, "failure", "failures").to_string(), "0 failures");
        assert_eq!(Count(2u32, "device", "devices").to_string(), "2 devices");
    }

    const GATE: HealthGate = HealthGate {
        min_sample: 10,
        max_failure_ppm: 100_000, // 10%
        confirm_deadline_s: 600,
        max_reset_ratio_pct: 200,
        min_device_s: 3600,
    };

    fn v_text(v: &Verdict) -> String {
        match v {
            Verdict::Wait(w) => w.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn input<'a>(whole: &'a StateCounts, stage: &'a StateCounts) -> GateInput<'a> {
        GateInput {
            stage: 0,
            is_last: false,
            gate: &GATE,
            bake_s: 60,
            auto_advance: true,
            approved: false,
            whole,
            stage_counts: stage,
            eligible_in_cohort: 0,
            stage_age_s: 3600,
            resets: None,
        }
    }

    #[test]
    fn the_field_incident_halts_on_silence_alone() {
        // Every canary took the update and went silent: two deadlines pass.
        let c = StateCounts {
            timed_out: 2,
            offered: 8,
            ..Default::default()
        };
        match evaluate(&input(&c, &c)) {
            Verdict::Halt(r) => {
                assert_eq!(r.timed_out, 2);
                assert_eq!(r.rate_ppm, 200_000);
                assert!(r.to_string().contains("2 silent"), "{r}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn one_failure_in_a_small_canary_does_not_halt() {
        let c = StateCounts {
            rolled_back: 1,
            confirmed: 2,
            ..Default::default()
        };
        // A canary of 23 devices, 3 decided so far.
        let mut i = input(&c, &c);
        i.eligible_in_cohort = 20;
        assert!(matches!(evaluate(&i), Verdict::Wait(_)));
    }

    #[test]
    fn below_the_minimum_sample_a_stage_never_advances() {
        let c = StateCounts {
            confirmed: 9,
            ..Default::default()
        };
        let mut i = input(&c, &c);
        i.eligible_in_cohort = 1;
        let v = evaluate(&i);
        assert_eq!(
            v,
            Verdict::Wait(Wait::Sample {
                decided: 9,
                needed: 10,
                asked: 10,
                in_flight: 0,
                not_offered: 1
            })
        );
        assert_eq!(
            v_text(&v),
            "minimum sample: 9 of 10 devices decided in this stage; 0 updating, 1 not offered yet (they have not checked in)"
        );
        let c = StateCounts {
            confirmed: 10,
            ..Default::default()
        };
        assert_eq!(evaluate(&input(&c, &c)), Verdict::Advance);
    }

    #[test]
    fn failing_release_with_fewer_reports_than_the_sample_does_not_advance() {
        // One failure, 5 confirmed: not enough to halt (1 <= 10% of 10), not enough to advance.
        let c = StateCounts {
            failed: 1,
            confirmed: 5,
            ..Default::default()
        };
        let mut i = input(&c, &c);
        i.eligible_in_cohort = 10;
        assert!(matches!(evaluate(&i), Verdict::Wait(_)));
    }

    #[test]
    fn bake_time_and_approval_hold_a_stage() {
        let c = StateCounts {
            confirmed: 50,
            ..Default::default()
        };
        let mut i = input(&c, &c);
        i.stage_age_s = 10;
        let v = evaluate(&i);
        assert_eq!(
            v,
            Verdict::Wait(Wait::Bake {
                left_s: 50,
                bake_s: 60
            })
        );
        assert_eq!(v_text(&v), "baking: 50s left of 1m");
        i.stage_age_s = 60;
        i.auto_advance = false;
        let v = evaluate(&i);
        assert_eq!(v, Verdict::Wait(Wait::Approval));
        match v {
            Verdict::Wait(w) => assert!(
                w.describe(7).ends_with("fota rollout approve 7"),
                "{}",
                w.describe(7)
            ),
            _ => unreachable!(),
        }
        i.approved = true;
        assert_eq!(evaluate(&i), Verdict::Advance);
    }

    #[test]
    fn the_rate_is_exact_at_the_threshold() {
        // 10 of 100 = exactly 10%: allowed; 11 of 100: halts.
        let ok = StateCounts {
            failed: 10,
            confirmed: 90,
            ..Default::default()
        };
        assert!(!matches!(evaluate(&input(&ok, &ok)), Verdict::Halt(_)));
        let bad = StateCounts {
            failed: 11,
            confirmed: 89,
            ..Default::default()
        };
        assert!(matches!(evaluate(&input(&bad, &bad)), Verdict::Halt(_)));
    }

    #[test]
    fn earlier_cohorts_failing_late_still_halt() {
        let whole = StateCounts {
            confirmed: 40,
            rolled_back: 6,
            ..Default::default()
        };
        let stage = StateCounts {
            confirmed: 20,
            ..Default::default()
        };
        assert!(matches!(evaluate(&input(&whole, &stage)), Verdict::Halt(_)));
    }

    #[test]
    fn the_last_stage_completes_when_nothing_is_left() {
        let c = StateCounts {
            confirmed: 100,
            ..Default::default()
        };
        let mut i = input(&c, &c);
        i.is_last = true;
        i.eligible_in_cohort = 3;
        assert!(matches!(evaluate(&i), Verdict::Wait(_)));
        i.eligible_in_cohort = 0;
        assert_eq!(evaluate(&i), Verdict::Complete);
        let busy = StateCounts {
            confirmed: 99,
            installed: 1,
            ..Default::default()
        };
        let mut i = input(&busy, &busy);
        i.is_last = true;
        assert!(matches!(evaluate(&i), Verdict::Wait(_)));
    }

    #[test]
    fn the_minimum_sample_is_capped_at_the_stage_cohort() {
        // A bench of 3 devices: the plan asks 10 decided, the stage has 3.
        let c = StateCounts {
            confirmed: 2,
            installed: 1,
            ..Default::default()
        };
        let v = evaluate(&input(&c, &c));
        assert_eq!(
            v_text(&v),
            "minimum sample: 2 of 3 devices decided in this stage (the plan asks 10; capped at the 3 devices of the stage); 1 updating, 0 not offered yet (they have not checked in)"
        );
        let c = StateCounts {
            confirmed: 3,
            ..Default::default()
        };
        assert_eq!(evaluate(&input(&c, &c)), Verdict::Advance);
        // Devices of the cohort that have not checked in yet still count: 3 decided of 5.
        let mut i = input(&c, &c);
        i.eligible_in_cohort = 2;
        assert!(matches!(
            evaluate(&i),
            Verdict::Wait(Wait::Sample { needed: 5, .. })
        ));
        // Skipped devices never decide and are no part of the sample.
        let c = StateCounts {
            confirmed: 3,
            protection_blocked: 4,
            ..Default::default()
        };
        assert_eq!(evaluate(&input(&c, &c)), Verdict::Advance);
    }

    #[test]
    fn the_only_canary_failing_halts_a_tiny_rollout() {
        // One device in the cohorts so far, and it rolled back: 1 of 1, not 1 of 10.
        let c = StateCounts {
            rolled_back: 1,
            ..Default::default()
        };
        match evaluate(&input(&c, &c)) {
            Verdict::Halt(r) => {
                assert_eq!(r.min_sample, 1);
                assert_eq!(r.rate_ppm, 1_000_000);
            }
            v => panic!("{v:?}"),
        }
        // The same failure among 10 devices in the cohorts (9 not offered yet) waits.
        let mut i = input(&c, &c);
        i.eligible_in_cohort = 9;
        assert!(matches!(evaluate(&i), Verdict::Wait(_)));
    }

    #[test]
    fn the_eligible_count_is_needed_only_while_the_cap_can_bind() {
        let few = StateCounts {
            confirmed: 9,
            ..Default::default()
        };
        let enough = StateCounts {
            confirmed: 4,
            offered: 6,
            ..Default::default()
        };
        assert!(needs_eligible_count(&GATE, &few, false));
        assert!(!needs_eligible_count(&GATE, &enough, false));
        assert!(needs_eligible_count(&GATE, &enough, true));
        // And where it is not needed, leaving it 0 decides the same as counting it.
        let mut i = input(&enough, &enough);
        let without = evaluate(&i);
        i.eligible_in_cohort = 500;
        let with = evaluate(&i);
        assert_eq!(
            std::mem::discriminant(&without),
            std::mem::discriminant(&with)
        );
    }

    fn figures(
        new_resets: u64,
        new_devices: u64,
        new_h: f64,
        base_resets: u64,
        base_h: f64,
    ) -> ResetFigures {
        ResetFigures {
            new_resets,
            new_devices,
            new_device_s: (new_h * 3600.0) as u64,
            base_resets,
            base_device_s: (base_h * 3600.0) as u64,
        }
    }

    #[test]
    fn poisson_tails_match_their_closed_forms() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.max(1e-300);
        assert!(close(poisson_tail(1, 1.0), 1.0 - (-1.0f64).exp()));
        // P(N >= 3 | 0.2) = 1 - e^-0.2 (1 + 0.2 + 0.02)
        assert!(close(poisson_tail(3, 0.2), 1.0 - (-0.2f64).exp() * 1.22));
        assert_eq!(poisson_tail(0, 5.0), 1.0);
        assert_eq!(poisson_tail(4, 0.0), 0.0);
        // Large counts (Stirling's branch) agree with the direct sum.
        let direct = 1.0
            - (0..40)
                .map(|k| (-20.0f64).exp() * 20f64.powi(k) / (1..=k).map(f64::from).product::<f64>())
                .sum::<f64>();
        assert!(
            (poisson_tail(40, 20.0) - direct).abs() < 1e-12,
            "{}",
            poisson_tail(40, 20.0)
        );
        // The bulk branch: at or below the mean the tail is large.
        assert!(poisson_tail(5, 10.0) > 0.97);
    }

    #[test]
    fn a_release_that_confirms_and_then_crashes_halts_on_its_resets() {
        let ok = StateCounts {
            confirmed: 10,
            ..Default::default()
        };
        // 10 canaries, each resetting every few minutes (capped at 3 each), 2 device-hours;
        // the old release reset twice in 200 device-hours.
        let f = figures(30, 10, 2.0, 2, 200.0);
        let verdict = evaluate(&GateInput {
            resets: Some(&f),
            ..input(&ok, &ok)
        });
        let Verdict::Halt(reason) = verdict else {
            panic!("{verdict:?}")
        };
        let crossing = reason.resets.expect("a halt on resets says so");
        assert_eq!(crossing.figures, f);
        assert!(crossing.chance < RESET_CONFIDENCE);
        let text = reason.to_string();
        assert!(
            text.starts_with("stage 1: 30 unexpected resets on 10 devices in 2.0 device-hours"),
            "{text}"
        );
        assert!(text.contains("above the 2.0 x limit"), "{text}");
        // The same figures with failures over their limit: the failures are the reason given.
        let bad = StateCounts {
            confirmed: 5,
            rolled_back: 5,
            ..Default::default()
        };
        let Verdict::Halt(reason) = evaluate(&GateInput {
            resets: Some(&f),
            ..input(&bad, &bad)
        }) else {
            panic!()
        };
        assert!(reason.resets.is_none());
    }

    #[test]
    fn resets_at_the_baseline_rate_never_halt() {
        let ok = StateCounts {
            confirmed: 10,
            ..Default::default()
        };
        let cases = [
            // At the baseline's own rate (0.1/h): 2 in 20 h.
            figures(2, 2, 20.0, 100, 1000.0),
            // Twice the baseline, but a count chance explains.
            figures(4, 4, 20.0, 100, 1000.0),
            // One device in a reset loop, however fast.
            figures(3, 1, 20.0, 0, 1000.0),
            // Not enough device-hours yet (the gate asks 1 h).
            figures(30, 10, 0.5, 0, 1000.0),
            // Nothing on the new release.
            figures(0, 0, 20.0, 100, 1000.0),
        ];
        for f in cases {
            let verdict = evaluate(&GateInput {
                resets: Some(&f),
                ..input(&ok, &ok)
            });
            assert!(!matches!(verdict, Verdict::Halt(_)), "{f:?}: {verdict:?}");
        }
        // The check turned off.
        let off = HealthGate {
            max_reset_ratio_pct: 0,
            ..GATE
        };
        let f = figures(300, 100, 20.0, 0, 1000.0);
        let verdict = evaluate(&GateInput {
            gate: &off,
            resets: Some(&f),
            ..input(&ok, &ok)
        });
        assert!(!matches!(verdict, Verdict::Halt(_)));
        // Without figures (not counted) the gate decides on failures alone.
        assert!(!matches!(evaluate(&input(&ok, &ok)), Verdict::Halt(_)));
    }

    #[test]
    fn the_eligible_count_stopped_at_its_limit_decides_the_same() {
        // Every verdict, with the count in full and stopped at `eligible_count_limit`: the same
        // but for the `not_offered` figure of a wait (which the status counts in full).
        fn without_not_offered(v: Verdict) -> Verdict {
            match v {
                Verdict::Wait(Wait::Sample {
                    decided,
                    needed,
                    asked,
                    in_flight,
                    ..
                }) => Verdict::Wait(Wait::Sample {
                    decided,
                    needed,
                    asked,
                    in_flight,
                    not_offered: 0,
                }),
                Verdict::Wait(Wait::LastStage {
                    in_flight,
                    bake_left_s,
                    ..
                }) => Verdict::Wait(Wait::LastStage {
                    in_flight,
                    not_offered: 0,
                    bake_left_s,
                }),
                v => v,
            }
        }
        let mut checked = 0u32;
        let mut stopped = 0u32;
        for min_sample in [0u64, 1, 5, 20] {
            let gate = HealthGate {
                min_sample,
                max_failure_ppm: 100_000,
                ..GATE
            };
            for (confirmed, failed, offered) in
                (0..8).flat_map(|c| (0..3).flat_map(move |f| (0..3).map(move |o| (c, f, o))))
            {
                let stage = StateCounts {
                    confirmed,
                    rolled_back: failed,
                    offered,
                    ..Default::default()
                };
                // Earlier stages add confirmed devices and failures to the whole rollout.
                for (earlier_ok, earlier_failed) in [(0, 0), (3, 0), (10, 1)] {
                    let whole = StateCounts {
                        confirmed: confirmed + earlier_ok,
                        rolled_back: failed + earlier_failed,
                        ..stage
                    };
                    for (is_last, eligible) in [false, true]
                        .into_iter()
                        .flat_map(|l| (0..30).map(move |e| (l, e)))
                    {
                        let limit = eligible_count_limit(&gate, &stage);
                        let full = GateInput {
                            gate: &gate,
                            is_last,
                            eligible_in_cohort: eligible,
                            ..input(&whole, &stage)
                        };
                        let short = GateInput {
                            eligible_in_cohort: eligible.min(limit),
                            ..full
                        };
                        assert_eq!(
                            without_not_offered(evaluate(&full)),
                            without_not_offered(evaluate(&short)),
                            "min sample {min_sample}, stage {stage:?}, whole {whole:?}, \
                             last {is_last}, eligible {eligible} (limit {limit})"
                        );
                        checked += 1;
                        stopped += u32::from(eligible > limit);
                    }
                }
            }
        }
        // The limit stopped the count in a good share of the cases, not none.
        assert!(stopped * 4 > checked, "{stopped} of {checked}");
    }
}
