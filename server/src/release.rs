//! What makes an upload a release: two signed images, one per slot, that verify under a trusted
//! key, are linked for the slot they are uploaded for, and agree on version and security counter.
//! Plain functions, so the rules are tested without HTTP.

use crate::error::ApiError;
use fota_protocol::image::{self, ImageError, TrustedKey, VerifiedImage};
use fota_protocol::layout::check_verified_for_slot;
use fota_protocol::{ImageVersion, SlotId};

/// One checked image of an upload.
#[derive(Debug, Clone)]
pub struct CheckedImage {
    /// The slot it is for.
    pub slot: SlotId,
    /// What verification found.
    pub verified: VerifiedImage,
    /// The file.
    pub bytes: Vec<u8>,
}

/// Verify one uploaded image for `slot`. Each refusal has its own stable code.
pub fn check_image(
    bytes: Vec<u8>,
    slot: SlotId,
    keys: &[TrustedKey],
    max_bytes: u32,
) -> Result<CheckedImage, ApiError> {
    if bytes.len() as u64 > u64::from(max_bytes) {
        return Err(ApiError::too_large(format!(
            "image for slot {slot} is {} bytes; the limit is {max_bytes}",
            bytes.len()
        )));
    }
    if keys.is_empty() {
        return Err(ApiError::unprocessable(
            "no_trusted_keys",
            "the server has no trusted keys configured (--trusted-key), so it accepts no image",
        ));
    }
    let verified = image::verify(&bytes, keys).map_err(|e| {
        let code = match e {
            ImageError::MissingTlv(image::tlv_type::ED25519) => "unsigned_image",
            ImageError::UntrustedKey | ImageError::WeakKey => "untrusted_key",
            ImageError::BadSignature => "bad_signature",
            ImageError::HashMismatch => "hash_mismatch",
            _ => "malformed_image",
        };
        ApiError::unprocessable(code, format!("image for slot {slot}: {e}"))
    })?;
    if verified.total_len as usize != bytes.len() {
        return Err(ApiError::unprocessable(
            "malformed_image",
            format!(
                "image for slot {slot}: {} bytes after the end of the image",
                bytes.len() - verified.total_len as usize
            ),
        ));
    }
    check_verified_for_slot(&verified, slot).map_err(|e| {
        ApiError::unprocessable("wrong_slot", format!("image for slot {slot}: {e}"))
    })?;
    Ok(CheckedImage {
        slot,
        verified,
        bytes,
    })
}

/// Check that both images describe one release; returns its version and security counter.
pub fn check_pair(
    a: &CheckedImage,
    b: &CheckedImage,
    declared_version: Option<&str>,
) -> Result<(ImageVersion, u32), ApiError> {
    let (va, vb) = (a.verified.header.version, b.verified.header.version);
    if va != vb {
        return Err(ApiError::unprocessable(
            "version_mismatch",
            format!("slot A image is {va}, slot B image is {vb}"),
        ));
    }
    let (sa, sb) = (a.verified.security_counter, b.verified.security_counter);
    if sa != sb {
        return Err(ApiError::unprocessable(
            "security_counter_mismatch",
            format!("slot A image has security counter {sa}, slot B has {sb}"),
        ));
    }
    if let Some(declared) = declared_version {
        let declared: ImageVersion = declared.parse().map_err(|_| {
            ApiError::bad_request("invalid_version", format!("invalid version {declared:?}"))
        })?;
        if declared != va {
            return Err(ApiError::unprocessable(
                "version_mismatch",
                format!("declared version {declared} but the images are {va}"),
            ));
        }
    }
    Ok((va, sa))
}
