//! The JSON bodies of the rollout routes, and [`status_of`], the answer every one of them
//! builds from a stored rollout; [`operator_action`], what the four operator routes share.

use crate::api::auth::Admin;
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::version::version_from_key;
use crate::domain::{RolloutAction, RolloutState, StateCounts};
use crate::rollout::control;
use crate::rollout::engine::gate_of;
use crate::rollout::gate::{HaltReason, Verdict};
use crate::rollout::plan::{Selector, StageSpec};
use crate::store::RolloutRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Start a rollout.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The release to roll out.
    pub release_id: i64,
    /// Which devices of the release's model (default: all).
    #[serde(default)]
    pub selector: Selector,
    /// The stages (default 1% -> 10% -> 50% -> 100%): 1-20, each larger than the one before.
    #[schema(min_items = 1, max_items = 20)]
    pub stages: Option<Vec<StageSpec>>,
}

/// Start a fleet rollback: a roll-forward to an earlier release.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollback {
    /// The (earlier, good) release to put back.
    pub release_id: i64,
    /// Only the devices running this (bad) release; absent: the whole fleet of the model.
    pub from_release_id: Option<i64>,
    /// Stages (1-20); absent: everyone at once.
    #[schema(min_items = 1, max_items = 20)]
    pub stages: Option<Vec<StageSpec>>,
}

/// A stage with its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StageStatus {
    /// 1-based stage number.
    pub number: u32,
    /// Cumulative percent of the targets, if a percent stage.
    pub percent: Option<f64>,
    /// Cumulative devices, if a count stage.
    pub devices: Option<u64>,
    /// Bake time.
    pub bake_s: i64,
    /// Minimum sample.
    pub min_sample: u64,
    /// Largest failure rate (0-1).
    pub max_failure_rate: f64,
    /// Confirmation deadline.
    pub confirm_deadline_s: i64,
    /// Advances without approval.
    pub auto_advance: bool,
    /// `done`, `current` or `pending`.
    pub status: String,
    /// Devices offered during this stage, by state.
    pub counts: StateCounts,
}

/// A rollout with its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutStatus {
    /// Id.
    pub id: i64,
    /// `rollout` or `rollback`.
    pub kind: String,
    /// `active`, `paused`, `halted`, `aborted`, `completed`.
    pub state: String,
    /// The release.
    pub release_id: i64,
    /// Its version.
    pub version: String,
    /// Model.
    pub model: String,
    /// Required tags.
    pub tags: Vec<String>,
    /// Only devices running at least this version.
    pub version_min: Option<String>,
    /// Only devices running at most this version.
    pub version_max: Option<String>,
    /// Rollback: only devices that ran this release.
    pub from_release_id: Option<i64>,
    /// Target devices.
    pub targets: i64,
    /// 1-based current stage.
    pub current_stage: u32,
    /// All targets by state.
    pub counts: StateCounts,
    /// Failures over decided devices (0-1), over the whole rollout.
    pub failure_rate: f64,
    /// The rate the gate compares with its limit: failures over max(decided, minimum sample).
    pub gate_failure_rate: f64,
    /// The current stage's limit (0-1).
    pub max_failure_rate: f64,
    /// Whether an operator approved advancing past the current stage.
    pub approved: bool,
    /// What the gate waits for now (active rollouts), e.g. "minimum sample: 3 of 20 devices
    /// decided in this stage".
    pub next: Option<String>,
    /// Why it halted.
    pub halt_reason: Option<HaltReason>,
    /// The halt reason in words.
    pub halt_message: Option<String>,
    /// Stages.
    pub stages: Vec<StageStatus>,
    /// Created at (Unix ms).
    pub created_at: i64,
    /// By.
    pub created_by: String,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

/// Rollouts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    /// Newest first.
    pub rollouts: Vec<RolloutStatus>,
}

pub(crate) async fn status_of(state: &AppState, r: &RolloutRow) -> Result<RolloutStatus, ApiError> {
    let stages = state.store.rollout_stages(r.id).await?;
    let (whole, per_stage) = state.store.rollout_counts(r.id).await?;
    let version = state
        .store
        .release(r.release_id)
        .await?
        .map(|rel| rel.version)
        .unwrap_or_default();
    let halt_reason: Option<HaltReason> = r
        .halt_reason
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let current = stages.get(r.current_stage as usize);
    let max_failure_rate = current.map_or(0.0, |s| s.max_failure_ppm as f64 / 1e6);
    let min_sample = current.map_or(0, |s| gate_of(s).min_sample);
    let decided = whole.decided();
    let next = if r.state == RolloutState::Active {
        crate::rollout::engine::assess(&state.store, r)
            .await?
            .map(|a| match a.verdict {
                Verdict::Wait(why) => why,
                Verdict::Advance => "advancing to the next stage".into(),
                Verdict::Complete => "completing".into(),
                Verdict::Halt(reason) => format!("halting: {reason}"),
            })
    } else {
        None
    };
    Ok(RolloutStatus {
        id: r.id,
        kind: r.kind.as_str().to_string(),
        state: r.state.as_str().to_string(),
        release_id: r.release_id,
        version,
        model: r.model.clone(),
        tags: r.selector_tags.clone(),
        version_min: r.version_min_key.map(|k| version_from_key(k).to_string()),
        version_max: r.version_max_key.map(|k| version_from_key(k).to_string()),
        from_release_id: r.from_release_id,
        targets: r.targets,
        current_stage: u32::try_from(r.current_stage + 1).unwrap_or(0),
        counts: whole,
        failure_rate: if decided == 0 {
            0.0
        } else {
            whole.failures() as f64 / decided as f64
        },
        gate_failure_rate: whole.gate_rate(min_sample),
        max_failure_rate,
        approved: r.approved_stage == Some(r.current_stage),
        next,
        halt_message: halt_reason.as_ref().map(ToString::to_string),
        halt_reason,
        stages: stages
            .iter()
            .map(|s| {
                let gate = gate_of(s);
                StageStatus {
                    number: u32::try_from(s.idx + 1).unwrap_or(0),
                    percent: s.percent_bp.map(|bp| bp as f64 / 100.0),
                    devices: s.device_count.and_then(|n| u64::try_from(n).ok()),
                    bake_s: s.bake_s,
                    min_sample: gate.min_sample,
                    max_failure_rate: f64::from(gate.max_failure_ppm) / 1e6,
                    confirm_deadline_s: s.confirm_deadline_s,
                    auto_advance: s.auto_advance,
                    status: if s.idx < r.current_stage || r.state == RolloutState::Completed {
                        "done"
                    } else if s.idx == r.current_stage {
                        "current"
                    } else {
                        "pending"
                    }
                    .into(),
                    counts: per_stage.get(&s.idx).copied().unwrap_or_default(),
                }
            })
            .collect(),
        created_at: r.created_at,
        created_by: r.created_by.clone(),
        updated_at: r.updated_at,
    })
}

/// An operator's action on a rollout, answered with the rollout as it is afterwards.
pub(crate) async fn operator_action(
    state: &AppState,
    admin: &Admin,
    id: i64,
    action: RolloutAction,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    admin.require(Role::Operator)?;
    let r = control::apply(&state.store, &state.engine, &admin.name, id, action).await?;
    Ok(axum::Json(status_of(state, &r).await?))
}
