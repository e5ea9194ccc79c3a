//! The 32-byte MCUboot image header and the image version.

use super::{ImageError, HEADER_LEN, IMAGE_MAGIC};
use core::fmt;
use core::str::FromStr;

/// `ih_flags` bits (MCUboot's `IMAGE_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImageFlags(pub u32);

impl ImageFlags {
    /// Position-independent code.
    pub const PIC: u32 = 0x0000_0001;
    /// Encrypted with AES-128.
    pub const ENCRYPTED_AES128: u32 = 0x0000_0004;
    /// Encrypted with AES-256.
    pub const ENCRYPTED_AES256: u32 = 0x0000_0008;
    /// Not bootable (data image).
    pub const NON_BOOTABLE: u32 = 0x0000_0010;
    /// Copied into RAM at `load_addr` before running.
    pub const RAM_LOAD: u32 = 0x0000_0020;
    /// Linked to run in place at `load_addr` (MCUboot direct-XIP); fota sets it.
    pub const ROM_FIXED: u32 = 0x0000_0100;
    /// LZMA1 compressed.
    pub const COMPRESSED_LZMA1: u32 = 0x0000_0200;
    /// LZMA2 compressed.
    pub const COMPRESSED_LZMA2: u32 = 0x0000_0400;
    /// ARM thumb filter applied before compression.
    pub const COMPRESSED_ARM_THUMB: u32 = 0x0000_0800;

    /// Whether every bit of `mask` is set.
    pub fn contains(self, mask: u32) -> bool {
        self.0 & mask == mask
    }

    /// The first flag fota cannot execute in place, if any.
    pub fn unsupported(self) -> Option<&'static str> {
        let checks: [(u32, &'static str); 5] = [
            (
                Self::ENCRYPTED_AES128 | Self::ENCRYPTED_AES256,
                "encrypted image",
            ),
            (
                Self::COMPRESSED_LZMA1 | Self::COMPRESSED_LZMA2 | Self::COMPRESSED_ARM_THUMB,
                "compressed image",
            ),
            (Self::RAM_LOAD, "RAM-load image"),
            (Self::NON_BOOTABLE, "non-bootable image"),
            (Self::PIC, "position-independent image"),
        ];
        checks
            .iter()
            .find(|(mask, _)| self.0 & mask != 0)
            .map(|(_, what)| *what)
    }
}

/// An image version, `major.minor.revision+build` as imgtool writes it.
///
/// Ordered by (major, minor, revision, build), which is how fota compares releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ImageVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Revision.
    pub revision: u16,
    /// Build number.
    pub build: u32,
}

impl ImageVersion {
    /// A version from its four parts.
    pub const fn new(major: u8, minor: u8, revision: u16, build: u32) -> Self {
        Self {
            major,
            minor,
            revision,
            build,
        }
    }
}

impl fmt::Display for ImageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.revision)?;
        if self.build != 0 {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

/// A version string that is not `major[.minor[.revision]][+build]` within the field widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid version (expected major.minor.revision[+build], e.g. 1.4.2+7)")]
pub struct VersionParseError;

impl FromStr for ImageVersion {
    type Err = VersionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn number<T: FromStr>(part: &str) -> Result<T, VersionParseError> {
            // `u8::from_str` accepts a leading '+'; a version does not.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionParseError);
            }
            part.parse().map_err(|_| VersionParseError)
        }
        let (triple, build) = match s.split_once('+') {
            Some((triple, build)) => (triple, number::<u32>(build)?),
            None => (s, 0),
        };
        let mut parts = triple.split('.');
        let major = number::<u8>(parts.next().unwrap_or(""))?;
        let minor = parts.next().map(number::<u8>).transpose()?.unwrap_or(0);
        let revision = parts.next().map(number::<u16>).transpose()?.unwrap_or(0);
        if parts.next().is_some() {
            return Err(VersionParseError);
        }
        Ok(Self::new(major, minor, revision, build))
    }
}

/// The fixed 32-byte MCUboot image header (`struct image_header`), little endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// `ih_load_addr`: with [`ImageFlags::ROM_FIXED`], the slot address the image is linked for.
    pub load_addr: u32,
    /// `ih_hdr_size`: offset of the payload.
    pub hdr_size: u16,
    /// `ih_protect_tlv_size`: size of the protected TLV area, info header included (0 if none).
    pub protect_tlv_size: u16,
    /// `ih_img_size`: payload length.
    pub img_size: u32,
    /// `ih_flags`.
    pub flags: ImageFlags,
    /// `ih_ver`.
    pub version: ImageVersion,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ImageHeader {
    /// Parse the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let Some(b) = bytes.get(..HEADER_LEN) else {
            return Err(ImageError::Truncated(super::Region::Header));
        };
        let magic = u32_at(b, 0);
        if magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic(magic));
        }
        let header = Self {
            load_addr: u32_at(b, 4),
            hdr_size: u16_at(b, 8),
            protect_tlv_size: u16_at(b, 10),
            img_size: u32_at(b, 12),
            flags: ImageFlags(u32_at(b, 16)),
            version: ImageVersion {
                major: b[20],
                minor: b[21],
                revision: u16_at(b, 22),
                build: u32_at(b, 24),
            },
        };
        if usize::from(header.hdr_size) < HEADER_LEN {
            return Err(ImageError::HeaderSizeTooSmall(header.hdr_size));
        }
        Ok(header)
    }

    /// The header as the 32 bytes MCUboot expects.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.load_addr.to_le_bytes());
        b[8..10].copy_from_slice(&self.hdr_size.to_le_bytes());
        b[10..12].copy_from_slice(&self.protect_tlv_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.img_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.flags.0.to_le_bytes());
        b[20] = self.version.major;
        b[21] = self.version.minor;
        b[22..24].copy_from_slice(&self.version.revision.to_le_bytes());
        b[24..28].copy_from_slice(&self.version.build.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses_and_prints_like_imgtool() {
        let v: ImageVersion = "1.4.2+7".parse().unwrap();
        assert_eq!(v, ImageVersion::new(1, 4, 2, 7));
        assert_eq!(v.to_string(), "1.4.2+7");
        assert_eq!("2".parse::<ImageVersion>().unwrap().to_string(), "2.0.0");
        assert_eq!(
            "0.9.1".parse::<ImageVersion>().unwrap(),
            ImageVersion::new(0, 9, 1, 0)
        );
        for bad in [
            "",
            "1.",
            "1..2",
            "256.0.0",
            "1.2.3.4",
            "a.b.c",
            "1.2.3+",
            "+1.2",
            "1.2.+3",
            "1.2.65536",
        ] {
            assert_eq!(
                bad.parse::<ImageVersion>(),
                Err(VersionParseError),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn versions_order_numerically() {
        let parse = |s: &str| s.parse::<ImageVersion>().unwrap();
        assert!(parse("1.10.0") > parse("1.9.9"));
        assert!(parse("1.2.3+2") > parse("1.2.3+1"));
        assert!(parse("2.0.0") > parse("1.255.65535+9"));
    }

    #[test]
    fn header_round_trips() {
        let h = ImageHeader {
            load_addr: 0x0802_0000,
            hdr_size: 0x200,
            protect_tlv_size: 12,
            img_size: 1234,
            flags: ImageFlags(ImageFlags::ROM_FIXED),
            version: ImageVersion::new(1, 2, 3, 4),
        };
        assert_eq!(ImageHeader::parse(&h.to_bytes()), Ok(h));
    }

    #[test]
    fn header_rejects_short_magic_and_small_size() {
        let mut b = ImageHeader {
            load_addr: 0,
            hdr_size: 0x20,
            protect_tlv_size: 0,
            img_size: 0,
            flags: ImageFlags(0),
            version: ImageVersion::default(),
        }
        .to_bytes();
        assert!(ImageHeader::parse(&b).is_ok());
        assert_eq!(
            ImageHeader::parse(&b[..31]),
            Err(ImageError::Truncated(super::super::Region::Header))
        );
        b[8] = 31;
        assert_eq!(
            ImageHeader::parse(&b),
            Err(ImageError::HeaderSizeTooSmall(31))
        );
        b[0] ^= 1;
        assert!(matches!(
            ImageHeader::parse(&b),
            Err(ImageError::BadMagic(_))
        ));
    }
}
