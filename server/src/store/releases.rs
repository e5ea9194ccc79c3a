//! Releases and the content-addressed artifacts their images are stored as.

use super::artifacts::{delete_unreferenced_artifact, put_artifact};
use super::audit::{insert_audit, AuditEntry};
use super::db::{is_unique_violation, Store, StoreError};
use crate::domain::version::version_key;
use fota_protocol::messages::Component;
use fota_protocol::ImageVersion;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row as _;

/// One signed image of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReleaseImage {
    /// `a` or `b`: the slot it is linked for.
    pub slot: String,
    /// SHA-256 of the whole image file: its artifact address.
    pub sha256: String,
    /// Size in bytes.
    pub size: i64,
    /// Hash of the key that signed it.
    pub key_hash: String,
}

/// A release to create.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// Hardware model.
    pub model: String,
    /// Version (from the images' headers).
    pub version: ImageVersion,
    /// What its images are: the application, or a stage-1 bootloader (from their COMPONENT
    /// TLV). A component's versions are a series of their own.
    pub component: Component,
    /// Security counter (from the images' SEC_CNT).
    pub security_counter: u32,
    /// Operator's notes.
    pub notes: String,
    /// Name of the token that uploaded it.
    pub created_by: String,
    /// One image per slot.
    pub images: Vec<ReleaseImage>,
    /// The images' bytes, in the order of `images`: stored with the release, so every replica
    /// can serve them whichever one took the upload.
    pub image_bytes: Vec<Vec<u8>>,
}

/// A stored release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReleaseRecord {
    /// Id.
    pub id: i64,
    /// Hardware model.
    pub model: String,
    /// Version.
    pub version: String,
    /// The application, or the stage-1 bootloader (absent in answers of servers before
    /// bootloader releases: an application).
    #[serde(default)]
    pub component: Component,
    /// Security counter.
    pub security_counter: i64,
    /// Notes.
    pub notes: String,
    /// Created at (Unix ms).
    pub created_at: i64,
    /// Token name that uploaded it.
    pub created_by: String,
    /// Its images, slot A first.
    pub images: Vec<ReleaseImage>,
}

fn release_from_row(r: &AnyRow) -> Result<ReleaseRecord, sqlx::Error> {
    Ok(ReleaseRecord {
        id: r.try_get("id")?,
        model: r.try_get("model")?,
        version: r.try_get("version")?,
        component: component_from_name(&r.try_get::<String, _>("component")?)?,
        security_counter: r.try_get("security_counter")?,
        notes: r.try_get("notes")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        images: Vec::new(),
    })
}

const RELEASE_COLUMNS: &str =
    "id, model, version, component, security_counter, notes, created_at, created_by";

/// The component a `releases.component` value names.
fn component_from_name(name: &str) -> Result<Component, sqlx::Error> {
    Component::from_name(name)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown release component {name:?}").into()))
}

impl Store {
    /// The security counter of every release of a model's component, by version: what a device
    /// running one holds at least (an application's floor is the application bootloader's; a
    /// stage-1's is stage-0's).
    pub async fn release_counters(
        &self,
        model: &str,
        component: Component,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, security_counter FROM releases WHERE model = $1 AND component = $2",
        )
        .bind(model)
        .bind(component.name())
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("version")?, r.try_get("security_counter")?)))
            .collect()
    }

    /// Create a release and record its artifacts, atomically, with its `release.upload` audit entry
    /// (actor: `created_by`). The image files must already be in the artifact directory. A second
    /// release with the same model and version is refused.
    pub async fn create_release(
        &self,
        new: &NewRelease,
        now: i64,
    ) -> Result<ReleaseRecord, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        if new.image_bytes.len() != new.images.len() {
            return Err(StoreError::Corrupt(
                "a release needs the bytes of each of its images".into(),
            ));
        }
        for (image, bytes) in new.images.iter().zip(&new.image_bytes) {
            put_artifact(&mut tx, &image.sha256, image.size, bytes, now).await?;
        }
        let row = sqlx::query(
            "INSERT INTO releases (model, version, version_key, security_counter, notes, created_at, created_by, component) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(new.model.as_str())
        .bind(new.version.to_string())
        .bind(version_key(&new.version))
        .bind(i64::from(new.security_counter))
        .bind(new.notes.as_str())
        .bind(now)
        .bind(new.created_by.as_str())
        .bind(new.component.name())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists(match new.component {
                    Component::Application => format!("release {} {}", new.model, new.version),
                    Component::Bootloader => {
                        format!("bootloader release {} {}", new.model, new.version)
                    }
                })
            } else {
                e.into()
            }
        })?;
        let id: i64 = row.try_get("id")?;
        for image in &new.images {
            sqlx::query(
                "INSERT INTO release_images (release_id, slot, sha256, size, key_hash) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(image.slot.as_str())
            .bind(image.sha256.as_str())
            .bind(image.size)
            .bind(image.key_hash.as_str())
            .execute(&mut *tx)
            .await?;
        }
        insert_audit(&mut tx, &AuditEntry::release_uploaded(id, new, now)).await?;
        tx.commit().await?;
        self.release(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("release {id}")))
    }

    async fn attach_images(&self, releases: &mut [ReleaseRecord]) -> Result<(), StoreError> {
        for r in releases {
            r.images = sqlx::query(
                "SELECT slot, sha256, size, key_hash FROM release_images WHERE release_id = $1 ORDER BY slot",
            )
            .bind(r.id)
            .fetch_all(self.reader()?)
            .await?
            .iter()
            .map(|row| {
                Ok(ReleaseImage {
                    slot: row.try_get("slot")?,
                    sha256: row.try_get("sha256")?,
                    size: row.try_get("size")?,
                    key_hash: row.try_get("key_hash")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        }
        Ok(())
    }

    /// One release.
    pub async fn release(&self, id: i64) -> Result<Option<ReleaseRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reader()?)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut releases = [release_from_row(&row)?];
        self.attach_images(&mut releases).await?;
        let [release] = releases;
        Ok(Some(release))
    }

    /// Releases, newest version first, optionally for one model.
    pub async fn list_releases(
        &self,
        model: Option<&str>,
    ) -> Result<Vec<ReleaseRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE ($1 IS NULL OR model = $1) \
             ORDER BY model, version_key DESC"
        ))
        .bind(model)
        .fetch_all(self.reader()?)
        .await?;
        let mut releases = rows
            .iter()
            .map(release_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_images(&mut releases).await?;
        Ok(releases)
    }

    /// Delete a release, unless a rollout used it ([`StoreError::InUse`]: it stays for the audit
    /// trail), with its `release.delete` audit entry by `actor`. Returns the artifacts no release
    /// references any more, whose files the caller removes.
    pub async fn delete_release(
        &self,
        id: i64,
        actor: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        // A release a rollout used stays, for the audit trail (and the rollout's status).
        let used: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM rollouts WHERE release_id = $1 OR from_release_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        if used > 0 {
            return Err(StoreError::InUse(format!(
                "release {id} is used by a rollout; it stays for the audit trail"
            )));
        }
        let Some(release) = sqlx::query(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(StoreError::NotFound(format!("release {id}")));
        };
        let release = release_from_row(&release)?;
        let images: Vec<(String, String)> = sqlx::query(
            "SELECT slot, sha256 FROM release_images WHERE release_id = $1 ORDER BY slot",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("slot")?, r.try_get("sha256")?)))
        .collect::<Result<_, sqlx::Error>>()?;
        sqlx::query("DELETE FROM release_images WHERE release_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM releases WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("release {id}")));
        }
        insert_audit(
            &mut tx,
            &AuditEntry::release_deleted(
                actor,
                id,
                &release.model,
                &release.version,
                release.security_counter,
                &images,
                now,
            ),
        )
        .await?;
        let mut orphans = Vec::new();
        for (_, sha) in &images {
            // Patches from or to the image go with it (their bytes too, unless shared).
            orphans.extend(super::patches::delete_for_image(&mut tx, sha).await?);
        }
        for (_, sha) in images {
            if delete_unreferenced_artifact(&mut tx, &sha).await? {
                orphans.push(sha);
            }
        }
        tx.commit().await?;
        Ok(orphans)
    }

    /// An artifact's bytes as stored with its release (`None`: no such artifact, or one stored
    /// before bytes were kept in the database).
    pub async fn artifact_bytes(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bytes FROM artifacts WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(self.reader()?)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<Vec<u8>>, _>("bytes")?,
            None => None,
        })
    }

    /// Whether an artifact is known (and its size).
    pub async fn artifact_size(&self, sha256: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT size FROM artifacts WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(self.reader()?)
            .await?;
        row.map(|r| r.try_get("size"))
            .transpose()
            .map_err(StoreError::Database)
    }
}
