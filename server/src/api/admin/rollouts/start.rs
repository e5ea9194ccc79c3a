//! `POST /v1/rollouts`: start a staged rollout ([`crate::rollout::launch::start_rollout`]).

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiJson, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::rollout::launch::{self, RolloutRequest};
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

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
        (status = 422, description = "no_targets, plan_does_not_fit", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn start_rollout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(req): ApiJson<StartRollout>,
) -> Result<(StatusCode, axum::Json<RolloutStatus>), ApiError> {
    admin.require(Role::Operator)?;
    let row = launch::start_rollout(
        &state.store,
        &state.engine,
        &admin.name,
        RolloutRequest {
            release_id: req.release_id,
            selector: &req.selector,
            stages: req.stages.as_deref(),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(status_of(&state, &row).await?),
    ))
}
