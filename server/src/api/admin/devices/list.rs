//! `GET /v1/devices`: devices by model, version, tag and status, a page at a time.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{page_limit, ApiError, ApiQuery, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::names;
use crate::store::DeviceFilter;
use axum::extract::State;
use std::sync::Arc;

/// List devices, filtered (`q` searches ids), paged by id.
#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "devices",
    params(ListQuery),
    responses(
        (status = 200, body = DevicePage),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn list_devices(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<DevicePage>, ApiError> {
    admin.require(Role::Viewer)?;
    let limit = page_limit(q.limit)?;
    if let Some(m) = &q.model {
        names::model(m)?;
    }
    if let Some(t) = &q.tag {
        names::tag(t)?;
    }
    if let Some(v) = &q.version {
        v.parse::<fota_protocol::ImageVersion>().map_err(|_| {
            ApiError::bad_request("invalid_query", format!("invalid version {v:?}"))
        })?;
    }
    if let Some(text) = &q.q {
        let ok = (1..=names::MAX_DEVICE_ID).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !ok {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("search {text:?}: 1-64 characters of A-Z a-z 0-9 . _ : -"),
            ));
        }
    }
    let filter = DeviceFilter {
        model: q.model,
        version: q.version,
        tag: q.tag,
        id_contains: q.q,
        status: q.status,
        boot_state: q.boot_state,
        seen_after: q.seen_after,
        seen_before: q.seen_before,
        after: q.after,
        limit,
    };
    let devices = state
        .store
        .list_devices(&filter, state.stale_before())
        .await?;
    let next_after = (devices.len() == limit as usize)
        .then(|| devices.last().map(|d| d.id.clone()))
        .flatten();
    Ok(axum::Json(DevicePage {
        devices,
        next_after,
    }))
}
