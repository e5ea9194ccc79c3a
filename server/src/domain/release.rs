//! What makes an upload a release: two signed images, one per slot, that verify under a trusted
//! key, are linked for the slot they are uploaded for, and agree on version and security counter.
//! Plain functions, so the rules are tested without HTTP; each refusal is a [`ReleaseError`]
//! with its own stable code.

use fota_protocol::image::{self, ImageError, TrustedKey, VerifiedImage};
use fota_protocol::image::{check_verified_for_slot, SlotError};
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

/// Why an upload is not a release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// An image is larger than the server accepts.
    #[error("image for slot {slot} is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Its slot.
        slot: SlotId,
        /// Its length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The server trusts no key, so it can accept no image.
    #[error("the server has no trusted keys configured (--trusted-key), so it accepts no image")]
    NoTrustedKeys,
    /// An image does not verify.
    #[error("image for slot {slot}: {error}")]
    Image {
        /// Its slot.
        slot: SlotId,
        /// What verification said.
        error: ImageError,
    },
    /// Bytes follow the end of an image.
    #[error("image for slot {slot}: {extra} bytes after the end of the image")]
    TrailingBytes {
        /// Its slot.
        slot: SlotId,
        /// How many.
        extra: usize,
    },
    /// An image is not linked for the slot it is uploaded for.
    #[error("image for slot {slot}: {error}")]
    WrongSlot {
        /// Its slot.
        slot: SlotId,
        /// Why it does not fit.
        error: SlotError,
    },
    /// The two images carry different versions.
    #[error("slot A image is {a}, slot B image is {b}")]
    VersionMismatch {
        /// Slot A's.
        a: ImageVersion,
        /// Slot B's.
        b: ImageVersion,
    },
    /// The two images carry different security counters.
    #[error("slot A image has security counter {a}, slot B has {b}")]
    CounterMismatch {
        /// Slot A's.
        a: u32,
        /// Slot B's.
        b: u32,
    },
    /// The declared version does not parse.
    #[error("invalid version {0:?}")]
    InvalidVersion(String),
    /// The declared version is not the images'.
    #[error("declared version {declared} but the images are {images}")]
    DeclaredVersionMismatch {
        /// What the upload declared.
        declared: ImageVersion,
        /// What the images carry.
        images: ImageVersion,
    },
}

impl ReleaseError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "payload_too_large",
            Self::NoTrustedKeys => "no_trusted_keys",
            Self::Image { error, .. } => match error {
                ImageError::MissingTlv(image::tlv_type::ED25519) => "unsigned_image",
                ImageError::UntrustedKey | ImageError::WeakKey => "untrusted_key",
                ImageError::BadSignature => "bad_signature",
                ImageError::HashMismatch => "hash_mismatch",
                _ => "malformed_image",
            },
            Self::TrailingBytes { .. } => "malformed_image",
            Self::WrongSlot { .. } => "wrong_slot",
            Self::VersionMismatch { .. } | Self::DeclaredVersionMismatch { .. } => {
                "version_mismatch"
            }
            Self::CounterMismatch { .. } => "security_counter_mismatch",
            Self::InvalidVersion(_) => "invalid_version",
        }
    }
}

/// Verify one uploaded image for `slot`. Each refusal has its own stable code.
pub fn check_image(
    bytes: Vec<u8>,
    slot: SlotId,
    keys: &[TrustedKey],
    max_bytes: u32,
) -> Result<CheckedImage, ReleaseError> {
    if bytes.len() as u64 > u64::from(max_bytes) {
        return Err(ReleaseError::TooLarge {
            slot,
            len: bytes.len(),
            max: max_bytes,
        });
    }
    if keys.is_empty() {
        return Err(ReleaseError::NoTrustedKeys);
    }
    let verified =
        image::verify(&bytes, keys).map_err(|error| ReleaseError::Image { slot, error })?;
    if verified.total_len as usize != bytes.len() {
        return Err(ReleaseError::TrailingBytes {
            slot,
            extra: bytes.len() - verified.total_len as usize,
        });
    }
    check_verified_for_slot(&verified, slot)
        .map_err(|error| ReleaseError::WrongSlot { slot, error })?;
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
) -> Result<(ImageVersion, u32), ReleaseError> {
    let (va, vb) = (a.verified.header.version, b.verified.header.version);
    if va != vb {
        return Err(ReleaseError::VersionMismatch { a: va, b: vb });
    }
    let (sa, sb) = (a.verified.security_counter, b.verified.security_counter);
    if sa != sb {
        return Err(ReleaseError::CounterMismatch { a: sa, b: sb });
    }
    if let Some(declared) = declared_version {
        let declared: ImageVersion = declared
            .parse()
            .map_err(|_| ReleaseError::InvalidVersion(declared.to_string()))?;
        if declared != va {
            return Err(ReleaseError::DeclaredVersionMismatch {
                declared,
                images: va,
            });
        }
    }
    Ok((va, sa))
}
