//! What makes an upload a release: two signed images, one per slot, that verify under a trusted
//! key, are linked for the slot they are uploaded for, and agree on version, security counter
//! and component. An application release is two applications (for application slots A and B); a
//! bootloader release is two stage-1 images, each marked (COMPONENT TLV) and linked for its
//! stage-1 slot, A and B.
//! Plain functions, so the rules are tested without HTTP; each refusal is a [`ReleaseError`]
//! with its own stable code.

use fota_protocol::image::{self, ImageError, TrustedKey, VerifiedImage};
use fota_protocol::image::{check_verified_for_slot, check_verified_for_stage1, SlotError};
use fota_protocol::messages::Component;
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
    /// One image is an application and the other a stage-1 bootloader.
    #[error("slot A image is {a}, slot B image is {b}: a release is one component")]
    ComponentMismatch {
        /// Slot A's.
        a: ComponentName,
        /// Slot B's.
        b: ComponentName,
    },
    /// The images are not the component the upload declared.
    #[error("declared component {declared} but the images are {images}")]
    DeclaredComponentMismatch {
        /// What the upload declared.
        declared: ComponentName,
        /// What the images are.
        images: ComponentName,
    },
    /// The declared component is neither `application` nor `bootloader`.
    #[error("invalid component {0:?}: application or bootloader")]
    InvalidComponent(String),
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
            Self::ComponentMismatch { .. } | Self::DeclaredComponentMismatch { .. } => {
                "component_mismatch"
            }
            Self::InvalidComponent(_) => "invalid_component",
            Self::InvalidVersion(_) => "invalid_version",
        }
    }
}

/// A component as the refusals name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentName(pub Component);

impl std::fmt::Display for ComponentName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Component::Application => "an application",
            Component::Bootloader => "a stage-1 bootloader",
        })
    }
}

impl CheckedImage {
    /// What it is, from its COMPONENT TLV.
    pub fn component(&self) -> Component {
        self.verified.component.into()
    }
}

/// Verify one uploaded image for `slot`: an application linked for application slot `slot`, or
/// a stage-1 bootloader marked and linked for stage-1 slot `slot`. Each refusal has its own
/// stable code.
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
    match Component::from(verified.component) {
        Component::Application => check_verified_for_slot(&verified, slot),
        Component::Bootloader => check_verified_for_stage1(&verified, slot),
    }
    .map_err(|error| ReleaseError::WrongSlot { slot, error })?;
    Ok(CheckedImage {
        slot,
        verified,
        bytes,
    })
}

/// What two checked images make: one release of this component, version and counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedPair {
    /// The application or the stage-1 bootloader.
    pub component: Component,
    /// Both images' version.
    pub version: ImageVersion,
    /// Both images' security counter.
    pub security_counter: u32,
}

/// Check that both images describe one release (and, when the upload declares them, its
/// version and component).
pub fn check_pair(
    a: &CheckedImage,
    b: &CheckedImage,
    declared_version: Option<&str>,
    declared_component: Option<&str>,
) -> Result<CheckedPair, ReleaseError> {
    let (ca, cb) = (a.component(), b.component());
    if ca != cb {
        return Err(ReleaseError::ComponentMismatch {
            a: ComponentName(ca),
            b: ComponentName(cb),
        });
    }
    if let Some(declared) = declared_component {
        let declared = Component::from_name(declared)
            .ok_or_else(|| ReleaseError::InvalidComponent(declared.to_string()))?;
        if declared != ca {
            return Err(ReleaseError::DeclaredComponentMismatch {
                declared: ComponentName(declared),
                images: ComponentName(ca),
            });
        }
    }
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
    Ok(CheckedPair {
        component: ca,
        version: va,
        security_counter: sa,
    })
}
