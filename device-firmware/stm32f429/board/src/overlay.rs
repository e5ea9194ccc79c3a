//! QEMU only (`qemu` feature): a RAM copy of the boot-state journal's two sectors that stands in
//! for flash programming, which qemu-system-arm does not model (it drops writes to flash; reads
//! still return what `-device loader` put there).
//!
//! Without it, `fota_boot::boot` could not record a trial `Attempt` (it reads every record back
//! and refuses a trial it could not record), and the application could not confirm itself. With
//! it, the journal behaves like flash for the rest of the QEMU session: reads of sectors 2-3
//! return what was erased and programmed there, with the NOR rules of the real driver (program
//! only clears bits, erase whole sectors).
//!
//! The copy lives at a fixed address, 0x2002_0000, in SRAM3 (0x2002_0000-0x2002_FFFF on the F429
//! and in QEMU's netduinoplus2 model), which neither the bootloader nor the demo app links into
//! (their memory.x give them SRAM1+SRAM2, 0x2000_0000-0x2001_FFFF). So it survives the jump from
//! the bootloader into the application (which then sees the `Attempt` the bootloader appended)
//! and a reset of the emulated chip (QEMU does not clear RAM on reset), like flash would. The
//! first program to open it in a QEMU session (RAM starts zeroed) fills it from the loaded flash
//! contents and marks it with [`MAGIC`].
//!
//! Everything outside the journal sectors goes to the real driver, so slot writes fail under
//! QEMU (programming is dropped and the read-back does not match), unless the harness gave a
//! `flash.bin` to mirror writes to (`mirror.rs`), which also keeps the journal across QEMU
//! restarts.

use fota_protocol::layout::{FLASH_BASE, JOURNAL};

/// Marks an initialized overlay ("FOTA" in ASCII); QEMU's RAM starts zeroed.
const MAGIC: u32 = 0x4154_4F46;
/// Where the overlay lives: SRAM3, outside every program's memory.x.
const ADDRESS: usize = 0x2002_0000;
/// The journal's offset (from FLASH_BASE) and size: sectors 2-3, 32 KB.
const START: u32 = JOURNAL.start - FLASH_BASE;
const SIZE: usize = JOURNAL.size as usize;
/// The flash offsets the overlay serves.
pub(crate) const RANGE: core::ops::Range<u32> = START..START + SIZE as u32;

/// The RAM image of the journal sectors.
#[repr(C)]
pub(crate) struct Overlay {
    magic: u32,
    bytes: [u8; SIZE],
}

// The overlay must fit in SRAM3 (64 KB from ADDRESS).
const _: () = assert!(core::mem::size_of::<Overlay>() <= 64 * 1024);

impl core::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Overlay")
            .field("offset", &START)
            .field("len", &SIZE)
            .finish()
    }
}

/// Where a range of flash offsets falls relative to the journal sectors.
pub(crate) enum Coverage {
    /// Entirely outside: the real flash (and its driver) handles it.
    Outside,
    /// Entirely inside: the overlay handles it.
    Inside,
    /// Partly inside: refused for writes and erases (nothing in fota does that).
    Straddles,
}

/// Whether `offset..offset + len` is in the journal sectors.
pub(crate) fn coverage(offset: u32, len: usize) -> Coverage {
    let start = u64::from(offset);
    let end = start + len as u64;
    let (j_start, j_end) = (u64::from(START), u64::from(START) + SIZE as u64);
    if len == 0 || end <= j_start || start >= j_end {
        Coverage::Outside
    } else if start >= j_start && end <= j_end {
        Coverage::Inside
    } else {
        Coverage::Straddles
    }
}

impl Overlay {
    /// The session's overlay, filled from flash on first use in this QEMU session.
    ///
    /// Called from `Flash::new`: the `FLASH` peripheral it takes is a singleton, so there is
    /// one `Flash`, and so one reference to the overlay, per program; the hard fault handler
    /// (`fault.rs`) takes a second one after the first's user stopped for good.
    pub(crate) fn take() -> &'static mut Overlay {
        // SAFETY: ADDRESS..ADDRESS + size_of::<Overlay>() is SRAM3, always mapped, readable and
        // writable, 4-byte aligned, and outside every region a program of this workspace links
        // into (their RAM ends at 0x2002_0000), so no Rust object of this program lives there.
        // `Overlay` is plain bytes, valid for any bit pattern. This is called once per program
        // (from `Flash::new`, whose `FLASH` argument is a singleton), so this `&'static mut` is
        // the only reference in use. The bootloader's reference is abandoned with its stack
        // when it jumps, so the application's does not alias a live one; the fault handler's
        // second `Flash` is made after the application's code stopped, never to run again.
        let overlay = unsafe { &mut *(ADDRESS as *mut Overlay) };
        if overlay.magic != MAGIC {
            // SAFETY: the journal sectors are inside the memory-mapped flash, always readable;
            // the destination is the overlay's own buffer of exactly SIZE bytes in RAM, so the
            // two do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    (FLASH_BASE + START) as *const u8,
                    overlay.bytes.as_mut_ptr(),
                    SIZE,
                )
            };
            overlay.magic = MAGIC;
        }
        overlay
    }

    fn range(offset: u32, len: usize) -> core::ops::Range<usize> {
        let at = (offset - START) as usize;
        at..at + len
    }

    /// Copy the overlay's part of `offset..offset + bytes.len()` over `bytes`, which the caller
    /// already filled from flash.
    pub(crate) fn read(&self, offset: u32, bytes: &mut [u8]) {
        let start = offset.max(START);
        let end = (u64::from(offset) + bytes.len() as u64).min(u64::from(START) + SIZE as u64);
        if u64::from(start) >= end {
            return;
        }
        let len = (end - u64::from(start)) as usize;
        let from = Self::range(start, len);
        let to = (start - offset) as usize;
        bytes[to..to + len].copy_from_slice(&self.bytes[from]);
    }

    /// Whether programming `bytes` at `offset` (inside, word-aligned) only clears bits.
    pub(crate) fn can_program(&self, offset: u32, bytes: &[u8]) -> bool {
        self.bytes[Self::range(offset, bytes.len())]
            .iter()
            .zip(bytes)
            .all(|(&have, &want)| have & want == want)
    }

    /// Program `bytes` at `offset` (inside; NOR rule checked by the caller).
    pub(crate) fn program(&mut self, offset: u32, bytes: &[u8]) {
        for (cell, &b) in self.bytes[Self::range(offset, bytes.len())]
            .iter_mut()
            .zip(bytes)
        {
            *cell &= b;
        }
    }

    /// Erase `from..to` (inside, whole sectors: checked by the caller).
    pub(crate) fn erase(&mut self, from: u32, to: u32) {
        self.bytes[Self::range(from, (to - from) as usize)].fill(0xFF);
    }
}
