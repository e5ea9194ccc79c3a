//! `GET /v1/rollouts/{id}`: one rollout's progress.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::rollout::control;
use axum::extract::State;
use std::sync::Arc;

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
pub(super) async fn get_rollout(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<RolloutStatus>, ApiError> {
    admin.require(Role::Viewer)?;
    let r = control::rollout(&state.store, id).await?;
    Ok(axum::Json(status_of(&state, &r).await?))
}
