//! Operability: liveness, readiness, Prometheus metrics.

use crate::api::error::ErrorBody;
use crate::api::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Health answer.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// With MQTT configured: `up` or `down` (HTTP keeps serving either way; devices poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        mqtt: None,
    })
}

/// Readiness: the database answers. Read from the health monitor, which pings it several times
/// a second, so this answers at once and changes within a second of an outage or a return.
/// With MQTT configured it also says whether the broker link is up; a broker outage does not
/// make the server unready (HTTP serves devices without it).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Database unreachable (with Retry-After)", body = ErrorBody),
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.store.is_up() {
        axum::Json(Health {
            status: "ok".into(),
            mqtt: state
                .mqtt
                .get()
                .map(|m| if m.is_up() { "up" } else { "down" }.to_string()),
        })
        .into_response()
    } else {
        crate::api::error::ApiError::database_unavailable().into_response()
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "OpenMetrics text format", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
