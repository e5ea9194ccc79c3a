//! The `artifacts` table: content-addressed bytes (release images and delta patches), stored
//! once per address and deleted once nothing refers to them. Used by [`super::releases`] and
//! [`super::patches`] alike.

use super::db::StoreError;

/// Store an artifact's bytes under their address `sha256`. Same address, same bytes: an existing
/// row only gains its bytes if it had none.
pub(super) async fn put_artifact(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sha256: &str,
    size: i64,
    bytes: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO artifacts (sha256, size, created_at, bytes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sha256) DO UPDATE SET bytes = COALESCE(artifacts.bytes, excluded.bytes)",
    )
    .bind(sha256)
    .bind(size)
    .bind(now)
    .bind(bytes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Delete the artifact `sha256` unless a release image or a delta patch still is it; whether
/// it went (its file is then the caller's to remove).
pub(super) async fn delete_unreferenced_artifact(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sha256: &str,
) -> Result<bool, StoreError> {
    let removed = sqlx::query(
        "DELETE FROM artifacts WHERE sha256 = $1 \
         AND NOT EXISTS (SELECT 1 FROM release_images WHERE sha256 = $1) \
         AND NOT EXISTS (SELECT 1 FROM patches WHERE patch_sha256 = $1)",
    )
    .bind(sha256)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(removed > 0)
}
