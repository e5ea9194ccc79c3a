//! Devices per state in a rollout, and the sums the health gate reads: failures, decided, in
//! flight. One field per [`DeviceState`], in the API's JSON as in the gate.

use super::device_state::DeviceState;
use serde::{Deserialize, Serialize};

/// Devices per execution state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateCounts {
    /// Targets not offered yet (in or out of the cohorts so far).
    pub eligible: u64,
    /// Offered and not downloading yet (devices further along are counted in their state, so
    /// "offered so far" is everything but `eligible` and the two `*_blocked`).
    pub offered: u64,
    /// Downloading.
    pub downloading: u64,
    /// Installed, booting as a trial.
    pub installed: u64,
    /// Confirmed on the new release.
    pub confirmed: u64,
    /// Reported a download or verification failure.
    pub failed: u64,
    /// The bootloader reverted them.
    pub rolled_back: u64,
    /// Silent past the confirmation deadline.
    pub timed_out: u64,
    /// Skipped: flash protection would block writing the target slot.
    pub protection_blocked: u64,
    /// Skipped: the device holds a security counter above the release's, so its bootloader
    /// would refuse the image (anti-rollback).
    #[serde(default)]
    pub security_counter_blocked: u64,
}

impl StateCounts {
    /// Failures: failed + rolled back + timed out.
    pub fn failures(&self) -> u64 {
        self.failed + self.rolled_back + self.timed_out
    }

    /// Devices with an outcome: confirmed or failed.
    pub fn decided(&self) -> u64 {
        self.confirmed + self.failures()
    }

    /// Offered and not decided yet.
    pub fn in_flight(&self) -> u64 {
        self.offered + self.downloading + self.installed
    }

    /// The failure rate the gate compares with its limit: failures over
    /// `max(decided, min_sample)`.
    pub fn gate_rate(&self, min_sample: u64) -> f64 {
        self.failures() as f64 / self.decided().max(min_sample).max(1) as f64
    }

    /// Add `n` devices in `state`.
    pub fn add(&mut self, state: DeviceState, n: u64) {
        *self.get_mut(state) += n;
    }

    /// The count of devices in `state`.
    pub fn get(&self, state: DeviceState) -> u64 {
        let mut copy = *self;
        *copy.get_mut(state)
    }

    fn get_mut(&mut self, state: DeviceState) -> &mut u64 {
        match state {
            DeviceState::Eligible => &mut self.eligible,
            DeviceState::Offered => &mut self.offered,
            DeviceState::Downloading => &mut self.downloading,
            DeviceState::Installed => &mut self.installed,
            DeviceState::Confirmed => &mut self.confirmed,
            DeviceState::Failed => &mut self.failed,
            DeviceState::RolledBack => &mut self.rolled_back,
            DeviceState::TimedOut => &mut self.timed_out,
            DeviceState::ProtectionBlocked => &mut self.protection_blocked,
            DeviceState::SecurityCounterBlocked => &mut self.security_counter_blocked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_follow_the_state_table() {
        let mut c = StateCounts::default();
        for (i, s) in DeviceState::ALL.into_iter().enumerate() {
            c.add(s, 1 << i);
        }
        for (i, s) in DeviceState::ALL.into_iter().enumerate() {
            assert_eq!(c.get(s), 1 << i, "{s}");
        }
        let sum = |pick: fn(DeviceState) -> bool| -> u64 {
            DeviceState::ALL
                .into_iter()
                .filter(|s| pick(*s))
                .map(|s| c.get(s))
                .sum()
        };
        assert_eq!(c.failures(), sum(DeviceState::is_failure));
        assert_eq!(c.in_flight(), sum(DeviceState::is_in_flight));
        assert_eq!(c.decided(), c.failures() + c.get(DeviceState::Confirmed));
    }
}
