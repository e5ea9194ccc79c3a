//! Admin tokens: roles, hashed at rest. Creating and revoking one is audited in the same
//! transaction.

use super::audit::{insert_audit, AuditEntry, TOKEN_CREATE, TOKEN_REVOKE};
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
    /// Store a new token's hash, with its `token.create` audit entry by `actor` (who made it:
    /// `fota token create` on the server's machine records the local user). Returns its id.
    pub async fn create_admin_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &[u8; 32],
        actor: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        let row = sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(token_hash.to_vec())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let entry = AuditEntry::token_changed(actor, TOKEN_CREATE, id, name, role, now);
        insert_audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(id)
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
        .fetch_optional(self.reader()?)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Revoke a live token by id, with its `token.revoke` audit entry by `actor`. Returns the
    /// token revoked.
    pub async fn revoke_admin_token(
        &self,
        id: i64,
        actor: &str,
        now: i64,
    ) -> Result<AdminTokenRecord, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        let row = sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
             RETURNING id, name, role, created_at",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
        let token = token_from_row(&row)?;
        let entry =
            AuditEntry::token_changed(actor, TOKEN_REVOKE, token.id, &token.name, token.role, now);
        insert_audit(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(token)
    }
}

fn token_from_row(row: &sqlx::any::AnyRow) -> Result<AdminTokenRecord, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(AdminTokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("role {role:?}")))?,
        created_at: row.try_get("created_at")?,
    })
}
