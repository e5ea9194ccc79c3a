//! Who is calling: the bearer token of a request, the [`Admin`] extractor (a live admin token
//! and its role), and [`Device`] (a device's own token, bound to the id in the
//! path). The secrets, their hashes and the roles are [`crate::domain::auth`]'s.

use super::credentials::DeviceCredentials;
use super::error::ApiError;
use super::state::AppState;
use crate::domain::auth::{hashes_equal, token_hash, Role, ADMIN_TOKEN_PREFIX};
use crate::domain::names;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::sync::Arc;

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// An authenticated operator. Extracting it requires a live admin token; handlers then call
/// [`require`](Self::require) with the role they need.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token's name (recorded as the actor in releases and the audit log).
    pub name: String,
    /// The token's role.
    pub role: Role,
}

impl Admin {
    /// Refuse with 403 unless the token's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<&Self, ApiError> {
        self.role.require(role)?;
        Ok(self)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        if !token.starts_with(ADMIN_TOKEN_PREFIX) {
            return Err(ApiError::unauthorized());
        }
        let record = state
            .store
            .admin_token(&token_hash(token))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Admin {
            name: record.name,
            role: record.role,
        })
    }
}

/// A device that proved it is the one in the path (`/v1/devices/{id}/...`). As an extractor
/// it runs before the body is read: a stranger's body is never read, whatever its size (401,
/// not 413, and no memory held for it).
#[derive(Debug, Clone)]
pub struct Device {
    /// Its id, from the path.
    pub id: String,
    /// Its cached credentials (model, tags).
    pub creds: Arc<DeviceCredentials>,
}

impl FromRequestParts<Arc<AppState>> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let super::error::ApiPath(id) =
            super::error::ApiPath::<String>::from_request_parts(parts, state).await?;
        let creds = authenticate_device(state, &id, &parts.headers).await?;
        Ok(Self { id, creds })
    }
}

/// Check the bearer token against device `id`'s; the same 401 for unknown devices and wrong
/// tokens, so the endpoint does not reveal which ids exist. Credentials are cached after the
/// first check-in, so a check-in reads no database.
async fn authenticate_device(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<Arc<DeviceCredentials>, ApiError> {
    names::device_id(id)?;
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let creds = state
        .credentials
        .get(&state.store, id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if !hashes_equal(&creds.token_hash, &token_hash(token)) {
        return Err(ApiError::unauthorized());
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn roles_are_ordered() {
        let viewer = Admin {
            name: "v".into(),
            role: Role::Viewer,
        };
        assert!(viewer.require(Role::Viewer).is_ok());
        assert_eq!(viewer.require(Role::Operator).unwrap_err().status, 403);
        let admin = Admin {
            name: "a".into(),
            role: Role::Admin,
        };
        assert!(admin.require(Role::Operator).is_ok());
    }
}
