//! Verifying the image in a slot, read straight from flash: hash, Ed25519 signature, key hash,
//! and a vector table that points inside the slot (the protocol crate's checks), in fixed stack
//! memory.
//!
//! The image is read in [`READ_CHUNK`]-byte pieces into a
//! [`StreamVerifier`] bounded by the slot size, stopping at the end of the image (the rest of
//! the slot is padding). The security counter is checked separately
//! ([`VerifiedSlot::check_floor`]), against the journal's floor, by the boot decision.

use crate::journal::Stage;
use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind, ReadNorFlash};
use fota_protocol::image::{check_verified_for_slot, check_verified_for_stage1, SlotError};
use fota_protocol::image::{ImageError, StreamVerifier, TrustedKey, VerifiedImage};
use fota_protocol::layout::STAGE1_IMAGE_MAX;
use fota_protocol::SlotId;

/// Bytes read from flash at a time (on the stack).
pub const READ_CHUNK: usize = 256;

/// Why a slot may not boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// Reading the slot failed.
    #[error("reading the slot failed: {0}")]
    Flash(NorFlashErrorKind),
    /// The image is missing, malformed, or its hash, key or signature is wrong.
    #[error("image refused: {0}")]
    Image(#[from] ImageError),
    /// The image cannot execute in place from this slot (linked for the other one, vector table
    /// outside the slot, ...).
    #[error("image cannot run from its slot: {0}")]
    Slot(#[from] SlotError),
    /// The image's security counter is below the highest one accepted: a rollback.
    #[error("image security counter {image} is below the device's floor {floor}")]
    SecurityCounter {
        /// The image's SEC_CNT.
        image: u32,
        /// The journal's floor.
        floor: u32,
    },
}

/// An image that verified and can run from its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedSlot {
    /// An application slot or a stage-1 slot.
    pub stage: Stage,
    /// The slot it is in.
    pub slot: SlotId,
    /// What verification found.
    pub image: VerifiedImage,
    /// Initial stack pointer (vector table word 0).
    pub initial_sp: u32,
    /// Reset handler, Thumb bit set (vector table word 1).
    pub reset_vector: u32,
}

impl VerifiedSlot {
    /// Where VTOR must point: the vector table at the start of the payload, after the header.
    pub fn vector_table_address(&self) -> u32 {
        let part = match self.stage {
            Stage::Application => self.slot.partition(),
            Stage::Stage1 => self.slot.stage1_partition(),
        };
        part.start + u32::from(self.image.header.hdr_size)
    }

    /// The image's security counter (0 when it carries none).
    pub fn security_counter(&self) -> u32 {
        self.image.security_counter
    }

    /// Refuse the image if its security counter is below `floor` (anti-rollback).
    pub fn check_floor(self, floor: u32) -> Result<Self, BootError> {
        if self.image.security_counter < floor {
            return Err(BootError::SecurityCounter {
                image: self.image.security_counter,
                floor,
            });
        }
        Ok(self)
    }
}

/// Verify the image of application slot `slot`, which the driver exposes at `offset`: signature
/// under one of `keys`, an application (no stage-1 mark), and runnable from the slot. Does not
/// check the security counter.
pub fn verify_slot<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    slot: SlotId,
    keys: &[TrustedKey],
) -> Result<VerifiedSlot, BootError> {
    let image = verify_at(flash, offset, slot.partition().size, keys)?;
    check_verified_for_slot(&image, slot)?;
    finish(Stage::Application, slot, image)
}

/// Verify the stage-1 in stage-1 slot `slot`, which the driver exposes at `offset`, as stage-0
/// does before every jump: signature under one of `keys` (stage-0's), marked as a stage-1 for
/// this slot, at most [`STAGE1_IMAGE_MAX`] and runnable from the slot
/// ([`check_verified_for_stage1`]). Does not check the version floor.
pub fn verify_stage1<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    slot: SlotId,
    keys: &[TrustedKey],
) -> Result<VerifiedSlot, BootError> {
    let image = verify_at(flash, offset, STAGE1_IMAGE_MAX, keys)?;
    check_verified_for_stage1(&image, slot)?;
    finish(Stage::Stage1, slot, image)
}

fn finish(stage: Stage, slot: SlotId, image: VerifiedImage) -> Result<VerifiedSlot, BootError> {
    let [initial_sp, reset_vector] = image.vector_table.ok_or(SlotError::NoVectorTable)?;
    Ok(VerifiedSlot {
        stage,
        slot,
        image,
        initial_sp,
        reset_vector,
    })
}

/// Hash and signature of the image at `offset`, read in [`READ_CHUNK`]s, at most `size` bytes.
fn verify_at<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
    size: u32,
    keys: &[TrustedKey],
) -> Result<VerifiedImage, BootError> {
    let mut verifier = StreamVerifier::new(size);
    let mut buf = [0u8; READ_CHUNK];
    let mut pos = 0u32;
    while pos < size {
        if verifier
            .total_len()
            .is_some_and(|total| verifier.position() >= total)
        {
            break;
        }
        let n = (size - pos).min(READ_CHUNK as u32);
        let chunk = &mut buf[..n as usize];
        let at = offset
            .checked_add(pos)
            .ok_or(BootError::Flash(NorFlashErrorKind::OutOfBounds))?;
        flash
            .read(at, chunk)
            .map_err(|e| BootError::Flash(e.kind()))?;
        verifier.update(chunk)?;
        pos += n;
    }
    Ok(verifier.finish()?.verify(keys)?)
}
