//! `GET /v1/rollouts`: rollouts, newest first, optionally in one state.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ApiQuery, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::RolloutState;
use axum::extract::State;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

/// Filter for the rollout list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RolloutQuery {
    /// Only rollouts in this state.
    #[param(value_type = Option<crate::domain::schemas::RolloutStateName>, inline)]
    pub state: Option<String>,
}

/// List rollouts, newest first.
#[utoipa::path(
    get,
    path = "/v1/rollouts",
    tag = "rollouts",
    params(RolloutQuery),
    responses((status = 200, body = RolloutList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub(super) async fn list_rollouts(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<RolloutQuery>,
) -> Result<axum::Json<RolloutList>, ApiError> {
    admin.require(Role::Viewer)?;
    let filter: Vec<RolloutState> =
        match q.state.as_deref() {
            None => Vec::new(),
            Some(s) => vec![s.parse().map_err(
                |e: crate::domain::rollout_state::UnknownRolloutState| {
                    ApiError::bad_request("invalid_query", e.to_string())
                },
            )?],
        };
    let mut rollouts = Vec::new();
    for r in state.store.list_rollouts(&filter).await? {
        rollouts.push(status_of(&state, &r).await?);
    }
    Ok(axum::Json(RolloutList { rollouts }))
}
