//! What operators call, each with an admin token whose role the handler requires: devices,
//! releases, rollouts (one file per action) and the audit log.

pub mod audit;
pub mod devices;
pub mod releases;
pub mod rollouts;

use crate::api::state::AppState;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(devices::routes())
        .merge(releases::routes())
        .merge(rollouts::routes())
        .merge(audit::routes())
}
