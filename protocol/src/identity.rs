//! The device identity record: who a device is and where its server is, written once at
//! provisioning into the identity area (the last 512 bytes of sector 1, 0x0800_7E00,
//! [`IDENTITY`], written with stage-0 before the factory write-protects sectors 0-1) and never touched
//! by OTA. The operator's CLI encodes it (`fota devices identity`), the device's OTA runtime
//! decodes it at every boot; both use this module, so the format has one definition.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `FOID` |
//! | 4 | 1 | format version (1) |
//! | 5 | 1 | reserved, 0 |
//! | 6 | 2 | body length n (u16 LE) |
//! | 8 | n | body: device id, token, server URL, model; each a length byte then its bytes |
//! | 8 + n | 4 | CRC-32 (ISO-HDLC) of bytes 0..8 + n |
//!
//! Decoding is strict: a record that is erased, truncated, of another version, fails its CRC,
//! or carries a field outside its rules is refused with its own [`IdentityError`], and a device
//! refuses to run OTA without a valid one (it would otherwise talk to nobody, or to the wrong
//! server, under the wrong name). The field rules are the server's: a device id is 1-64
//! characters of `A-Z a-z 0-9 . _ : -` not starting with `.` or `-`, a model the same in 1-32,
//! a token 1-128 printable ASCII characters, a server URL 1-200 characters starting with
//! `http://` or `https://`.

use crate::layout::{Partition, IDENTITY};

/// The record's magic, "FOID".
pub const MAGIC: [u8; 4] = *b"FOID";
/// The format version this module reads and writes.
pub const VERSION: u8 = 1;
/// The largest record: header, the four longest fields with their length bytes, CRC.
pub const MAX_RECORD_LEN: usize = 8 + (1 + 64) + (1 + 128) + (1 + 200) + (1 + 32) + 4;
/// Where the record lives: the first bytes of the identity sector.
pub const PARTITION: Partition = IDENTITY;

const MAX_DEVICE_ID: usize = 64;
const MAX_TOKEN: usize = 128;
const MAX_URL: usize = 200;
const MAX_MODEL: usize = 32;

const CRC32: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// A device's identity, borrowed from the bytes it was decoded from (or to be encoded).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// The id the server knows the device by (`fota devices register`).
    pub device_id: &'a str,
    /// The device's bearer token, as `fota devices register` printed it once.
    pub token: &'a str,
    /// Base URL of the fota server, e.g. `http://fota.example.com:8080`.
    pub server_url: &'a str,
    /// Hardware model, e.g. `streetlight-f429`.
    pub model: &'a str,
}

impl core::fmt::Debug for Identity<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never the token.
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("server_url", &self.server_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

/// Which field of an identity broke its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The device id.
    DeviceId,
    /// The token.
    Token,
    /// The server URL.
    ServerUrl,
    /// The model.
    Model,
}

impl core::fmt::Display for Field {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Field::DeviceId => "device id",
            Field::Token => "token",
            Field::ServerUrl => "server URL",
            Field::Model => "model",
        })
    }
}

/// Why an identity record was refused (decoding) or could not be written (encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The sector is erased: the device was never provisioned.
    #[error("no identity: the identity sector is erased (provision the device)")]
    Erased,
    /// Something that is not an identity record.
    #[error("no identity: the identity sector does not start with FOID")]
    BadMagic,
    /// A record of a format version this firmware does not read.
    #[error("identity record version {0} is not supported (this firmware reads version 1)")]
    Version(u8),
    /// The record is cut short, or its length field is impossible.
    #[error("identity record truncated or with an impossible length")]
    Truncated,
    /// The CRC does not match: the record is corrupt (or half written).
    #[error("identity record corrupt: CRC mismatch")]
    Crc,
    /// A field breaks its rule (length, characters).
    #[error("identity record: invalid {0}")]
    Invalid(Field),
    /// The output buffer is smaller than the record.
    #[error("identity record does not fit the buffer")]
    BufferTooSmall,
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

impl<'a> Identity<'a> {
    /// Check every field against its rule.
    pub fn validate(&self) -> Result<(), IdentityError> {
        if !name_ok(self.device_id, MAX_DEVICE_ID) {
            return Err(IdentityError::Invalid(Field::DeviceId));
        }
        if self.token.is_empty()
            || self.token.len() > MAX_TOKEN
            || !self.token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(IdentityError::Invalid(Field::Token));
        }
        let url = self.server_url;
        if url.len() > MAX_URL
            || !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() <= "http://".len()
            || !url.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(IdentityError::Invalid(Field::ServerUrl));
        }
        if !name_ok(self.model, MAX_MODEL) {
            return Err(IdentityError::Invalid(Field::Model));
        }
        Ok(())
    }

    /// The server URL without a trailing `/`, ready to have `/v1/...` appended.
    pub fn base_url(&self) -> &'a str {
        self.server_url.trim_end_matches('/')
    }

    /// Write the record into `out` and return its length. Refuses an invalid identity.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, IdentityError> {
        self.validate()?;
        let fields = [self.device_id, self.token, self.server_url, self.model];
        let body: usize = fields.iter().map(|f| 1 + f.len()).sum();
        let len = 8 + body + 4;
        if out.len() < len {
            return Err(IdentityError::BufferTooSmall);
        }
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = 0;
        out[6..8].copy_from_slice(&(body as u16).to_le_bytes());
        let mut at = 8;
        for field in fields {
            out[at] = field.len() as u8;
            out[at + 1..at + 1 + field.len()].copy_from_slice(field.as_bytes());
            at += 1 + field.len();
        }
        let crc = CRC32.checksum(&out[..at]);
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Read a record from the start of `bytes` (the identity sector, or its first
    /// [`MAX_RECORD_LEN`] bytes).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, IdentityError> {
        let header = bytes.get(..8).ok_or(IdentityError::Truncated)?;
        if header[..4] == [0xFF; 4] {
            return Err(IdentityError::Erased);
        }
        if header[..4] != MAGIC {
            return Err(IdentityError::BadMagic);
        }
        if header[4] != VERSION {
            return Err(IdentityError::Version(header[4]));
        }
        let body = usize::from(u16::from_le_bytes([header[6], header[7]]));
        if 8 + body + 4 > MAX_RECORD_LEN {
            return Err(IdentityError::Truncated);
        }
        let record = bytes.get(..8 + body + 4).ok_or(IdentityError::Truncated)?;
        let (covered, crc) = record.split_at(8 + body);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if CRC32.checksum(covered) != crc {
            return Err(IdentityError::Crc);
        }
        let mut rest = &covered[8..];
        let mut take = |field: Field| -> Result<&'a str, IdentityError> {
            let (&len, tail) = rest.split_first().ok_or(IdentityError::Truncated)?;
            let len = usize::from(len);
            if tail.len() < len {
                return Err(IdentityError::Truncated);
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            core::str::from_utf8(value).map_err(|_| IdentityError::Invalid(field))
        };
        let identity = Identity {
            device_id: take(Field::DeviceId)?,
            token: take(Field::Token)?,
            server_url: take(Field::ServerUrl)?,
            model: take(Field::Model)?,
        };
        if !rest.is_empty() {
            return Err(IdentityError::Truncated);
        }
        identity.validate()?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "fota_dev_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn identity() -> Identity<'static> {
        Identity {
            device_id: "lamp-0001",
            token: TOKEN,
            server_url: "http://fota.example.com:8080/",
            model: "streetlight-f429",
        }
    }

    fn encoded() -> Vec<u8> {
        let mut buf = vec![0xFF; IDENTITY.size as usize];
        let n = identity().encode(&mut buf).unwrap();
        assert_eq!(&buf[..4], b"FOID");
        assert!(n <= MAX_RECORD_LEN);
        buf
    }

    #[test]
    fn round_trips_inside_an_erased_sector() {
        let sector = encoded();
        let back = Identity::decode(&sector).unwrap();
        assert_eq!(back, identity());
        assert_eq!(back.base_url(), "http://fota.example.com:8080");
        // The longest identity fits MAX_RECORD_LEN exactly.
        let long = Identity {
            device_id: &"d".repeat(64),
            token: &"t".repeat(128),
            server_url: &format!("https://{}", "h".repeat(192)),
            model: &"m".repeat(32),
        };
        let mut buf = [0u8; MAX_RECORD_LEN];
        assert_eq!(long.encode(&mut buf).unwrap(), MAX_RECORD_LEN);
        assert_eq!(Identity::decode(&buf).unwrap(), long);
        assert_eq!(
            long.encode(&mut buf[..MAX_RECORD_LEN - 1]),
            Err(IdentityError::BufferTooSmall)
        );
    }

    #[test]
    fn the_debug_form_never_shows_the_token() {
        assert!(!format!("{:?}", identity()).contains("fota_dev_"));
    }

    #[test]
    fn erased_missing_and_foreign_sectors_are_refused_by_name() {
        assert_eq!(Identity::decode(&[0xFF; 4096]), Err(IdentityError::Erased));
        assert_eq!(Identity::decode(&[0; 4096]), Err(IdentityError::BadMagic));
        assert_eq!(Identity::decode(&[]), Err(IdentityError::Truncated));
        let mut other = encoded();
        other[4] = 2;
        assert_eq!(Identity::decode(&other), Err(IdentityError::Version(2)));
    }

    #[test]
    fn every_bit_flip_and_every_truncation_is_refused() {
        let sector = encoded();
        let len = identity().encode(&mut [0; MAX_RECORD_LEN]).unwrap();
        for byte in 0..len {
            for bit in 0..8 {
                let mut damaged = sector.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    Identity::decode(&damaged).is_err(),
                    "flip of bit {bit} in byte {byte} accepted"
                );
            }
        }
        for cut in 0..len {
            assert!(Identity::decode(&sector[..cut]).is_err(), "cut at {cut}");
        }
        // A record half written (the rest still erased) fails too.
        for written in 8..len {
            let mut torn = sector.clone();
            torn[written..].fill(0xFF);
            assert!(Identity::decode(&torn).is_err(), "torn at {written}");
        }
    }

    #[test]
    fn fields_follow_the_servers_rules() {
        let bad = [
            (
                Identity {
                    device_id: "",
                    ..identity()
                },
                Field::DeviceId,
            ),
            (
                Identity {
                    device_id: "-x",
                    ..identity()
                },
                Field::DeviceId,
            ),
            (
                Identity {
                    device_id: "a/b",
                    ..identity()
                },
                Field::DeviceId,
            ),
            (
                Identity {
                    token: "",
                    ..identity()
                },
                Field::Token,
            ),
            (
                Identity {
                    token: "has space",
                    ..identity()
                },
                Field::Token,
            ),
            (
                Identity {
                    server_url: "ftp://x",
                    ..identity()
                },
                Field::ServerUrl,
            ),
            (
                Identity {
                    server_url: "http://",
                    ..identity()
                },
                Field::ServerUrl,
            ),
            (
                Identity {
                    model: &"m".repeat(33),
                    ..identity()
                },
                Field::Model,
            ),
        ];
        for (identity, field) in bad {
            assert_eq!(
                identity.encode(&mut [0; MAX_RECORD_LEN]),
                Err(IdentityError::Invalid(field)),
                "{identity:?}"
            );
        }
        // A record whose CRC is right but whose field is not (written by something else) is
        // refused on decode too.
        let mut buf = [0u8; MAX_RECORD_LEN];
        let n = identity().encode(&mut buf).unwrap();
        buf[9] = b'/'; // first byte of the device id
        let crc = CRC32.checksum(&buf[..n - 4]);
        buf[n - 4..n].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Identity::decode(&buf),
            Err(IdentityError::Invalid(Field::DeviceId))
        );
    }
}
