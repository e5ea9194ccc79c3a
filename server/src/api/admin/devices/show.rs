//! `GET /v1/devices/{id}`: one device, with its latest events.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::names;
use axum::extract::State;
use std::sync::Arc;

/// One device with its recent events.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}",
    tag = "devices",
    params(("id" = inline(crate::domain::schemas::DeviceIdName), Path, description = "Device id")),
    responses(
        (status = 200, body = DeviceDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn get_device(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<DeviceDetail>, ApiError> {
    admin.require(Role::Viewer)?;
    names::device_id(&id)?;
    let device = state
        .store
        .device(&id, state.stale_before())
        .await?
        .ok_or_else(|| ApiError::not_found("device_not_found", format!("no device {id}")))?;
    let events = state.store.device_events(&id, 50).await?;
    Ok(axum::Json(DeviceDetail { device, events }))
}
