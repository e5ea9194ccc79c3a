//! Operators' view of the fleet: provisioning (one device or many, JSON or CSV), listing with
//! filters, one device with its recent events, and the fleet summary.

use super::auth::Admin;
use super::error::{page_limit, ApiError, ApiPath, ApiQuery, ErrorBody};
use super::AppState;
use crate::domain::auth::{new_token, token_hash, Role, DEVICE_TOKEN_PREFIX};
use crate::domain::names;
use crate::store::{
    now_ms, DeviceFilter, DeviceRecord, DeviceStatus, FleetSummary, NewDevice, StoredEvent,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most devices one provisioning request may carry.
pub const MAX_DEVICES_PER_REQUEST: usize = 100_000;
/// Most tags per device.
pub const MAX_TAGS: usize = 16;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(register_devices))
        .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(list_devices))
                .routes(routes!(get_device))
                .routes(routes!(fleet_summary)),
        )
}

/// A device to provision.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Device id: 1-64 of `A-Za-z0-9._:-`.
    pub id: String,
    /// Hardware model.
    pub model: String,
    /// Tags for targeting rollouts.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A provisioning request (JSON form).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevices {
    /// The devices.
    pub devices: Vec<DeviceSpec>,
}

/// A provisioned device and its secret token: shown once, stored only hashed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProvisionedDevice {
    /// Device id.
    pub id: String,
    /// The token the device sends as `Authorization: Bearer <token>`.
    pub token: String,
}

/// The provisioning answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// One entry per device, in request order.
    pub devices: Vec<ProvisionedDevice>,
}

/// Parse `id,model,tags` CSV (tags separated by `;`; a header line starting with `id` is
/// skipped; blank lines ignored).
fn parse_csv(text: &str) -> Result<Vec<DeviceSpec>, ApiError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (n == 0 && line.starts_with("id,")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (id, model, tags) = match fields.as_slice() {
            [id, model] => (*id, *model, ""),
            [id, model, tags] => (*id, *model, *tags),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_csv",
                    format!("line {}: expected id,model[,tag;tag...]", n + 1),
                ))
            }
        };
        out.push(DeviceSpec {
            id: id.to_string(),
            model: model.to_string(),
            tags: tags
                .split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    Ok(out)
}

fn validate(specs: &[DeviceSpec]) -> Result<(), ApiError> {
    if specs.is_empty() {
        return Err(ApiError::bad_request(
            "no_devices",
            "no devices in the request",
        ));
    }
    if specs.len() > MAX_DEVICES_PER_REQUEST {
        return Err(ApiError::too_large(format!(
            "at most {MAX_DEVICES_PER_REQUEST} devices per request"
        )));
    }
    let mut seen = HashSet::with_capacity(specs.len());
    for d in specs {
        names::device_id(&d.id)?;
        names::model(&d.model)?;
        if d.tags.len() > MAX_TAGS {
            return Err(ApiError::bad_request(
                "too_many_tags",
                format!("device {}: at most {MAX_TAGS} tags", d.id),
            ));
        }
        for t in &d.tags {
            names::tag(t)?;
        }
        if !seen.insert(d.id.as_str()) {
            return Err(ApiError::bad_request(
                "duplicate_device_id",
                format!("device {} appears twice in the request", d.id),
            ));
        }
    }
    Ok(())
}

/// Provision devices: JSON `{"devices": [...]}` or CSV `id,model,tags`. All or none: an id that
/// exists already fails the whole request with 409.
#[utoipa::path(
    post,
    path = "/v1/devices",
    tag = "devices",
    request_body(content = RegisterDevices, description = "JSON, or text/csv lines `id,model,tag;tag`"),
    responses(
        (status = 201, description = "Provisioned; each token is shown only now", body = Registered),
        (status = 400, description = "Invalid id, model, tag or CSV", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "A device id exists already", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
async fn register_devices(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Registered>), ApiError> {
    admin.require(Role::Operator)?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let specs = if content_type.starts_with("application/json") {
        serde_json::from_slice::<RegisterDevices>(&body)?.devices
    } else if content_type.starts_with("text/csv") {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid_csv", "CSV is not UTF-8"))?;
        parse_csv(text)?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected application/json or text/csv",
        ));
    };
    validate(&specs)?;
    let mut new = Vec::with_capacity(specs.len());
    let mut out = Vec::with_capacity(specs.len());
    for d in specs {
        let token = new_token(DEVICE_TOKEN_PREFIX).map_err(ApiError::internal)?;
        new.push(NewDevice {
            id: d.id.clone(),
            model: d.model,
            tags: d.tags,
            token_hash: token_hash(&token),
        });
        out.push(ProvisionedDevice { id: d.id, token });
    }
    state
        .store
        .register_devices(&new, now_ms())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::AlreadyExists(what) => {
                ApiError::conflict("device_exists", format!("{what} already exists"))
            }
            other => other.into(),
        })?;
    tracing::info!(actor = %admin.name, count = out.len(), "provisioned devices");
    Ok((StatusCode::CREATED, axum::Json(Registered { devices: out })))
}

/// Filters for listing devices.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Exact hardware model.
    pub model: Option<String>,
    /// Exact firmware version, e.g. `1.4.2`.
    pub version: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// `never_seen`, `online` or `silent`.
    pub status: Option<DeviceStatus>,
    /// Last seen at or after (Unix ms).
    pub seen_after: Option<i64>,
    /// Last seen before (Unix ms), or never.
    pub seen_before: Option<i64>,
    /// Page start: ids after this one.
    pub after: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
}

/// A page of devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevicePage {
    /// Devices, by id.
    pub devices: Vec<DeviceRecord>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<String>,
}

/// List devices, filtered, paged by id.
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
async fn list_devices(
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
    let filter = DeviceFilter {
        model: q.model,
        version: q.version,
        tag: q.tag,
        status: q.status,
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

/// One device and its latest events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// Its 50 most recent events, newest first.
    pub events: Vec<StoredEvent>,
}

/// One device with its recent events.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}",
    tag = "devices",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, body = DeviceDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
async fn get_device(
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

/// Device counts by firmware version and by status.
#[utoipa::path(
    get,
    path = "/v1/fleet/summary",
    tag = "devices",
    responses((status = 200, body = FleetSummary), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn fleet_summary(
    State(state): State<Arc<AppState>>,
    admin: Admin,
) -> Result<axum::Json<FleetSummary>, ApiError> {
    admin.require(Role::Viewer)?;
    Ok(axum::Json(
        state.store.fleet_summary(state.stale_before()).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parses_with_and_without_header_and_tags() {
        let specs = parse_csv("id,model,tags\nSL-1,f429,city:a;pole\n\nSL-2, f429\n").unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].tags, ["city:a", "pole"]);
        assert!(specs[1].tags.is_empty());
        assert_eq!(specs[1].model, "f429");
        let err = parse_csv("SL-1\n").unwrap_err();
        assert_eq!(err.code, "invalid_csv");
    }

    #[test]
    fn validation_names_the_problem() {
        let spec = |id: &str| DeviceSpec {
            id: id.into(),
            model: "m".into(),
            tags: vec![],
        };
        assert_eq!(validate(&[]).unwrap_err().code, "no_devices");
        assert_eq!(
            validate(&[spec("../x")]).unwrap_err().code,
            "invalid_device_id"
        );
        assert_eq!(
            validate(&[spec("a"), spec("a")]).unwrap_err().code,
            "duplicate_device_id"
        );
        let mut tagged = spec("b");
        tagged.tags = vec!["x y".into()];
        assert_eq!(validate(&[tagged]).unwrap_err().code, "invalid_tag");
    }
}
