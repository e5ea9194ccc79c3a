//! The patch container's header: what a patch applies to, what it rebuilds and how it is
//! compressed, in [`HEADER_LEN`] bytes ahead of the compressed body. Every field is checked
//! before a byte of the body is applied; docs/PROTOCOL.md ("Delta patches") has the layout.

/// The container's first four bytes.
pub const MAGIC: [u8; 4] = *b"FDLT";
/// The one format version this crate reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// The diff algorithm: bsdiff, in the interleaved layout of the `bsdiff` crate
/// ([`crate::apply`]).
pub const DIFF_BSDIFF: u8 = 1;
/// The compression of the body: heatshrink ([`crate::heatshrink`]).
pub const COMPRESSION_HEATSHRINK: u8 = 1;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 92;

/// Why a container's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a fota delta patch.
    #[error("not a fota delta patch (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported delta patch format version {0}")]
    UnsupportedVersion(u8),
    /// A diff algorithm this build does not apply.
    #[error("unsupported diff algorithm {0}")]
    UnsupportedDiff(u8),
    /// A compression (or heatshrink parameters) this build does not decode.
    #[error(
        "unsupported compression {compression} (window {window_bits}, lookahead {lookahead_bits})"
    )]
    UnsupportedCompression {
        /// The compression code.
        compression: u8,
        /// Its window, log2 bytes.
        window_bits: u8,
        /// Its lookahead, log2 bytes.
        lookahead_bits: u8,
    },
    /// The reserved bytes are not zero (a later format this build does not know).
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    /// The header's CRC-32 does not match its bytes.
    #[error("header checksum mismatch")]
    Checksum,
    /// The target is longer than the slot it is to be written to.
    #[error("the target ({target_len} bytes) does not fit the slot ({max} bytes)")]
    TargetTooLarge {
        /// The announced target length.
        target_len: u32,
        /// The most the applier was told it may write.
        max: u32,
    },
}

/// A container's header, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchHeader {
    /// The base image's length: the patch applies to exactly these bytes.
    pub base_len: u32,
    /// The base image's SHA-256 (of its `base_len` bytes).
    pub base_digest: [u8; 32],
    /// The rebuilt target image's length.
    pub target_len: u32,
    /// The rebuilt target image's SHA-256.
    pub target_digest: [u8; 32],
    /// The compressed body's length: the container is [`HEADER_LEN`] + this many bytes.
    pub body_len: u32,
}

/// The heatshrink window this format uses, log2 bytes (1 KB of decoder RAM).
pub const HEATSHRINK_WINDOW_BITS: u8 = 10;
/// The heatshrink lookahead this format uses, log2 bytes.
pub const HEATSHRINK_LOOKAHEAD_BITS: u8 = 5;

fn crc32(bytes: &[u8]) -> u32 {
    // Bitwise, no table: 88 bytes once per patch do not justify 1 KB of flash.
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(v)
}

impl PatchHeader {
    /// The header's bytes, checksum included.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = DIFF_BSDIFF;
        out[6] = COMPRESSION_HEATSHRINK;
        out[7] = HEATSHRINK_WINDOW_BITS;
        out[8] = HEATSHRINK_LOOKAHEAD_BITS;
        // 9..12 reserved, zero.
        out[12..16].copy_from_slice(&self.base_len.to_le_bytes());
        out[16..48].copy_from_slice(&self.base_digest);
        out[48..52].copy_from_slice(&self.target_len.to_le_bytes());
        out[52..84].copy_from_slice(&self.target_digest);
        out[84..88].copy_from_slice(&self.body_len.to_le_bytes());
        let crc = crc32(&out[..88]);
        out[88..92].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parse and check a header; `max_target_len` is the most the caller can write (its slot).
    pub fn parse(bytes: &[u8; HEADER_LEN], max_target_len: u32) -> Result<Self, HeaderError> {
        if bytes[0..4] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(bytes[4]));
        }
        // The checksum before the rest: a corrupt byte is reported as such, not as whatever
        // field it happened to land in.
        if crc32(&bytes[..88]) != u32_at(bytes, 88) {
            return Err(HeaderError::Checksum);
        }
        if bytes[5] != DIFF_BSDIFF {
            return Err(HeaderError::UnsupportedDiff(bytes[5]));
        }
        if (bytes[6], bytes[7], bytes[8])
            != (
                COMPRESSION_HEATSHRINK,
                HEATSHRINK_WINDOW_BITS,
                HEATSHRINK_LOOKAHEAD_BITS,
            )
        {
            return Err(HeaderError::UnsupportedCompression {
                compression: bytes[6],
                window_bits: bytes[7],
                lookahead_bits: bytes[8],
            });
        }
        if bytes[9..12] != [0, 0, 0] {
            return Err(HeaderError::ReservedNotZero);
        }
        let mut base_digest = [0u8; 32];
        base_digest.copy_from_slice(&bytes[16..48]);
        let mut target_digest = [0u8; 32];
        target_digest.copy_from_slice(&bytes[52..84]);
        let header = Self {
            base_len: u32_at(bytes, 12),
            base_digest,
            target_len: u32_at(bytes, 48),
            target_digest,
            body_len: u32_at(bytes, 84),
        };
        if header.target_len > max_target_len {
            return Err(HeaderError::TargetTooLarge {
                target_len: header.target_len,
                max: max_target_len,
            });
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> PatchHeader {
        PatchHeader {
            base_len: 82_188,
            base_digest: [0xb5; 32],
            target_len: 84_640,
            target_digest: [0x7a; 32],
            body_len: 22_600,
        }
    }

    #[test]
    fn a_header_round_trips_and_its_layout_is_the_documented_one() {
        let bytes = header().to_bytes();
        assert_eq!(PatchHeader::parse(&bytes, 128 * 1024), Ok(header()));
        // The layout docs/PROTOCOL.md gives.
        assert_eq!(&bytes[0..9], b"FDLT\x01\x01\x01\x0a\x05");
        assert_eq!(bytes[12..16], 82_188u32.to_le_bytes());
        assert_eq!(bytes[48..52], 84_640u32.to_le_bytes());
        assert_eq!(bytes[84..88], 22_600u32.to_le_bytes());
    }

    #[test]
    fn every_field_is_checked() {
        let good = header().to_bytes();
        let reseal = |mut b: [u8; HEADER_LEN]| {
            let crc = crc32(&b[..88]);
            b[88..92].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let with = |at: usize, v: u8| {
            let mut b = good;
            b[at] = v;
            reseal(b)
        };
        assert_eq!(
            PatchHeader::parse(&with(0, b'G'), u32::MAX),
            Err(HeaderError::BadMagic)
        );
        assert_eq!(
            PatchHeader::parse(&with(4, 2), u32::MAX),
            Err(HeaderError::UnsupportedVersion(2))
        );
        assert_eq!(
            PatchHeader::parse(&with(5, 2), u32::MAX),
            Err(HeaderError::UnsupportedDiff(2))
        );
        for (at, v) in [(6, 0), (7, 8), (8, 4)] {
            assert!(
                matches!(
                    PatchHeader::parse(&with(at, v), u32::MAX),
                    Err(HeaderError::UnsupportedCompression { .. })
                ),
                "byte {at} = {v}"
            );
        }
        for at in 9..12 {
            assert_eq!(
                PatchHeader::parse(&with(at, 1), u32::MAX),
                Err(HeaderError::ReservedNotZero)
            );
        }
        // Any flipped bit past the version is caught by the checksum.
        for at in 5..HEADER_LEN {
            let mut b = good;
            b[at] ^= 0x10;
            assert_eq!(
                PatchHeader::parse(&b, u32::MAX),
                Err(HeaderError::Checksum),
                "byte {at}"
            );
        }
        assert_eq!(
            PatchHeader::parse(&good, 84_639),
            Err(HeaderError::TargetTooLarge {
                target_len: 84_640,
                max: 84_639
            })
        );
    }
}
