//! Trusted keys, the TLV checks and the signature check shared by slice and stream verification.

use super::ed25519;
use super::tlv::{info_total, TlvIter};
use super::{
    tlv_type, ImageError, ImageHeader, Region, StreamVerifier, MAX_PROTECTED_TLV_LEN, MAX_TLV_LEN,
    TLV_PROT_INFO_MAGIC,
};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest (image hash, key hash, artifact address).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl From<[u8; 32]> for Digest {
    fn from(b: [u8; 32]) -> Self {
        Self(b)
    }
}

impl From<sha2::digest::Output<Sha256>> for Digest {
    fn from(out: sha2::digest::Output<Sha256>) -> Self {
        Self(out.into())
    }
}

impl Digest {
    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256::digest(bytes).into()
    }

    /// Parse 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = nibble(s[2 * i])? << 4 | nibble(s[2 * i + 1])?;
        }
        Some(Self(out))
    }

    /// The 64 lowercase hex digits, without allocating.
    pub fn to_hex(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        out
    }
}

impl core::fmt::Display for Digest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let hex = self.to_hex();
        // Always ASCII, so this cannot fail.
        f.write_str(core::str::from_utf8(&hex).unwrap_or("?"))
    }
}

impl core::fmt::Debug for Digest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 public key as SubjectPublicKeyInfo DER, the form MCUboot embeds and hashes.
pub fn spki_der(key: &[u8; 32]) -> [u8; 44] {
    let mut der = [0u8; 44];
    der[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
    der[12..].copy_from_slice(key);
    der
}

/// The KEYHASH TLV value for a key: SHA-256 of its SubjectPublicKeyInfo DER (as imgtool does).
pub fn key_hash(key: &[u8; 32]) -> Digest {
    Digest::of(&spki_der(key))
}

/// Why a public key cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not the encoding of a curve point.
    #[error("not a valid Ed25519 public key")]
    Invalid,
    /// A small-order point: signatures under it prove nothing.
    #[error("small-order (weak) Ed25519 public key")]
    SmallOrder,
}

/// A public key images may be signed with, with its key hash computed once.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    bytes: [u8; 32],
    hash: Digest,
    #[cfg(feature = "dalek")]
    key: ed25519_dalek::VerifyingKey,
}

impl core::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TrustedKey(hash {})", self.hash)
    }
}

impl TrustedKey {
    /// Trust a key given as its 32 compressed bytes. Small-order keys are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        ed25519::key_check(bytes)?;
        Ok(Self {
            bytes: *bytes,
            hash: key_hash(bytes),
            #[cfg(feature = "dalek")]
            key: ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::Invalid)?,
        })
    }

    /// Trust a key given as SubjectPublicKeyInfo DER (44 bytes).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        match der.split_at_checked(ED25519_SPKI_PREFIX.len()) {
            Some((prefix, key)) if prefix == ED25519_SPKI_PREFIX => {
                Self::from_bytes(key.try_into().map_err(|_| KeyError::Invalid)?)
            }
            _ => Err(KeyError::Invalid),
        }
    }

    /// The 32 compressed key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// The KEYHASH this key's images carry.
    pub fn key_hash(&self) -> Digest {
        self.hash
    }

    /// The dalek key, for callers that verify other things with it (feature `dalek`).
    #[cfg(feature = "dalek")]
    pub fn verifying_key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.key
    }
}

/// An image whose hash and signature verified under one of the trusted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedImage {
    /// Its header.
    pub header: ImageHeader,
    /// SHA-256 over header, payload and protected TLVs (the SHA256 TLV).
    pub digest: Digest,
    /// The SEC_CNT TLV, or 0 when the image has none (as MCUboot reads it).
    pub security_counter: u32,
    /// Index into the trusted key list of the key that signed it.
    pub key_index: usize,
    /// Total length: header, payload and both TLV areas.
    pub total_len: u32,
    /// The first two vector table words (initial SP, reset handler), when the payload has them.
    pub vector_table: Option<[u32; 2]>,
    /// What the image is (its protected COMPONENT TLV): an application or a stage-1.
    pub component: super::Component,
}

/// Verify a whole image held in memory. Bytes after the image (slot padding) are ignored.
///
/// The same code as [`StreamVerifier`] fed with one chunk, so both give the same verdict.
pub fn verify(bytes: &[u8], keys: &[TrustedKey]) -> Result<VerifiedImage, ImageError> {
    let mut v = StreamVerifier::new(u32::MAX);
    v.update(bytes)?;
    v.finish()?.verify(keys)
}

/// An image that is complete and structurally sound, with its digest computed, but whose hash
/// and signature are not checked yet. What `fota inspect` shows, and what
/// [`verify`](Self::verify) decides about.
#[derive(Clone)]
pub struct ParsedImage {
    header: ImageHeader,
    computed: Digest,
    vector_table: Option<[u32; 2]>,
    protected: [u8; MAX_PROTECTED_TLV_LEN],
    protected_len: usize,
    tlvs: [u8; MAX_TLV_LEN],
    tlvs_len: usize,
    total_len: u32,
    fields: TlvFields,
}

impl core::fmt::Debug for ParsedImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ParsedImage")
            .field("header", &self.header)
            .field("computed", &self.computed)
            .field("total_len", &self.total_len)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

/// The TLVs fota understands, each at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlvFields {
    /// SEC_CNT.
    pub security_counter: Option<u32>,
    /// SHA256.
    pub sha256: Option<Digest>,
    /// KEYHASH.
    pub key_hash: Option<Digest>,
    /// PUBKEY (SubjectPublicKeyInfo DER of an Ed25519 key).
    pub public_key: Option<[u8; 44]>,
    /// ED25519.
    pub signature: Option<[u8; 64]>,
    /// COMPONENT (protected): what the image is; `None` for an application.
    pub component: Option<super::Component>,
}

fn set_once<T>(slot: &mut Option<T>, tlv: u16, value: T) -> Result<(), ImageError> {
    if slot.replace(value).is_some() {
        return Err(ImageError::DuplicateTlv(tlv));
    }
    Ok(())
}

fn fixed<const N: usize>(tlv: u16, value: &[u8]) -> Result<[u8; N], ImageError> {
    value.try_into().map_err(|_| ImageError::BadTlvLength {
        tlv_type: tlv,
        len: value.len() as u16,
        expected: N as u16,
    })
}

impl TlvFields {
    fn parse(protected: &[u8], tlvs: &[u8]) -> Result<Self, ImageError> {
        let mut f = Self::default();
        for entry in TlvIter::new(protected, Region::ProtectedTlvs) {
            let e = entry?;
            match e.tlv_type {
                tlv_type::SEC_CNT => set_once(
                    &mut f.security_counter,
                    e.tlv_type,
                    u32::from_le_bytes(fixed(e.tlv_type, e.value)?),
                )?,
                tlv_type::COMPONENT => {
                    let value = fixed(e.tlv_type, e.value)?;
                    let component = super::Component::from_tlv_value(value)
                        .ok_or(ImageError::BadComponent(value))?;
                    set_once(&mut f.component, e.tlv_type, component)?
                }
                // What identifies or authenticates the image cannot be inside what it covers.
                tlv_type::SHA256
                | tlv_type::SHA384
                | tlv_type::SHA512
                | tlv_type::KEYHASH
                | tlv_type::PUBKEY
                | tlv_type::ED25519
                | tlv_type::SIG_PURE => return Err(ImageError::MisplacedTlv(e.tlv_type)),
                // Other protected TLVs (boot record, dependencies, UUIDs) are hashed, not used.
                _ => {}
            }
        }
        for entry in TlvIter::new(tlvs, Region::Tlvs) {
            let e = entry?;
            match e.tlv_type {
                tlv_type::SHA256 => set_once(
                    &mut f.sha256,
                    e.tlv_type,
                    Digest(fixed(e.tlv_type, e.value)?),
                )?,
                tlv_type::KEYHASH => set_once(
                    &mut f.key_hash,
                    e.tlv_type,
                    Digest(fixed(e.tlv_type, e.value)?),
                )?,
                tlv_type::PUBKEY => {
                    set_once(&mut f.public_key, e.tlv_type, fixed(e.tlv_type, e.value)?)?
                }
                tlv_type::ED25519 => {
                    set_once(&mut f.signature, e.tlv_type, fixed(e.tlv_type, e.value)?)?
                }
                // An unprotected security counter or component mark could be rewritten by anyone.
                tlv_type::SEC_CNT | tlv_type::COMPONENT => {
                    return Err(ImageError::MisplacedTlv(e.tlv_type))
                }
                tlv_type::SHA384 | tlv_type::SHA512 => {
                    return Err(ImageError::Unsupported("SHA-384/512 image hash"))
                }
                tlv_type::SIG_PURE => return Err(ImageError::Unsupported("pure signature")),
                // Unknown unprotected TLVs are ignored, as MCUboot does: nothing trusts them.
                _ => {}
            }
        }
        Ok(f)
    }
}

impl ParsedImage {
    pub(crate) fn new(
        header: ImageHeader,
        computed: Digest,
        vector_table: Option<[u32; 2]>,
        protected: &[u8],
        tlvs: &[u8],
        total_len: u32,
    ) -> Result<Self, ImageError> {
        if !protected.is_empty() {
            let tlv_tot = info_total(protected, Region::ProtectedTlvs, TLV_PROT_INFO_MAGIC)
                .map_err(|e| match e {
                    ImageError::Truncated(_) | ImageError::TlvTotalTooSmall(_) => {
                        ImageError::ProtectedSizeMismatch {
                            header: header.protect_tlv_size,
                            tlv_tot: 0,
                        }
                    }
                    other => other,
                })?;
            if tlv_tot != protected.len() {
                return Err(ImageError::ProtectedSizeMismatch {
                    header: header.protect_tlv_size,
                    tlv_tot: tlv_tot as u16,
                });
            }
        }
        let fields = TlvFields::parse(protected, tlvs)?;
        let mut image = Self {
            header,
            computed,
            vector_table,
            protected: [0; MAX_PROTECTED_TLV_LEN],
            protected_len: protected.len(),
            tlvs: [0; MAX_TLV_LEN],
            tlvs_len: tlvs.len(),
            total_len,
            fields,
        };
        image.protected[..protected.len()].copy_from_slice(protected);
        image.tlvs[..tlvs.len()].copy_from_slice(tlvs);
        Ok(image)
    }

    /// Parse a whole image held in memory (bytes after it are ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, ImageError> {
        let mut v = StreamVerifier::new(u32::MAX);
        v.update(bytes)?;
        v.finish()
    }

    /// The header.
    pub fn header(&self) -> &ImageHeader {
        &self.header
    }

    /// SHA-256 computed over header, payload and protected TLVs.
    pub fn computed_digest(&self) -> Digest {
        self.computed
    }

    /// The TLVs fota understands.
    pub fn fields(&self) -> &TlvFields {
        &self.fields
    }

    /// Total image length.
    pub fn total_len(&self) -> u32 {
        self.total_len
    }

    /// Initial SP and reset vector, when the payload has 8 bytes.
    pub fn vector_table(&self) -> Option<[u32; 2]> {
        self.vector_table
    }

    /// Every protected TLV, in order.
    pub fn protected_tlvs(&self) -> TlvIter<'_> {
        TlvIter::new(&self.protected[..self.protected_len], Region::ProtectedTlvs)
    }

    /// Every unprotected TLV, in order.
    pub fn tlvs(&self) -> TlvIter<'_> {
        TlvIter::new(&self.tlvs[..self.tlvs_len], Region::Tlvs)
    }

    /// Check the hash and the signature against `keys`. The order of checks makes each refusal
    /// name the first thing wrong: unsupported feature, hash, missing signature, key, signature.
    pub fn verify(&self, keys: &[TrustedKey]) -> Result<VerifiedImage, ImageError> {
        if let Some(what) = self.header.flags.unsupported() {
            return Err(ImageError::Unsupported(what));
        }
        let f = &self.fields;
        let sha = f.sha256.ok_or(ImageError::MissingTlv(tlv_type::SHA256))?;
        if sha != self.computed {
            return Err(ImageError::HashMismatch);
        }
        let signature = f
            .signature
            .ok_or(ImageError::MissingTlv(tlv_type::ED25519))?;
        let key_index = match (f.key_hash, f.public_key) {
            (Some(hash), _) => keys.iter().position(|k| k.hash == hash),
            (None, Some(der)) => {
                // Name a small-order embedded key for what it is, before "untrusted".
                if let Some((_, raw)) = der.split_at_checked(ED25519_SPKI_PREFIX.len()) {
                    let raw: [u8; 32] = raw.try_into().map_err(|_| ImageError::UntrustedKey)?;
                    if ed25519::key_check(&raw) == Err(KeyError::SmallOrder) {
                        return Err(ImageError::WeakKey);
                    }
                }
                keys.iter().position(|k| spki_der(&k.to_bytes()) == der)
            }
            (None, None) => return Err(ImageError::MissingTlv(tlv_type::KEYHASH)),
        }
        .ok_or(ImageError::UntrustedKey)?;
        // A TrustedKey passed key_check when it was made, and verify_strict refuses small-order
        // keys again; the backend is the one `ed25519` chose (dalek, or salty with its checks).
        ed25519::verify_strict(&keys[key_index].bytes, &sha.0, &signature)
            .map_err(|_| ImageError::BadSignature)?;
        Ok(VerifiedImage {
            header: self.header,
            digest: sha,
            security_counter: f.security_counter.unwrap_or(0),
            key_index,
            total_len: self.total_len,
            vector_table: self.vector_table,
            component: f.component.unwrap_or_default(),
        })
    }
}
