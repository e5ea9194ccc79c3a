//! A rollout's state, and the one table of the actions that move it.
//!
//! ```text
//!            pause             halt (gate crossed)
//!   active ---------> paused   active ---------> halted
//!   active <--------- paused   active <--------- halted      (resume)
//!   active | paused | halted ---> aborted                     (abort, or replaced by a rollback)
//!   active ---> completed                                      (last stage done)
//!   active: advance (next stage), approve (also while paused): the state stays
//! ```
//!
//! Every change is a conditional update in the store whose `WHERE state IN (...)` guard is
//! [`RolloutAction::from_states`], so two replicas deciding at once change a rollout once.

use std::fmt;
use std::str::FromStr;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutState {
    /// Offering to its current cohort, evaluated by its gate.
    Active,
    /// Offering nothing new until resumed; devices already updating carry on.
    Paused,
    /// Its gate halted it: nothing more is offered until resumed or aborted.
    Halted,
    /// Stopped for good by an operator, or replaced by a fleet rollback.
    Aborted,
    /// Its last stage is done.
    Completed,
}

use RolloutState::*;

impl RolloutState {
    /// Every state.
    pub const ALL: [RolloutState; 5] = [Active, Paused, Halted, Aborted, Completed];

    /// The states in which a rollout still owns its model: a new rollout of that model is
    /// refused, and a rollback aborts it first. A halted rollout can be resumed, so it counts.
    pub const UNFINISHED: [RolloutState; 3] = [Active, Paused, Halted];

    /// The states in which offered devices' confirmation deadlines run out.
    pub const DEADLINES_RUN: [RolloutState; 2] = [Active, Paused];

    /// Whether it offers images at check-in: only while active.
    pub fn offers(self) -> bool {
        self == Active
    }

    /// Its name, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Active => "active",
            Paused => "paused",
            Halted => "halted",
            Aborted => "aborted",
            Completed => "completed",
        }
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no rollout state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state must be one of active, paused, halted, aborted, completed")]
pub struct UnknownRolloutState(pub String);

impl FromStr for RolloutState {
    type Err = UnknownRolloutState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownRolloutState(s.to_string()))
    }
}

/// Something that changes a rollout: an operator's action or the engine's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutAction {
    /// Operator: stop offering until resumed.
    Pause,
    /// Operator: offer again; the gate is evaluated at once.
    Resume,
    /// Operator (or a fleet rollback replacing the rollout): stop for good.
    Abort,
    /// Operator: approve advancing past the current stage.
    Approve,
    /// Engine: the gate was crossed.
    Halt,
    /// Engine: the current stage passed its gate; the next one starts.
    Advance,
    /// Engine: the last stage is done.
    Complete,
}

impl RolloutAction {
    /// The actions an operator takes through the API.
    pub const OPERATOR: [RolloutAction; 4] =
        [Self::Pause, Self::Resume, Self::Abort, Self::Approve];

    /// The transition table: the states the action may start from.
    pub fn from_states(self) -> &'static [RolloutState] {
        match self {
            Self::Pause | Self::Halt | Self::Advance | Self::Complete => &[Active],
            Self::Resume => &[Paused, Halted],
            Self::Abort => &RolloutState::UNFINISHED,
            Self::Approve => &[Active, Paused],
        }
    }

    /// The state it leaves the rollout in; `None` where the state stays (advance, approve).
    pub fn to_state(self) -> Option<RolloutState> {
        match self {
            Self::Pause => Some(Paused),
            Self::Resume => Some(Active),
            Self::Abort => Some(Aborted),
            Self::Halt => Some(Halted),
            Self::Complete => Some(Completed),
            Self::Approve | Self::Advance => None,
        }
    }

    /// Whether the action may start from `state`.
    pub fn allowed_in(self, state: RolloutState) -> bool {
        self.from_states().contains(&state)
    }

    /// The action as the audit log names it.
    pub fn audit_name(self) -> &'static str {
        match self {
            Self::Pause => "rollout.pause",
            Self::Resume => "rollout.resume",
            Self::Abort => "rollout.abort",
            Self::Approve => "rollout.approve",
            Self::Halt => "rollout.halt",
            Self::Advance => "rollout.advance",
            Self::Complete => "rollout.complete",
        }
    }
}

/// What a rollout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutKind {
    /// A staged rollout of a new release.
    Rollout,
    /// A fleet rollback: a roll-forward to an earlier, good release.
    Rollback,
}

impl RolloutKind {
    /// Its name, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rollout => "rollout",
            Self::Rollback => "rollback",
        }
    }

    /// The audit action of creating one.
    pub fn create_action(self) -> &'static str {
        match self {
            Self::Rollout => "rollout.create",
            Self::Rollback => "rollback.create",
        }
    }

    /// The kind a stored name names.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Rollout, Self::Rollback]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in RolloutState::ALL {
            assert_eq!(s.as_str().parse::<RolloutState>(), Ok(s));
        }
        assert_eq!(
            "done".parse::<RolloutState>().unwrap_err().to_string(),
            "state must be one of active, paused, halted, aborted, completed"
        );
        for k in [RolloutKind::Rollout, RolloutKind::Rollback] {
            assert_eq!(RolloutKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn finished_rollouts_never_change() {
        for action in [
            RolloutAction::Pause,
            RolloutAction::Resume,
            RolloutAction::Abort,
            RolloutAction::Approve,
            RolloutAction::Halt,
            RolloutAction::Advance,
            RolloutAction::Complete,
        ] {
            assert!(!action.allowed_in(Aborted), "{action:?}");
            assert!(!action.allowed_in(Completed), "{action:?}");
            if let Some(to) = action.to_state() {
                assert!(!action.allowed_in(to), "{action:?} from its own target");
            }
        }
    }

    #[test]
    fn only_an_active_rollout_offers_and_decides() {
        for s in RolloutState::ALL {
            assert_eq!(s.offers(), s == Active);
            assert_eq!(RolloutAction::Halt.allowed_in(s), s == Active);
            assert_eq!(RolloutAction::Advance.allowed_in(s), s == Active);
        }
        assert!(RolloutAction::Resume.allowed_in(Halted));
        assert_eq!(RolloutAction::Abort.from_states(), RolloutState::UNFINISHED);
    }
}
