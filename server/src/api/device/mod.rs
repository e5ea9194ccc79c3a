//! What devices call: check-in and reports, each authenticated by the device's own token and
//! bound to the device id in the path, so a device can only ever act as itself.
//!
//! The check-in path does no database write: credentials come from a cache after the first
//! check-in and the reported facts go to the [`FactsBuffer`](crate::facts::FactsBuffer). Reports
//! are different: an event is acknowledged only once it is stored.

pub mod check_in;
pub mod reports;

mod body;

use crate::api::state::AppState;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(check_in::check_in))
        .routes(routes!(reports::report))
}
