//! The JSON bodies of the rollout routes, and [`status_of`], the answer every one of them
//! builds from a stored rollout; [`operator_action`], what the four operator routes share.

use crate::api::auth::Admin;
use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::version::version_from_key;
use crate::domain::{cohort, ResetFigures, RolloutAction, RolloutState, StateCounts};
use crate::rollout::control;
use crate::rollout::engine::gate_of;
use crate::rollout::gate::{HaltReason, HealthGate, Verdict};
use crate::rollout::plan::{Selector, StageSpec};
use crate::store::RolloutRow;
use fota_protocol::messages::Component;
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
    /// The plan's minimum sample.
    pub min_sample: u64,
    /// The minimum sample the stage applies: the plan's, capped at the stage's cohort
    /// (`cohort`), so a small fleet never waits for devices it does not have.
    pub min_sample_applied: u64,
    /// Targets the stage reaches, cumulatively, over today's targets: ⌈percent × targets⌉ or its
    /// device count, at least one more than the stage before, at most the targets.
    pub reach: u64,
    /// Devices that join in this stage (`reach` minus the stage before's).
    pub cohort: u64,
    /// Largest failure rate (0-1).
    pub max_failure_rate: f64,
    /// Confirmation deadline.
    pub confirm_deadline_s: i64,
    /// Largest tolerated ratio of the new release's unexpected resets per device-hour to the
    /// baseline's (0: not checked).
    pub max_reset_ratio: f64,
    /// Device-hours on the new release before resets may halt.
    pub min_device_hours: f64,
    /// Advances without approval.
    pub auto_advance: bool,
    /// `done`, `current` or `pending`.
    pub status: String,
    /// Devices offered during this stage, by state.
    pub counts: StateCounts,
    /// The new release's unexpected resets among the devices offered in this stage (absent
    /// before any of them confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets: Option<StageResetStatus>,
}

/// One stage's unexpected resets on the new release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct StageResetStatus {
    /// Unexpected resets (at most 3 per device and hour).
    pub resets: u64,
    /// Devices they came from.
    pub devices: u64,
    /// Device-hours on the new release.
    pub device_hours: f64,
    /// Resets per device-hour.
    pub rate: f64,
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
    /// What it rolls out: the application, or the stage-1 bootloader (absent in answers of
    /// servers before bootloader releases: an application).
    #[serde(default)]
    pub component: Component,
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
    /// What happens next, in words: for an active rollout what the gate waits for (e.g.
    /// "minimum sample: 3 of 20 devices decided in this stage; ..."); for a paused or halted one
    /// what the operator can do.
    pub next: Option<String>,
    /// The current stage's gate, in numbers (unfinished rollouts).
    pub gate: Option<GateStatus>,
    /// Unexpected resets on the new release against the baseline, and the current stage's
    /// limit (unfinished rollouts).
    pub resets: Option<ResetStatus>,
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

/// Release health after confirmation: unexpected resets (watchdogs, faults, brown-out) per
/// device-hour on the new release and on the old one among the same targets since the rollout
/// started, and the current stage's limit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ResetStatus {
    /// Unexpected resets on the new release (at most 3 per device and hour).
    pub new_resets: u64,
    /// Devices they came from.
    pub new_devices: u64,
    /// Device-hours on the new release.
    pub new_device_hours: f64,
    /// Resets per device-hour on the new release.
    pub new_rate: f64,
    /// Unexpected resets on the old release among the targets (at most 3 per device and hour).
    pub baseline_resets: u64,
    /// Device-hours on the old release.
    pub baseline_device_hours: f64,
    /// The baseline's rate per device-hour (one reset more than seen); 0 before the baseline
    /// has any device-hours.
    pub baseline_rate: f64,
    /// `new_rate / baseline_rate` (0 without a baseline).
    pub ratio: f64,
    /// The current stage's limit for `ratio` (0: not checked).
    pub max_ratio: f64,
    /// Device-hours the new release needs before the limit applies.
    pub min_device_hours: f64,
}

impl ResetStatus {
    fn new(f: &ResetFigures, gate: &HealthGate) -> Self {
        Self {
            new_resets: f.new_resets,
            new_devices: f.new_devices,
            new_device_hours: f.new_hours(),
            new_rate: f.new_rate(),
            baseline_resets: f.base_resets,
            baseline_device_hours: f.base_hours(),
            baseline_rate: finite(f.base_rate()),
            ratio: finite(f.new_rate() / f.base_rate()),
            max_ratio: f64::from(gate.max_reset_ratio_pct) / 100.0,
            min_device_hours: gate.min_device_s as f64 / 3600.0,
        }
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Where the current stage's gate stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct GateStatus {
    /// Decided devices (confirmed or failed) of the current stage.
    pub decided: u64,
    /// Decided devices the stage needs to advance: the plan's minimum sample, capped at the
    /// stage's cohort.
    pub min_sample: u64,
    /// The plan's minimum sample.
    pub min_sample_asked: u64,
    /// Devices of the current stage updating now (offered, downloading, installed).
    pub in_flight: u64,
    /// Devices inside the cohorts so far that have not been offered yet (not checked in since).
    pub not_offered: u64,
    /// The stage's bake time.
    pub bake_s: i64,
    /// Seconds of it left.
    pub bake_left_s: i64,
    /// The stage advances only when approved (`fota rollout approve`).
    pub needs_approval: bool,
    /// An operator approved it.
    pub approved: bool,
    /// The least the failure rate is divided by: the minimum sample, capped at the devices of
    /// the cohorts so far.
    pub rate_min_sample: u64,
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
    let (version, component) = state
        .store
        .release(r.release_id)
        .await?
        .map(|rel| (rel.version, rel.component))
        .unwrap_or_default();
    let stage_resets = state
        .store
        .stage_resets(
            r.id,
            &version,
            r.created_at,
            u64::try_from(r.targets).unwrap_or(0),
            crate::store::now_ms(),
        )
        .await?;
    let halt_reason: Option<HaltReason> = r
        .halt_reason
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok());
    let current = stages.get(r.current_stage as usize);
    let max_failure_rate = current.map_or(0.0, |s| s.max_failure_ppm as f64 / 1e6);
    let decided = whole.decided();
    let unfinished = RolloutState::UNFINISHED.contains(&r.state);
    let assessment = if unfinished {
        crate::rollout::engine::assess(&state.store, r, true).await?
    } else {
        None
    };
    let gate = match (&assessment, current) {
        (Some(a), Some(stage)) => Some(GateStatus {
            decided: a.stage_counts.decided(),
            min_sample: a.min_sample,
            min_sample_asked: gate_of(stage).min_sample,
            in_flight: a.stage_counts.in_flight(),
            not_offered: a.not_offered.unwrap_or(0),
            bake_s: stage.bake_s,
            bake_left_s: (stage.bake_s - a.stage_age_s).max(0),
            needs_approval: !stage.auto_advance && r.current_stage + 1 < stages.len() as i64,
            approved: r.approved_stage == Some(r.current_stage),
            rate_min_sample: a.halt_min_sample,
        }),
        _ => None,
    };
    let resets = match (&assessment, current) {
        (Some(a), Some(stage)) => a
            .resets
            .as_ref()
            .map(|f| ResetStatus::new(f, &gate_of(stage))),
        _ => None,
    };
    let rate_min_sample = match &gate {
        Some(g) => g.rate_min_sample,
        None => current.map_or(0, |s| gate_of(s).min_sample),
    };
    let next = match (r.state, &assessment) {
        (RolloutState::Active, Some(a)) => Some(match &a.verdict {
            Verdict::Wait(wait) => wait.describe(r.id),
            Verdict::Advance => "advancing to the next stage".into(),
            Verdict::Complete => "completing".into(),
            Verdict::Halt(reason) => format!("halting: {reason}"),
        }),
        (RolloutState::Paused, _) => Some(format!(
            "paused: nothing is offered until fota rollout resume {}",
            r.id
        )),
        (RolloutState::Halted, _) => Some(format!(
            "halted: fota rollout resume {id} after a fix (the gate is checked again at once), fota rollout abort {id}, or fota rollback",
            id = r.id
        )),
        _ => None,
    };
    // How far each stage reaches over today's targets (those skipped at the start take no
    // place in a cohort).
    let offerable = u64::try_from(r.targets)
        .unwrap_or(0)
        .saturating_sub(whole.security_counter_blocked);
    let reach_of = cohort::plan_reach(
        stages.iter().map(|s| (s.percent_bp, s.device_count)),
        offerable,
    );
    Ok(RolloutStatus {
        id: r.id,
        kind: r.kind.as_str().to_string(),
        state: r.state.as_str().to_string(),
        release_id: r.release_id,
        version,
        component,
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
        gate_failure_rate: whole.gate_rate(rate_min_sample),
        max_failure_rate,
        approved: r.approved_stage == Some(r.current_stage),
        next,
        gate,
        resets,
        halt_message: halt_reason.as_ref().map(ToString::to_string),
        halt_reason,
        stages: stages
            .iter()
            .zip(&reach_of)
            .map(|(s, &reach)| {
                let gate = gate_of(s);
                let before = usize::try_from(s.idx)
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| reach_of.get(i))
                    .copied()
                    .unwrap_or(0);
                let cohort = reach.saturating_sub(before);
                StageStatus {
                    number: u32::try_from(s.idx + 1).unwrap_or(0),
                    percent: s.percent_bp.map(|bp| bp as f64 / 100.0),
                    devices: s.device_count.and_then(|n| u64::try_from(n).ok()),
                    bake_s: s.bake_s,
                    min_sample: gate.min_sample,
                    min_sample_applied: gate.min_sample.min(cohort),
                    reach,
                    cohort,
                    max_failure_rate: f64::from(gate.max_failure_ppm) / 1e6,
                    confirm_deadline_s: s.confirm_deadline_s,
                    max_reset_ratio: f64::from(gate.max_reset_ratio_pct) / 100.0,
                    min_device_hours: gate.min_device_s as f64 / 3600.0,
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
                    resets: stage_resets
                        .get(&s.idx)
                        .filter(|x| x.device_s > 0 || x.resets > 0)
                        .map(|x| StageResetStatus {
                            resets: x.resets,
                            devices: x.devices,
                            device_hours: x.hours(),
                            rate: x.rate(),
                        }),
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
