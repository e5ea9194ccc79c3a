//! A memory-light STM32F4 flash for fleets: 100,000 of them fit in a few hundred megabytes.
//!
//! [`SimFlash`](crate::flash::SimFlash) keeps the whole megabyte per device, which is right for
//! sweeping one device through every power cut and wrong for a fleet. [`FleetFlash`] keeps each
//! of the twelve sectors as one of:
//!
//! - erased (nothing stored);
//! - the bytes programmed so far, from the sector's start up to the last programmed byte (the
//!   rest reads 0xFF): a journal sector holds a few hundred bytes, not 16 KB;
//! - a *shared* copy: once a sector is fully programmed, or the device [`seal`](FleetFlash::seal)s
//!   it after an install, its bytes are interned by content, so the 100,000 devices that wrote
//!   the same release hold one copy of it between them. Programming a shared sector again copies
//!   it first (copy on write).
//!
//! NOR's rules are enforced as in `SimFlash` (whole aligned words, programming only clears bits,
//! erases of whole sectors), so a client bug still shows up as an error. Power cuts: a cut can be
//! scheduled at a future write or erase; that operation is torn (a write keeps a prefix of its
//! words, an erase of several sectors erases the earlier ones) and every operation fails with
//! [`SimFlashError::PowerLoss`] until [`power_on`](FleetFlash::power_on).

use crate::flash::{SimFlashError, WORD};
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use fota_protocol::layout::{FLASH_BASE, FLASH_SIZE, SECTORS};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

const SECTOR_COUNT: usize = SECTORS.len();

/// Sectors programmed at least this far are interned by [`FleetFlash::seal`].
const SEAL_MIN_BYTES: usize = 1024;

/// One sector's contents.
#[derive(Debug, Clone, Default)]
enum Region {
    /// All 0xFF.
    #[default]
    Erased,
    /// The first `len` bytes (the rest 0xFF), owned by this device.
    Owned(Vec<u8>),
    /// The first `len` bytes (the rest 0xFF), shared by every device that wrote the same.
    Shared(Arc<[u8]>),
}

impl Region {
    fn bytes(&self) -> &[u8] {
        match self {
            Region::Erased => &[],
            Region::Owned(v) => v,
            Region::Shared(s) => s,
        }
    }

    fn owned(&mut self) -> &mut Vec<u8> {
        if !matches!(self, Region::Owned(_)) {
            *self = Region::Owned(self.bytes().to_vec());
        }
        match self {
            Region::Owned(v) => v,
            // Just made owned above.
            _ => unreachable!("region is owned"),
        }
    }
}

/// Shared sector contents by a hash of their bytes (collisions share a bucket).
type Interned = Mutex<HashMap<u64, Vec<Weak<[u8]>>>>;

/// Interned sector contents, by a hash of their bytes.
fn interner() -> &'static Interned {
    static INTERNER: OnceLock<Interned> = OnceLock::new();
    INTERNER.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The one shared copy of `bytes`.
fn intern(bytes: &[u8]) -> Arc<[u8]> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    let key = hasher.finish();
    let mut map = interner().lock().unwrap_or_else(|e| e.into_inner());
    let bucket = map.entry(key).or_default();
    bucket.retain(|w| w.strong_count() > 0);
    if let Some(shared) = bucket
        .iter()
        .filter_map(Weak::upgrade)
        .find(|s| &s[..] == bytes)
    {
        return shared;
    }
    let shared: Arc<[u8]> = Arc::from(bytes);
    bucket.push(Arc::downgrade(&shared));
    shared
}

/// Distinct sector contents currently shared between devices, and their total bytes.
pub fn interned_stats() -> (usize, usize) {
    let map = interner().lock().unwrap_or_else(|e| e.into_inner());
    map.values()
        .flatten()
        .filter_map(Weak::upgrade)
        .fold((0, 0), |(n, b), s| (n + 1, b + s.len()))
}

/// A scheduled power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    /// The write or erase (counted by [`FleetFlash::ops`]) it tears.
    at: u64,
}

/// A sparse, deduplicating STM32F4 flash (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct FleetFlash {
    sectors: [Region; SECTOR_COUNT],
    ops: u64,
    cut: Option<Cut>,
    unpowered: bool,
}

fn sector_start(index: usize) -> usize {
    (SECTORS[index].start - FLASH_BASE) as usize
}

fn sector_size(index: usize) -> usize {
    SECTORS[index].size as usize
}

/// The sector holding byte `offset` (which is inside flash).
fn sector_of(offset: usize) -> usize {
    SECTORS
        .iter()
        .rposition(|s| (s.start - FLASH_BASE) as usize <= offset)
        .unwrap_or(0)
}

impl FleetFlash {
    /// A fully erased flash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Put `bytes` at `offset` as a programming probe would (erasing the sectors they touch
    /// first is the caller's business), then share every sector they fill: for factory images.
    pub fn load(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        self.program(offset, bytes, usize::MAX)?;
        self.seal();
        Ok(())
    }

    /// Write and erase operations so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Cut the power during the write or erase `after` operations from now (0: the next one).
    pub fn cut_power_after(&mut self, after: u64) {
        self.cut = Some(Cut {
            at: self.ops + after,
        });
    }

    /// Whether a power cut is scheduled and has not happened yet.
    pub fn cut_pending(&self) -> bool {
        self.cut.is_some() && !self.unpowered
    }

    /// Whether the power is on.
    pub fn is_powered(&self) -> bool {
        !self.unpowered
    }

    /// Restore the power after a cut (a scheduled cut that has not happened is forgotten).
    pub fn power_on(&mut self) {
        self.unpowered = false;
        self.cut = None;
    }

    /// Share every sector programmed beyond a kilobyte with the other devices that hold the same
    /// bytes (call it after writing an image).
    pub fn seal(&mut self) {
        for region in &mut self.sectors {
            if let Region::Owned(bytes) = region {
                if bytes.len() >= SEAL_MIN_BYTES {
                    *region = Region::Shared(intern(bytes));
                }
            }
        }
    }

    /// Bytes this device holds on its own (not shared).
    pub fn owned_bytes(&self) -> usize {
        self.sectors
            .iter()
            .map(|r| match r {
                Region::Owned(v) => v.capacity(),
                _ => 0,
            })
            .sum()
    }

    fn check_power(&self) -> Result<(), SimFlashError> {
        if self.unpowered {
            Err(SimFlashError::PowerLoss)
        } else {
            Ok(())
        }
    }

    /// Count an operation; `true` if the power is cut during it.
    fn begin(&mut self) -> bool {
        let op = self.ops;
        self.ops += 1;
        if self.cut.is_some_and(|c| c.at == op) {
            self.cut = None;
            self.unpowered = true;
            return true;
        }
        false
    }

    /// Program `bytes` at `offset` (NOR rules checked first), stopping after `max_words` words.
    fn program(
        &mut self,
        offset: u32,
        bytes: &[u8],
        max_words: usize,
    ) -> Result<(), SimFlashError> {
        let start = offset as usize;
        let end = start
            .checked_add(bytes.len())
            .filter(|&e| e <= FLASH_SIZE as usize)
            .ok_or(SimFlashError::OutOfBounds {
                offset,
                len: bytes.len(),
            })?;
        if start % WORD != 0 || bytes.len() % WORD != 0 {
            return Err(SimFlashError::NotAligned {
                offset,
                len: bytes.len(),
            });
        }
        // Check first: a refused write changes nothing.
        for (i, word) in bytes.chunks_exact(WORD).enumerate() {
            let at = start + i * WORD;
            let mut current = [0xFF; WORD];
            self.read_into(at, &mut current);
            if current
                .iter()
                .zip(word)
                .any(|(&have, &want)| want & !have != 0)
            {
                return Err(SimFlashError::WouldSetBits {
                    offset: at as u32,
                    current: u32::from_le_bytes(current),
                    wanted: u32::from_le_bytes([word[0], word[1], word[2], word[3]]),
                });
            }
        }
        let end = end.min(start.saturating_add(max_words.saturating_mul(WORD)));
        let mut at = start;
        while at < end {
            let index = sector_of(at);
            let base = sector_start(index);
            let until = end.min(base + sector_size(index));
            let bytes_here = &bytes[at - start..until - start];
            let region = &mut self.sectors[index];
            let owned = region.owned();
            let need = until - base;
            if owned.len() < need {
                owned.resize(need, 0xFF);
            }
            for (cell, &b) in owned[at - base..need].iter_mut().zip(bytes_here) {
                *cell &= b;
            }
            if owned.len() == sector_size(index) {
                *region = Region::Shared(intern(region.bytes()));
            }
            at = until;
        }
        Ok(())
    }

    /// Read without any checks (`at..at+buf.len()` inside flash).
    fn read_into(&self, mut at: usize, mut buf: &mut [u8]) {
        while !buf.is_empty() {
            let index = sector_of(at);
            let base = sector_start(index);
            let here = buf.len().min(base + sector_size(index) - at);
            let (now, rest) = buf.split_at_mut(here);
            let stored = self.sectors[index].bytes();
            let from = at - base;
            let have = stored.len().saturating_sub(from).min(here);
            if have > 0 {
                now[..have].copy_from_slice(&stored[from..from + have]);
            }
            now[have..].fill(0xFF);
            at += here;
            buf = rest;
        }
    }
}

impl ErrorType for FleetFlash {
    type Error = SimFlashError;
}

impl ReadNorFlash for FleetFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.check_power()?;
        let start = offset as usize;
        if start
            .checked_add(bytes.len())
            .is_none_or(|end| end > FLASH_SIZE as usize)
        {
            return Err(SimFlashError::OutOfBounds {
                offset,
                len: bytes.len(),
            });
        }
        self.read_into(start, bytes);
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE as usize
    }
}

impl NorFlash for FleetFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = 16 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.check_power()?;
        let boundary = |offset: u32| {
            if offset == FLASH_SIZE {
                Some(SECTOR_COUNT)
            } else {
                SECTORS.iter().position(|s| s.start - FLASH_BASE == offset)
            }
        };
        let (Some(first), Some(end)) = (boundary(from), boundary(to)) else {
            return Err(SimFlashError::NotSectorBoundary { from, to });
        };
        if first > end {
            return Err(SimFlashError::NotSectorBoundary { from, to });
        }
        if first == end {
            return Ok(());
        }
        if self.begin() {
            // Torn: the first half of the sectors made it.
            let done = first + (end - first) / 2;
            for region in &mut self.sectors[first..done] {
                *region = Region::Erased;
            }
            return Err(SimFlashError::PowerLoss);
        }
        for region in &mut self.sectors[first..end] {
            *region = Region::Erased;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.check_power()?;
        if bytes.is_empty() {
            return Ok(());
        }
        if self.begin() {
            // Torn: a prefix of the words made it (checks still apply: a bad write is refused).
            let words = bytes.len() / WORD;
            self.program(offset, bytes, words / 2)?;
            return Err(SimFlashError::PowerLoss);
        }
        self.program(offset, bytes, usize::MAX)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::flash::SimFlash;

    const SLOT_A: u32 = 0x2_0000;

    #[test]
    fn reads_back_what_was_written_across_sectors() {
        let mut flash = FleetFlash::new();
        // Across the boundary of sector 4 (64 KB at 0x1_0000) and sector 5 (slot A's first).
        let at = SLOT_A - 8;
        flash
            .write(at, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
            .unwrap();
        let mut back = [0u8; 16];
        flash.read(at, &mut back).unwrap();
        assert_eq!(
            back,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0xFF, 0xFF, 0xFF, 0xFF]
        );
    }

    #[test]
    fn behaves_like_sim_flash_under_random_operations() {
        // The same operations on both flashes give the same results and the same contents.
        let mut light = FleetFlash::new();
        let mut full = SimFlash::new();
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..4000 {
            let r = next();
            match r % 10 {
                0 => {
                    let s = (next() % SECTOR_COUNT as u64) as usize;
                    let from = sector_start(s) as u32;
                    let to = from + SECTORS[s].size;
                    assert_eq!(light.erase(from, to), full.erase(from, to));
                }
                1 => light.seal(),
                _ => {
                    let words = 1 + (next() % 64) as usize;
                    let at = (next() % (u64::from(FLASH_SIZE) / 4 - words as u64)) as u32 * 4;
                    // Mostly near the slot and journal starts, where sectors get busy.
                    let at = if r % 3 == 0 {
                        at
                    } else {
                        (at % 0x8000) + SLOT_A
                    };
                    let bytes: Vec<u8> = (0..words * 4).map(|_| next() as u8).collect();
                    assert_eq!(light.write(at, &bytes), full.write(at, &bytes));
                }
            }
        }
        let mut all = vec![0u8; FLASH_SIZE as usize];
        light.read(0, &mut all).unwrap();
        assert!(all == full.as_bytes(), "contents differ");
    }

    #[test]
    fn identical_images_are_stored_once() {
        let image: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let mut devices: Vec<FleetFlash> = (0..100).map(|_| FleetFlash::new()).collect();
        for d in &mut devices {
            for (i, chunk) in image.chunks(1024).enumerate() {
                d.write(SLOT_A + (i * 1024) as u32, chunk).unwrap();
            }
            d.seal();
        }
        assert!(devices.iter().all(|d| d.owned_bytes() == 0));
        let first = devices[0].sectors[5].bytes().as_ptr();
        assert!(devices
            .iter()
            .all(|d| d.sectors[5].bytes().as_ptr() == first));
        // Writing to a shared sector copies it and leaves the others alone.
        devices[1].write(SLOT_A + 40_000, &[0; 4]).unwrap();
        assert_ne!(devices[1].sectors[5].bytes().as_ptr(), first);
        let mut word = [0u8; 4];
        devices[0].read(SLOT_A + 40_000, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4]);
    }

    #[test]
    fn a_cut_tears_the_write_and_stops_everything() {
        let mut flash = FleetFlash::new();
        flash.cut_power_after(1);
        flash.write(SLOT_A, &[0; 8]).unwrap();
        assert_eq!(
            flash.write(SLOT_A + 8, &[0; 16]),
            Err(SimFlashError::PowerLoss)
        );
        assert!(!flash.is_powered());
        let mut buf = [0u8; 4];
        assert_eq!(flash.read(0, &mut buf), Err(SimFlashError::PowerLoss));
        flash.power_on();
        let mut back = [0u8; 24];
        flash.read(SLOT_A, &mut back).unwrap();
        assert_eq!(
            &back[..16],
            &[0; 16],
            "the first half of the torn write made it"
        );
        assert_eq!(&back[16..], &[0xFF; 8]);
    }
}
