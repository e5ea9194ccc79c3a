//! `GET /v1/whoami`: the calling admin token's name and role.

use crate::api::auth::Admin;
use crate::api::error::{ApiError, ErrorBody};
use crate::domain::auth::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who an admin token is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The token's name (the actor in the audit log).
    pub name: String,
    /// Its role: `viewer`, `operator` or `admin`.
    pub role: Role,
}

/// The calling token's name and role: what the dashboard offers it (the API decides anyway).
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "admin",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub(super) async fn whoami(admin: Admin) -> Result<axum::Json<WhoAmI>, ApiError> {
    Ok(axum::Json(WhoAmI {
        name: admin.name,
        role: admin.role,
    }))
}
