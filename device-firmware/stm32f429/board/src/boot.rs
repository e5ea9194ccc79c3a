//! Startup setup and the jump from the bootloader into a slot.
//!
//! The bootloader keeps the reset clock (16 MHz HSI, no PLL): nothing to wait on, and the
//! application starts from the clock state its HAL expects after a reset. It only turns on the
//! flash accelerator (prefetch, instruction and data caches), which is valid at 0 wait states.

use crate::flash::Flash;
use cortex_m::peripheral::SCB;
use fota_protocol::image::{check_verified_for_slot, check_verified_for_stage1, SlotError};
use fota_protocol::{SlotId, VerifiedImage};

impl Flash {
    /// Prefetch and caches on (FLASH_ACR). Skipped with the `qemu` feature.
    pub fn enable_accelerator(&mut self) {
        #[cfg(not(feature = "qemu"))]
        self.modify_acr(|acr| acr | (1 << 8) | (1 << 9) | (1 << 10));
    }
}

/// A slot whose image verified and was checked to execute in place there: the only thing
/// [`BootTarget::jump`] accepts, so the jump cannot be made to unverified code by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTarget {
    slot: SlotId,
    vector_table: u32,
    sp: u32,
    reset: u32,
}

impl BootTarget {
    /// Accept `image` (verified from `slot`'s bytes) as the next thing to run, if
    /// [`check_verified_for_slot`] says it can run from there: linked for this slot, vector table
    /// 512-byte aligned at `slot + hdr_size`, SP in RAM, Thumb reset vector inside the payload.
    pub fn new(slot: SlotId, image: &VerifiedImage) -> Result<Self, SlotError> {
        check_verified_for_slot(image, slot)?;
        let [sp, reset] = image.vector_table.ok_or(SlotError::NoVectorTable)?;
        Ok(Self {
            slot,
            vector_table: slot.partition().start + u32::from(image.header.hdr_size),
            sp,
            reset,
        })
    }

    /// Accept `image` (verified from stage-1 slot `slot`'s bytes) as the stage-1 stage-0 jumps
    /// to, if [`check_verified_for_stage1`] says it can run from there: marked as a stage-1 for
    /// this slot, linked for its address, vector table 512-byte aligned at `slot + hdr_size`,
    /// SP in RAM, Thumb reset vector inside the payload.
    pub fn stage1(slot: SlotId, image: &VerifiedImage) -> Result<Self, SlotError> {
        check_verified_for_stage1(image, slot)?;
        let [sp, reset] = image.vector_table.ok_or(SlotError::NoVectorTable)?;
        Ok(Self {
            slot,
            vector_table: slot.stage1_partition().start + u32::from(image.header.hdr_size),
            sp,
            reset,
        })
    }

    /// The slot.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// Where VTOR will point.
    pub fn vector_table(&self) -> u32 {
        self.vector_table
    }

    /// Point VTOR at the image's vector table, load MSP from it and branch to its reset vector.
    /// Interrupts stay as the bootloader left them (it enables none); the IWDG keeps running.
    pub fn jump(self, scb: SCB) -> ! {
        // SAFETY: `vector_table` is 512-byte aligned (checked by check_verified_for_slot or
        // check_verified_for_stage1) and inside flash; from here on every exception goes through
        // the image's own table, which is what it was linked for. `scb` is owned, so nothing else is using the SCB.
        unsafe { scb.vtor.write(self.vector_table) };
        cortex_m::asm::dsb();
        cortex_m::asm::isb();
        // SAFETY: `sp` is a word-aligned address in SRAM or CCM RAM and `reset` a Thumb address
        // inside the verified payload (both checked by check_verified_for_slot or
        // check_verified_for_stage1, from the same verified bytes). The bootloader's stack is abandoned: nothing of it is used again.
        unsafe { cortex_m::asm::bootstrap(self.sp as *const u32, self.reset as *const u32) }
    }
}
