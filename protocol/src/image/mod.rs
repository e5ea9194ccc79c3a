//! MCUboot's signed image format, as imgtool writes it and MCUboot reads it.
//!
//! ```text
//! +--------------------+ 0
//! | header (32 bytes)  |  magic 0x96f3b83d, load_addr, hdr_size, protect_tlv_size, img_size, flags, version
//! | 0xff padding       |  up to hdr_size (fota uses 0x200 so VTOR stays 512-byte aligned)
//! +--------------------+ hdr_size
//! | payload            |  img_size bytes: the application, vector table first
//! +--------------------+ hdr_size + img_size
//! | protected TLVs     |  info 0x6908 + SEC_CNT (0x50) ...; covered by the hash
//! +--------------------+ hdr_size + img_size + protect_tlv_size
//! | TLVs               |  info 0x6907 + SHA256 (0x10) + KEYHASH (0x01) + ED25519 (0x24)
//! +--------------------+
//! ```
//!
//! The SHA-256 covers everything before the unprotected TLV area; the Ed25519 signature is over
//! that 32-byte digest (MCUboot's non-"pure" mode), checked with `verify_strict`.
//!
//! [`verify`] checks a whole slice; [`StreamVerifier`] does the same work incrementally, with a
//! fixed ~1 KB of state, for a device that hashes while it downloads. Both run the same code, so
//! their verdicts cannot drift apart.

pub mod ed25519;
mod header;
mod placement;
mod stream;
mod tlv;
mod verify;

#[cfg(feature = "std")]
mod build;

#[cfg(feature = "std")]
pub use build::{BuildError, ImageBuilder};
pub use header::{ImageFlags, ImageHeader, ImageVersion, VersionParseError};
pub use placement::{
    check_image_for_slot, check_verified_for_slot, check_verified_for_stage1, SlotError, VTOR_ALIGN,
};
pub use stream::StreamVerifier;
pub use tlv::{TlvEntry, TlvIter};
pub use verify::{
    key_hash, spki_der, verify, Digest, KeyError, ParsedImage, TlvFields, TrustedKey, VerifiedImage,
};

/// `ih_magic` of every MCUboot image.
pub const IMAGE_MAGIC: u32 = 0x96f3_b83d;
/// Size of the fixed part of the header.
pub const HEADER_LEN: usize = 32;
/// Header size fota signs with (imgtool `--header-size 0x200 --pad-header`).
pub const DEFAULT_HEADER_SIZE: u16 = crate::layout::IMAGE_HEADER_SIZE;
/// Magic of the unprotected TLV info header.
pub const TLV_INFO_MAGIC: u16 = 0x6907;
/// Magic of the protected TLV info header.
pub const TLV_PROT_INFO_MAGIC: u16 = 0x6908;
/// Size of a TLV info header and of a TLV entry header.
pub const TLV_HEADER_LEN: usize = 4;
/// Largest protected TLV area (info header included) the verifier buffers.
pub const MAX_PROTECTED_TLV_LEN: usize = 256;
/// Largest unprotected TLV area (info header included) the verifier buffers.
pub const MAX_TLV_LEN: usize = 512;

/// TLV type numbers fota reads or writes (MCUboot's `IMAGE_TLV_*`).
pub mod tlv_type {
    /// SHA-256 of the signing key's SubjectPublicKeyInfo DER.
    pub const KEYHASH: u16 = 0x01;
    /// The signing key itself, as SubjectPublicKeyInfo DER (imgtool `--public-key-format full`).
    pub const PUBKEY: u16 = 0x02;
    /// SHA-256 over header, payload and protected TLVs.
    pub const SHA256: u16 = 0x10;
    /// SHA-384 image hash (not supported by fota).
    pub const SHA384: u16 = 0x11;
    /// SHA-512 image hash (not supported by fota).
    pub const SHA512: u16 = 0x12;
    /// Ed25519 signature over the SHA-256 digest.
    pub const ED25519: u16 = 0x24;
    /// Marks a "pure" signature over the whole image (not supported by fota).
    pub const SIG_PURE: u16 = 0x25;
    /// Security counter (anti-rollback), u32 little endian, protected.
    pub const SEC_CNT: u16 = 0x50;
    /// fota's component mark, protected (MCUboot leaves 0x00a0-0x00fe to vendors; imgtool's
    /// `--custom-tlv 0xa0 0x0100` writes it): two bytes, the component (1 = bootloader stage-1)
    /// and the stage-1 slot it is linked for (0 = A, 1 = B). An image without it is an
    /// application. See [`Component`](super::Component).
    pub const COMPONENT: u16 = 0x00a0;
}

/// What an image is, from its protected [`COMPONENT`](tlv_type::COMPONENT) TLV: an application
/// (no TLV) or a stage-1 bootloader linked for one stage-1 slot. Stage-0 boots only the latter,
/// the stage-1 bootloader only the former, so neither can be installed as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Component {
    /// An application for slot A or B.
    #[default]
    Application,
    /// A stage-1 bootloader linked for stage-1 slot `slot`.
    Stage1 {
        /// The stage-1 slot it is linked for.
        slot: crate::layout::SlotId,
    },
}

impl Component {
    /// The COMPONENT TLV's value for a stage-1 (`None` for an application, which has none).
    pub const fn tlv_value(self) -> Option<[u8; 2]> {
        match self {
            Component::Application => None,
            Component::Stage1 { slot } => Some([
                1,
                match slot {
                    crate::layout::SlotId::A => 0,
                    crate::layout::SlotId::B => 1,
                },
            ]),
        }
    }

    /// The inverse of [`tlv_value`](Self::tlv_value); `None` for any other value.
    pub const fn from_tlv_value(value: [u8; 2]) -> Option<Self> {
        match value {
            [1, 0] => Some(Component::Stage1 {
                slot: crate::layout::SlotId::A,
            }),
            [1, 1] => Some(Component::Stage1 {
                slot: crate::layout::SlotId::B,
            }),
            _ => None,
        }
    }
}

/// Which part of an image a truncation or length error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The 32-byte fixed header.
    Header,
    /// The header padding and payload (`hdr_size + img_size`).
    Payload,
    /// The protected TLV area.
    ProtectedTlvs,
    /// The unprotected TLV area.
    Tlvs,
}

impl core::fmt::Display for Region {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Region::Header => "header",
            Region::Payload => "payload",
            Region::ProtectedTlvs => "protected TLV area",
            Region::Tlvs => "TLV area",
        })
    }
}

/// Why an image was refused. One variant per way an image can be malformed or untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The image ends before the named region does.
    #[error("image truncated in the {0}")]
    Truncated(Region),
    /// `ih_magic` is not 0x96f3b83d.
    #[error("bad image magic {0:#010x} (expected 0x96f3b83d)")]
    BadMagic(u32),
    /// `ih_hdr_size` is smaller than the 32-byte header itself.
    #[error("header size {0} is smaller than the 32-byte header")]
    HeaderSizeTooSmall(u16),
    /// Header fields add up to more than the address space.
    #[error("image lengths overflow")]
    LengthOverflow,
    /// The image is larger than the caller allows (e.g. the slot size).
    #[error("image is {len} bytes, more than the {max} allowed")]
    TooLarge {
        /// Total image length (header, payload, both TLV areas).
        len: u64,
        /// The limit it was checked against.
        max: u32,
    },
    /// A TLV area does not start with its info magic.
    #[error("{region} has magic {found:#06x}, expected {expected:#06x}")]
    BadTlvMagic {
        /// Which area.
        region: Region,
        /// Magic found.
        found: u16,
        /// Magic expected.
        expected: u16,
    },
    /// The protected TLV info's total disagrees with `ih_protect_tlv_size`.
    #[error("protected TLV area says {tlv_tot} bytes but the header says {header}")]
    ProtectedSizeMismatch {
        /// `ih_protect_tlv_size`.
        header: u16,
        /// `tlv_tot` of the protected info header.
        tlv_tot: u16,
    },
    /// A TLV info's total is smaller than the info header itself.
    #[error("{0} total length is smaller than its 4-byte info header")]
    TlvTotalTooSmall(Region),
    /// A TLV area is larger than the verifier buffers.
    #[error("{region} is {len} bytes, more than the {max} supported")]
    TlvAreaTooLarge {
        /// Which area.
        region: Region,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A TLV entry runs past the end of its area.
    #[error("TLV {tlv_type:#06x} runs past the end of the {region}")]
    TlvOverrun {
        /// Which area.
        region: Region,
        /// Its type.
        tlv_type: u16,
    },
    /// A TLV has the wrong length for its type.
    #[error("TLV {tlv_type:#06x} has length {len}, expected {expected}")]
    BadTlvLength {
        /// Its type.
        tlv_type: u16,
        /// Its length.
        len: u16,
        /// The length its type requires.
        expected: u16,
    },
    /// A TLV that may appear once appears twice.
    #[error("duplicate TLV {0:#06x}")]
    DuplicateTlv(u16),
    /// A required TLV is absent.
    #[error("missing TLV {0:#06x}")]
    MissingTlv(u16),
    /// The COMPONENT TLV holds a value fota does not know.
    #[error("unknown component mark {0:02x?}")]
    BadComponent([u8; 2]),
    /// A TLV that must be covered by the hash sits in the unprotected area, or vice versa.
    #[error("TLV {0:#06x} is in the wrong TLV area")]
    MisplacedTlv(u16),
    /// The image uses a feature fota does not implement (encryption, compression, RAM load,
    /// SHA-384/512 or pure signatures).
    #[error("unsupported image feature: {0}")]
    Unsupported(&'static str),
    /// The SHA-256 TLV does not match the image.
    #[error("image hash does not match its SHA256 TLV")]
    HashMismatch,
    /// The signing key is not one of the trusted keys.
    #[error("image is signed by an untrusted key")]
    UntrustedKey,
    /// The signing key is a small-order (weak) Ed25519 point.
    #[error("image is signed by a small-order (weak) Ed25519 key")]
    WeakKey,
    /// The Ed25519 signature does not verify (strictly) over the digest.
    #[error("Ed25519 signature does not verify")]
    BadSignature,
}

/// Lengths derived from a parsed header: where each region starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extents {
    /// Offset of the payload (= `hdr_size`).
    pub payload_start: u32,
    /// Offset of the protected TLV area (= `hdr_size + img_size`).
    pub protected_start: u32,
    /// Offset of the unprotected TLV area; also the length the hash covers.
    pub tlv_start: u32,
}

impl Extents {
    pub(crate) fn of(header: &ImageHeader) -> Result<Self, ImageError> {
        let payload_start = u32::from(header.hdr_size);
        let protected_start = payload_start
            .checked_add(header.img_size)
            .ok_or(ImageError::LengthOverflow)?;
        let tlv_start = protected_start
            .checked_add(u32::from(header.protect_tlv_size))
            .ok_or(ImageError::LengthOverflow)?;
        // The unprotected info header must fit too.
        tlv_start
            .checked_add(TLV_HEADER_LEN as u32)
            .ok_or(ImageError::LengthOverflow)?;
        Ok(Self {
            payload_start,
            protected_start,
            tlv_start,
        })
    }
}
