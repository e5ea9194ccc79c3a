//! `GET /v1/releases/{id}`: one release.

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::store::ReleaseRecord;
use axum::extract::State;
use std::sync::Arc;

/// One release.
#[utoipa::path(
    get,
    path = "/v1/releases/{id}",
    tag = "releases",
    params(("id" = i64, Path, description = "Release id")),
    responses((status = 200, body = ReleaseRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub(super) async fn get_release(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<ReleaseRecord>, ApiError> {
    admin.require(Role::Viewer)?;
    let release = state
        .store
        .release(id)
        .await?
        .ok_or_else(|| ApiError::not_found("release_not_found", format!("no release {id}")))?;
    Ok(axum::Json(release))
}
