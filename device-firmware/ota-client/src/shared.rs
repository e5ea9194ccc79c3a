//! [`SharedFlash`]: one flash driver used by two owners, the boot journal (inside
//! [`BootControl`](fota_boot::BootControl)) and the client's
//! [`FlashPersist`](crate::flash_store::FlashPersist), which live in different sectors of the
//! same chip. Each operation borrows the driver for its own duration only; nothing holds it
//! across calls, so the two never conflict (a conflict would panic in `RefCell`, which the
//! single-threaded main loop cannot cause).

use core::cell::RefCell;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

/// A handle on a flash driver in a `RefCell`; copy it to give each owner one.
#[derive(Debug)]
pub struct SharedFlash<'a, F>(pub &'a RefCell<F>);

impl<F> Clone for SharedFlash<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for SharedFlash<'_, F> {}

impl<F: ErrorType> ErrorType for SharedFlash<'_, F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> ReadNorFlash for SharedFlash<'_, F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl<F: NorFlash> NorFlash for SharedFlash<'_, F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.borrow_mut().erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().write(offset, bytes)
    }
}
