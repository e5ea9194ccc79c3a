//! Releases: upload (multipart: `model`, `notes`, optional `version`, files `image_a` and
//! `image_b`), list, get, delete.

use super::auth::Admin;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::AppState;
use crate::domain::auth::Role;
use crate::domain::names;
use crate::domain::release::{check_image, check_pair};
use crate::store::{now_ms, NewRelease, ReleaseImage, ReleaseRecord, StoreError};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use fota_protocol::image::key_hash;
use fota_protocol::SlotId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest upload request: two slot-sized images plus the text fields.
const UPLOAD_LIMIT: usize = 2 * 1024 * 1024;
/// Longest release notes.
const MAX_NOTES: usize = 16 * 1024;

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(upload_release, list_releases))
        .layer(DefaultBodyLimit::max(UPLOAD_LIMIT))
        .merge(OpenApiRouter::new().routes(routes!(get_release, delete_release)))
}

/// The multipart form of an upload (documentation only; parsed field by field).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// Hardware model.
    model: String,
    /// Release notes.
    notes: Option<String>,
    /// Optional cross-check of the images' version.
    version: Option<String>,
    /// Signed image linked for slot A.
    #[schema(value_type = String, format = Binary)]
    image_a: Vec<u8>,
    /// Signed image linked for slot B.
    #[schema(value_type = String, format = Binary)]
    image_b: Vec<u8>,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("upload too large")
    } else {
        ApiError::bad_request("invalid_multipart", e.body_text())
    }
}

async fn text_field(
    field: axum::extract::multipart::Field<'_>,
    max: usize,
) -> Result<String, ApiError> {
    let name = field.name().unwrap_or("").to_string();
    let bytes = field.bytes().await.map_err(multipart_error)?;
    if bytes.len() > max {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("field {name} is longer than {max} bytes"),
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_field", format!("field {name} is not UTF-8")))
}

/// Upload a release. Both images must verify under a trusted key, be linked for their slot, and
/// agree on version and security counter.
#[utoipa::path(
    post,
    path = "/v1/releases",
    tag = "releases",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Created", body = ReleaseRecord),
        (status = 400, description = "Missing or invalid field", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "This model already has this version", body = ErrorBody),
        (status = 413, description = "Image or upload too large", body = ErrorBody),
        (status = 422, description = "unsigned_image, bad_signature, untrusted_key, hash_mismatch, wrong_slot, malformed_image, version_mismatch", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
async fn upload_release(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, axum::Json<ReleaseRecord>), ApiError> {
    admin.require(Role::Operator)?;
    let mut form = form.map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let (mut model, mut notes, mut version) = (None, String::new(), None);
    let (mut image_a, mut image_b) = (None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or("") {
            "model" => model = Some(text_field(field, 64).await?),
            "notes" => notes = text_field(field, MAX_NOTES).await?,
            "version" => version = Some(text_field(field, 32).await?),
            "image_a" => image_a = Some(field.bytes().await.map_err(multipart_error)?.to_vec()),
            "image_b" => image_b = Some(field.bytes().await.map_err(multipart_error)?.to_vec()),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("unknown field {other:?}"),
                ))
            }
        }
    }
    let missing = |f: &str| ApiError::bad_request("missing_field", format!("missing field {f}"));
    let model = model.ok_or_else(|| missing("model"))?;
    names::model(&model)?;
    let keys = &state.config.trusted_keys;
    let max = state.config.max_image_bytes;
    let a = check_image(
        image_a.ok_or_else(|| missing("image_a"))?,
        SlotId::A,
        keys,
        max,
    )?;
    let b = check_image(
        image_b.ok_or_else(|| missing("image_b"))?,
        SlotId::B,
        keys,
        max,
    )?;
    let (version, security_counter) = check_pair(&a, &b, version.as_deref())?;
    let mut images = Vec::with_capacity(2);
    for img in [&a, &b] {
        let sha256 = state
            .artifacts
            .put(&img.bytes)
            .await
            .map_err(ApiError::internal)?;
        images.push(ReleaseImage {
            slot: img.slot.to_string().to_lowercase(),
            sha256,
            size: img.bytes.len() as i64,
            key_hash: key_hash(&keys[img.verified.key_index].to_bytes()).to_string(),
        });
    }
    let new = NewRelease {
        model,
        version,
        security_counter,
        notes,
        created_by: admin.name.clone(),
        images,
    };
    let release = state
        .store
        .create_release(&new, now_ms())
        .await
        .map_err(|e| match e {
            StoreError::AlreadyExists(what) => {
                ApiError::conflict("duplicate_version", format!("{what} already exists"))
            }
            other => other.into(),
        })?;
    tracing::info!(actor = %admin.name, release = release.id, model = %release.model, version = %release.version, "release uploaded");
    Ok((StatusCode::CREATED, axum::Json(release)))
}

/// Filter for listing releases.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    /// Only this hardware model.
    pub model: Option<String>,
}

/// Releases.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseList {
    /// By model, newest version first.
    pub releases: Vec<ReleaseRecord>,
}

/// List releases.
#[utoipa::path(
    get,
    path = "/v1/releases",
    tag = "releases",
    params(ReleaseQuery),
    responses((status = 200, body = ReleaseList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn list_releases(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiQuery(q): ApiQuery<ReleaseQuery>,
) -> Result<axum::Json<ReleaseList>, ApiError> {
    admin.require(Role::Viewer)?;
    if let Some(m) = &q.model {
        names::model(m)?;
    }
    let releases = state.store.list_releases(q.model.as_deref()).await?;
    Ok(axum::Json(ReleaseList { releases }))
}

/// One release.
#[utoipa::path(
    get,
    path = "/v1/releases/{id}",
    tag = "releases",
    params(("id" = i64, Path, description = "Release id")),
    responses((status = 200, body = ReleaseRecord), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
async fn get_release(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<ReleaseRecord>, ApiError> {
    admin.require(Role::Viewer)?;
    let release = state
        .store
        .release(id)
        .await?
        .ok_or_else(|| ApiError::not_found("release_not_found", format!("no release {id}")))?;
    Ok(axum::Json(release))
}

/// Delete a release that no rollout uses; its artifacts go too unless another release shares
/// them.
#[utoipa::path(
    delete,
    path = "/v1/releases/{id}",
    tag = "releases",
    params(("id" = i64, Path, description = "Release id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A rollout uses it", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
async fn delete_release(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    admin.require(Role::Admin)?;
    if state.store.release_in_use(id).await? {
        return Err(ApiError::conflict(
            "release_in_use",
            format!("release {id} is used by a rollout; it stays for the audit trail"),
        ));
    }
    let orphans = state.store.delete_release(id).await.map_err(|e| match e {
        StoreError::NotFound(_) => {
            ApiError::not_found("release_not_found", format!("no release {id}"))
        }
        StoreError::InUse(why) => ApiError::conflict("release_in_use", why),
        other => other.into(),
    })?;
    for sha in orphans {
        if let Err(e) = state.artifacts.remove(&sha).await {
            tracing::warn!(artifact = %sha, error = %e, "could not remove an unreferenced artifact");
        }
    }
    tracing::info!(actor = %admin.name, release = id, "release deleted");
    Ok(StatusCode::NO_CONTENT)
}
