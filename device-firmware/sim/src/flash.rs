//! An in-memory STM32F429 flash that enforces NOR's rules and counts every operation.
//!
//! The boot and OTA logic only ever see flash through embedded-storage's [`NorFlash`], so the
//! same code runs on the board's driver and on this. It is strict where real flash is
//! unforgiving, so a bug shows up as an error in a test instead of a corrupted device:
//!
//! - programming can only clear bits (1 -> 0); a write that would set a 0 bit back to 1 is
//!   refused (the F4 would silently leave it 0). Clearing further bits of an already programmed
//!   word is allowed, as on the F4 (which has no flash ECC): [`MultiwriteNorFlash`].
//! - writes are whole 32-bit words at 4-byte-aligned offsets (the F4's x32 program size);
//! - erases are whole sectors of the F4's mixed 16/64/128 KB map ([`SECTORS`]);
//! - nothing outside the 1 MB may be touched.
//!
//! A refused operation changes nothing and is not counted. Offsets are from the start of flash:
//! offset 0 is 0x0800_0000 ([`SimFlash::offset_of`] converts addresses).
//!
//! The operation counts are for the power-cut sweeps to come: cut at step N, for every N.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use fota_protocol::layout::{Sector, FLASH_BASE, FLASH_SIZE, SECTORS};

/// Bytes one program operation writes: the F4's 32-bit parallelism.
pub const WORD: usize = 4;

/// Why a flash operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimFlashError {
    /// The range runs past the end of flash (or `from > to` for an erase).
    #[error("{len} bytes at offset {offset:#x} are outside the 1 MB flash")]
    OutOfBounds {
        /// Start offset.
        offset: u32,
        /// Length in bytes.
        len: usize,
    },
    /// A write's offset or length is not a multiple of 4.
    #[error("write of {len} bytes at {offset:#x} is not whole aligned 32-bit words")]
    NotAligned {
        /// Start offset.
        offset: u32,
        /// Length in bytes.
        len: usize,
    },
    /// An erase range does not start and end on sector boundaries of the F4 map.
    #[error("erase {from:#x}..{to:#x} does not start and end on sector boundaries")]
    NotSectorBoundary {
        /// Start offset.
        from: u32,
        /// End offset (exclusive).
        to: u32,
    },
    /// Programming would have to set a 0 bit back to 1, which only an erase can do.
    #[error(
        "word at {offset:#x} holds {current:#010x}; programming {wanted:#010x} needs an erase"
    )]
    WouldSetBits {
        /// Offset of the first offending word.
        offset: u32,
        /// What the word holds (little endian).
        current: u32,
        /// What the write asked for (little endian).
        wanted: u32,
    },
}

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimFlashError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            SimFlashError::NotAligned { .. } | SimFlashError::NotSectorBoundary { .. } => {
                NorFlashErrorKind::NotAligned
            }
            SimFlashError::WouldSetBits { .. } => NorFlashErrorKind::Other,
        }
    }
}

/// How many operations a [`SimFlash`] has performed (refused ones are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlashOps {
    /// `read` calls.
    pub reads: u64,
    /// `write` calls that programmed at least one word.
    pub writes: u64,
    /// 32-bit words programmed.
    pub words_programmed: u64,
    /// Sectors erased (an erase of three sectors counts three).
    pub sectors_erased: u64,
}

/// The F429's 1 MB of flash, in memory, erased (all 0xFF) when created.
#[derive(Clone)]
pub struct SimFlash {
    bytes: Vec<u8>,
    ops: FlashOps,
    /// Erases per sector, by sector index: flash wear, e.g. of the journal's ping-pong sectors.
    erase_counts: [u32; SECTORS.len()],
}

impl core::fmt::Debug for SimFlash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimFlash")
            .field("ops", &self.ops)
            .field("erase_counts", &self.erase_counts)
            .finish_non_exhaustive()
    }
}

impl Default for SimFlash {
    fn default() -> Self {
        Self::new()
    }
}

/// Offset of a sector's first byte.
fn sector_offset(sector: &Sector) -> u32 {
    sector.start - FLASH_BASE
}

impl SimFlash {
    /// A fully erased flash.
    pub fn new() -> Self {
        Self {
            bytes: vec![0xFF; FLASH_SIZE as usize],
            ops: FlashOps::default(),
            erase_counts: [0; SECTORS.len()],
        }
    }

    /// The offset of absolute address `addr` (e.g. a partition's start), if it is in flash.
    pub fn offset_of(addr: u32) -> Option<u32> {
        addr.checked_sub(FLASH_BASE)
            .filter(|&offset| offset < FLASH_SIZE)
    }

    /// The whole flash, for inspection.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Operations performed so far.
    pub fn ops(&self) -> FlashOps {
        self.ops
    }

    /// Start counting from zero (e.g. after setting a device up, before the step under test).
    pub fn reset_ops(&mut self) {
        self.ops = FlashOps::default();
    }

    /// How many times sector `index` has been erased.
    pub fn erase_count(&self, index: usize) -> Option<u32> {
        self.erase_counts.get(index).copied()
    }

    /// Put `bytes` at `offset` as a debug probe would (erase, then program exactly these bytes),
    /// bypassing the NOR rules and the counts: for setting up a device's factory contents.
    pub fn load(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        let range = self.range(offset, bytes.len())?;
        self.bytes[range].copy_from_slice(bytes);
        Ok(())
    }

    /// The byte range `offset..offset + len`, if it lies inside flash.
    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, SimFlashError> {
        let start = offset as usize;
        start
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .map(|end| start..end)
            .ok_or(SimFlashError::OutOfBounds { offset, len })
    }

    /// Index of the sector starting at `offset`, or `SECTORS.len()` for the end of flash.
    fn boundary(offset: u32) -> Option<usize> {
        if offset == FLASH_SIZE {
            return Some(SECTORS.len());
        }
        SECTORS.iter().position(|s| sector_offset(s) == offset)
    }
}

impl ErrorType for SimFlash {
    type Error = SimFlashError;
}

impl ReadNorFlash for SimFlash {
    /// Flash is memory-mapped: any byte can be read.
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let range = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(&self.bytes[range]);
        self.ops.reads += 1;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = WORD;

    /// The smallest sector (16 KB). The F4's sectors are 16, 64 and 128 KB and the trait allows
    /// one constant, so generic code that trusts it would try to erase 16 KB of a 128 KB sector:
    /// [`erase`](NorFlash::erase) refuses any range that is not whole sectors of the real map.
    const ERASE_SIZE: usize = 16 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to || to > FLASH_SIZE {
            return Err(SimFlashError::OutOfBounds {
                offset: from,
                len: to.saturating_sub(from) as usize,
            });
        }
        let (Some(first), Some(end)) = (Self::boundary(from), Self::boundary(to)) else {
            return Err(SimFlashError::NotSectorBoundary { from, to });
        };
        for (sector, count) in SECTORS[first..end]
            .iter()
            .zip(&mut self.erase_counts[first..end])
        {
            let start = sector_offset(sector) as usize;
            self.bytes[start..start + sector.size as usize].fill(0xFF);
            *count += 1;
            self.ops.sectors_erased += 1;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let range = self.range(offset, bytes.len())?;
        if offset as usize % WORD != 0 || bytes.len() % WORD != 0 {
            return Err(SimFlashError::NotAligned {
                offset,
                len: bytes.len(),
            });
        }
        // Check every word before programming any, so a refused write changes nothing.
        let current = &self.bytes[range.clone()];
        for (i, (have, want)) in current
            .chunks_exact(WORD)
            .zip(bytes.chunks_exact(WORD))
            .enumerate()
        {
            let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let (have, want) = (word(have), word(want));
            if want & !have != 0 {
                return Err(SimFlashError::WouldSetBits {
                    offset: offset + (i * WORD) as u32,
                    current: have,
                    wanted: want,
                });
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // Programming ANDs: after the check above, that is exactly `bytes`.
        for (cell, &b) in self.bytes[range].iter_mut().zip(bytes) {
            *cell &= b;
        }
        self.ops.writes += 1;
        self.ops.words_programmed += (bytes.len() / WORD) as u64;
        Ok(())
    }
}

/// Re-programming a word is fine as long as it only clears bits (no ECC on the F4).
impl MultiwriteNorFlash for SimFlash {}

#[cfg(test)]
mod tests {
    use super::*;
    use fota_protocol::layout::{JOURNAL, SLOT_A, SLOT_B};

    const KB: u32 = 1024;

    fn slot_a() -> u32 {
        SimFlash::offset_of(SLOT_A.start).unwrap()
    }

    #[test]
    fn starts_erased_and_covers_the_f429_map() {
        let mut flash = SimFlash::new();
        assert_eq!(flash.capacity(), 1024 * 1024);
        assert!(flash.as_bytes().iter().all(|&b| b == 0xFF));
        assert_eq!(SimFlash::offset_of(0x0800_0000), Some(0));
        assert_eq!(SimFlash::offset_of(SLOT_B.start), Some(0x6_0000));
        assert_eq!(SimFlash::offset_of(0x080F_FFFF), Some(0xF_FFFF));
        assert_eq!(SimFlash::offset_of(0x0810_0000), None);
        assert_eq!(SimFlash::offset_of(0x07FF_FFFF), None);
        // Any byte, any length: READ_SIZE is 1.
        let mut buf = [0u8; 3];
        flash.read(0xF_FFFD, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 3]);
    }

    #[test]
    fn reads_and_writes_outside_flash_are_refused() {
        let mut flash = SimFlash::new();
        let mut buf = [0u8; 4];
        let end = FLASH_SIZE;
        assert_eq!(
            flash.read(end - 2, &mut buf),
            Err(SimFlashError::OutOfBounds {
                offset: end - 2,
                len: 4
            })
        );
        assert!(flash.read(u32::MAX, &mut buf).is_err());
        assert_eq!(
            flash.write(end, &[0; 4]),
            Err(SimFlashError::OutOfBounds {
                offset: end,
                len: 4
            })
        );
        assert_eq!(
            flash.write(end - 4, &[0; 8]).unwrap_err().kind(),
            NorFlashErrorKind::OutOfBounds
        );
        flash.write(end - 4, &[0; 4]).unwrap();
        assert_eq!(flash.as_bytes()[(end - 4) as usize..], [0; 4]);
        assert!(flash.load(end - 1, &[0, 0]).is_err());
    }

    #[test]
    fn writes_must_be_whole_aligned_words() {
        let mut flash = SimFlash::new();
        for (offset, len) in [
            (slot_a() + 1, 4),
            (slot_a() + 2, 4),
            (slot_a(), 3),
            (slot_a(), 6),
        ] {
            let err = flash.write(offset, &vec![0; len]).unwrap_err();
            assert_eq!(err, SimFlashError::NotAligned { offset, len });
            assert_eq!(err.kind(), NorFlashErrorKind::NotAligned);
        }
        assert!(
            flash.as_bytes().iter().all(|&b| b == 0xFF),
            "refused writes changed flash"
        );
        flash
            .write(slot_a() + 4, &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        let mut buf = [0u8; 8];
        flash.read(slot_a() + 4, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn programming_only_clears_bits() {
        let mut flash = SimFlash::new();
        let at = slot_a();
        flash.write(at, &[0xF0, 0xFF, 0xFF, 0xFF]).unwrap();
        // Clearing more bits of a programmed word is fine (MultiwriteNorFlash).
        flash.write(at, &[0x30, 0xFF, 0xFF, 0x7F]).unwrap();
        // Rewriting the same value is fine too.
        flash.write(at, &[0x30, 0xFF, 0xFF, 0x7F]).unwrap();
        assert_eq!(
            flash.as_bytes()[at as usize..at as usize + 4],
            [0x30, 0xFF, 0xFF, 0x7F]
        );

        // Setting bit 6 of byte 0 back to 1 needs an erase.
        let err = flash.write(at, &[0x70, 0xFF, 0xFF, 0x7F]).unwrap_err();
        assert_eq!(
            err,
            SimFlashError::WouldSetBits {
                offset: at,
                current: 0x7FFF_FF30,
                wanted: 0x7FFF_FF70,
            }
        );
        assert_eq!(err.kind(), NorFlashErrorKind::Other);

        // A write refused in its second word programs nothing, not even its first word.
        flash.write(at + 8, &[0x00; 4]).unwrap();
        let before = flash.as_bytes().to_vec();
        assert!(matches!(
            flash.write(at + 4, &[0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]),
            Err(SimFlashError::WouldSetBits { offset, .. }) if offset == at + 8
        ));
        assert_eq!(flash.as_bytes(), before);
    }

    #[test]
    fn erases_are_whole_sectors_of_the_f4_map() {
        let mut flash = SimFlash::new();
        flash.load(0, &vec![0u8; FLASH_SIZE as usize]).unwrap();

        // Slot A is sectors 5 and 6 (2 x 128 KB).
        flash.erase(slot_a(), slot_a() + 256 * KB).unwrap();
        let bytes = flash.as_bytes();
        let a = slot_a() as usize;
        assert!(bytes[a..a + 256 * 1024].iter().all(|&b| b == 0xFF));
        assert_eq!(bytes[a - 1], 0, "sector 4 untouched");
        assert_eq!(bytes[a + 256 * 1024], 0, "sector 7 untouched");
        assert_eq!(flash.erase_count(5), Some(1));
        assert_eq!(flash.erase_count(6), Some(1));
        assert_eq!(flash.erase_count(7), Some(0));
        assert_eq!(flash.erase_count(12), None);

        // ERASE_SIZE (16 KB) of a 128 KB sector, or a range ending mid-sector: refused.
        let journal = SimFlash::offset_of(JOURNAL.start).unwrap();
        for (from, to) in [
            (slot_a(), slot_a() + 16 * KB),
            (slot_a() + 16 * KB, slot_a() + 128 * KB),
            (journal, journal + 8 * KB),
            (journal + 1, journal + 16 * KB),
        ] {
            let err = flash.erase(from, to).unwrap_err();
            assert_eq!(err, SimFlashError::NotSectorBoundary { from, to });
            assert_eq!(err.kind(), NorFlashErrorKind::NotAligned);
        }
        // But one 16 KB sector is ERASE_SIZE: one journal half.
        flash.erase(journal, journal + 16 * KB).unwrap();
        assert_eq!(flash.erase_count(2), Some(1));
        assert_eq!(flash.erase_count(3), Some(0));

        // Ranges spanning sizes: sector 3 (16 KB) and 4 (64 KB); all of flash.
        flash.erase(journal + 16 * KB, slot_a()).unwrap();
        flash.erase(0, FLASH_SIZE).unwrap();
        assert!(flash.as_bytes().iter().all(|&b| b == 0xFF));
        // An empty range on a boundary erases nothing.
        flash.erase(slot_a(), slot_a()).unwrap();
        assert_eq!(flash.erase_count(5), Some(2));
    }

    #[test]
    fn erases_outside_flash_are_refused() {
        let mut flash = SimFlash::new();
        assert_eq!(
            flash.erase(0, FLASH_SIZE + 16 * KB).unwrap_err().kind(),
            NorFlashErrorKind::OutOfBounds
        );
        assert_eq!(
            flash
                .erase(slot_a() + 128 * KB, slot_a())
                .unwrap_err()
                .kind(),
            NorFlashErrorKind::OutOfBounds
        );
        assert_eq!(flash.ops(), FlashOps::default());
    }

    #[test]
    fn an_erase_lets_a_word_be_programmed_again() {
        let mut flash = SimFlash::new();
        let b = SimFlash::offset_of(SLOT_B.start).unwrap();
        flash.write(b, &[0x00; 4]).unwrap();
        assert!(flash.write(b, &[0x12; 4]).is_err());
        flash.erase(b, b + 128 * KB).unwrap();
        flash.write(b, &[0x12; 4]).unwrap();
    }

    #[test]
    fn every_performed_operation_is_counted() {
        let mut flash = SimFlash::new();
        let mut buf = [0u8; 16];
        flash.read(0, &mut buf).unwrap();
        flash.write(slot_a(), &[0; 16]).unwrap();
        flash.write(slot_a() + 16, &[0; 4]).unwrap();
        flash.write(slot_a() + 20, &[]).unwrap();
        flash.erase(0, 32 * KB).unwrap();
        // Refused operations are not counted: they never reached the flash.
        flash.write(slot_a() + 1, &[0; 4]).unwrap_err();
        flash.write(slot_a(), &[1; 4]).unwrap_err();
        flash.erase(0, 8 * KB).unwrap_err();
        assert_eq!(
            flash.ops(),
            FlashOps {
                reads: 1,
                writes: 2,
                words_programmed: 5,
                sectors_erased: 2,
            }
        );
        flash.reset_ops();
        assert_eq!(flash.ops(), FlashOps::default());
        // load is a debug probe, not the device: not counted.
        flash.load(0, &[0; 8]).unwrap();
        assert_eq!(flash.ops(), FlashOps::default());
    }

    /// What the boot and OTA code will do: work through the traits only.
    fn append_word<F: NorFlash>(flash: &mut F, offset: u32, word: u32) -> Result<u32, F::Error> {
        flash.write(offset, &word.to_le_bytes())?;
        let mut back = [0u8; 4];
        flash.read(offset, &mut back)?;
        Ok(u32::from_le_bytes(back))
    }

    #[test]
    fn usable_through_the_embedded_storage_traits() {
        let mut flash = SimFlash::new();
        assert_eq!(
            append_word(&mut flash, slot_a(), 0xDEAD_BEEF),
            Ok(0xDEAD_BEEF)
        );
        // And through `&mut` (embedded-storage's blanket impl), as a driver borrowed by a task.
        assert_eq!(append_word(&mut &mut flash, slot_a() + 4, 7), Ok(7));
        assert_eq!(<SimFlash as NorFlash>::ERASE_SIZE, 16 * 1024);
        assert_eq!(<SimFlash as NorFlash>::WRITE_SIZE, 4);
    }
}
