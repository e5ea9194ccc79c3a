//! An in-memory NOR flash for tests (feature `testing`, as embassy-boot exports its test flash):
//! this crate's unit tests, the OTA client's tests and the QEMU journal seeder use it. NOR's
//! rules are enforced: program only whole aligned 32-bit words and only clear bits (setting a
//! bit is an error), erase in 16 KB units. For power cuts, torn writes and the F4's mixed sector
//! map, use `fota-sim`'s `SimFlash`.

extern crate std;

use embedded_storage::nor_flash::{
    check_erase, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use fota_protocol::layout::FLASH_SIZE;
use std::vec;
use std::vec::Vec;

/// Erased NOR flash in RAM, with every write and erase counted.
#[derive(Debug, Clone)]
pub struct MemFlash {
    /// The contents (offset 0 first).
    pub bytes: Vec<u8>,
    /// Successful writes so far.
    pub writes: usize,
    /// Every successful erase, as `(from, to)`.
    pub erases: Vec<(u32, u32)>,
    /// Fail every write once this many more have succeeded (`None`: never).
    pub fail_writes_after: Option<usize>,
}

/// Why a [`MemFlash`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemFlashError(pub NorFlashErrorKind);

impl NorFlashError for MemFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl MemFlash {
    /// The erase unit, the F4's smallest sector (every F4 sector is a whole number of them).
    pub const SECTOR: usize = 16 * 1024;

    /// 64 KB: four 16 KB sectors (enough for a journal and its tests).
    pub fn new() -> Self {
        Self::with_size(4 * Self::SECTOR)
    }

    /// The F429's whole 1 MB, as offsets from 0x0800_0000.
    pub fn f429() -> Self {
        Self::with_size(FLASH_SIZE as usize)
    }

    /// `size` bytes (a whole number of [`SECTOR`](Self::SECTOR)s), erased.
    pub fn with_size(size: usize) -> Self {
        Self {
            bytes: vec![0xFF; size],
            writes: 0,
            erases: Vec::new(),
            fail_writes_after: None,
        }
    }
}

impl Default for MemFlash {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorType for MemFlash {
    type Error = MemFlashError;
}

impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(MemFlashError(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = Self::SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to).map_err(MemFlashError)?;
        self.bytes[from as usize..to as usize].fill(0xFF);
        self.erases.push((from, to));
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len()).map_err(MemFlashError)?;
        if let Some(left) = self.fail_writes_after.as_mut() {
            if *left == 0 {
                return Err(MemFlashError(NorFlashErrorKind::Other));
            }
            *left -= 1;
        }
        let cells = &mut self.bytes[offset as usize..offset as usize + bytes.len()];
        if cells
            .iter()
            .zip(bytes)
            .any(|(&have, &want)| want & !have != 0)
        {
            // Programming would set a bit: it needs an erase first.
            return Err(MemFlashError(NorFlashErrorKind::Other));
        }
        for (cell, &b) in cells.iter_mut().zip(bytes) {
            *cell &= b;
        }
        self.writes += 1;
        Ok(())
    }
}
