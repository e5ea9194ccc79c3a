//! `POST /v1/devices/{id}/revoke`: a device's token stops working (a stolen or scrapped unit).

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiPath, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::names;
use crate::store::{now_ms, StoreError};
use axum::extract::State;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// A revoked device.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Revoked {
    /// Its id.
    pub id: String,
    /// Whether its broker account was deleted too (`null` without MQTT provisioning).
    pub broker_account_deleted: Option<bool>,
}

/// Revoke a device: its token no longer authenticates (at once on this replica, within 30 s on
/// the others), its MQTT reports are no longer taken, its broker account is deleted. Its row
/// and history stay. Audited.
#[utoipa::path(
    post,
    path = "/v1/devices/{id}/revoke",
    tag = "devices",
    params(("id" = inline(crate::domain::schemas::DeviceIdName), Path, description = "Device id")),
    responses(
        (status = 200, body = Revoked),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 409, description = "Revoked already", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn revoke_device(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Revoked>, ApiError> {
    admin.require(Role::Operator)?;
    names::device_id(&id)?;
    let revoked = state
        .store
        .revoke_device(&id, &admin.name, now_ms())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => {
                ApiError::not_found("device_not_found", format!("no device {id}"))
            }
            other => other.into(),
        })?;
    if !revoked {
        return Err(ApiError::conflict(
            "device_revoked",
            format!("device {id} is revoked already"),
        ));
    }
    state.credentials.revoked(&id);
    let broker_account_deleted = match state.mqtt.get().filter(|b| b.provisions()) {
        Some(broker) => Some(match broker.delete_account(&id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(device = %id, error = %e, "revoked, but its broker account could not be deleted: its reports are refused by the server all the same");
                false
            }
        }),
        None => None,
    };
    tracing::info!(actor = %admin.name, device = %id, "device revoked");
    Ok(axum::Json(Revoked {
        id,
        broker_account_deleted,
    }))
}
