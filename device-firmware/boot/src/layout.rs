//! Where the boot logic finds the journal, the two application slots and the two stage-1 slots
//! in the flash its driver exposes.
//!
//! The driver's offsets are not addresses: the board's STM32F4 driver and the simulator both
//! count from the start of flash (offset 0 = 0x0800_0000). The slots' *addresses* are fixed by
//! [`SlotId::partition`], because images are linked to execute in place there and
//! [`check_verified_for_slot`](fota_protocol::image::check_verified_for_slot) checks them; the
//! offsets here only say where the driver reads those bytes.

use crate::journal::JournalRegion;
use fota_protocol::layout::FLASH_BASE;
use fota_protocol::SlotId;

/// The journal's sectors and the slots' offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashLayout {
    /// The journal's two sectors.
    pub journal: JournalRegion,
    /// Offsets of slot A and slot B (each [`SlotId::partition`]'s size long).
    pub slots: [u32; 2],
    /// Offsets of stage-1 slot A and stage-1 slot B (each [`SlotId::stage1_partition`]).
    pub stage1_slots: [u32; 2],
}

impl FlashLayout {
    /// DESIGN.md's map: journal in sectors 2-3, slot A at 0x0802_0000, slot B at 0x0806_0000,
    /// as offsets from the start of flash.
    pub const STM32F429: FlashLayout = FlashLayout {
        journal: JournalRegion::STM32F429,
        slots: [
            SlotId::A.partition().start - FLASH_BASE,
            SlotId::B.partition().start - FLASH_BASE,
        ],
        stage1_slots: [
            SlotId::A.stage1_partition().start - FLASH_BASE,
            SlotId::B.stage1_partition().start - FLASH_BASE,
        ],
    };

    /// Offset of stage-1 slot `slot`'s first byte.
    pub const fn stage1_offset(&self, slot: SlotId) -> u32 {
        match slot {
            SlotId::A => self.stage1_slots[0],
            SlotId::B => self.stage1_slots[1],
        }
    }

    /// Offset of `slot`'s first byte.
    pub const fn slot_offset(&self, slot: SlotId) -> u32 {
        match slot {
            SlotId::A => self.slots[0],
            SlotId::B => self.slots[1],
        }
    }

    /// Size of `slot` in bytes.
    pub const fn slot_size(slot: SlotId) -> u32 {
        slot.partition().size
    }
}
