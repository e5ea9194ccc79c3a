//! `POST /v1/devices/{id}/check-in`: what runs on the device in, maybe an offer out; the
//! decision is [`crate::rollout::Engine::check_in`]'s. A device seen before is answered even
//! while the database is away (without an offer until it returns).

use super::body::*;
use crate::api::auth::Device;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::rollout::engine::DeviceView;
use crate::store::{now_ms, DeviceCheckInFacts, DeviceFacts, StoreError};
use axum::extract::State;
use fota_protocol::messages::{CheckIn, CheckInResponse};
use std::sync::Arc;

/// Check in: report what runs, get the poll interval and maybe an offer.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/check-in",
    tag = "device",
    params(("id" = inline(crate::domain::schemas::DeviceIdName), Path, description = "Device id")),
    request_body(content = fota_protocol::messages::CheckIn, content_type = "application/json"),
    responses(
        (status = 200, description = "The poll interval and, if the device is in a rollout's current cohort, an offer", body = fota_protocol::messages::CheckInResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Unknown device or wrong token", body = ErrorBody),
        (status = 409, description = "Reported model differs from the provisioned one", body = ErrorBody),
        (status = 503, description = "The database is unavailable and this device's credentials are not cached; retry after Retry-After seconds", body = ErrorBody),
    ),
    security(("device_token" = []))
)]
pub(super) async fn check_in(
    State(state): State<Arc<AppState>>,
    Device { id, creds }: Device,
    req: axum::extract::Request,
) -> Result<axum::Json<CheckInResponse>, ApiError> {
    let check_in: CheckIn = parse_body(req).await?;
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
    let view = DeviceView {
        id: &id,
        model: &creds.model,
        tags: &creds.tags,
        check_in: &check_in,
    };
    let offer = match state.engine.check_in(&state.store, &view).await {
        Ok(offer) => offer,
        // The database is away: the device is still answered from memory (its credentials were
        // cached, its facts wait in the buffer), only without an offer. An offer is made, or
        // a check-in's progress recorded, by a database write that did not happen, so offers
        // pause until it returns and the device's next check-in does what this one could not.
        Err(StoreError::Unavailable(cause)) => {
            tracing::debug!(device = %id, error = %cause, "check-in answered without the database");
            state.metrics.check_ins_without_database.inc();
            None
        }
        Err(e) => return Err(e.into()),
    };
    state.metrics.check_ins.inc();
    let poll_interval_s = u32::try_from(state.config.poll_interval.as_secs()).unwrap_or(u32::MAX);
    Ok(axum::Json(CheckInResponse {
        poll_interval_s,
        offer,
    }))
}
