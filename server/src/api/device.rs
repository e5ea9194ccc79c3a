//! What devices call: check-in and reports, each authenticated by the device's own token and
//! bound to the device id in the path, so a device can only ever act as itself.
//!
//! The check-in path does no database write: credentials come from a cache after the first
//! check-in and the reported facts go to the [`FactsBuffer`](crate::facts::FactsBuffer). Reports
//! are different: an event is acknowledged only once it is stored.

use super::auth::authenticate_device;
use super::error::{ApiError, ApiPath, ErrorBody};
use super::AppState;
use crate::rollout::engine::DeviceView;
use crate::store::{event_kind_name, now_ms, DeviceCheckInFacts, DeviceFacts};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use fota_protocol::messages::{CheckIn, CheckInResponse, Report, ReportAck};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(check_in))
        .routes(routes!(report))
}

/// Parse a JSON body after authentication (so a stranger learns nothing from parse errors).
fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    Ok(serde_json::from_slice(body)?)
}

/// Check in: report what runs, get the poll interval and maybe an offer.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/check-in",
    tag = "device",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Object, description = "fota_protocol::messages::CheckIn", content_type = "application/json"),
    responses(
        (status = 200, description = "CheckInResponse: poll interval and an optional offer", body = Object),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown device or wrong token", body = ErrorBody),
        (status = 409, description = "Reported model differs from the provisioned one", body = ErrorBody),
    ),
    security(("device_token" = []))
)]
async fn check_in(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<CheckInResponse>, ApiError> {
    let creds = authenticate_device(&state, &id, &headers).await?;
    let check_in: CheckIn = parse_body(&headers, &body)?;
    if check_in.model.as_str() != creds.model {
        return Err(ApiError::conflict(
            "model_mismatch",
            format!(
                "device {id} is provisioned as {:?} but reports {:?}",
                creds.model,
                check_in.model.as_str()
            ),
        ));
    }
    state.facts.record(
        &id,
        DeviceFacts {
            last_seen_at: now_ms(),
            check_in: Some(DeviceCheckInFacts::of(&check_in)),
        },
    );
    let offer = state
        .engine
        .check_in(
            &state.store,
            &DeviceView {
                id: &id,
                model: &creds.model,
                tags: &creds.tags,
                check_in: &check_in,
            },
        )
        .await?;
    state.metrics.check_ins.inc();
    let poll_interval_s = u32::try_from(state.config.poll_interval.as_secs()).unwrap_or(u32::MAX);
    Ok(axum::Json(CheckInResponse {
        poll_interval_s,
        offer,
    }))
}

/// Report a batch of events. Idempotent by event id; acknowledged once stored.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/reports",
    tag = "device",
    params(("id" = String, Path, description = "Device id")),
    request_body(content = Object, description = "fota_protocol::messages::Report: up to 16 events", content_type = "application/json"),
    responses(
        (status = 200, description = "ReportAck: how many events were stored now and how many were retries", body = Object),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown device or wrong token", body = ErrorBody),
    ),
    security(("device_token" = []))
)]
async fn report(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<ReportAck>, ApiError> {
    authenticate_device(&state, &id, &headers).await?;
    let report: Report = parse_body(&headers, &body)?;
    let now = now_ms();
    let outcome = state.store.store_events(&id, &report.events, now).await?;
    // Stored first: a report is never lost to an engine error. The engine then moves each
    // device's rollout state, and a failure that crosses a gate halts the rollout before this
    // request is answered.
    state
        .engine
        .apply_events(&state.store, &id, &report.events)
        .await?;
    state.facts.record(
        &id,
        DeviceFacts {
            last_seen_at: now,
            check_in: None,
        },
    );
    state.metrics.reports.inc();
    for e in &report.events {
        state
            .metrics
            .events
            .get_or_create(&crate::metrics::EventLabels {
                kind: event_kind_name(e.kind),
            })
            .inc();
    }
    Ok(axum::Json(ReportAck {
        stored: outcome.stored,
        duplicates: outcome.duplicates,
    }))
}
