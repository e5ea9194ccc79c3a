//! `POST /v1/rollouts/{id}/approve`: approve advancing past the current stage (for stages that wait for approval).

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::RolloutAction;
use axum::extract::State;
use std::sync::Arc;

/// Approve advancing past the current stage (for stages that wait for approval).
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/approve",
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
pub(super) async fn approve_rollout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    operator_action(&state, &admin, id, RolloutAction::Approve).await
}
