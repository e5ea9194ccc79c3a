//! The HTTP API: one module per resource, one route table ([`router`]), the shared state.
//!
//! - [`device`]: what devices call (check-in, reports), authenticated by their own token.
//! - [`devices`]: provisioning and fleet views, for operators.
//! - [`releases`]: upload (verified against the trusted keys), list, get, delete.
//! - [`rollouts`]: staged rollouts, rollbacks, pause/resume/abort/approve, the audit log.
//! - [`artifacts`]: content-addressed image downloads with Range.
//! - [`ops`]: health, readiness, metrics.
//!
//! The OpenAPI document at `/openapi.json` is generated from the same route table
//! (utoipa-axum), so it cannot list a route the server does not have or miss one it has.

pub mod artifacts;
pub mod auth;
pub mod device;
pub mod devices;
pub mod error;
pub mod ops;
pub mod releases;
pub mod rollouts;

use crate::artifacts::ArtifactStore;
use crate::config::ServeConfig;
use crate::facts::FactsBuffer;
use crate::metrics::{Metrics, RequestLabels};
use crate::store::{now_ms, Store};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use dashmap::DashMap;
use error::{ApiError, ErrorBody};
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Resolved configuration.
    pub config: ServeConfig,
    /// Image files.
    pub artifacts: ArtifactStore,
    /// Check-in facts waiting for the flusher.
    pub facts: FactsBuffer,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Device credentials seen so far (id -> token hash, model): check-ins skip the database.
    pub device_cache: DashMap<String, Arc<auth::DeviceCredentials>>,
    /// The rollout engine.
    pub engine: crate::rollout::Engine,
}

impl AppState {
    /// State over an open store.
    pub fn new(store: Store, config: ServeConfig) -> std::io::Result<Self> {
        let artifacts = ArtifactStore::open(config.data_dir.join("artifacts"))?;
        Ok(Self {
            store,
            config,
            artifacts,
            facts: FactsBuffer::default(),
            metrics: Metrics::new(),
            device_cache: DashMap::new(),
            engine: crate::rollout::Engine::default(),
        })
    }

    /// Devices not heard from since this instant (Unix ms) count as silent.
    pub fn stale_before(&self) -> i64 {
        let two_polls = i64::try_from(self.config.poll_interval.as_millis().saturating_mul(2))
            .unwrap_or(i64::MAX);
        now_ms().saturating_sub(two_polls)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fota",
        description = "Fleet firmware over the air: devices, releases, artifacts.",
        version = "1"
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin_token", "device_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The whole application: routes, OpenAPI, limits, metrics, JSON fallbacks.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(device::routes())
        .merge(devices::routes())
        .merge(releases::routes())
        .merge(rollouts::routes())
        .merge(artifacts::routes())
        .merge(ops::routes())
        .split_for_parts();
    let openapi = Arc::new(openapi);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = openapi.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .fallback(|| async { ApiError::not_found("no_route", "no such route").into_response() })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
        .into_response()
    })
    .layer(axum::middleware::from_fn(limit_headers))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        record_request,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT))
    .layer(tower_http::trace::TraceLayer::new_for_http())
    .with_state(state)
}

/// Body limit for ordinary JSON requests. Bulk provisioning and release uploads raise it on
/// their own routes.
pub const JSON_BODY_LIMIT: usize = 256 * 1024;

/// Most header bytes a request may carry. hyper itself cuts a connection off near 400 KB; this
/// answers anything past a generous 16 KB with a JSON 431 instead.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

async fn limit_headers(req: Request, next: Next) -> Response {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        return ApiError::new(
            axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn record_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = state.metrics.routes.intern(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str()),
    );
    let method = crate::metrics::Method::from(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .request_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
