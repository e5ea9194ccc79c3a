//! A device's state in one rollout, and the one table of where it may go from where.
//!
//! ```text
//! eligible -> offered -> downloading -> installed -> confirmed
//!    |           |            |             |     \-> failed | rolled_back
//!    |           \------------+-------------+-------> timed_out (silent past the deadline)
//!    |                                                   \-> confirmed | failed | rolled_back (late news)
//!    \-> protection_blocked (from eligible, offered)
//!    \-> security_counter_blocked (from eligible, offered, downloading)
//! ```
//!
//! Outcomes only move forward; late news (a report arriving after the deadline declared the
//! device silent) replaces the silence. The store's conditional updates take their `WHERE state
//! IN (...)` guards from [`DeviceState::allowed_from`], so the database enforces this table and
//! no other. Reports move devices through [`DeviceState::for_event`], check-ins of a device
//! already running the release through [`DeviceState::for_check_in`].

use fota_protocol::messages::{BootState, Event, EventKind};
use std::fmt;
use std::str::FromStr;

/// Where a device is in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceState {
    /// A target, not offered yet (in or out of the cohorts so far).
    Eligible,
    /// Offered and not downloading yet.
    Offered,
    /// Downloading.
    Downloading,
    /// Installed, booting as a trial.
    Installed,
    /// Confirmed on the new release.
    Confirmed,
    /// Reported a download or verification failure.
    Failed,
    /// The bootloader reverted it.
    RolledBack,
    /// Silent past the confirmation deadline.
    TimedOut,
    /// Skipped: flash protection would block writing the target slot.
    ProtectionBlocked,
    /// Skipped: it holds a security counter above the release's, so its bootloader would refuse
    /// the image (anti-rollback).
    SecurityCounterBlocked,
}

use DeviceState::*;

impl DeviceState {
    /// Every state.
    pub const ALL: [DeviceState; 10] = [
        Eligible,
        Offered,
        Downloading,
        Installed,
        Confirmed,
        Failed,
        RolledBack,
        TimedOut,
        ProtectionBlocked,
        SecurityCounterBlocked,
    ];

    /// Offered and not decided yet: what a confirmation deadline runs for.
    pub const IN_FLIGHT: [DeviceState; 3] = [Offered, Downloading, Installed];

    /// Targets that take no place in a count-based cohort: skipped at the start for their
    /// security counter, they will never be offered. (A protection skip happens at the offer,
    /// inside a cohort, so it keeps its place.)
    pub const OUTSIDE_COHORTS: [DeviceState; 1] = [SecurityCounterBlocked];

    /// The transition table: the states a device may move to `self` from. Empty for
    /// `eligible`, where a device only ever starts.
    pub fn allowed_from(self) -> &'static [DeviceState] {
        match self {
            Eligible => &[],
            Offered => &[Eligible],
            Downloading => &[Eligible, Offered],
            Installed => &[Eligible, Offered, Downloading],
            Confirmed | Failed | RolledBack => {
                &[Eligible, Offered, Downloading, Installed, TimedOut]
            }
            TimedOut => &Self::IN_FLIGHT,
            ProtectionBlocked => &[Eligible, Offered],
            // The device holds more than the release (its floor rose, or it joined late): the
            // offer stops, and a download in flight is withdrawn at its next check-in.
            SecurityCounterBlocked => &[Eligible, Offered, Downloading],
        }
    }

    /// Whether the table lets a device move from `from` to `self`.
    pub fn may_follow(self, from: DeviceState) -> bool {
        self.allowed_from().contains(&from)
    }

    /// The state a reported event moves a device to: that of its kind ([`Self::for_event`]),
    /// except for a delta patch the device replaced by the offer's full image
    /// ([`Event::is_patch_fallback`]), which moves nothing: the update goes on, and the event
    /// only keeps the device from being offered a patch again ([`Self::for_event`] alone would
    /// count it as a failed update against the gate).
    pub fn moved_by(event: &Event) -> Option<DeviceState> {
        if event.is_patch_fallback() {
            return None;
        }
        Self::for_event(event.kind)
    }

    /// The state an event of this kind moves a device to; `None` for events that move nothing
    /// (a reset is health telemetry, judged by the gate from its own counts).
    pub fn for_event(kind: EventKind) -> Option<DeviceState> {
        Some(match kind {
            EventKind::OfferAccepted => Offered,
            EventKind::DownloadStarted => Downloading,
            EventKind::Installed | EventKind::TrialBoot => Installed,
            EventKind::Confirmed => Confirmed,
            EventKind::DownloadFailed | EventKind::VerifyFailed => Failed,
            EventKind::RolledBack => RolledBack,
            EventKind::ProtectionBlocked => ProtectionBlocked,
            EventKind::Reset => return None,
        })
    }

    /// The state a check-in proves for a device in flight that already runs the release: it
    /// booted it, as a trial or confirmed.
    pub fn for_check_in(boot_state: BootState) -> DeviceState {
        match boot_state {
            BootState::Confirmed => Confirmed,
            BootState::Trial => Installed,
        }
    }

    /// The move a check-in makes of a device last known in `known` (a state only ever moves on
    /// along [`Self::allowed_from`]), or `None` when it can change nothing: the device is known
    /// to be past every state the move could start from. A trial's check-in after the
    /// `installed` report (every update's first check-in from the new image) moves nothing,
    /// and skipping it spares a write per device and update, which on SQLite waits for the one
    /// write connection behind the group commits.
    pub fn check_in_move(known: DeviceState, boot_state: BootState) -> Option<DeviceState> {
        let to = Self::for_check_in(boot_state);
        to.may_follow(known).then_some(to)
    }

    /// Offered and not decided yet.
    pub fn is_in_flight(self) -> bool {
        Self::IN_FLIGHT.contains(&self)
    }

    /// A failure for the health gate: failed, rolled back, or silent past the deadline.
    pub fn is_failure(self) -> bool {
        matches!(self, Failed | RolledBack | TimedOut)
    }

    /// Skipped from the start or at its offer; neither offered nor a failure.
    pub fn is_skipped(self) -> bool {
        matches!(self, ProtectionBlocked | SecurityCounterBlocked)
    }

    /// Whether an offer may still be (re)sent: offered or downloading, not yet installed.
    pub fn may_resend_offer(self) -> bool {
        matches!(self, Offered | Downloading)
    }

    /// Its name, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Eligible => "eligible",
            Offered => "offered",
            Downloading => "downloading",
            Installed => "installed",
            Confirmed => "confirmed",
            Failed => "failed",
            RolledBack => "rolled_back",
            TimedOut => "timed_out",
            ProtectionBlocked => "protection_blocked",
            SecurityCounterBlocked => "security_counter_blocked",
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no device state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device state {0:?}")]
pub struct UnknownDeviceState(pub String);

impl FromStr for DeviceState {
    type Err = UnknownDeviceState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownDeviceState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_given_up_for_the_full_image_moves_nothing() {
        let verify_failed = |reason: &str| Event {
            reason: Some(reason.try_into().unwrap()),
            ..Event::new(7, EventKind::VerifyFailed)
        };
        let fallback = verify_failed("delta patch 51d0a2c4 (full image instead): base differs");
        assert_eq!(DeviceState::moved_by(&fallback), None);
        let refused = verify_failed("rebuilt image: signature does not verify");
        assert_eq!(DeviceState::moved_by(&refused), Some(Failed));
        assert_eq!(
            DeviceState::moved_by(&Event::new(8, EventKind::Confirmed)),
            Some(Confirmed)
        );
    }

    #[test]
    fn names_round_trip() {
        for s in DeviceState::ALL {
            assert_eq!(s.as_str().parse::<DeviceState>(), Ok(s));
        }
        assert!("bricked".parse::<DeviceState>().is_err());
    }

    #[test]
    fn outcomes_only_move_forward() {
        for decided in [Confirmed, Failed, RolledBack] {
            for to in DeviceState::ALL {
                assert!(!to.may_follow(decided), "{decided} -> {to}");
            }
        }
        for skipped in [ProtectionBlocked, SecurityCounterBlocked] {
            for to in DeviceState::ALL {
                assert!(!to.may_follow(skipped), "{skipped} -> {to}");
            }
        }
        // Late news replaces silence, and nothing else leaves it.
        for to in DeviceState::ALL {
            assert_eq!(
                to.may_follow(TimedOut),
                matches!(to, Confirmed | Failed | RolledBack),
                "timed_out -> {to}"
            );
        }
        assert!(Eligible.allowed_from().is_empty());
        assert!(!Offered.may_follow(Downloading), "no way back");
    }

    #[test]
    fn events_move_to_their_state_and_failures_are_the_gates() {
        assert_eq!(
            DeviceState::for_event(EventKind::TrialBoot),
            Some(Installed)
        );
        assert_eq!(
            DeviceState::for_event(EventKind::VerifyFailed),
            Some(Failed)
        );
        assert_eq!(
            DeviceState::for_event(EventKind::RolledBack),
            Some(RolledBack)
        );
        assert_eq!(DeviceState::for_event(EventKind::Reset), None);
        // An event counts against the gate exactly when the device protocol calls it a
        // failure, except a protection skip, which is no outcome. Every kind but a reset
        // moves the device.
        for kind in EventKind::ALL {
            if kind == EventKind::Reset {
                continue;
            }
            let state = DeviceState::for_event(kind).unwrap();
            assert_eq!(
                state.is_failure(),
                kind.is_failure() && kind != EventKind::ProtectionBlocked,
                "{kind:?}"
            );
        }
        assert_eq!(DeviceState::for_check_in(BootState::Trial), Installed);
        assert_eq!(DeviceState::for_check_in(BootState::Confirmed), Confirmed);
    }

    /// A check-in moves a device only where the table lets it: a trial after `installed`
    /// moves nothing (no write), a confirmed boot confirms from any state in flight.
    #[test]
    fn a_check_in_moves_only_what_it_can() {
        use BootState::{Confirmed as C, Trial as T};
        assert_eq!(DeviceState::check_in_move(Offered, T), Some(Installed));
        assert_eq!(DeviceState::check_in_move(Downloading, T), Some(Installed));
        assert_eq!(DeviceState::check_in_move(Installed, T), None);
        for known in DeviceState::IN_FLIGHT {
            assert_eq!(DeviceState::check_in_move(known, C), Some(Confirmed));
        }
        // Whatever it skips, the database would have refused too: no state the device can be
        // in by now (the known one, or any reachable from it in any number of moves, since
        // moves only go on) leads to the skipped move.
        for known in DeviceState::ALL {
            let mut reachable = vec![known];
            let mut i = 0;
            while let Some(&from) = reachable.get(i) {
                for s in DeviceState::ALL {
                    if s.may_follow(from) && !reachable.contains(&s) {
                        reachable.push(s);
                    }
                }
                i += 1;
            }
            for boot in [T, C] {
                let to = DeviceState::for_check_in(boot);
                if DeviceState::check_in_move(known, boot).is_none() {
                    assert!(
                        reachable.iter().all(|s| !to.may_follow(*s)),
                        "{known:?} -> {reachable:?} could still lead to {to:?}"
                    );
                }
            }
        }
    }
}
