//! The audit log: every operator action and automatic decision, with who, when and why.
//! Entries of rollout changes are written in the transaction of the change itself
//! ([`insert_audit`]), so a change that lost a race leaves no entry.

use super::db::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Id (0 before it is stored).
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// Token name, or `fota` for automatic decisions.
    pub actor: String,
    /// What, e.g. `rollout.create`, `rollout.halt`, `rollout.advance`.
    pub action: String,
    /// Rollout concerned.
    pub rollout_id: Option<i64>,
    /// Release concerned.
    pub release_id: Option<i64>,
    /// Why and with what numbers.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// A new entry.
    pub fn new(
        actor: &str,
        action: &str,
        rollout_id: Option<i64>,
        release_id: Option<i64>,
        detail: serde_json::Value,
        at: i64,
    ) -> Self {
        Self {
            id: 0,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            rollout_id,
            release_id,
            detail,
        }
    }
}

impl Store {
    /// Record an audit entry on its own.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool()?.begin().await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit entries, newest first, optionally for one rollout.
    pub async fn audit_log(
        &self,
        rollout_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, rollout_id, release_id, detail FROM audit_log \
             WHERE ($1 IS NULL OR rollout_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(rollout_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    rollout_id: r.try_get("rollout_id")?,
                    release_id: r.try_get("release_id")?,
                    detail: {
                        let text: String = r.try_get("detail")?;
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                    },
                })
            })
            .collect()
    }
}

/// Write an entry inside a transaction.
pub(super) async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, rollout_id, release_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.at)
    .bind(e.actor.as_str())
    .bind(e.action.as_str())
    .bind(e.rollout_id)
    .bind(e.release_id)
    .bind(e.detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
