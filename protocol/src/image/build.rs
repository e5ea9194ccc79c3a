//! Building and signing images (feature `std`): what `fota sign` and the tests use.
//!
//! The output (header padded with 0xff, like imgtool's `--pad-header`) is byte-for-byte what `imgtool sign --header-size 0x200 --pad-header --rom-fixed
//! <slot> -s <counter> -k <ed25519 key>` writes: header, zero padding, payload, protected TLVs
//! (SEC_CNT), then SHA256, KEYHASH and ED25519.

use super::{
    key_hash, tlv_type, Digest, ImageFlags, ImageHeader, ImageVersion, HEADER_LEN, TLV_HEADER_LEN,
    TLV_INFO_MAGIC, TLV_PROT_INFO_MAGIC,
};
use alloc::vec::Vec;
use ed25519_dalek::{Signer, SigningKey};

/// Why an image could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The header size cannot hold the 32-byte header.
    #[error("header size {0:#x} is smaller than the 32-byte header")]
    HeaderTooSmall(u16),
    /// The payload is larger than a u32 length allows.
    #[error("payload of {0} bytes is too large for an image")]
    PayloadTooLarge(usize),
}

/// Builds an MCUboot image around a raw payload.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    payload: Vec<u8>,
    version: ImageVersion,
    header_size: u16,
    security_counter: Option<u32>,
    rom_fixed: Option<u32>,
    component: super::Component,
}

fn push_tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

fn tlv_area(magic: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TLV_HEADER_LEN + body.len());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&((TLV_HEADER_LEN + body.len()) as u16).to_le_bytes());
    out.extend_from_slice(body);
    out
}

impl ImageBuilder {
    /// A builder for `payload` (the application binary, vector table first) with fota's defaults:
    /// 0x200-byte header, no security counter TLV, no fixed address.
    pub fn new(payload: impl Into<Vec<u8>>, version: ImageVersion) -> Self {
        Self {
            payload: payload.into(),
            version,
            header_size: super::DEFAULT_HEADER_SIZE,
            security_counter: None,
            rom_fixed: None,
            component: super::Component::Application,
        }
    }

    /// Header size (payload offset); imgtool's `--header-size`.
    pub fn header_size(mut self, size: u16) -> Self {
        self.header_size = size;
        self
    }

    /// Add a protected SEC_CNT TLV; imgtool's `-s`.
    pub fn security_counter(mut self, counter: u32) -> Self {
        self.security_counter = Some(counter);
        self
    }

    /// Mark the image as linked to execute in place at `slot_address` (ROM_FIXED flag and
    /// `load_addr`); imgtool's `--rom-fixed`.
    pub fn rom_fixed(mut self, slot_address: u32) -> Self {
        self.rom_fixed = Some(slot_address);
        self
    }

    /// Mark the image as `component` (the protected COMPONENT TLV, after SEC_CNT; an
    /// application has none): imgtool's `--custom-tlv 0xa0 0x01<slot>`.
    pub fn component(mut self, component: super::Component) -> Self {
        self.component = component;
        self
    }

    /// Header, padding, payload and protected TLVs: the bytes the hash covers.
    fn hashed_part(&self) -> Result<Vec<u8>, BuildError> {
        if usize::from(self.header_size) < HEADER_LEN {
            return Err(BuildError::HeaderTooSmall(self.header_size));
        }
        let img_size = u32::try_from(self.payload.len())
            .map_err(|_| BuildError::PayloadTooLarge(self.payload.len()))?;
        let mut body = Vec::new();
        if let Some(counter) = self.security_counter {
            push_tlv(&mut body, tlv_type::SEC_CNT, &counter.to_le_bytes());
        }
        if let Some(value) = self.component.tlv_value() {
            push_tlv(&mut body, tlv_type::COMPONENT, &value);
        }
        let protected = if body.is_empty() {
            Vec::new()
        } else {
            tlv_area(TLV_PROT_INFO_MAGIC, &body)
        };
        let header = ImageHeader {
            load_addr: self.rom_fixed.unwrap_or(0),
            hdr_size: self.header_size,
            protect_tlv_size: protected.len() as u16,
            img_size,
            flags: ImageFlags(if self.rom_fixed.is_some() {
                ImageFlags::ROM_FIXED
            } else {
                0
            }),
            version: self.version,
        };
        let mut out = Vec::with_capacity(
            usize::from(self.header_size) + self.payload.len() + protected.len() + 256,
        );
        out.extend_from_slice(&header.to_bytes());
        // imgtool pads the header with the erased value, 0xff.
        out.resize(usize::from(self.header_size), 0xff);
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&protected);
        Ok(out)
    }

    /// An image with a SHA256 TLV and no signature (what `imgtool sign` without `-k` writes).
    /// fota refuses to install or serve these; they exist to test that refusal.
    pub fn build_unsigned(&self) -> Result<Vec<u8>, BuildError> {
        let mut image = self.hashed_part()?;
        let digest = Digest::of(&image);
        let mut body = Vec::new();
        push_tlv(&mut body, tlv_type::SHA256, &digest.0);
        image.extend_from_slice(&tlv_area(TLV_INFO_MAGIC, &body));
        Ok(image)
    }

    /// The signed image: SHA256, KEYHASH and an Ed25519 signature over the digest.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, BuildError> {
        let mut image = self.hashed_part()?;
        let digest = Digest::of(&image);
        let signature = key.sign(&digest.0);
        let mut body = Vec::new();
        push_tlv(&mut body, tlv_type::SHA256, &digest.0);
        push_tlv(
            &mut body,
            tlv_type::KEYHASH,
            &key_hash(&key.verifying_key().to_bytes()).0,
        );
        push_tlv(&mut body, tlv_type::ED25519, &signature.to_bytes());
        image.extend_from_slice(&tlv_area(TLV_INFO_MAGIC, &body));
        Ok(image)
    }
}
