//! Credentials: admin tokens (roles viewer < operator < admin) and per-device tokens, both random
//! 256-bit secrets stored only as SHA-256 hashes.
//!
//! A plain SHA-256 is the right hash here: the secrets are 256 random bits, so there is nothing
//! to brute-force and a slow password hash would only slow every check-in down.

use crate::api::AppState;
use crate::error::ApiError;
use crate::store::Role;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Prefix of admin tokens, so a leaked one is recognisable in logs and scanners.
pub const ADMIN_TOKEN_PREFIX: &str = "fota_adm_";
/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "fota_dev_";

/// A new random secret with `prefix`, 64 hex digits after it.
pub fn new_token(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// What is stored for a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compare two hashes without an early exit.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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
        if self.role >= role {
            Ok(self)
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {} role; the token has {}",
                role.as_str(),
                self.role.as_str()
            )))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let a = new_token(DEVICE_TOKEN_PREFIX).unwrap();
        let b = new_token(DEVICE_TOKEN_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(DEVICE_TOKEN_PREFIX));
        assert_eq!(a.len(), DEVICE_TOKEN_PREFIX.len() + 64);
        assert!(hashes_equal(&token_hash(&a), &token_hash(&a)));
        assert!(!hashes_equal(&token_hash(&a), &token_hash(&b)));
        assert!(!hashes_equal(&[1, 2], &[1]));
    }

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
