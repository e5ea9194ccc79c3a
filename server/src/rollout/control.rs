//! An operator steering a rollout: pause, resume, abort, approve. Which action may start from
//! which state is [`RolloutAction::from_states`]; this applies one conditionally, audited, and
//! lets the gate speak at once.

use super::Engine;
use crate::domain::{RolloutAction, RolloutState};
use crate::store::{now_ms, AuditEntry, RolloutChange, RolloutRow, Store, StoreError};

/// Why an operator action was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such rollout.
    #[error("no rollout {0}")]
    NotFound(i64),
    /// The rollout is in a state the action may not start from (perhaps it changed meanwhile).
    #[error("rollout {id} is {state}; {} needs it {}", .action.audit_name(), from_list(*.action))]
    InvalidState {
        /// The rollout.
        id: i64,
        /// Its state now.
        state: RolloutState,
        /// The refused action.
        action: RolloutAction,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControlError {
    /// The stable code of a refusal (`internal` for a storage failure).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "rollout_not_found",
            Self::InvalidState { .. } => "invalid_state",
            Self::Store(_) => "internal",
        }
    }
}

fn from_list(action: RolloutAction) -> String {
    action
        .from_states()
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A rollout, or [`ControlError::NotFound`].
pub async fn rollout(store: &Store, id: i64) -> Result<RolloutRow, ControlError> {
    store.rollout(id).await?.ok_or(ControlError::NotFound(id))
}

/// Apply an operator's `action` to rollout `id` as `actor`, only from the states the action may
/// start from, with its audit entry in the same transaction; then evaluate the gate at once (a
/// resumed rollout whose failures still cross it halts again before this returns, and an
/// approval advances). Returns the rollout as it is now.
pub async fn apply(
    store: &Store,
    engine: &Engine,
    actor: &str,
    id: i64,
    action: RolloutAction,
) -> Result<RolloutRow, ControlError> {
    let r = rollout(store, id).await?;
    // An approval is for the stage the operator looked at: if it advanced meanwhile, the
    // conditional update below does not match.
    let approved_stage = (action == RolloutAction::Approve).then_some(r.current_stage);
    let change = RolloutChange {
        state: action.to_state(),
        approved_stage,
        ..RolloutChange::default()
    };
    let audit = AuditEntry::new(
        actor,
        action.audit_name(),
        Some(id),
        Some(r.release_id),
        serde_json::json!({ "from_state": r.state.as_str(), "stage": r.current_stage + 1 }),
        now_ms(),
    );
    if !store
        .change_rollout(id, action.from_states(), approved_stage, &change, &audit)
        .await?
    {
        let now = rollout(store, id).await?;
        return Err(ControlError::InvalidState {
            id,
            state: now.state,
            action,
        });
    }
    engine.changed(id);
    engine.evaluate(store, id).await?;
    tracing::info!(
        actor = %actor,
        rollout = id,
        action = action.audit_name(),
        "rollout changed"
    );
    rollout(store, id).await
}
