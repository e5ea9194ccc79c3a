//! `POST /v1/rollouts/{id}/abort`: abort for good: no more offers. Devices keep what they run; roll back with /v1/rollbacks.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::RolloutAction;
use axum::extract::State;
use std::sync::Arc;

/// Abort for good: no more offers. Devices keep what they run; roll back with /v1/rollbacks.
#[utoipa::path(
    post,
    path = "/v1/rollouts/{id}/abort",
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
pub(super) async fn abort_rollout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    operator_action(&state, &admin, id, RolloutAction::Abort).await
}
