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
    /// Unexpected resets reported from the new release by the rollout's targets (at most
    /// [`MAX_RESETS_PER_DEVICE_HOUR`] per device and hour).
    pub new_resets: u64,
    /// Devices among them.
    pub new_devices: u64,
    /// Device-seconds on the new release: each confirmed target since its confirmation.
    pub new_device_s: u64,
    /// Unexpected resets reported from any other version by the rollout's targets (at most
    /// [`MAX_RESETS_PER_DEVICE_HOUR`] per device and hour).
    pub base_resets: u64,
    /// Device-seconds on the old release: every target from the rollout's start until it
    /// confirmed the new release (or until now).
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
/// to `confirmed_at_sum`, `targets` in all, a rollout started at `started_at`, at `now`.
/// Returns (new device-seconds, old device-seconds).
pub fn exposure(
    targets: u64,
    confirmed: u64,
    confirmed_at_sum: i128,
    started_at: i64,
    now: i64,
) -> (u64, u64) {
    let new_ms = (i128::from(confirmed) * i128::from(now) - confirmed_at_sum).max(0);
    let all_ms = i128::from(targets) * i128::from((now - started_at).max(0));
    let base_ms = (all_ms - new_ms).max(0);
    let s = |ms: i128| u64::try_from(ms / 1000).unwrap_or(u64::MAX);
    (s(new_ms), s(base_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_splits_each_targets_time_at_its_confirmation() {
        // 3 targets from t=0 to t=10 s; two confirmed at 4 s and 6 s.
        let (new_s, base_s) = exposure(3, 2, 4_000 + 6_000, 0, 10_000);
        assert_eq!(new_s, 6 + 4);
        assert_eq!(base_s, 30 - 10);
        // Nothing confirmed: all on the old release.
        assert_eq!(exposure(5, 0, 0, 1_000, 3_000), (0, 10));
        // A clock that went backwards never gives negative time.
        assert_eq!(exposure(1, 1, 9_000, 0, 5_000), (0, 5));
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
