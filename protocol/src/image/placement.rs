//! Whether an image can execute in place from a slot of the flash map
//! ([`crate::layout`]): the checks the bootloader runs before every jump, the OTA client before
//! it marks an image pending, and the server and `fota sign` before an image ships.

use super::{Component, ImageFlags, ImageHeader, VerifiedImage};
use crate::layout::{Partition, SlotId, CCM_RAM, SRAM, STAGE1_IMAGE_MAX};

/// Why an image may not run from a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The image is larger than the slot.
    #[error("image is {len} bytes, larger than slot {slot} ({size} bytes)")]
    TooLarge {
        /// The slot.
        slot: SlotId,
        /// Image length.
        len: u32,
        /// Slot size.
        size: u32,
    },
    /// The header says the image is linked for another address (ROM_FIXED load_addr).
    #[error("image is linked for {load_addr:#010x}, not slot {slot} at {slot_start:#010x}")]
    WrongLoadAddress {
        /// The slot.
        slot: SlotId,
        /// Its start.
        slot_start: u32,
        /// `ih_load_addr`.
        load_addr: u32,
    },
    /// The vector table would not sit on a 512-byte boundary, so VTOR could not point at it.
    #[error("header size {0:#x} leaves the vector table off VTOR's 512-byte alignment")]
    MisalignedVectorTable(u16),
    /// The payload is too short to hold a vector table.
    #[error("payload too short for a vector table")]
    NoVectorTable,
    /// The initial stack pointer is not in RAM.
    #[error("initial stack pointer {0:#010x} is not in RAM")]
    StackOutsideRam(u32),
    /// The reset vector points outside the slot's payload.
    #[error("reset vector {reset:#010x} is outside slot {slot}")]
    ResetOutsideSlot {
        /// The slot.
        slot: SlotId,
        /// The reset vector.
        reset: u32,
    },
    /// The reset vector lacks the Thumb bit: jumping there would hard-fault.
    #[error("reset vector {0:#010x} lacks the Thumb bit")]
    ResetNotThumb(u32),
    /// The image needs a feature XIP from a slot cannot provide.
    #[error("unsupported image: {0}")]
    Unsupported(&'static str),
    /// An application slot was given a stage-1 bootloader image (its COMPONENT TLV says so).
    #[error("image is a stage-1 bootloader, not an application")]
    NotAnApplication,
    /// A stage-1 slot was given an image without the stage-1 COMPONENT TLV.
    #[error("image is not marked as a stage-1 bootloader")]
    NotAStage1,
    /// The image is a stage-1 marked for the other stage-1 slot.
    #[error("stage-1 image is marked for stage-1 slot {marked}, not {slot}")]
    Stage1ForOtherSlot {
        /// The stage-1 slot being booted or written.
        slot: SlotId,
        /// The slot its COMPONENT TLV names.
        marked: SlotId,
    },
}

/// VTOR on a Cortex-M4 with the F429's 107 vectors needs 512-byte alignment.
pub const VTOR_ALIGN: u32 = 512;

/// Check that an image can execute in place from `slot`: it fits, its header is not for another
/// address, and its vector table (at `slot + hdr_size`) has an initial SP in RAM and a Thumb reset
/// handler inside the slot's payload. The bootloader runs this before every jump; the server and
/// `fota sign` run it so a mislinked build never ships. It does not look at the component mark:
/// [`check_verified_for_slot`] does.
pub fn check_image_for_slot(
    header: &ImageHeader,
    total_len: u32,
    vector_table: Option<[u32; 2]>,
    slot: SlotId,
) -> Result<(), SlotError> {
    let part = slot.partition();
    check_image_in(header, total_len, vector_table, slot, part, part.size)
}

/// [`check_image_for_slot`] against partition `part`, with images up to `max_len`.
fn check_image_in(
    header: &ImageHeader,
    total_len: u32,
    vector_table: Option<[u32; 2]>,
    slot: SlotId,
    part: Partition,
    max_len: u32,
) -> Result<(), SlotError> {
    if total_len > max_len {
        return Err(SlotError::TooLarge {
            slot,
            len: total_len,
            size: max_len,
        });
    }
    if let Some(what) = header.flags.unsupported() {
        return Err(SlotError::Unsupported(what));
    }
    if header.flags.contains(ImageFlags::ROM_FIXED) && header.load_addr != part.start {
        return Err(SlotError::WrongLoadAddress {
            slot,
            slot_start: part.start,
            load_addr: header.load_addr,
        });
    }
    if u32::from(header.hdr_size) % VTOR_ALIGN != 0 {
        return Err(SlotError::MisalignedVectorTable(header.hdr_size));
    }
    let [sp, reset] = vector_table.ok_or(SlotError::NoVectorTable)?;
    // The stack grows down from the initial SP, so its first push lands below it: the top of RAM
    // itself (one past the end) is the usual value.
    let sp_ok = |r: Partition| sp > r.start && sp <= r.end();
    if !(sp_ok(SRAM) || sp_ok(CCM_RAM)) || sp % 4 != 0 {
        return Err(SlotError::StackOutsideRam(sp));
    }
    if reset & 1 == 0 {
        return Err(SlotError::ResetNotThumb(reset));
    }
    let entry = reset & !1;
    let payload_start = part.start + u32::from(header.hdr_size);
    let payload_end = payload_start.saturating_add(header.img_size);
    if entry < payload_start || entry >= payload_end || entry >= part.start + max_len {
        return Err(SlotError::ResetOutsideSlot { slot, reset });
    }
    Ok(())
}

/// [`check_image_for_slot`] for a verified image, which must also be an application (no
/// stage-1 COMPONENT mark): a stage-1 in an application slot never boots.
pub fn check_verified_for_slot(image: &VerifiedImage, slot: SlotId) -> Result<(), SlotError> {
    if image.component != Component::Application {
        return Err(SlotError::NotAnApplication);
    }
    check_image_for_slot(&image.header, image.total_len, image.vector_table, slot)
}

/// What stage-0 checks of a verified image before it jumps into stage-1 slot `slot` (the
/// signature was checked by [`verify`](crate::image::verify) under stage-0's key, the version
/// floor is checked against stage-0's records): the image is marked as a stage-1 for this very
/// slot (protected COMPONENT TLV), is at most [`STAGE1_IMAGE_MAX`], and executes in place from
/// the slot (header address, vector table inside the slot's payload, stack in RAM).
pub fn check_verified_for_stage1(image: &VerifiedImage, slot: SlotId) -> Result<(), SlotError> {
    match image.component {
        Component::Application => return Err(SlotError::NotAStage1),
        Component::Stage1 { slot: marked } if marked != slot => {
            return Err(SlotError::Stage1ForOtherSlot { slot, marked })
        }
        Component::Stage1 { .. } => {}
    }
    check_image_in(
        &image.header,
        image.total_len,
        image.vector_table,
        slot,
        slot.stage1_partition(),
        STAGE1_IMAGE_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageVersion;

    fn header(slot: SlotId) -> ImageHeader {
        ImageHeader {
            load_addr: slot.partition().start,
            hdr_size: 0x200,
            protect_tlv_size: 0,
            img_size: 4096,
            flags: ImageFlags(ImageFlags::ROM_FIXED),
            version: ImageVersion::new(1, 0, 0, 0),
        }
    }

    #[test]
    fn vector_table_must_point_into_its_slot() {
        let a = header(SlotId::A);
        let ok = Some([0x2003_0000, 0x0802_0201 + 0x100]);
        assert_eq!(check_image_for_slot(&a, 5000, ok, SlotId::A), Ok(()));
        // The same build run from B: the header says A.
        assert!(matches!(
            check_image_for_slot(&a, 5000, ok, SlotId::B),
            Err(SlotError::WrongLoadAddress { .. })
        ));
        // Without ROM_FIXED, the reset vector still gives it away.
        let mut loose = a;
        loose.flags = ImageFlags(0);
        loose.load_addr = 0;
        assert!(matches!(
            check_image_for_slot(&loose, 5000, ok, SlotId::B),
            Err(SlotError::ResetOutsideSlot { .. })
        ));
        assert_eq!(
            check_image_for_slot(&a, 5000, Some([0x0800_0000, 0x0802_0301]), SlotId::A),
            Err(SlotError::StackOutsideRam(0x0800_0000))
        );
        assert_eq!(
            check_image_for_slot(&a, 5000, Some([0x2000_1000, 0x0802_0300]), SlotId::A),
            Err(SlotError::ResetNotThumb(0x0802_0300))
        );
        // Reset into the header, or past the payload.
        for reset in [0x0802_0101, 0x0802_0200 + 4096 + 1] {
            assert!(matches!(
                check_image_for_slot(&a, 5000, Some([0x2000_1000, reset]), SlotId::A),
                Err(SlotError::ResetOutsideSlot { .. })
            ));
        }
        assert_eq!(
            check_image_for_slot(&a, 5000, None, SlotId::A),
            Err(SlotError::NoVectorTable)
        );
        assert!(matches!(
            check_image_for_slot(&a, 256 * 1024 + 1, ok, SlotId::A),
            Err(SlotError::TooLarge { .. })
        ));
        let mut small_header = a;
        small_header.hdr_size = 0x20;
        assert_eq!(
            check_image_for_slot(&small_header, 5000, ok, SlotId::A),
            Err(SlotError::MisalignedVectorTable(0x20))
        );
        let mut encrypted = a;
        encrypted.flags = ImageFlags(ImageFlags::ROM_FIXED | ImageFlags::ENCRYPTED_AES128);
        assert!(matches!(
            check_image_for_slot(&encrypted, 5000, ok, SlotId::A),
            Err(SlotError::Unsupported(_))
        ));
    }
}
