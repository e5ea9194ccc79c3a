//! `GET /v1/releases`: releases, optionally of one model.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiQuery, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::names;
use axum::extract::State;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

/// Filter for listing releases.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    /// Only this hardware model.
    #[param(value_type = Option<crate::domain::schemas::ModelName>, inline)]
    pub model: Option<String>,
}

/// List releases.
#[utoipa::path(
    get,
    path = "/v1/releases",
    tag = "releases",
    params(ReleaseQuery),
    responses((status = 200, body = ReleaseList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub(super) async fn list_releases(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<ReleaseQuery>,
) -> Result<axum::Json<ReleaseList>, ApiError> {
    admin.require(Role::Viewer)?;
    if let Some(m) = &q.model {
        names::model(m)?;
    }
    let releases = state.store.list_releases(q.model.as_deref()).await?;
    Ok(axum::Json(ReleaseList { releases }))
}
