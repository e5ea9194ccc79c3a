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
//! # Power loss
//!
//! Every write or erase call that reaches the flash (passes the checks above and is not empty)
//! is a numbered *step* ([`SimFlash::steps`]). [`SimFlash::cut_power_at`] schedules a power cut
//! at step N, of one of two kinds ([`PowerCut`]):
//!
//! - [`PowerCut::Before`]: between operations; step N never happens.
//! - [`PowerCut::Torn`]: inside step N. A write leaves a prefix of its words programmed and the
//!   next word half programmed: only a random subset of the bits it was clearing are cleared
//!   (the cells that got enough charge before the supply fell). An erase of several sectors
//!   leaves the earlier sectors erased, one sector partly erased (some words 0xFF, the others as
//!   they were) and the later ones untouched. The randomness comes from the cut's seed, so a
//!   failing sweep point replays exactly.
//!
//! After the cut every operation, reads included, fails with [`SimFlashError::PowerLoss`] until
//! [`SimFlash::power_on`], as the code that was running died with the supply. A sweep runs a
//! scenario once to count its steps, then once per step and kind of cut, each from a copy of the
//! starting flash, powers on and checks what the next boot does.

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
    /// The power was cut (see [`SimFlash::cut_power_at`]); nothing works until
    /// [`SimFlash::power_on`].
    #[error("power lost")]
    PowerLoss,
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
            SimFlashError::WouldSetBits { .. } | SimFlashError::PowerLoss => {
                NorFlashErrorKind::Other
            }
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

/// How the power is lost at a scheduled step (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerCut {
    /// Just before the step: it never happens.
    Before,
    /// In the middle of the step, leaving a torn write or a partly erased sector; `seed` picks
    /// where it tore and which bits or words made it.
    Torn {
        /// Seed of the deterministic choice.
        seed: u64,
    },
}

/// SplitMix64: a tiny deterministic generator for torn operations (quality is irrelevant,
/// reproducibility is everything).
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The F429's 1 MB of flash, in memory, erased (all 0xFF) when created.
#[derive(Clone)]
pub struct SimFlash {
    bytes: Vec<u8>,
    ops: FlashOps,
    /// Erases per sector, by sector index: flash wear, e.g. of the journal's ping-pong sectors.
    erase_counts: [u32; SECTORS.len()],
    /// Write and erase calls that reached the flash: the numbering of power-cut points.
    steps: u64,
    /// The scheduled cut: at which step, and how.
    cut: Option<(u64, PowerCut)>,
    /// False from a cut until `power_on`.
    powered: bool,
}

impl core::fmt::Debug for SimFlash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimFlash")
            .field("ops", &self.ops)
            .field("erase_counts", &self.erase_counts)
            .field("steps", &self.steps)
            .field("cut", &self.cut)
            .field("powered", &self.powered)
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
            steps: 0,
            cut: None,
            powered: true,
        }
    }

    /// Write and erase operations performed (or started, for the one a cut interrupted) so far:
    /// step `steps()` is the next one. Not reset by [`reset_ops`](Self::reset_ops).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Cut the power at step `step` (as numbered by [`steps`](Self::steps)), in the way `cut`
    /// says. Replaces any cut scheduled before; a step already past never comes.
    pub fn cut_power_at(&mut self, step: u64, cut: PowerCut) {
        self.cut = Some((step, cut));
    }

    /// Forget a scheduled cut that has not happened.
    pub fn cancel_power_cut(&mut self) {
        self.cut = None;
    }

    /// Whether the power is on (false from a cut until [`power_on`](Self::power_on)).
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Restore the power after a cut: the flash keeps whatever the cut left.
    pub fn power_on(&mut self) {
        self.powered = true;
    }

    /// Fail if the power is off.
    fn check_power(&self) -> Result<(), SimFlashError> {
        if self.powered {
            Ok(())
        } else {
            Err(SimFlashError::PowerLoss)
        }
    }

    /// Number the operation about to happen; if the power is cut at it, return how (and the
    /// power is off from now on).
    fn begin_step(&mut self) -> Option<PowerCut> {
        let step = self.steps;
        self.steps += 1;
        match self.cut {
            Some((at, cut)) if at == step => {
                self.cut = None;
                self.powered = false;
                Some(cut)
            }
            _ => None,
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

impl SimFlash {
    /// A write cut by the power: words before a random one programmed, that one half
    /// programmed (a random subset of the bits it clears), the rest untouched. The caller has
    /// checked that `bytes` only clears bits, so this never sets one.
    fn tear_write(&mut self, start: usize, bytes: &[u8], seed: u64) {
        let mut rng = SplitMix(seed);
        let words = bytes.len() / WORD;
        let torn = rng.below(words);
        let done = torn * WORD;
        for (cell, &b) in self.bytes[start..start + done].iter_mut().zip(bytes) {
            *cell &= b;
        }
        let charged = rng.next().to_le_bytes();
        for ((cell, &b), &charged) in self.bytes[start + done..start + done + WORD]
            .iter_mut()
            .zip(&bytes[done..done + WORD])
            .zip(&charged)
        {
            // Of the bits this byte clears, only those whose cells got enough charge.
            let clearing = *cell & !b;
            *cell &= !(clearing & charged);
        }
        self.ops.writes += 1;
        self.ops.words_programmed += torn as u64;
    }

    /// An erase of sectors `first..end` cut by the power: earlier sectors erased, a random one
    /// partly erased (each word erased or left, with a random bias per cut), later ones untouched.
    fn tear_erase(&mut self, first: usize, end: usize, seed: u64) {
        let mut rng = SplitMix(seed);
        let torn = first + rng.below(end - first);
        for (sector, count) in SECTORS[first..torn]
            .iter()
            .zip(&mut self.erase_counts[first..torn])
        {
            let start = sector_offset(sector) as usize;
            self.bytes[start..start + sector.size as usize].fill(0xFF);
            *count += 1;
            self.ops.sectors_erased += 1;
        }
        let sector = &SECTORS[torn];
        let start = sector_offset(sector) as usize;
        // From "barely started" to "nearly done".
        let bias = 1 + rng.below(255) as u64;
        for word in self.bytes[start..start + sector.size as usize].chunks_exact_mut(WORD) {
            if rng.next() % 256 < bias {
                word.fill(0xFF);
            }
        }
        self.erase_counts[torn] += 1;
    }
}

impl ErrorType for SimFlash {
    type Error = SimFlashError;
}

impl ReadNorFlash for SimFlash {
    /// Flash is memory-mapped: any byte can be read.
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check_power()?;
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
        self.check_power()?;
        if from > to || to > FLASH_SIZE {
            return Err(SimFlashError::OutOfBounds {
                offset: from,
                len: to.saturating_sub(from) as usize,
            });
        }
        let (Some(first), Some(end)) = (Self::boundary(from), Self::boundary(to)) else {
            return Err(SimFlashError::NotSectorBoundary { from, to });
        };
        if first == end {
            return Ok(());
        }
        match self.begin_step() {
            None => {}
            Some(PowerCut::Before) => return Err(SimFlashError::PowerLoss),
            Some(PowerCut::Torn { seed }) => {
                self.tear_erase(first, end, seed);
                return Err(SimFlashError::PowerLoss);
            }
        }
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
        self.check_power()?;
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
        match self.begin_step() {
            None => {}
            Some(PowerCut::Before) => return Err(SimFlashError::PowerLoss),
            Some(PowerCut::Torn { seed }) => {
                self.tear_write(range.start, bytes, seed);
                return Err(SimFlashError::PowerLoss);
            }
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

    #[test]
    fn a_cut_before_a_step_stops_it_and_everything_after() {
        let mut flash = SimFlash::new();
        let at = slot_a();
        flash.write(at, &[0; 4]).unwrap();
        // Refused and empty operations never reach the flash: they are not steps.
        flash.write(at + 1, &[0; 4]).unwrap_err();
        flash.write(at, &[]).unwrap();
        flash.erase(at, at).unwrap();
        assert_eq!(flash.steps(), 1);

        flash.cut_power_at(2, PowerCut::Before);
        flash.write(at + 4, &[0; 4]).unwrap();
        let before = flash.as_bytes().to_vec();
        assert_eq!(flash.write(at + 8, &[0; 4]), Err(SimFlashError::PowerLoss));
        assert_eq!(flash.as_bytes(), before, "step 2 never happened");
        assert!(!flash.is_powered());
        let mut buf = [0u8; 4];
        assert_eq!(flash.read(at, &mut buf), Err(SimFlashError::PowerLoss));
        assert_eq!(
            flash.erase(at, at + 128 * KB),
            Err(SimFlashError::PowerLoss)
        );
        assert_eq!(flash.steps(), 3, "operations while off are not steps");

        flash.power_on();
        flash.read(at, &mut buf).unwrap();
        flash.write(at + 8, &[0; 4]).unwrap();
        assert_eq!(flash.steps(), 4);
        // A cut scheduled for a step already past never comes.
        flash.cut_power_at(1, PowerCut::Before);
        flash.write(at + 12, &[0; 4]).unwrap();
        assert!(flash.is_powered());
    }

    #[test]
    fn a_torn_write_leaves_a_prefix_and_one_half_programmed_word() {
        let at = slot_a();
        let want: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) & 0x7E).collect();
        let mut half_words = 0;
        let mut torn_at = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut flash = SimFlash::new();
            // Start from a partly programmed word, so "only clears bits" is tested too.
            flash.write(at + 8, &[0xF7, 0xFF, 0x7F, 0xFF]).unwrap();
            let have = flash.as_bytes()[at as usize..at as usize + 32].to_vec();
            let want: Vec<u8> = want.iter().zip(&have).map(|(w, h)| w & h).collect();
            flash.cut_power_at(1, PowerCut::Torn { seed });
            assert_eq!(flash.write(at, &want), Err(SimFlashError::PowerLoss));
            let got = &flash.as_bytes()[at as usize..at as usize + 32];
            let word =
                |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
            let torn = (0..8)
                .find(|&i| word(got, i) != word(&want, i))
                .unwrap_or(8);
            torn_at.insert(torn);
            for i in 0..8 {
                let (g, w, h) = (word(got, i), word(&want, i), word(&have, i));
                assert_eq!(g & !h, 0, "seed {seed}: word {i} set a bit");
                assert_eq!(
                    w & !g,
                    0,
                    "seed {seed}: word {i} cleared a bit it should not"
                );
                if i > torn {
                    assert_eq!(g, h, "seed {seed}: word {i} after the tear was touched");
                }
            }
            if torn < 8 && word(got, torn) != word(&have, torn) {
                half_words += 1;
            }
        }
        assert!(torn_at.len() >= 6, "tears land on many words: {torn_at:?}");
        assert!(
            half_words > 50,
            "most tears leave a word half programmed: {half_words}"
        );
    }

    #[test]
    fn a_torn_erase_leaves_sectors_erased_partly_erased_or_untouched() {
        let a = slot_a() as usize;
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut flash = SimFlash::new();
            flash.load(0, &vec![0x5A; FLASH_SIZE as usize]).unwrap();
            flash.cut_power_at(0, PowerCut::Torn { seed });
            assert_eq!(
                flash.erase(slot_a(), slot_a() + 256 * KB),
                Err(SimFlashError::PowerLoss)
            );
            let bytes = flash.as_bytes();
            let sector = |i: usize| &bytes[a + i * 128 * 1024..a + (i + 1) * 128 * 1024];
            let erased = |s: &[u8]| s.iter().all(|&b| b == 0xFF);
            let untouched = |s: &[u8]| s.iter().all(|&b| b == 0x5A);
            for i in 0..2 {
                for w in sector(i).chunks_exact(4) {
                    assert!(w == [0xFF; 4] || w == [0x5A; 4], "seed {seed}: {w:?}");
                }
            }
            let first = sector(0);
            let second = sector(1);
            let outcome = if untouched(second) && !erased(first) && !untouched(first) {
                "first partly erased"
            } else if erased(first) && !erased(second) && !untouched(second) {
                "second partly erased"
            } else {
                panic!("seed {seed}: not one partly erased sector");
            };
            outcomes.insert(outcome);
            assert_eq!(bytes[a - 1], 0x5A, "sector 4 untouched");
            assert_eq!(bytes[a + 256 * 1024], 0x5A, "sector 7 untouched");
        }
        assert_eq!(outcomes.len(), 2);
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
