//! The STM32F4 flash interface (RM0090 section 3) behind embedded-storage's `NorFlash`.
//!
//! Offsets are relative to [`FLASH_BASE`] (offset 0 is 0x0800_0000) and the capacity is the whole
//! 1 MB, like the simulator's `SimFlash`, so `fota-boot` code runs unchanged on both. The rules
//! are the simulator's too: writes are whole aligned 32-bit words that only clear bits (x32
//! parallelism, PSIZE = 0b10, valid at 2.7-3.6 V), and erases are whole sectors of the
//! 16/64/128 KB map ([`SECTORS`]). The bootloader's own sectors (0-1) are refused in software on
//! top of their WRP protection.
//!
//! With the `qemu` feature the journal sectors (2-3) are served from a RAM overlay
//! (`overlay.rs`), because QEMU drops flash writes; and when the harness provides a host file
//! `flash.bin`, every write and erase also goes to it through semihosting (`mirror.rs`), so
//! flash survives QEMU's restarts. Every build without the feature programs the real registers.

use crate::pac;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use fota_protocol::layout::{FACTORY, FLASH_BASE, FLASH_SIZE, SECTORS};

const KEY1: u32 = 0x4567_0123;
const KEY2: u32 = 0xCDEF_89AB;

// FLASH_SR bits.
const SR_EOP: u32 = 1 << 0;
const SR_OPERR: u32 = 1 << 1;
const SR_WRPERR: u32 = 1 << 4;
const SR_PGAERR: u32 = 1 << 5;
const SR_PGPERR: u32 = 1 << 6;
const SR_PGSERR: u32 = 1 << 7;
const SR_BSY: u32 = 1 << 16;
const SR_ERRORS: u32 = SR_OPERR | SR_WRPERR | SR_PGAERR | SR_PGPERR | SR_PGSERR;

// FLASH_CR bits.
const CR_PG: u32 = 1 << 0;
const CR_SER: u32 = 1 << 1;
const CR_SNB_SHIFT: u32 = 3;
const CR_PSIZE_X32: u32 = 0b10 << 8;
const CR_STRT: u32 = 1 << 16;
const CR_LOCK: u32 = 1 << 31;

// FLASH_ACR bits (data cache reset after erase/program, RM0090 3.5.2).
const ACR_DCEN: u32 = 1 << 10;
const ACR_DCRST: u32 = 1 << 12;

const WORD: usize = 4;

/// Why a flash operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// The range is not inside the 1 MB flash.
    OutOfBounds,
    /// A write is not whole aligned 32-bit words.
    NotAligned,
    /// An erase range does not start and end on sector boundaries of the real map.
    NotSectorBoundary,
    /// The range touches the bootloader's sectors, which this driver never writes.
    Bootloader,
    /// A word to program would set a bit that is 0: it needs an erase first.
    NeedsErase,
    /// WRPERR: the sector is write-protected (option bytes).
    WriteProtected,
    /// PGSERR, PGPERR or PGAERR: programming sequence, parallelism or alignment error; the SR value.
    Programming(u32),
    /// OPERR: the operation failed (e.g. voltage); the SR value.
    Operation(u32),
    /// A programmed word does not read back as written.
    Verify,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::OutOfBounds | FlashError::Bootloader => NorFlashErrorKind::OutOfBounds,
            FlashError::NotAligned | FlashError::NotSectorBoundary => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Read-out and write protection, as the option bytes (FLASH_OPTCR) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// The raw RDP byte: 0xAA is level 0, 0xCC level 2, anything else level 1.
    pub rdp: u8,
    /// RDP level 0, 1 or 2.
    pub rdp_level: u8,
    /// Bit i set: sector i is write-protected (nWRP cleared, or PCROP when SPRMOD is set).
    pub wrp_mask: u16,
}

/// The F4 flash interface. Owning the `FLASH` peripheral makes it the only writer of its registers.
#[derive(Debug)]
pub struct Flash {
    regs: pac::FLASH,
    /// QEMU only: the journal sectors as this QEMU session has written them.
    #[cfg(feature = "qemu")]
    overlay: &'static mut crate::overlay::Overlay,
    /// QEMU only: the host file flash persists in, if the harness gave one.
    #[cfg(feature = "qemu")]
    mirror: Option<crate::mirror::Mirror>,
}

fn sector_boundary(offset: u32) -> Option<usize> {
    if offset == FLASH_SIZE {
        return Some(SECTORS.len());
    }
    SECTORS.iter().position(|s| s.start - FLASH_BASE == offset)
}

fn in_bounds(offset: u32, len: usize) -> Result<(), FlashError> {
    match offset.checked_add(len as u32) {
        Some(end) if (len as u64) <= u64::from(FLASH_SIZE) && end <= FLASH_SIZE => Ok(()),
        _ => Err(FlashError::OutOfBounds),
    }
}

fn touches_bootloader(offset: u32, len: u32) -> bool {
    let start = FLASH_BASE + offset;
    len > 0 && start < FACTORY.end() && start + len > FACTORY.start
}

impl Flash {
    /// Take the flash interface.
    pub fn new(regs: pac::FLASH) -> Self {
        Self {
            regs,
            #[cfg(feature = "qemu")]
            overlay: crate::overlay::Overlay::take(),
            #[cfg(feature = "qemu")]
            mirror: crate::mirror::Mirror::open(),
        }
    }

    /// Whether writes persist (always on a device; under QEMU, when the harness gave a
    /// `flash.bin` to mirror them to).
    pub fn persists(&self) -> bool {
        #[cfg(feature = "qemu")]
        return self.mirror.is_some();
        #[cfg(not(feature = "qemu"))]
        true
    }

    /// RDP level and WRP mask from FLASH_OPTCR (the option bytes loaded at reset). Under QEMU the
    /// register is not modeled (it reads 0); the `qemu` build reads a stand-in the harness may
    /// put in the last 8 bytes of the identity sector (`OPTB`, then the OPTCR value), and
    /// without it a factory device's value (RDP level 0, nothing write-protected).
    pub fn protection(&mut self) -> Protection {
        #[cfg(not(feature = "qemu"))]
        let optcr = self.regs.optcr().read().bits();
        #[cfg(feature = "qemu")]
        let optcr = {
            let mut word = [0u8; 8];
            let at = fota_protocol::layout::IDENTITY.end() - 8 - FLASH_BASE;
            match ReadNorFlash::read(self, at, &mut word) {
                Ok(()) if &word[..4] == b"OPTB" => {
                    u32::from_le_bytes([word[4], word[5], word[6], word[7]])
                }
                _ => 0x0FFF_AAED,
            }
        };
        let rdp = (optcr >> 8) as u8;
        let n_wrp = ((optcr >> 16) & 0x0FFF) as u16;
        let sprmod = optcr & (1 << 31) != 0;
        Protection {
            rdp,
            rdp_level: match rdp {
                0xAA => 0,
                0xCC => 2,
                _ => 1,
            },
            // nWRP bit i = 0 protects sector i; with SPRMOD = 1 the bits select PCROP instead,
            // and a PCROP sector cannot be written either.
            wrp_mask: if sprmod { n_wrp } else { !n_wrp & 0x0FFF },
        }
    }

    fn wait_idle(&self) {
        while self.regs.sr().read().bits() & SR_BSY != 0 {}
    }

    fn clear_flags(&self) {
        // SAFETY: FLASH_SR's flags are write-1-to-clear; writing 1s to EOP and the error flags
        // clears exactly those and touches nothing else (BSY is read-only).
        self.regs
            .sr()
            .write(|w| unsafe { w.bits(SR_EOP | SR_ERRORS) });
    }

    fn unlock(&self) {
        if self.regs.cr().read().bits() & CR_LOCK != 0 {
            // SAFETY: the documented unlock sequence (RM0090 3.5.1): KEY1 then KEY2 to
            // FLASH_KEYR. A wrong sequence only locks CR until reset; it cannot corrupt flash.
            self.regs.keyr().write(|w| unsafe { w.bits(KEY1) });
            // SAFETY: as above, the second key of the sequence.
            self.regs.keyr().write(|w| unsafe { w.bits(KEY2) });
        }
    }

    fn lock(&self) {
        // SAFETY: setting LOCK (and clearing PG/SER) only disables further programming/erase.
        self.regs.cr().write(|w| unsafe { w.bits(CR_LOCK) });
    }

    /// Wait for the operation to end, then turn error flags into an error and clear them.
    fn finish(&self) -> Result<(), FlashError> {
        self.wait_idle();
        let sr = self.regs.sr().read().bits();
        self.clear_flags();
        if sr & SR_WRPERR != 0 {
            Err(FlashError::WriteProtected)
        } else if sr & (SR_PGSERR | SR_PGPERR | SR_PGAERR) != 0 {
            Err(FlashError::Programming(sr))
        } else if sr & SR_OPERR != 0 {
            Err(FlashError::Operation(sr))
        } else {
            Ok(())
        }
    }

    /// Invalidate the data cache, which may hold the old contents of a sector just changed.
    fn reset_data_cache(&self) {
        let acr = self.regs.acr().read().bits();
        if acr & ACR_DCEN != 0 {
            // SAFETY: RM0090 3.5.2: the data cache is reset only while disabled; disable,
            // reset, release, and re-enable it with the other ACR bits (latency) unchanged.
            self.regs
                .acr()
                .write(|w| unsafe { w.bits(acr & !ACR_DCEN) });
            // SAFETY: as above.
            self.regs
                .acr()
                .write(|w| unsafe { w.bits((acr & !ACR_DCEN) | ACR_DCRST) });
            // SAFETY: as above.
            self.regs.acr().write(|w| unsafe { w.bits(acr) });
        }
    }

    fn erase_sector(&self, index: u8) -> Result<(), FlashError> {
        self.wait_idle();
        self.clear_flags();
        let cr = CR_PSIZE_X32 | CR_SER | (u32::from(index) << CR_SNB_SHIFT);
        // SAFETY: SER with SNB = a sector number of the single-bank 1 MB map (0-11, checked by
        // the caller against SECTORS and never 0-1) selects one sector erase at x32 parallelism.
        self.regs.cr().write(|w| unsafe { w.bits(cr) });
        // SAFETY: STRT starts the erase configured just above.
        self.regs.cr().write(|w| unsafe { w.bits(cr | CR_STRT) });
        let result = self.finish();
        // SAFETY: clearing SER/SNB leaves CR unlocked and idle.
        self.regs.cr().write(|w| unsafe { w.bits(0) });
        result
    }

    fn program_word(&self, offset: u32, word: u32) -> Result<(), FlashError> {
        let addr = (FLASH_BASE + offset) as *mut u32;
        self.wait_idle();
        self.clear_flags();
        // SAFETY: PG with PSIZE x32: the next aligned 32-bit write to flash programs one word.
        self.regs
            .cr()
            .write(|w| unsafe { w.bits(CR_PSIZE_X32 | CR_PG) });
        // SAFETY: `addr` is word-aligned and inside the 1 MB flash (checked by `write`); with PG
        // set the flash interface turns this store into a program operation. Volatile, so it is
        // neither merged nor elided.
        unsafe { core::ptr::write_volatile(addr, word) };
        cortex_m::asm::dsb();
        let result = self.finish();
        // SAFETY: clearing PG leaves CR unlocked and idle.
        self.regs.cr().write(|w| unsafe { w.bits(0) });
        result
    }

    /// Read-modify-write FLASH_ACR.
    #[cfg_attr(feature = "qemu", allow(dead_code))]
    pub(crate) fn modify_acr(&mut self, f: impl FnOnce(u32) -> u32) {
        let acr = f(self.regs.acr().read().bits());
        // SAFETY: callers only set PRFTEN/ICEN/DCEN; LATENCY is kept, so reads stay valid at
        // the current clock.
        self.regs.acr().write(|w| unsafe { w.bits(acr) });
    }
}

#[cfg(feature = "qemu")]
impl Flash {
    /// QEMU with `flash.bin`: program `bytes` into the file with the NOR rule of the real
    /// driver (only clear bits), checked against what the flash holds now.
    fn write_mirrored(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let mut current = [0u8; 64];
        let mut programmed = [0u8; 64];
        for (i, chunk) in bytes.chunks(current.len()).enumerate() {
            let at = offset + (i * current.len()) as u32;
            ReadNorFlash::read(self, at, &mut current[..chunk.len()])?;
            if current
                .iter()
                .zip(chunk)
                .any(|(&have, &want)| have & want != want)
            {
                return Err(FlashError::NeedsErase);
            }
            for ((out, &have), &want) in programmed.iter_mut().zip(&current).zip(chunk) {
                *out = have & want;
            }
            let written = self
                .mirror
                .as_mut()
                .is_some_and(|m| m.write(at, &programmed[..chunk.len()]));
            if !written {
                return Err(FlashError::Operation(0));
            }
        }
        Ok(())
    }
}

fn read_word(offset: u32) -> u32 {
    // SAFETY: callers pass a word-aligned offset inside flash, which is always mapped and
    // readable at FLASH_BASE; volatile because programming changes it behind the compiler.
    unsafe { core::ptr::read_volatile((FLASH_BASE + offset) as *const u32) }
}

impl ErrorType for Flash {
    type Error = FlashError;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        in_bounds(offset, bytes.len())?;
        // SAFETY: the source range lies inside the memory-mapped 1 MB flash (checked above),
        // which is always readable; `bytes` is a distinct RAM buffer, so they do not overlap.
        // `&mut self` means no program/erase of this driver runs meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (FLASH_BASE + offset) as *const u8,
                bytes.as_mut_ptr(),
                bytes.len(),
            )
        };
        #[cfg(feature = "qemu")]
        {
            self.overlay.read(offset, bytes);
            if let Some(mirror) = &self.mirror {
                mirror.read(offset, bytes, crate::overlay::RANGE);
            }
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE as usize
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = WORD;

    /// The smallest sector (16 KB); [`erase`](NorFlash::erase) refuses any range that is not
    /// whole sectors of the real 16/64/128 KB map.
    const ERASE_SIZE: usize = 16 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to || to > FLASH_SIZE {
            return Err(FlashError::OutOfBounds);
        }
        if touches_bootloader(from, to - from) {
            return Err(FlashError::Bootloader);
        }
        let (Some(first), Some(end)) = (sector_boundary(from), sector_boundary(to)) else {
            return Err(FlashError::NotSectorBoundary);
        };
        if first == end {
            return Ok(());
        }
        #[cfg(feature = "qemu")]
        match crate::overlay::coverage(from, (to - from) as usize) {
            crate::overlay::Coverage::Inside => {
                self.overlay.erase(from, to);
                if let Some(mirror) = &mut self.mirror {
                    mirror.erase(from, to);
                }
                return Ok(());
            }
            crate::overlay::Coverage::Straddles => return Err(FlashError::OutOfBounds),
            crate::overlay::Coverage::Outside => {
                if let Some(mirror) = &mut self.mirror {
                    return if mirror.erase(from, to) {
                        Ok(())
                    } else {
                        Err(FlashError::Operation(0))
                    };
                }
            }
        }
        self.unlock();
        let mut result = Ok(());
        for sector in &SECTORS[first..end] {
            result = self.erase_sector(sector.index);
            if result.is_err() {
                break;
            }
        }
        self.lock();
        self.reset_data_cache();
        result
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        in_bounds(offset, bytes.len())?;
        if offset as usize % WORD != 0 || bytes.len() % WORD != 0 {
            return Err(FlashError::NotAligned);
        }
        if touches_bootloader(offset, bytes.len() as u32) {
            return Err(FlashError::Bootloader);
        }
        #[cfg(feature = "qemu")]
        match crate::overlay::coverage(offset, bytes.len()) {
            crate::overlay::Coverage::Inside => {
                if !self.overlay.can_program(offset, bytes) {
                    return Err(FlashError::NeedsErase);
                }
                self.overlay.program(offset, bytes);
                if let Some(mirror) = &mut self.mirror {
                    let mut programmed = [0u8; 64];
                    for (i, chunk) in bytes.chunks(programmed.len()).enumerate() {
                        let at = offset + (i * programmed.len()) as u32;
                        self.overlay.read(at, &mut programmed[..chunk.len()]);
                        mirror.write(at, &programmed[..chunk.len()]);
                    }
                }
                return Ok(());
            }
            crate::overlay::Coverage::Straddles => return Err(FlashError::OutOfBounds),
            crate::overlay::Coverage::Outside => {
                if self.mirror.is_some() {
                    return self.write_mirrored(offset, bytes);
                }
            }
        }
        // NOR rule, checked before anything is programmed: only clear bits.
        for (i, chunk) in bytes.chunks_exact(WORD).enumerate() {
            let new = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let current = read_word(offset + (i * WORD) as u32);
            if current & new != new {
                return Err(FlashError::NeedsErase);
            }
        }
        self.unlock();
        let mut result = Ok(());
        for (i, chunk) in bytes.chunks_exact(WORD).enumerate() {
            let new = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let at = offset + (i * WORD) as u32;
            if read_word(at) == new {
                continue; // already there (e.g. 0xFFFF_FFFF padding)
            }
            result = self.program_word(at, new);
            if result.is_err() {
                break;
            }
        }
        self.lock();
        self.reset_data_cache();
        result?;
        for (i, chunk) in bytes.chunks_exact(WORD).enumerate() {
            let new = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if read_word(offset + (i * WORD) as u32) != new {
                return Err(FlashError::Verify);
            }
        }
        Ok(())
    }
}
