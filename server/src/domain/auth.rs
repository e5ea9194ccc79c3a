//! Credentials: admin token roles (viewer < operator < admin) and the secrets of admin and
//! device tokens, random 256-bit values stored only as SHA-256 hashes.
//!
//! A plain SHA-256 is the right hash here: the secrets are 256 random bits, so there is nothing
//! to brute-force and a slow password hash would only slow every check-in down.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Prefix of admin tokens, so a leaked one is recognisable in logs and scanners.
pub const ADMIN_TOKEN_PREFIX: &str = "fota_adm_";
/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "fota_dev_";

/// What an admin token may do. Each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read the fleet, releases and rollouts.
    Viewer,
    /// Also upload releases, provision devices, start and steer rollouts.
    Operator,
    /// Also delete releases and manage tokens.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Refuse unless this role includes `needed`.
    pub fn require(self, needed: Role) -> Result<(), Forbidden> {
        if self >= needed {
            Ok(())
        } else {
            Err(Forbidden { needed, held: self })
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (viewer, operator or admin)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A token whose role does not include the one an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this needs the {} role; the token has {}", .needed.as_str(), .held.as_str())]
pub struct Forbidden {
    /// The role the action needs.
    pub needed: Role,
    /// The token's role.
    pub held: Role,
}

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
    fn roles_are_ordered_and_named() {
        assert!(Role::Viewer.require(Role::Viewer).is_ok());
        let refused = Role::Viewer.require(Role::Operator).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "this needs the operator role; the token has viewer"
        );
        assert!(Role::Admin.require(Role::Operator).is_ok());
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("emperor".parse::<Role>().is_err());
    }
}
