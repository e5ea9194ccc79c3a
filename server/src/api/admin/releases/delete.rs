//! `DELETE /v1/releases/{id}`: delete a release no rollout uses (admin role).

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::store::{now_ms, StoreError};
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;

/// Delete a release that no rollout uses; its artifacts go too unless another release shares
/// them.
#[utoipa::path(
    delete,
    path = "/v1/releases/{id}",
    tag = "releases",
    params(("id" = i64, Path, description = "Release id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A rollout uses it", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn delete_release(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    admin.require(Role::Admin)?;
    let orphans = state
        .store
        .delete_release(id, &admin.name, now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => {
                ApiError::not_found("release_not_found", format!("no release {id}"))
            }
            StoreError::InUse(why) => ApiError::conflict("release_in_use", why),
            other => other.into(),
        })?;
    for sha in orphans {
        if let Err(e) = state.artifacts.remove(&sha).await {
            tracing::warn!(artifact = %sha, error = %e, "could not remove an unreferenced artifact");
        }
    }
    tracing::info!(actor = %admin.name, release = id, "release deleted");
    Ok(StatusCode::NO_CONTENT)
}
