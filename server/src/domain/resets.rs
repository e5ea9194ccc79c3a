//! Release health after confirmation: unexpected resets (watchdogs, faults, brown-out) per
//! device-hour on a rollout's new release, against the same rate among the rollout's targets
//! still on the old release over the same window (the baseline).
//!
//! The figures are counted by the store; the judgement (whether the new release's rate is
//! beyond its limit, with what confidence) is the gate's ([`crate::rollout::gate`]).

use serde::{Deserialize, Serialize};

/// The most resets one device contributes to a count per hour: a device in a reset loop (a bad
/// sensor, a brown-out-prone supply) weighs like a device that reset a few times, not like a
/// fleet. (The gate also never judges on fewer than two devices.)
pub const MAX_RESETS_PER_DEVICE_HOUR: u64 = 3;

/// Unexpected resets and exposure on both sides of a rollout since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResetFigures {
    /// Unexpected resets reported from the new release by the rollout's confirmed targets, of
    /// runs after their confirmation (at most [`MAX_RESETS_PER_DEVICE_HOUR`] per device and
    /// hour).
    pub new_resets: u64,
    /// Devices among them.
    pub new_devices: u64,
    /// Device-seconds on the new release: each confirmed target since its confirmation.
    pub new_device_s: u64,
    /// Unexpected resets reported from any other version by the rollout's targets (at most
    /// [`MAX_RESETS_PER_DEVICE_HOUR`] per device and hour).
    pub base_resets: u64,
    /// Device-seconds on the old release: every target from the rollout's start until it left
    /// the old release (installed the new one), or until now.
    pub base_device_s: u64,
}

impl ResetFigures {
    /// Device-hours on the new release.
    pub fn new_hours(&self) -> f64 {
        self.new_device_s as f64 / 3600.0
    }

    /// Device-hours on the old release.
    pub fn base_hours(&self) -> f64 {
        self.base_device_s as f64 / 3600.0
    }

    /// Unexpected resets per device-hour on the new release (0 without exposure).
    pub fn new_rate(&self) -> f64 {
        if self.new_device_s == 0 {
            0.0
        } else {
            self.new_resets as f64 / self.new_hours()
        }
    }

    /// The baseline rate per device-hour, counting one reset more than seen: a baseline
    /// without any reset is small, not zero, and a short baseline errs high (so the gate errs
    /// towards not halting). Infinite without any baseline exposure.
    pub fn base_rate(&self) -> f64 {
        if self.base_device_s == 0 {
            f64::INFINITY
        } else {
            (self.base_resets + 1) as f64 / self.base_hours()
        }
    }
}

/// One stage's share of the new release's figures: the unexpected resets of the devices offered
/// in that stage, and their device-seconds on the new release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageResets {
    /// Unexpected resets on the new release (at most [`MAX_RESETS_PER_DEVICE_HOUR`] per device
    /// and hour).
    pub resets: u64,
    /// Devices they came from.
    pub devices: u64,
    /// Device-seconds on the new release.
    pub device_s: u64,
}

impl StageResets {
    /// Device-hours on the new release.
    pub fn hours(&self) -> f64 {
        self.device_s as f64 / 3600.0
    }

    /// Resets per device-hour (0 without exposure).
    pub fn rate(&self) -> f64 {
        if self.device_s == 0 {
            0.0
        } else {
            self.resets as f64 / self.hours()
        }
    }
}

/// Exposure from per-state sums: `confirmed` targets whose confirmation times (Unix ms) add up
/// to `confirmed_at_sum`; `left_old` targets that left the old release (installed the new one
/// and rebooted into it), whose times of leaving add up to `left_old_at_sum`; `targets` in all,
/// a rollout started at `started_at`, at `now`. Returns (new device-seconds, old
/// device-seconds): a target counts on the old release until it leaves it and on the new one
/// from its confirmation; its trial in between counts on neither side (nor do the resets of its
/// trial: they are the failure gate's, which the bootloader's revert reports).
pub fn exposure(
    targets: u64,
    confirmed: u64,
    confirmed_at_sum: i128,
    left_old: (u64, i128),
    started_at: i64,
    now: i64,
) -> (u64, u64) {
    let new_ms = (i128::from(confirmed) * i128::from(now) - confirmed_at_sum).max(0);
    let (left, left_at_sum) = left_old;
    let gone_ms = (i128::from(left) * i128::from(now) - left_at_sum).max(0);
    let all_ms = i128::from(targets) * i128::from((now - started_at).max(0));
    let base_ms = (all_ms - gone_ms).max(0);
    let s = |ms: i128| u64::try_from(ms / 1000).unwrap_or(u64::MAX);
    (s(new_ms), s(base_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_ends_the_old_side_at_the_install_and_starts_the_new_at_the_confirmation() {
        // 3 targets from t=0 to t=10 s; two left the old release at 3 s and 5 s, and were
        // confirmed at 4 s and 6 s (a trial of 1 s each, on neither side).
        let (new_s, base_s) = exposure(3, 2, 4_000 + 6_000, (2, 3_000 + 5_000), 0, 10_000);
        assert_eq!(new_s, 6 + 4);
        assert_eq!(base_s, 30 - 7 - 5);
        // A third is on its trial (left at 8 s, not confirmed): its trial counts nowhere.
        let (new_s, base_s) = exposure(3, 2, 10_000, (3, 16_000), 0, 10_000);
        assert_eq!((new_s, base_s), (10, 30 - 7 - 5 - 2));
        // Nothing installed: all on the old release.
        assert_eq!(exposure(5, 0, 0, (0, 0), 1_000, 3_000), (0, 10));
        // A clock that went backwards never gives negative time.
        assert_eq!(exposure(1, 1, 9_000, (1, 9_000), 0, 5_000), (0, 5));
    }

    #[test]
    fn rates_are_per_device_hour_and_the_baseline_is_never_zero() {
        let f = ResetFigures {
            new_resets: 6,
            new_devices: 3,
            new_device_s: 7_200,
            base_resets: 0,
            base_device_s: 36_000,
        };
        assert_eq!(f.new_rate(), 3.0);
        assert_eq!(f.base_rate(), 0.1);
        assert_eq!(ResetFigures::default().new_rate(), 0.0);
        assert_eq!(ResetFigures::default().base_rate(), f64::INFINITY);
    }
}
