//! `POST /v1/rollbacks`: start a fleet rollback ([`crate::rollout::launch::start_rollback`]).

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiJson, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::rollout::launch::{self, RollbackRequest};
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

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
        (status = 422, description = "no_targets, plan_does_not_fit, model_mismatch", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn start_rollback(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiJson(req): ApiJson<StartRollback>,
) -> Result<(StatusCode, axum::Json<RolloutStatus>), ApiError> {
    admin.require(Role::Operator)?;
    let row = launch::start_rollback(
        &state.store,
        &state.engine,
        &admin.name,
        RollbackRequest {
            release_id: req.release_id,
            from_release_id: req.from_release_id,
            stages: req.stages.as_deref(),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(status_of(&state, &row).await?),
    ))
}
