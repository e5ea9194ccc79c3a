//! The HTTP API, split by who calls it; one route table ([`router`]).
//!
//! - [`device`]: what devices call (check-in, reports), each with its own device token.
//! - [`admin`]: what operators call with an admin token: devices, releases, rollouts (one file
//!   per action) and the audit log.
//! - [`open`]: what anyone may call: artifacts (content-addressed images with Range), health,
//!   readiness, metrics.
//! - [`mqtt`]: the devices' other transport, through a broker: nudges and stops pushed to
//!   them, reports taken from them, their broker accounts.
//! - [`dashboard`]: the web page at `/` (embedded assets), `GET /v1/whoami` and a rollout's
//!   live event stream.
//! - [`state`]: [`AppState`], what every handler shares; [`auth`]: who is calling (the
//!   [`auth::Admin`] extractor, device authentication); [`error`]: [`ApiError`], the stable
//!   codes, and how every rule's error maps to one.
//!
//! Handlers translate between HTTP and the layers below: business rules live in
//! [`crate::rollout`] and [`crate::domain`], never here.
//!
//! The OpenAPI document at `/openapi.json` is generated from the same route table
//! (utoipa-axum), so it cannot list a route the server does not have or miss one it has.

pub mod admin;
pub mod auth;
pub mod credentials;
pub mod dashboard;
pub mod device;
pub mod error;
pub mod live;
pub mod mqtt;
pub mod open;
pub mod openapi;
pub mod request_id;
pub mod state;

pub use state::AppState;

use crate::metrics::RequestLabels;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::{ApiError, ErrorBody};
use std::sync::Arc;
use std::time::Instant;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

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
        .merge(admin::routes())
        .merge(open::routes())
        .merge(dashboard::routes())
        .split_for_parts();
    let api = api.merge(dashboard::pages());
    let mut openapi = openapi;
    openapi::add_shared_refusals(&mut openapi);
    let openapi = Arc::new(openapi);
    let routes = api
        .route(
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
        });
    layered(routes, state)
}

/// `routes` under what every request goes through, outermost first: [`edge`], a panic answered
/// 500 ([`panicked`]), every refusal as JSON ([`json_errors`]), the body limit.
fn layered(routes: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    routes
        .layer(axum::extract::DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::map_response(json_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// Every refusal answers the one JSON shape, the framework's own included: a body over its
/// route's limit, an extractor's rejection, anything else that is not already JSON. The status
/// and headers (`Allow`, `Retry-After`) stay; the code follows the status; the framework's text
/// becomes the message. Handlers' own errors are [`ApiError`]s and pass through untouched.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The framework's rejection texts are one short line; anything longer is cut.
    let text = axum::body::to_bytes(body, 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = error::code_for_status(status);
    let message = match status {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_string(),
        _ => text,
    };
    let mut json = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// A handler that panicked answers 500 `internal` (the panic goes to the log) instead of
/// dropping the connection without an answer.
fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = cause
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    ApiError::internal(format!("handler panicked: {what}")).into_response()
}

/// Body limit for ordinary JSON requests. Bulk provisioning and release uploads raise it on
/// their own routes.
pub const JSON_BODY_LIMIT: usize = 256 * 1024;

/// Most header bytes a request may carry. The connection layer cuts a head off at
/// [`crate::transport::MAX_HEAD_BUFFER`] (128 KB); this answers anything past a generous 16 KB
/// with a JSON 431 first.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Whether a route is the admin API's (not the devices', not artifacts, not operations).
fn is_operator_route(route: &str) -> bool {
    route.starts_with("/v1/")
        && !route.starts_with("/v1/artifacts/")
        && !route.ends_with("/check-in")
        && !route.ends_with("/reports")
}

/// What every request passes through first, in one middleware (each tower layer costs every
/// request a clone of the service under it and a boxed future, at 20,000 requests a second):
///
/// - its id ([`request_id`]): settled, in the error bodies of its answer, sent back;
/// - its trace span, with the id, around everything the request logs;
/// - headers over [`MAX_HEADER_BYTES`]: refused with a JSON 431 before anything reads them;
/// - a log line for an operator's refused call, and for every server error with its latency;
/// - the metrics: requests and latency by route, method and status, panics (answered 500 by
///   the layer under this one) and 431s included.
async fn edge(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let (id, value) = request_id::settle(&mut req);
    let span = request_id::span(&req);
    let route = state.metrics.routes.intern(
        req.extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str()),
    );
    let method = crate::metrics::Method::from(req.method());
    let started = Instant::now();
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let answer = async {
        let response = if header_bytes > MAX_HEADER_BYTES {
            ApiError::new(
                axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("request headers exceed {MAX_HEADER_BYTES} bytes"),
            )
            .into_response()
        } else {
            next.run(req).await
        };
        let status = response.status();
        // An operator's refused call is worth a log line (its span carries the request id the
        // CLI prints); devices' refusals are not, at their volume (the metrics count them).
        if status.is_client_error() && is_operator_route(&route.0) {
            tracing::info!(status = status.as_u16(), "request refused");
        }
        if status.is_server_error() {
            let latency_ms = started.elapsed().as_millis();
            tracing::error!(status = status.as_u16(), latency_ms, "response failed");
        }
        response
    };
    let mut response = request_id::scope(id, tracing::Instrument::instrument(answer, span)).await;
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
    response.headers_mut().insert(request_id::HEADER, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    const ID: &str = "9b2f8a4e-3c1d-4e5f-8a6b-7c8d9e0f1a2b";

    async fn state() -> (Arc<AppState>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::in_memory().await;
        let config = crate::config::ServeConfig::for_data_dir(dir.path());
        (Arc::new(AppState::new(store, config).unwrap()), dir)
    }

    /// A handler that panics is answered like any server error, under the edge: a JSON 500
    /// that names the request's id, the id sent back, and the request counted.
    #[tokio::test]
    async fn a_panic_is_a_json_500_with_the_request_id_and_is_counted() {
        let (state, _dir) = state().await;
        let routes = Router::new().route(
            "/v1/boom",
            axum::routing::get(|| async {
                if true {
                    panic!("boom");
                }
            }),
        );
        let app = layered(routes, state.clone());
        let resp = app
            .oneshot(
                Request::get("/v1/boom")
                    .header("x-request-id", ID)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()["x-request-id"], ID);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "internal", "{body}");
        assert_eq!(body["request_id"], ID, "{body}");
        let metrics = state.metrics.render();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("fota_http_requests_total")
                    && l.contains("route=\"/v1/boom\"")
                    && l.contains("status=\"500\"")
                    && l.ends_with(" 1")),
            "{metrics}"
        );
    }
}
