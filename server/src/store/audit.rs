//! The audit log: every operator action and automatic decision, with who, when and why.
//! Entries are written in the transaction of the change itself ([`insert_audit`]): a rollout
//! change that lost a race leaves no entry, and no release, device batch or admin token is
//! created or removed without one. The entries of the actions outside rollouts are made here,
//! one constructor each, so their wording is in one place: what an operator reads in `fota
//! audit`, and never a secret.

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
    /// Token name; `local:<user>` for `fota token` run on the server's machine; `fota` for
    /// automatic decisions.
    pub actor: String,
    /// What, e.g. `rollout.create`, `rollout.halt`, `rollout.advance`, `release.upload`,
    /// `release.delete`, `devices.register`, `token.create`, `token.revoke`.
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

/// Audit action: a release uploaded.
pub const RELEASE_UPLOAD: &str = "release.upload";
/// Audit action: a release deleted.
pub const RELEASE_DELETE: &str = "release.delete";
/// Audit action: devices provisioned (one request, one or many devices).
pub const DEVICES_REGISTER: &str = "devices.register";
/// Audit action: an admin token created.
pub const TOKEN_CREATE: &str = "token.create";
/// Audit action: an admin token revoked.
pub const TOKEN_REVOKE: &str = "token.revoke";

/// A release's images as audit detail: `artifact_sha256_<slot>` (the file's SHA-256, its
/// address under `/v1/artifacts/`), one key per slot.
fn release_detail<'a>(
    model: &str,
    version: &str,
    security_counter: i64,
    images: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> serde_json::Value {
    let mut detail = serde_json::json!({
        "model": model,
        "version": version,
        "security_counter": security_counter,
    });
    for (slot, sha256) in images {
        detail[format!("artifact_sha256_{slot}")] = sha256.into();
    }
    detail
}

impl AuditEntry {
    /// `release.upload`: model, version, security counter and each slot's artifact SHA-256.
    pub(super) fn release_uploaded(release_id: i64, new: &super::NewRelease, at: i64) -> Self {
        Self::new(
            &new.created_by,
            RELEASE_UPLOAD,
            None,
            Some(release_id),
            release_detail(
                &new.model,
                &new.version.to_string(),
                i64::from(new.security_counter),
                new.images
                    .iter()
                    .map(|i| (i.slot.as_str(), i.sha256.as_str())),
            ),
            at,
        )
    }

    /// `release.delete`: what the release was (model, version, artifacts).
    pub(super) fn release_deleted(
        actor: &str,
        release_id: i64,
        model: &str,
        version: &str,
        security_counter: i64,
        images: &[(String, String)],
        at: i64,
    ) -> Self {
        Self::new(
            actor,
            RELEASE_DELETE,
            None,
            Some(release_id),
            release_detail(
                model,
                version,
                security_counter,
                images
                    .iter()
                    .map(|(slot, sha)| (slot.as_str(), sha.as_str())),
            ),
            at,
        )
    }

    /// `devices.register`: how many, and which: the device (with its model and tags) when one,
    /// the models and the first and last id of the request when many.
    pub(super) fn devices_registered(actor: &str, devices: &[super::NewDevice], at: i64) -> Self {
        let detail = match devices {
            [one] => serde_json::json!({
                "count": 1,
                "device": one.id,
                "model": one.model,
                "tags": one.tags,
            }),
            many => {
                let models: std::collections::BTreeSet<&str> =
                    many.iter().map(|d| d.model.as_str()).collect();
                serde_json::json!({
                    "count": many.len(),
                    "models": models,
                    "first_device": many.first().map(|d| d.id.as_str()),
                    "last_device": many.last().map(|d| d.id.as_str()),
                })
            }
        };
        Self::new(actor, DEVICES_REGISTER, None, None, detail, at)
    }

    /// `token.create` / `token.revoke`: the token's id, name and role (never the secret, nor its
    /// hash).
    pub(super) fn token_changed(
        actor: &str,
        action: &str,
        token_id: i64,
        name: &str,
        role: crate::domain::auth::Role,
        at: i64,
    ) -> Self {
        Self::new(
            actor,
            action,
            None,
            None,
            serde_json::json!({ "token_id": token_id, "name": name, "role": role.as_str() }),
            at,
        )
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
        .fetch_all(self.reader()?)
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
