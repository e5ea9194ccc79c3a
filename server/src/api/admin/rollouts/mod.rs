//! Rollouts, one file per action: start ([`start`]), fleet rollback ([`rollback`]), list, show,
//! and the operator's pause / resume / abort / approve. Every rule of a start lives in
//! [`crate::rollout::launch`] and of an operator action in [`crate::rollout::control`]; the
//! handlers translate. `views` holds the JSON bodies and `status_of`, the answer every one of
//! them builds from a stored rollout.

pub mod abort;
pub mod approve;
pub mod list;
pub mod pause;
pub mod resume;
pub mod rollback;
pub mod show;
pub mod start;

mod views;

use crate::api::state::AppState;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
pub(crate) use views::status_of;
pub use views::{
    GateStatus, ResetStatus, RolloutList, RolloutStatus, StageResetStatus, StageStatus,
    StartRollback, StartRollout,
};

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(start::start_rollout, list::list_rollouts))
        .routes(routes!(show::get_rollout))
        .routes(routes!(pause::pause_rollout))
        .routes(routes!(resume::resume_rollout))
        .routes(routes!(abort::abort_rollout))
        .routes(routes!(approve::approve_rollout))
        .routes(routes!(rollback::start_rollback))
}
