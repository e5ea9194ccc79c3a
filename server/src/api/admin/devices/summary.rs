//! `GET /v1/fleet/summary`: the fleet by model, version, boot state and status.

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::store::FleetSummary;
use axum::extract::State;
use std::sync::Arc;

/// Device counts by model, firmware version, boot state and status (the whole fleet: read it
/// once per view, not with every search).
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
