//! The dashboard `fota serve` shows at `/`: one HTML page, a script and a style sheet, all
//! embedded in the binary (no CDN, no front-end build: it works on an air-gapped network), and
//! the two routes only it needs.
//!
//! - [`assets`]: `GET /`, `/dashboard/app.js`, `/dashboard/app.css`. The page asks for an admin
//!   token, keeps it in the tab's `sessionStorage` and sends it as `Authorization: Bearer` on
//!   every call to the admin API, which enforces the roles as it does for the CLI: the page
//!   hides what a role may not do, the API refuses it anyway.
//! - [`whoami`]: `GET /v1/whoami`, the calling token's name and role (what the page offers).
//! - [`events`]: `GET /v1/rollouts/{id}/events`, a rollout's status as server-sent events,
//!   pushed when the engine changes it ([`crate::rollout::Engine::subscribe`]), not polled.
//!   The page reads it with `fetch()` so the token travels in a header, never in a URL. It is
//!   not in `/openapi.json` (a stream that never ends is not something a conformance fuzzer
//!   can call).
//! - [`timeline`]: `GET /v1/rollouts/{id}/timeline`, a rollout's confirmations and failures
//!   over time (the chart), from one grouped read.

pub mod assets;
pub mod events;
pub mod timeline;
pub mod whoami;

use crate::api::state::AppState;
use axum::Router;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The dashboard's API routes that belong in the API document.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(whoami::whoami))
        .routes(routes!(timeline::rollout_timeline))
}

/// The page, its assets and the event stream (outside the API document).
pub(super) fn pages() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", axum::routing::get(assets::index))
        .route("/dashboard/app.js", axum::routing::get(assets::script))
        .route("/dashboard/app.css", axum::routing::get(assets::style))
        .route(
            "/v1/rollouts/{id}/events",
            axum::routing::get(events::rollout_events),
        )
}
