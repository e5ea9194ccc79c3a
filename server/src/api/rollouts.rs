//! Rollouts: start (with a plan and a target selector), status, pause / resume / abort / approve,
//! fleet rollback, and the audit log.

use super::AppState;
use crate::auth::Admin;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::rollout::anti_rollback;
use crate::rollout::engine::{gate_of, target_filter};
use crate::rollout::gate::{HaltReason, StateCounts, Verdict};
use crate::rollout::plan::{self, Selector, StageSize, StageSpec};
use crate::store::{
    now_ms, version_from_key, version_key, AuditEntry, NewRollout, ReleaseRecord, Role,
    RolloutChange, RolloutRow, SkippedTarget, StageRow, Target,
};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(start_rollout, list_rollouts))
        .routes(routes!(get_rollout))
        .routes(routes!(pause_rollout))
        .routes(routes!(resume_rollout))
        .routes(routes!(abort_rollout))
        .routes(routes!(approve_rollout))
        .routes(routes!(start_rollback))
        .routes(routes!(audit_log))
}

/// Start a rollout.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The release to roll out.
    pub release_id: i64,
    /// Which devices of the release's model (default: all).
    #[serde(default)]
    pub selector: Selector,
    /// The stages (default 1% -> 10% -> 50% -> 100%).
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
    /// Stages; absent: everyone at once.
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

fn stage_rows(specs: &[StageSpec]) -> Result<Vec<StageRow>, ApiError> {
    Ok(plan::parse_stages(specs)?
        .iter()
        .enumerate()
        .map(|(i, s)| StageRow {
            idx: i as i64,
            percent_bp: match s.size {
                StageSize::BasisPoints(bp) => Some(i64::from(bp)),
                StageSize::Devices(_) => None,
            },
            device_count: match s.size {
                StageSize::Devices(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
                StageSize::BasisPoints(_) => None,
            },
            bake_s: s.bake_s,
            min_sample: i64::try_from(s.gate.min_sample).unwrap_or(i64::MAX),
            max_failure_ppm: i64::from(s.gate.max_failure_ppm),
            confirm_deadline_s: s.gate.confirm_deadline_s,
            auto_advance: s.auto_advance,
        })
        .collect())
}

async fn status_of(state: &AppState, r: &RolloutRow) -> Result<RolloutStatus, ApiError> {
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
    let next = if r.state == "active" {
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
        kind: r.kind.clone(),
        state: r.state.clone(),
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
                    status: if s.idx < r.current_stage || r.state == "completed" {
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

/// Targets split by anti-rollback: those that may be offered the release, and those whose
/// bootloaders hold a higher security counter (with the reason), plus the highest counter held.
struct CounterSplit {
    offerable: Vec<String>,
    blocked: Vec<SkippedTarget>,
    highest_held: u32,
}

fn split_by_counter(targets: Vec<Target>, release: &ReleaseRecord) -> CounterSplit {
    let counter = anti_rollback::from_stored(Some(release.security_counter)).unwrap_or(0);
    let mut split = CounterSplit {
        offerable: Vec::with_capacity(targets.len()),
        blocked: Vec::new(),
        highest_held: 0,
    };
    for t in targets {
        let held = anti_rollback::held(
            anti_rollback::from_stored(t.reported_counter),
            anti_rollback::from_stored(t.running_release_counter),
        );
        split.highest_held = split.highest_held.max(held);
        if anti_rollback::blocks(held, counter) {
            split.blocked.push(SkippedTarget {
                id: t.id,
                state: "security_counter_blocked",
                reason: anti_rollback::reason(held, counter),
            });
        } else {
            split.offerable.push(t.id);
        }
    }
    split
}

fn counter_too_low(release: &ReleaseRecord, held: u32, whom: &str) -> ApiError {
    ApiError::conflict(
        "security_counter_too_low",
        format!(
            "release {} has security counter {} but {whom} hold {held}: their bootloaders would refuse it; roll forward to a release with counter >= {held}",
            release.version, release.security_counter
        ),
    )
}

async fn release_or_404(state: &AppState, id: i64) -> Result<ReleaseRecord, ApiError> {
    state
        .store
        .release(id)
        .await?
        .ok_or_else(|| ApiError::not_found("release_not_found", format!("no release {id}")))
}

/// Start a staged rollout of a release to the devices the selector picks. One unfinished
/// rollout per model at a time. Devices whose bootloaders hold a security counter above the
/// release's are skipped and listed as `security_counter_blocked` (anti-rollback); if that is
/// every target, the rollout is refused with `security_counter_too_low`.
#[utoipa::path(
    post,
    path = "/v1/rollouts",
    tag = "rollouts",
    request_body = StartRollout,
    responses(
        (status = 201, body = RolloutStatus),
        (status = 400, description = "invalid_plan, invalid_selector, invalid_body", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "rollout_in_progress for this model; security_counter_too_low: every target holds a higher security counter", body = ErrorBody),
        (status = 422, description = "no_targets", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
async fn start_rollout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(req): ApiJson<StartRollout>,
) -> Result<(StatusCode, axum::Json<RolloutStatus>), ApiError> {
    admin.require(Role::Operator)?;
    let started = std::time::Instant::now();
    let stages = stage_rows(req.stages.as_deref().unwrap_or(&plan::default_stages()))?;
    let (min, max) = req.selector.validate()?;
    let release = release_or_404(&state, req.release_id).await?;
    if let Some(other) = state.store.unfinished_rollout(&release.model).await? {
        return Err(ApiError::conflict(
            "rollout_in_progress",
            format!(
                "rollout {other} for {} is unfinished (active, paused or halted): abort it first, or start a rollback",
                release.model
            ),
        ));
    }
    let filter = target_filter(
        &release.model,
        &req.selector.tags,
        min.as_ref().map(version_key),
        max.as_ref().map(version_key),
        None,
        &release.version,
    );
    let targets = state.store.targets(&filter).await?;
    tracing::debug!(
        targets = targets.len(),
        ms = started.elapsed().as_millis() as u64,
        "selected targets"
    );
    if targets.is_empty() {
        return Err(ApiError::unprocessable(
            "no_targets",
            format!(
                "no {} device matches the selector (or all run {} already)",
                release.model, release.version
            ),
        ));
    }
    let split = split_by_counter(targets, &release);
    if split.offerable.is_empty() {
        return Err(counter_too_low(
            &release,
            split.highest_held,
            &format!("all {} targeted devices", split.blocked.len()),
        ));
    }
    let new = NewRollout {
        release_id: release.id,
        kind: "rollout".into(),
        model: release.model.clone(),
        selector_tags: req.selector.tags.clone(),
        version_min_key: min.as_ref().map(version_key),
        version_max_key: max.as_ref().map(version_key),
        from_release_id: None,
        stages,
        created_by: admin.name.clone(),
    };
    let detail = serde_json::json!({
        "version": release.version,
        "targets": split.offerable.len() + split.blocked.len(),
        "security_counter_blocked": split.blocked.len(),
        "selector": req.selector,
        "stages": req.stages.clone().unwrap_or_else(plan::default_stages),
    });
    let row = state
        .store
        .create_rollout(
            &new,
            &split.offerable,
            &split.blocked,
            now_ms(),
            detail,
            None,
        )
        .await?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "rollout written");
    state.engine.invalidate();
    tracing::info!(
        actor = %admin.name,
        rollout = row.id,
        targets = split.offerable.len(),
        security_counter_blocked = split.blocked.len(),
        "rollout started"
    );
    Ok((
        StatusCode::CREATED,
        axum::Json(status_of(&state, &row).await?),
    ))
}

/// Fleet rollback: a new rollout of an earlier release to the devices that run the bad one (or
/// the whole fleet), at once or staged. Aborts the bad release's unfinished rollout. Refused if
/// the release's security counter is below what the targeted devices hold.
#[utoipa::path(
    post,
    path = "/v1/rollbacks",
    tag = "rollouts",
    request_body = StartRollback,
    responses(
        (status = 201, body = RolloutStatus),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "security_counter_too_low, rollout_in_progress", body = ErrorBody),
        (status = 422, description = "no_targets, model_mismatch", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
async fn start_rollback(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(req): ApiJson<StartRollback>,
) -> Result<(StatusCode, axum::Json<RolloutStatus>), ApiError> {
    admin.require(Role::Operator)?;
    let everyone = [StageSpec {
        percent: Some(100.0),
        bake_s: Some(0),
        min_sample: Some(0),
        max_failure_rate: Some(1.0),
        ..StageSpec::default()
    }];
    let stages = stage_rows(req.stages.as_deref().unwrap_or(&everyone))?;
    let release = release_or_404(&state, req.release_id).await?;
    let bad = match req.from_release_id {
        Some(id) => {
            let bad = release_or_404(&state, id).await?;
            if bad.model != release.model {
                return Err(ApiError::unprocessable(
                    "model_mismatch",
                    format!(
                        "release {} is for {}, release {} for {}",
                        bad.id, bad.model, release.id, release.model
                    ),
                ));
            }
            Some(bad)
        }
        None => None,
    };
    let filter = target_filter(
        &release.model,
        &[],
        None,
        None,
        bad.as_ref().map(|b| b.version.clone()),
        &release.version,
    );
    // A rollback must bring back every device on the bad release: one that would refuse the
    // image refuses the whole rollback, rather than being left behind.
    let split = split_by_counter(state.store.targets(&filter).await?, &release);
    if !split.blocked.is_empty() {
        return Err(counter_too_low(
            &release,
            split.highest_held,
            "targeted devices",
        ));
    }
    let targets = split.offerable;
    if targets.is_empty() {
        return Err(ApiError::unprocessable(
            "no_targets",
            "no device runs the release to roll back from",
        ));
    }
    let now = now_ms();
    let unfinished = state.store.unfinished_rollout(&release.model).await?;
    let abort_first = unfinished.map(|id| {
        (
            id,
            AuditEntry::new(
                &admin.name,
                "rollout.abort",
                Some(id),
                None,
                serde_json::json!({"reason": "replaced by a fleet rollback"}),
                now,
            ),
        )
    });
    let new = NewRollout {
        release_id: release.id,
        kind: "rollback".into(),
        model: release.model.clone(),
        selector_tags: Vec::new(),
        version_min_key: None,
        version_max_key: None,
        from_release_id: bad.as_ref().map(|b| b.id),
        stages,
        created_by: admin.name.clone(),
    };
    let detail = serde_json::json!({
        "version": release.version,
        "from_version": bad.as_ref().map(|b| b.version.clone()),
        "targets": targets.len(),
        "aborted": unfinished,
    });
    let row = state
        .store
        .create_rollout(&new, &targets, &[], now, detail, abort_first)
        .await?;
    state.engine.invalidate();
    tracing::info!(actor = %admin.name, rollout = row.id, targets = targets.len(), "fleet rollback started");
    Ok((
        StatusCode::CREATED,
        axum::Json(status_of(&state, &row).await?),
    ))
}

/// Filter for the rollout list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RolloutQuery {
    /// Only rollouts in this state.
    pub state: Option<String>,
}

/// List rollouts, newest first.
#[utoipa::path(
    get,
    path = "/v1/rollouts",
    tag = "rollouts",
    params(RolloutQuery),
    responses((status = 200, body = RolloutList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn list_rollouts(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<RolloutQuery>,
) -> Result<axum::Json<RolloutList>, ApiError> {
    admin.require(Role::Viewer)?;
    const STATES: [&str; 5] = ["active", "paused", "halted", "aborted", "completed"];
    let filter: Vec<&str> = match q.state.as_deref() {
        None => Vec::new(),
        Some(s) => match STATES.iter().find(|x| **x == s) {
            Some(x) => vec![*x],
            None => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("state must be one of {}", STATES.join(", ")),
                ))
            }
        },
    };
    let mut rollouts = Vec::new();
    for r in state.store.list_rollouts(&filter).await? {
        rollouts.push(status_of(&state, &r).await?);
    }
    Ok(axum::Json(RolloutList { rollouts }))
}

async fn rollout_or_404(state: &AppState, id: i64) -> Result<RolloutRow, ApiError> {
    state
        .store
        .rollout(id)
        .await?
        .ok_or_else(|| ApiError::not_found("rollout_not_found", format!("no rollout {id}")))
}

/// A rollout's progress: per stage, offered / downloading / installed / confirmed / failed, the
/// failure rate against its limit, and why it halted.
#[utoipa::path(
    get,
    path = "/v1/rollouts/{id}",
    tag = "rollouts",
    params(("id" = i64, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn get_rollout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    admin.require(Role::Viewer)?;
    let r = rollout_or_404(&state, id).await?;
    Ok(axum::Json(status_of(&state, &r).await?))
}

/// An operator's change: only from the given states.
async fn operator_change(
    state: &AppState,
    admin: &Admin,
    id: i64,
    from: &[&str],
    mut change: RolloutChange,
    action: &str,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    admin.require(Role::Operator)?;
    let r = rollout_or_404(state, id).await?;
    // An approval is for the stage the operator looked at: if it advanced meanwhile, the
    // conditional update below does not match.
    if change.approved_stage.is_some() {
        change.approved_stage = Some(r.current_stage);
    }
    let audit = AuditEntry::new(
        &admin.name,
        action,
        Some(id),
        Some(r.release_id),
        serde_json::json!({ "from_state": r.state, "stage": r.current_stage + 1 }),
        now_ms(),
    );
    let expected_stage = change.approved_stage.map(|_| r.current_stage);
    if !state
        .store
        .change_rollout(id, from, expected_stage, &change, &audit)
        .await?
    {
        let now = rollout_or_404(state, id).await?;
        return Err(ApiError::conflict(
            "invalid_state",
            format!(
                "rollout {id} is {}; {action} needs it {}",
                now.state,
                from.join(" or ")
            ),
        ));
    }
    state.engine.invalidate();
    // The gate speaks at once: a resumed rollout whose failures still cross it halts again
    // before this answer, and an approval advances before it.
    state.engine.evaluate(&state.store, id).await?;
    tracing::info!(actor = %admin.name, rollout = id, action, "rollout changed");
    let r = rollout_or_404(state, id).await?;
    Ok(axum::Json(status_of(state, &r).await?))
}

macro_rules! operator_route {
    ($name:ident, $path:literal, $doc:literal, $from:expr, $change:expr, $action:literal) => {
        #[doc = $doc]
        #[utoipa::path(
                            post,
                            path = $path,
                            tag = "rollouts",
                            params(("id" = i64, Path, description = "Rollout id")),
                            responses(
                                (status = 200, body = RolloutStatus),
                                (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
                                (status = 404, body = ErrorBody),
                                (status = 409, description = "invalid_state", body = ErrorBody),
                            ),
                            security(("admin_token" = []))
                        )]
        async fn $name(
            State(state): State<Arc<AppState>>,
            admin: Admin,
            ApiPath(id): ApiPath<i64>,
        ) -> Result<axum::Json<RolloutStatus>, ApiError> {
            operator_change(&state, &admin, id, $from, $change, $action).await
        }
    };
}

operator_route!(
    pause_rollout,
    "/v1/rollouts/{id}/pause",
    "Pause: no new offers until resumed; devices already updating carry on.",
    &["active"],
    RolloutChange {
        state: Some("paused".into()),
        ..RolloutChange::default()
    },
    "rollout.pause"
);
operator_route!(
    resume_rollout,
    "/v1/rollouts/{id}/resume",
    "Resume a paused or halted rollout. Its gate is evaluated again at once.",
    &["paused", "halted"],
    RolloutChange {
        state: Some("active".into()),
        ..RolloutChange::default()
    },
    "rollout.resume"
);
operator_route!(
    abort_rollout,
    "/v1/rollouts/{id}/abort",
    "Abort for good: no more offers. Devices keep what they run; roll back with /v1/rollbacks.",
    &["active", "paused", "halted"],
    RolloutChange {
        state: Some("aborted".into()),
        ..RolloutChange::default()
    },
    "rollout.abort"
);
operator_route!(
    approve_rollout,
    "/v1/rollouts/{id}/approve",
    "Approve advancing past the current stage (for stages that wait for approval).",
    &["active", "paused"],
    RolloutChange {
        approved_stage: Some(-1),
        ..RolloutChange::default()
    },
    "rollout.approve"
);

/// Filter for the audit log.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries about this rollout.
    pub rollout_id: Option<i64>,
    /// At most this many (1-1000, default 100).
    pub limit: Option<u32>,
}

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// Every operator action and automatic decision, with who, when and why.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "rollouts",
    params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn audit_log(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<AuditLog>, ApiError> {
    admin.require(Role::Viewer)?;
    let limit = crate::error::page_limit(q.limit)?;
    let entries = state.store.audit_log(q.rollout_id, limit).await?;
    Ok(axum::Json(AuditLog { entries }))
}
