//! Delta patches (issue 19): the patch that rebuilds a target image from a base image, its bytes
//! kept in `artifacts` like an image's (so every replica serves it), and the devices that gave a
//! rollout's patch up for the full image.

use super::artifacts::{delete_unreferenced_artifact, put_artifact};
use super::db::{Store, StoreError};
use fota_protocol::messages::Component;
use sqlx::Row;

/// A stored patch: its content address and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPatch {
    /// SHA-256 of the patch container, hex.
    pub sha256: String,
    /// Its length in bytes.
    pub size: i64,
}

/// One patch given up: rollout, device, when.
pub(super) const RECORD_FALLBACK_SQL: &str =
    "INSERT INTO patch_fallbacks (rollout_id, device_id, at) VALUES ($1, $2, $3) \
     ON CONFLICT (rollout_id, device_id) DO NOTHING";

/// Record, in a report's transaction, that these devices gave up rollouts' patches for the
/// full image: (rollout, device, when). Recording one twice changes nothing.
pub(super) async fn record_fallbacks(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[(i64, &str, i64)],
) -> Result<(), StoreError> {
    for (rollout, device, at) in rows {
        sqlx::query(RECORD_FALLBACK_SQL)
            .bind(*rollout)
            .bind(*device)
            .bind(*at)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Delete, in a release deletion's transaction, the patches from or to the image `sha256`;
/// returns the patch artifacts nothing references any more (deleted too), whose files the
/// caller removes.
pub(super) async fn delete_for_image(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sha256: &str,
) -> Result<Vec<String>, StoreError> {
    let patches: Vec<String> = sqlx::query(
        "DELETE FROM patches WHERE base_sha256 = $1 OR target_sha256 = $1 RETURNING patch_sha256",
    )
    .bind(sha256)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.try_get("patch_sha256"))
    .collect::<Result<_, _>>()?;
    let mut orphans = Vec::new();
    for patch in patches {
        if delete_unreferenced_artifact(tx, &patch).await? {
            orphans.push(patch);
        }
    }
    Ok(orphans)
}

impl Store {
    /// The patch from image `base` to image `target` (content addresses), if one was made.
    pub async fn patch(&self, base: &str, target: &str) -> Result<Option<StoredPatch>, StoreError> {
        let row = sqlx::query(
            "SELECT patch_sha256, size FROM patches WHERE base_sha256 = $1 AND target_sha256 = $2",
        )
        .bind(base)
        .bind(target)
        .fetch_optional(self.reader()?)
        .await?;
        row.map(|r| {
            Ok(StoredPatch {
                sha256: r.try_get("patch_sha256")?,
                size: r.try_get("size")?,
            })
        })
        .transpose()
    }

    /// Store the patch `bytes` (whose address is `sha256`) from `base` to `target`: its bytes as
    /// an artifact and the pair's row, in one transaction. Storing a pair again (another
    /// replica made it meanwhile) keeps the first; returns what is stored.
    pub async fn put_patch(
        &self,
        base: &str,
        target: &str,
        sha256: &str,
        bytes: &[u8],
        now: i64,
    ) -> Result<StoredPatch, StoreError> {
        let size = i64::try_from(bytes.len())
            .map_err(|_| StoreError::Corrupt("a patch longer than i64".into()))?;
        let mut tx = self.pool()?.begin().await?;
        put_artifact(&mut tx, sha256, size, bytes, now).await?;
        sqlx::query(
            "INSERT INTO patches (base_sha256, target_sha256, patch_sha256, size, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (base_sha256, target_sha256) DO NOTHING",
        )
        .bind(base)
        .bind(target)
        .bind(sha256)
        .bind(size)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.patch(base, target)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("patch {base} -> {target} not stored")))
    }

    /// Whether device `device` gave up rollout `rollout`'s patch for the full image.
    pub async fn patch_fell_back(&self, rollout: i64, device: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM patch_fallbacks WHERE rollout_id = $1 AND device_id = $2",
        )
        .bind(rollout)
        .bind(device)
        .fetch_optional(self.reader()?)
        .await?
        .is_some())
    }

    /// The image of every release of a model's component, as (version, slot, sha256): the base
    /// a device running one of them has in its running slot.
    pub async fn release_images_of(
        &self,
        model: &str,
        component: Component,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.version AS version, i.slot AS slot, i.sha256 AS sha256 \
             FROM releases r JOIN release_images i ON i.release_id = r.id \
             WHERE r.model = $1 AND r.component = $2",
        )
        .bind(model)
        .bind(component.name())
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("version")?,
                    r.try_get("slot")?,
                    r.try_get("sha256")?,
                ))
            })
            .collect()
    }
}
