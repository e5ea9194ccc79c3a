//! `GET /v1/audit`: the audit log, every operator action and automatic decision.

use crate::api::auth::Admin;
use crate::api::error::{page_limit, ApiError, ApiQuery, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::store::AuditEntry;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(audit_log))
}

/// Filter for the audit log.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries about this rollout.
    pub rollout_id: Option<i64>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// Every operator action and automatic decision, with who, when and why.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "rollouts",
    params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn audit_log(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<AuditLog>, ApiError> {
    admin.require(Role::Viewer)?;
    let limit = page_limit(q.limit)?;
    let entries = state.store.audit_log(q.rollout_id, limit).await?;
    Ok(axum::Json(AuditLog { entries }))
}
