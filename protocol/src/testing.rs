//! Test fixtures (feature `testing`), so every crate's tests build the same thing the same way:
//! an application payload whose vector table is linked for a slot, and that payload signed as an
//! image for the slot with a test key; and a stage-1 bootloader image for a stage-1 slot.
//!
//! Nothing here is for production: the keys are derived from one repeated byte.

use crate::image::{ImageBuilder, ImageVersion};
use crate::layout::SlotId;
use alloc::vec::Vec;
use ed25519_dalek::SigningKey;

/// A test signing key: the Ed25519 key whose 32-byte seed is `seed` repeated.
pub fn test_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// An application payload of `len` bytes (at least 8) linked for `slot`: the initial stack
/// pointer at the top of SRAM1, then a Thumb reset handler 0x100 bytes into the payload (which
/// starts 0x200 past the slot, after the image header), then filler.
pub fn app_for(slot: SlotId, len: usize) -> Vec<u8> {
    let entry = slot.partition().start + 0x200 + 0x100;
    let mut payload = Vec::with_capacity(len.max(8));
    payload.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    payload.extend_from_slice(&(entry | 1).to_le_bytes());
    payload.extend((8..len).map(|i| (i * 31 % 251) as u8));
    payload
}

/// A builder for [`app_for`]`(slot, len)` as a `version` image fixed at `slot`'s address; add a
/// security counter, sign, or build it unsigned.
pub fn image_for(slot: SlotId, len: usize, version: ImageVersion) -> ImageBuilder {
    ImageBuilder::new(app_for(slot, len), version).rom_fixed(slot.partition().start)
}

/// [`app_for`]`(slot, len)` signed with `key` as a `version` image for `slot` carrying
/// `security_counter`.
///
/// # Panics
/// Never for a payload that fits an image (`len` below 4 GiB).
pub fn signed_for(
    slot: SlotId,
    len: usize,
    version: ImageVersion,
    security_counter: u32,
    key: &SigningKey,
) -> Vec<u8> {
    #[allow(clippy::expect_used)] // A fixture: the only failure is a payload over 4 GiB.
    image_for(slot, len, version)
        .security_counter(security_counter)
        .sign(key)
        .expect("a test payload fits an image")
}

/// A stage-1 bootloader payload of `len` bytes (at least 8) linked for stage-1 slot `slot`,
/// signed with `key` as a `version` image fixed at that slot's address, marked (protected
/// COMPONENT TLV) as a stage-1 for it, carrying `security_counter`.
///
/// # Panics
/// Never for a payload that fits an image (`len` below 4 GiB).
pub fn stage1_for(
    slot: SlotId,
    len: usize,
    version: ImageVersion,
    security_counter: u32,
    key: &SigningKey,
) -> Vec<u8> {
    let base = slot.stage1_partition().start;
    let entry = base + 0x200 + 0x100;
    let mut payload = Vec::with_capacity(len.max(8));
    payload.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    payload.extend_from_slice(&(entry | 1).to_le_bytes());
    payload.extend((8..len).map(|i| (i * 37 % 251) as u8));
    #[allow(clippy::expect_used)] // A fixture: the only failure is a payload over 4 GiB.
    ImageBuilder::new(payload, version)
        .rom_fixed(base)
        .component(crate::image::Component::Stage1 { slot })
        .security_counter(security_counter)
        .sign(key)
        .expect("a test payload fits an image")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::check_verified_for_slot;
    use crate::image::{verify, TrustedKey};

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_signed_fixture_verifies_and_fits_only_its_slot() {
        let key = test_key(7);
        let trusted = [TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()];
        for slot in [SlotId::A, SlotId::B] {
            let image = signed_for(slot, 4096, ImageVersion::new(1, 2, 3, 4), 5, &key);
            let verified = verify(&image, &trusted).unwrap();
            assert_eq!(verified.security_counter, 5);
            assert!(check_verified_for_slot(&verified, slot).is_ok());
            assert!(check_verified_for_slot(&verified, slot.other()).is_err());
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_stage1_fixture_verifies_only_as_a_stage1_for_its_slot() {
        use crate::image::check_verified_for_stage1;
        let key = test_key(7);
        let trusted = [TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()];
        for slot in [SlotId::A, SlotId::B] {
            let image = stage1_for(slot, 4096, ImageVersion::new(1, 1, 0, 0), 2, &key);
            let verified = verify(&image, &trusted).unwrap();
            assert!(check_verified_for_stage1(&verified, slot).is_ok());
            assert!(check_verified_for_stage1(&verified, slot.other()).is_err());
            assert!(check_verified_for_slot(&verified, slot).is_err());
        }
    }
}
