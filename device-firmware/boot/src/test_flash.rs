//! A small in-memory NOR flash for this crate's unit tests (the full F429 simulator with power
//! cuts is `fota-sim`'s `SimFlash`, which depends on this crate, so it cannot be used here).

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// 64 KB of uniform 16 KB sectors, 32-bit program unit, NOR rules enforced.
#[derive(Debug, Clone)]
pub struct MemFlash {
    pub bytes: Vec<u8>,
    /// Fail every write once this many more have succeeded (`None`: never).
    pub fail_writes_after: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemFlashError(pub NorFlashErrorKind);

impl NorFlashError for MemFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl MemFlash {
    pub const SECTOR: usize = 16 * 1024;

    pub fn new() -> Self {
        Self {
            bytes: vec![0xFF; 4 * Self::SECTOR],
            fail_writes_after: None,
        }
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
        embedded_storage::nor_flash::check_erase(self, from, to).map_err(MemFlashError)?;
        self.bytes[from as usize..to as usize].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        embedded_storage::nor_flash::check_write(self, offset, bytes.len())
            .map_err(MemFlashError)?;
        if let Some(left) = self.fail_writes_after.as_mut() {
            if *left == 0 {
                return Err(MemFlashError(NorFlashErrorKind::Other));
            }
            *left -= 1;
        }
        let cells = &mut self.bytes[offset as usize..offset as usize + bytes.len()];
        assert!(
            cells
                .iter()
                .zip(bytes)
                .all(|(&have, &want)| want & !have == 0),
            "programming {offset:#x} would set bits"
        );
        for (cell, &b) in cells.iter_mut().zip(bytes) {
            *cell &= b;
        }
        Ok(())
    }
}
