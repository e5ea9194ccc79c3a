//! `GET /v1/fleet/summary`: the fleet by model, version and status.

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::store::FleetSummary;
use axum::extract::State;
use std::sync::Arc;

/// Device counts by firmware version and by status.
#[utoipa::path(
    get,
    path = "/v1/fleet/summary",
    tag = "devices",
    responses((status = 200, body = FleetSummary), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub(super) async fn fleet_summary(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<axum::Json<FleetSummary>, ApiError> {
    admin.require(Role::Viewer)?;
    Ok(axum::Json(
        state.store.fleet_summary(state.stale_before()).await?,
    ))
}
