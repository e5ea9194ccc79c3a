//! Simulated application builds: what a release does when a virtual device runs it.
//!
//! A virtual device cannot execute Thumb code, so a simulated build carries its behaviour in its
//! payload: after the vector table (initial SP, reset handler, as `fota sign` and the bootloader
//! require) comes a small descriptor, `FOTASIM1`, a behaviour code and a parameter. The device
//! reads it *from flash*, from the slot the bootloader chose, after the real `fota-boot` verified
//! the image: a device runs what is in its flash, signed, and nothing else.

use embedded_storage::nor_flash::ReadNorFlash;
use fota_boot::{BootTarget, FlashLayout};
use fota_protocol::image::{ImageBuilder, ImageVersion};
use fota_protocol::SlotId;

/// Where the descriptor sits in the payload (after 16 vector table entries).
const DESCRIPTOR_AT: usize = 0x40;
const MAGIC: &[u8; 8] = b"FOTASIM1";

/// What an application build does once the bootloader jumps to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppBehaviour {
    /// Checks in, passes its self-test, confirms itself and keeps working.
    Good,
    /// Faults before `main` every time (a bad linker script, a broken clock setup): the device
    /// resets at once, so the bootloader counts a failed attempt on every boot.
    FailsBoot,
    /// Boots and runs but never reaches the server (the field incident: it zeroes the RAM the
    /// old bootloader relied on and its network stack never comes up), until the watchdog
    /// resets it.
    NeverReachesServer,
    /// Works and confirms itself, then crashes after `after_ms` milliseconds of uptime on every
    /// boot: a confirmed-but-faulty release that only a fleet rollback fixes.
    CrashesAfter {
        /// Uptime at which it crashes.
        after_ms: u32,
    },
}

impl AppBehaviour {
    fn encode(self) -> (u8, u32) {
        match self {
            AppBehaviour::Good => (0, 0),
            AppBehaviour::FailsBoot => (1, 0),
            AppBehaviour::NeverReachesServer => (2, 0),
            AppBehaviour::CrashesAfter { after_ms } => (3, after_ms),
        }
    }

    fn decode(code: u8, param: u32) -> Option<Self> {
        Some(match code {
            0 => AppBehaviour::Good,
            1 => AppBehaviour::FailsBoot,
            2 => AppBehaviour::NeverReachesServer,
            3 => AppBehaviour::CrashesAfter { after_ms: param },
            _ => return None,
        })
    }
}

/// In every 4 KB of a simulated build, this many bytes are new in each version.
const CHANGED_PER_BLOCK: usize = 512;
/// One word in this many bytes is an absolute address in the slot a build is linked for.
const LITERAL_EVERY: usize = 32;

/// The payload of a simulated build linked for `slot`: vector table, descriptor, and filler
/// modelled on a real build's, `size` bytes in all (at least 128), so that a delta patch from
/// one version to the next is about as small as a real point release's (docs/BENCHMARKS.md):
/// the same "code" in every version (one pseudo-random stream), one word in every
/// [`LITERAL_EVERY`] bytes an absolute address inside the slot it is linked for (a literal pool:
/// relinking for the other slot changes every one), and in each 4 KB block
/// [`CHANGED_PER_BLOCK`] bytes at a place of the version's choosing that are the version's own
/// (its new code).
pub fn payload(
    slot: SlotId,
    version: ImageVersion,
    behaviour: AppBehaviour,
    size: usize,
) -> Vec<u8> {
    let size = size.max(128);
    let base = slot.partition().start;
    let seed = u32::from(version.major) << 24
        ^ u32::from(version.minor) << 16
        ^ u32::from(version.revision)
        ^ version.build.rotate_left(7);
    let mix = |i: u32| i.wrapping_mul(2_654_435_761);
    let mut payload: Vec<u8> = (0..size as u32).map(|i| mix(i).to_le_bytes()[1]).collect();
    for at in (LITERAL_EVERY - 4..size.saturating_sub(3)).step_by(LITERAL_EVERY) {
        let target = base + 0x200 + (mix(at as u32) >> 16) % 0x8000;
        payload[at..at + 4].copy_from_slice(&(target | 1).to_le_bytes());
    }
    for (block, chunk) in payload.chunks_mut(4096).enumerate() {
        let room = chunk.len().saturating_sub(CHANGED_PER_BLOCK).max(1);
        let from = (mix(block as u32 ^ seed) >> 8) as usize % room;
        for (i, b) in chunk
            .iter_mut()
            .skip(from)
            .take(CHANGED_PER_BLOCK)
            .enumerate()
        {
            *b = mix(i as u32 ^ seed.rotate_left(11) ^ (block as u32) << 20).to_le_bytes()[2];
        }
    }
    payload[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
    // The reset handler: inside the payload (after the 0x200-byte header), Thumb bit set.
    payload[4..8].copy_from_slice(&((base + 0x200 + 0x101) | 1).to_le_bytes());
    let (code, param) = behaviour.encode();
    payload[DESCRIPTOR_AT..DESCRIPTOR_AT + 8].copy_from_slice(MAGIC);
    payload[DESCRIPTOR_AT + 8] = code;
    payload[DESCRIPTOR_AT + 9..DESCRIPTOR_AT + 12].fill(0);
    payload[DESCRIPTOR_AT + 12..DESCRIPTOR_AT + 16].copy_from_slice(&param.to_le_bytes());
    payload
}

/// A signed simulated build for `slot`.
pub fn image(
    key: &ed25519_dalek::SigningKey,
    slot: SlotId,
    version: ImageVersion,
    security_counter: u32,
    behaviour: AppBehaviour,
    size: usize,
) -> Vec<u8> {
    ImageBuilder::new(payload(slot, version, behaviour, size), version)
        .security_counter(security_counter)
        .rom_fixed(slot.partition().start)
        .sign(key)
        // A payload of at most a slot, a fixed header size and a fixed slot address: the
        // builder has nothing to refuse.
        .unwrap_or_else(|e| panic!("building a simulated image: {e:?}"))
}

/// The behaviour of the image the bootloader chose, read from flash. `None` for an image
/// without a descriptor (not a simulated build), which the device treats as one that never
/// reaches the server.
pub fn behaviour_of<F: ReadNorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    target: &BootTarget,
) -> Option<AppBehaviour> {
    let at = layout.slot_offset(target.slot())
        + u32::from(target.image.image.header.hdr_size)
        + DESCRIPTOR_AT as u32;
    let mut descriptor = [0u8; 16];
    flash.read(at, &mut descriptor).ok()?;
    if &descriptor[..8] != MAGIC {
        return None;
    }
    let param = u32::from_le_bytes([
        descriptor[12],
        descriptor[13],
        descriptor[14],
        descriptor[15],
    ]);
    AppBehaviour::decode(descriptor[8], param)
}

/// Where a simulated stage-1 build keeps its descriptor, and its magic (the application's
/// layout, another magic: a stage-1 build is never mistaken for an application build).
const STAGE1_MAGIC: &[u8; 8] = b"FOTASIS1";

/// What a stage-1 bootloader build does once stage-0 jumps to it (issue 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage1Behaviour {
    /// Runs the bootloader (the real `fota-boot` decision) and boots the application.
    Good,
    /// Never boots an application (a bad stage-1: wrong clock tree, a journal it cannot read)
    /// and hangs until the watchdog resets the device; stage-0 counts each attempt and falls
    /// back to the previous stage-1 after three.
    Hangs,
}

impl Stage1Behaviour {
    fn code(self) -> u8 {
        match self {
            Stage1Behaviour::Good => 0,
            Stage1Behaviour::Hangs => 1,
        }
    }

    fn decode(code: u8) -> Option<Self> {
        match code {
            0 => Some(Stage1Behaviour::Good),
            1 => Some(Stage1Behaviour::Hangs),
            _ => None,
        }
    }
}

/// A signed simulated stage-1 build linked for stage-1 slot `slot` and marked (protected
/// COMPONENT TLV) as a stage-1 for it, `size` bytes of payload (at least 128): vector table,
/// descriptor, filler that differs per version.
pub fn stage1_image(
    key: &ed25519_dalek::SigningKey,
    slot: SlotId,
    version: ImageVersion,
    security_counter: u32,
    behaviour: Stage1Behaviour,
    size: usize,
) -> Vec<u8> {
    let size = size.max(128);
    let base = slot.stage1_partition().start;
    let seed = u32::from(version.major) << 24 ^ u32::from(version.minor) << 16 ^ 0x5151;
    let mut payload: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) ^ seed).to_le_bytes()[2])
        .collect();
    payload[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
    payload[4..8].copy_from_slice(&((base + 0x200 + 0x101) | 1).to_le_bytes());
    payload[DESCRIPTOR_AT..DESCRIPTOR_AT + 8].copy_from_slice(STAGE1_MAGIC);
    payload[DESCRIPTOR_AT + 8] = behaviour.code();
    payload[DESCRIPTOR_AT + 9..DESCRIPTOR_AT + 16].fill(0);
    ImageBuilder::new(payload, version)
        .security_counter(security_counter)
        .rom_fixed(base)
        .component(fota_protocol::image::Component::Stage1 { slot })
        .sign(key)
        // As for an application build: nothing for the builder to refuse.
        .unwrap_or_else(|e| panic!("building a simulated stage-1: {e:?}"))
}

/// The behaviour of the stage-1 stage-0 chose, read from its stage-1 slot in flash. `None` for
/// a stage-1 without a descriptor (not a simulated build), which the device treats as one that
/// hangs.
pub fn stage1_behaviour_of<F: ReadNorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    target: &BootTarget,
) -> Option<Stage1Behaviour> {
    let at = layout.stage1_offset(target.slot())
        + u32::from(target.image.image.header.hdr_size)
        + DESCRIPTOR_AT as u32;
    let mut descriptor = [0u8; 16];
    flash.read(at, &mut descriptor).ok()?;
    if &descriptor[..8] != STAGE1_MAGIC {
        return None;
    }
    Stage1Behaviour::decode(descriptor[8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    /// The next version, linked for the other slot, is rebuilt by a patch of a real point
    /// release's size (27.7% measured on the reference application; docs/BENCHMARKS.md), so
    /// that the virtual fleet's downloads shrink as a real fleet's would.
    #[test]
    fn a_version_step_patches_like_a_point_release() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let v1 = ImageVersion::new(1, 0, 0, 0);
        let v2 = ImageVersion::new(2, 0, 0, 0);
        let size = 96 * 1024;
        let old = image(&key, SlotId::A, v1, 1, AppBehaviour::Good, size);
        for (slot, behaviour) in [
            (SlotId::B, AppBehaviour::Good),
            (SlotId::A, AppBehaviour::NeverReachesServer),
        ] {
            let new = image(&key, slot, v2, 1, behaviour, size);
            let patch = fota_delta::generate(&old, &new).unwrap();
            let percent = patch.len() * 100 / new.len();
            assert!((8..=30).contains(&percent), "{slot:?}: {percent}%");
        }
        // Versions differ, and a build differs from itself only in its slot's addresses.
        let same_b = payload(SlotId::B, v1, AppBehaviour::Good, size);
        let same_a = payload(SlotId::A, v1, AppBehaviour::Good, size);
        let differing = same_a.iter().zip(&same_b).filter(|(a, b)| a != b).count();
        assert!(differing > size / 64 && differing < size / 8, "{differing}");
    }
}
