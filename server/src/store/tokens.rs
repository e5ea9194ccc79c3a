//! Admin tokens: roles, hashed at rest.

use super::db::{Store, StoreError};
use crate::domain::auth::Role;
use serde::Serialize;
use sqlx::Row as _;

/// A token as stored (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminTokenRecord {
    /// Id.
    pub id: i64,
    /// Who or what it is for.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Created at (Unix ms).
    pub created_at: i64,
}

impl Store {
    /// Store a new token's hash.
    pub async fn create_admin_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &[u8; 32],
        now: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash.to_vec())
        .bind(now)
        .fetch_one(self.pool()?)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// The live token with this hash.
    pub async fn admin_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<AdminTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(self.pool()?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Some(AdminTokenRecord {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: role
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("role {role:?}")))?,
            created_at: row.try_get("created_at")?,
        }))
    }

    /// Revoke a token by id.
    pub async fn revoke_admin_token(&self, id: i64, now: i64) -> Result<(), StoreError> {
        let n = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(self.pool()?)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("token {id}")));
        }
        Ok(())
    }
}
