//! Routes anyone may call, without a token: artifacts (signed images by content address; the
//! signature, not the transport, is what a device trusts), and health, readiness and metrics
//! for operations.

pub mod artifacts;
pub mod health;

use crate::api::state::AppState;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(artifacts::routes())
        .merge(health::routes())
}
