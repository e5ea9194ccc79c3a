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

/// Each active rollout's gate figures, as the gate sees them now. A database that does not
/// answer leaves the gauges empty rather than failing the scrape.
async fn refresh_rollout_health(state: &AppState) {
    use crate::metrics::{RolloutLabels, RolloutSideLabels};
    let m = &state.metrics;
    m.rollout_reset_rate.clear();
    m.rollout_reset_limit.clear();
    m.rollout_failure_rate.clear();
    let Ok(active) = state
        .store
        .list_rollouts(&[crate::domain::RolloutState::Active])
        .await
    else {
        return;
    };
    for r in active {
        let Ok(Some(a)) = crate::rollout::engine::assess(&state.store, &r, true).await else {
            continue;
        };
        let Some(stage) = a.stages.get(r.current_stage as usize) else {
            continue;
        };
        let gate = crate::rollout::engine::gate_of(stage);
        let side = |side| RolloutSideLabels {
            rollout: r.id,
            side,
        };
        m.rollout_failure_rate
            .get_or_create(&side("observed"))
            .set(a.whole.gate_rate(a.halt_min_sample));
        m.rollout_failure_rate
            .get_or_create(&side("limit"))
            .set(f64::from(gate.max_failure_ppm) / 1e6);
        m.rollout_reset_limit
            .get_or_create(&RolloutLabels { rollout: r.id })
            .set(f64::from(gate.max_reset_ratio_pct) / 100.0);
        if let Some(f) = &a.resets {
            m.rollout_reset_rate
                .get_or_create(&side("new"))
                .set(f.new_rate());
            if f.base_rate().is_finite() {
                m.rollout_reset_rate
                    .get_or_create(&side("baseline"))
                    .set(f.base_rate());
            }
        }
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
    refresh_rollout_health(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
