//! QEMU only (`qemu` feature): flash that survives a power cycle, as a host file.
//!
//! QEMU drops writes to flash, and a reset under `-no-reboot` ends QEMU. So when the host file
//! `flash.bin` exists in QEMU's working directory (the harness composes it and also loads it
//! with `-device loader`), every program and erase is also written to that file through
//! semihosting (`SYS_OPEN`, `SYS_SEEK`, `SYS_WRITE`), and reads of the sectors written during
//! this session come back from it (`SYS_READ`): QEMU's own flash still holds what was loaded at
//! start. The harness restarts QEMU on the file the last session left, which is what the
//! board's flash would hold after a reset or a power cut between two writes. (A cut inside a
//! write, which tears it on real NOR, is covered by the host simulator's sweeps, not here.)
//!
//! Without the file (the bootloader's boot scenarios), nothing changes: the journal sectors
//! live in the RAM overlay for the session and other writes are dropped, as before.

use core::sync::atomic::{AtomicU16, Ordering};
use cortex_m_semihosting::syscall;
use fota_protocol::layout::{sector_at, FLASH_BASE, SECTORS};

/// "flash.bin", NUL-terminated for SYS_OPEN.
const NAME: &[u8] = b"flash.bin\0";
/// SYS_OPEN mode 3: "r+b", read and write an existing binary file.
const MODE_READ_WRITE_BINARY: usize = 3;

/// Bit i: sector i was written or erased in this session (read it from the file). One set for
/// the session, not per `Mirror`: the fault handler's driver must read what the application's
/// wrote.
static DIRTY: AtomicU16 = AtomicU16::new(0);

/// The open file.
#[derive(Debug)]
pub(crate) struct Mirror {
    fd: usize,
}

fn sector_index(offset: u32) -> Option<usize> {
    sector_at(FLASH_BASE + offset).map(|s| usize::from(s.index))
}

impl Mirror {
    /// Open `flash.bin` if the harness provided one.
    pub(crate) fn open() -> Option<Self> {
        // SAFETY: SYS_OPEN reads the NUL-terminated name (its length excludes the NUL) and
        // writes nothing of ours; QEMU handles it, and without a debugger on a board this build
        // (the `qemu` feature) is never flashed.
        let fd = unsafe { syscall!(OPEN, NAME.as_ptr(), MODE_READ_WRITE_BINARY, NAME.len() - 1) };
        (fd as isize >= 0).then_some(Self { fd })
    }

    fn seek(&self, offset: u32) -> bool {
        // SAFETY: SYS_SEEK takes the handle SYS_OPEN gave and an absolute position.
        unsafe { syscall!(SEEK, self.fd, offset as usize) == 0 }
    }

    fn mark(&mut self, offset: u32, len: usize) {
        let (Some(first), Some(last)) = (
            sector_index(offset),
            sector_index(offset + len.max(1) as u32 - 1),
        ) else {
            return;
        };
        for i in first..=last {
            DIRTY.fetch_or(1 << i, Ordering::Relaxed);
        }
    }

    /// Write `bytes` at `offset` into the file.
    pub(crate) fn write(&mut self, offset: u32, bytes: &[u8]) -> bool {
        self.mark(offset, bytes.len());
        // SAFETY: SYS_WRITE reads `bytes.len()` bytes from `bytes`, a live slice; it returns
        // the number of bytes not written.
        self.seek(offset) && unsafe { syscall!(WRITE, self.fd, bytes.as_ptr(), bytes.len()) == 0 }
    }

    /// Erase `from..to` (whole sectors) in the file: 0xFF.
    pub(crate) fn erase(&mut self, from: u32, to: u32) -> bool {
        let ff = [0xFFu8; 256];
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(ff.len());
            if !self.write(at, &ff[..n]) {
                return false;
            }
            at += n as u32;
        }
        true
    }

    /// Overwrite the parts of `bytes` (read from `offset`) that lie in sectors written this
    /// session with the file's contents. `skip` is a range the caller serves itself (the
    /// journal's RAM overlay).
    pub(crate) fn read(&self, offset: u32, bytes: &mut [u8], skip: core::ops::Range<u32>) {
        let dirty = DIRTY.load(Ordering::Relaxed);
        if dirty == 0 {
            return;
        }
        let end = offset + bytes.len() as u32;
        for sector in SECTORS.iter().filter(|s| dirty & (1 << s.index) != 0) {
            let s_start = sector.start - FLASH_BASE;
            let s_end = s_start + sector.size;
            if s_start >= skip.start && s_end <= skip.end {
                continue;
            }
            let from = offset.max(s_start);
            let to = end.min(s_end);
            if from >= to {
                continue;
            }
            let dst = &mut bytes[(from - offset) as usize..(to - offset) as usize];
            if self.seek(from) {
                // SAFETY: SYS_READ writes at most `dst.len()` bytes into `dst`, a live
                // exclusive slice.
                let _ = unsafe { syscall!(READ, self.fd, dst.as_mut_ptr(), dst.len()) };
            }
        }
    }
}
