//! Health gates: the pure decision of whether a rollout halts, advances, completes or waits,
//! from counts of device states. No I/O, so every rule is tested directly.
//!
//! - A **failure** is a failure report (download or verification failed), a bootloader rollback,
//!   or a device that took the offer and then went silent past its confirmation deadline.
//! - **Halt** when failures exceed the stage's maximum rate of `max(decided, min_sample)` devices,
//!   counted over the whole rollout (a late crash in an earlier cohort still counts). Using at
//!   least `min_sample` as the denominator keeps one unlucky device in a tiny canary from halting
//!   a good release, while a canary where everything fails halts after a handful of reports.
//! - **Advance** when the current stage's own cohort has at least `min_sample` decided devices,
//!   its failure rate is within the limit, the bake time has passed, and the stage advances
//!   automatically or an operator approved it. Never before the minimum sample.
//! - **Complete** at the last stage when no target is left undecided.

use crate::domain::StateCounts;
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
}

/// Why a rollout halted: the numbers that crossed the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The gate's minimum sample.
    pub min_sample: u64,
}

fn percent(ppm: u64) -> f64 {
    ppm as f64 / 10_000.0
}

impl fmt::Display for HaltReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stage {}: {} failures ({} failed, {} rolled back, {} silent) among {} decided devices = {:.1}% (of at least the minimum sample {}), above the {:.1}% limit",
            self.stage,
            self.failures,
            self.failed,
            self.rolled_back,
            self.timed_out,
            self.decided,
            percent(self.rate_ppm),
            self.min_sample,
            percent(u64::from(self.max_failure_ppm)),
        )
    }
}

/// What to do with a rollout now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stop offering, at once.
    Halt(HaltReason),
    /// Move to the next stage.
    Advance,
    /// The last stage is done: every target has an outcome.
    Complete,
    /// Nothing to do yet; why.
    Wait(String),
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
}

/// Decide.
pub fn evaluate(input: &GateInput<'_>) -> Verdict {
    let g = input.gate;
    let w = input.whole;
    let denominator = w.decided().max(g.min_sample).max(1);
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
            min_sample: g.min_sample,
        });
    }
    let s = input.stage_counts;
    if input.is_last {
        if input.eligible_in_cohort == 0 && w.in_flight() == 0 && input.stage_age_s >= input.bake_s
        {
            return Verdict::Complete;
        }
        return Verdict::Wait(format!(
            "last stage: {} devices in flight, {} not offered yet",
            w.in_flight(),
            input.eligible_in_cohort
        ));
    }
    if s.decided() < g.min_sample {
        return Verdict::Wait(format!(
            "minimum sample: {} of {} devices decided in this stage",
            s.decided(),
            g.min_sample
        ));
    }
    if input.stage_age_s < input.bake_s {
        return Verdict::Wait(format!(
            "baking: {} s of {} s",
            input.stage_age_s, input.bake_s
        ));
    }
    if !input.auto_advance && !input.approved {
        return Verdict::Wait("waiting for approval (fota rollout resume --approve)".into());
    }
    Verdict::Advance
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATE: HealthGate = HealthGate {
        min_sample: 10,
        max_failure_ppm: 100_000, // 10%
        confirm_deadline_s: 600,
    };

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
        assert!(matches!(evaluate(&input(&c, &c)), Verdict::Wait(_)));
    }

    #[test]
    fn below_the_minimum_sample_a_stage_never_advances() {
        let c = StateCounts {
            confirmed: 9,
            ..Default::default()
        };
        let v = evaluate(&input(&c, &c));
        assert_eq!(
            v,
            Verdict::Wait("minimum sample: 9 of 10 devices decided in this stage".into())
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
        assert!(matches!(evaluate(&input(&c, &c)), Verdict::Wait(_)));
    }

    #[test]
    fn bake_time_and_approval_hold_a_stage() {
        let c = StateCounts {
            confirmed: 50,
            ..Default::default()
        };
        let mut i = input(&c, &c);
        i.stage_age_s = 59;
        assert!(matches!(evaluate(&i), Verdict::Wait(w) if w.starts_with("baking")));
        i.stage_age_s = 60;
        i.auto_advance = false;
        assert!(matches!(evaluate(&i), Verdict::Wait(w) if w.contains("approval")));
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
}
