//! `POST /v1/releases`: upload a release, both images checked by the domain's release rules and
//! stored by content address.

use super::views::*;
use crate::api::auth::Admin;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::state::AppState;
use crate::domain::auth::Role;
use crate::domain::names;
use crate::domain::release::{check_image, check_pair};
use crate::store::{now_ms, NewRelease, ReleaseImage, ReleaseRecord, StoreError};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use fota_protocol::image::key_hash;
use fota_protocol::SlotId;
use std::sync::Arc;
use utoipa::ToSchema;

/// The multipart form of an upload (documentation only; parsed field by field).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// Hardware model.
    #[schema(value_type = crate::domain::schemas::ModelName)]
    model: String,
    /// Release notes (at most 16 KB).
    #[schema(max_length = 16384)]
    notes: Option<String>,
    /// Optional cross-check of the images' version.
    #[schema(value_type = Option<fota_protocol::ImageVersion>)]
    version: Option<String>,
    /// Optional cross-check of what the images are (their COMPONENT TLV decides).
    #[schema(value_type = Option<fota_protocol::messages::Component>)]
    component: Option<String>,
    /// Signed image linked for slot A (application slot A, or, for a bootloader release, a
    /// stage-1 marked for stage-1 slot A).
    #[schema(value_type = String, format = Binary)]
    image_a: Vec<u8>,
    /// Signed image linked for slot B (application slot B, or stage-1 slot B).
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

/// Upload a release: an application's, or a stage-1 bootloader's (what the images' COMPONENT
/// TLV says). Both images must verify under a trusted key, be linked for their slot, and agree
/// on component, version and security counter.
#[utoipa::path(
    post,
    path = "/v1/releases",
    tag = "releases",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Created", body = ReleaseRecord),
        (status = 400, description = "Missing or invalid field (invalid_component, invalid_version, ...)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "This model already has this version", body = ErrorBody),
        (status = 413, description = "Image or upload too large", body = ErrorBody),
        (status = 422, description = "unsigned_image, bad_signature, untrusted_key, hash_mismatch, wrong_slot, malformed_image, version_mismatch, security_counter_mismatch, component_mismatch", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub(super) async fn upload_release(
    State(state): State<Arc<AppState>>,
    admin: Admin,
    form: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, axum::Json<ReleaseRecord>), ApiError> {
    admin.require(Role::Operator)?;
    let mut form = form.map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let (mut model, mut notes, mut version, mut component) = (None, String::new(), None, None);
    let (mut image_a, mut image_b) = (None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or("") {
            "model" => model = Some(text_field(field, 64).await?),
            "notes" => notes = text_field(field, MAX_NOTES).await?,
            "version" => version = Some(text_field(field, 32).await?),
            "component" => component = Some(text_field(field, 32).await?),
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
    let pair = check_pair(&a, &b, version.as_deref(), component.as_deref())?;
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
        version: pair.version,
        component: pair.component,
        security_counter: pair.security_counter,
        notes,
        created_by: admin.name.clone(),
        images,
        image_bytes: vec![a.bytes.to_vec(), b.bytes.to_vec()],
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
    tracing::info!(actor = %admin.name, release = release.id, model = %release.model, version = %release.version, component = ?release.component, "release uploaded");
    Ok((StatusCode::CREATED, axum::Json(release)))
}
