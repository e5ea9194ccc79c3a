//! `POST /v1/devices/{id}/reports`: a batch of events, stored once per event id together with
//! the state moves they make, in a group commit ([`crate::rollout::Engine::report`]).

use super::body::*;
use crate::api::auth::Device;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::store::{event_kind_name, now_ms, DeviceFacts};
use axum::extract::State;
use fota_protocol::messages::{Report, ReportAck};
use std::sync::Arc;

/// Report a batch of events. Idempotent by event id; acknowledged once stored.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/reports",
    tag = "device",
    params(("id" = inline(crate::domain::schemas::DeviceIdName), Path, description = "Device id")),
    request_body(content = fota_protocol::messages::Report, description = "Up to 16 events", content_type = "application/json"),
    responses(
        (status = 200, description = "How many events were stored now and how many were retries", body = fota_protocol::messages::ReportAck),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown device or wrong token", body = ErrorBody),
        (status = 503, description = "The database is unavailable: nothing was stored; retry after Retry-After seconds", body = ErrorBody),
    ),
    security(("device_token" = []))
)]
pub(super) async fn report(
    State(state): State<Arc<AppState>>,
    Device { id, .. }: Device,
    req: axum::extract::Request,
) -> Result<axum::Json<ReportAck>, ApiError> {
    let report: Report = parse_body(req).await?;
    Ok(axum::Json(ingest(&state, &id, &report).await?))
}

/// Store a device's report and apply it, over HTTP or MQTT alike: its events (once per event
/// id) and the rollout state moves they make are committed in one transaction, shared with the
/// reports that arrived beside it, and a failure that crosses a gate halts the rollout before
/// this returns. The caller acknowledges only after it returned.
pub(crate) async fn ingest(
    state: &AppState,
    id: &str,
    report: &Report,
) -> Result<ReportAck, ApiError> {
    let now = now_ms();
    // The events and the state moves they make are stored in one transaction with the reports
    // that arrived beside this one (group commit), and this returns only after it committed; a
    // failure that crosses a gate has halted the rollout by then.
    let outcome = state
        .engine
        .report(&state.store, id, &report.events)
        .await?;
    state.facts.record(
        id,
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
    Ok(ReportAck {
        stored: outcome.stored,
        duplicates: outcome.duplicates,
    })
}
