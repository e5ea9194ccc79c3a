//! Applying a delta patch (issue 19) into the inactive slot: the running slot is the base, only
//! ever read; the rebuilt image is staged in RAM a few hundred bytes at a time and programmed in
//! whole write units, then fed to the same [`Download`](crate::download::Download) a full image
//! goes through, so it is verified exactly as a downloaded one.
//!
//! [`PatchRun`] holds what the client needs for it: the patch's offer, the
//! [`fota_delta::PatchApplier`] (about 1.4 KB) and a staging buffer of [`STAGE_LEN`] bytes. The
//! client feeds the container in pieces of [`PIECE`] bytes: heatshrink turns one input bit into
//! at most two output bytes (a 16-bit back-reference copies at most 32), and every target byte
//! is one byte of the decompressed bsdiff stream, so a piece rebuilds at most 16 x [`PIECE`]
//! bytes (plus one back-reference begun in the piece before), which the staging buffer holds
//! with room for a write unit's tail.

use embedded_storage::nor_flash::ReadNorFlash;
use fota_delta::{Base, PatchApplier};
use fota_protocol::messages::PatchOffer;

/// Container bytes fed to the applier at once.
pub const PIECE: usize = 32;

/// The staging buffer: the most a [`PIECE`] rebuilds (16 x 32 + 32 of a back-reference begun
/// before), plus a write unit's tail of at most 64 bytes.
pub const STAGE_LEN: usize = 16 * PIECE + 32 + 64;

/// A patch being applied. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PatchRun {
    /// The patch offered.
    pub offer: PatchOffer,
    /// The running image's length: the base the applier reads.
    pub base_len: u32,
    /// The container applier.
    pub applier: PatchApplier,
    /// Rebuilt bytes not programmed yet.
    pub staged: [u8; STAGE_LEN],
    /// How many of `staged` are in use.
    pub staged_len: usize,
}

impl PatchRun {
    /// A patch to apply onto a base of `base_len` bytes, rebuilding at most `max_target_len`.
    pub fn new(offer: PatchOffer, base_len: u32, max_target_len: u32) -> Self {
        Self {
            offer,
            base_len,
            applier: PatchApplier::new(max_target_len),
            staged: [0; STAGE_LEN],
            staged_len: 0,
        }
    }

    /// A patch resumed after a reset from its checkpoint (`applier`, from
    /// [`PatchApplier::resume`]): the bytes it had rebuilt are in the slot but for `tail`
    /// (less than a write unit, kept with the checkpoint), staged again.
    pub fn resumed(offer: PatchOffer, base_len: u32, applier: PatchApplier, tail: &[u8]) -> Self {
        let mut staged = [0; STAGE_LEN];
        let staged_len = tail.len().min(STAGE_LEN);
        staged[..staged_len].copy_from_slice(&tail[..staged_len]);
        Self {
            offer,
            base_len,
            applier,
            staged,
            staged_len,
        }
    }

    /// Container bytes applied so far: where the fetch goes on from.
    pub fn fetched(&self) -> u32 {
        // The applier never takes more than the container's announced length, a u32.
        u32::try_from(self.applier.offset()).unwrap_or(u32::MAX)
    }

    /// The first four bytes of the patch's address, for reasons.
    pub fn short_id(&self) -> u32 {
        u32::from_be_bytes([
            self.offer.sha256.0[0],
            self.offer.sha256.0[1],
            self.offer.sha256.0[2],
            self.offer.sha256.0[3],
        ])
    }
}

/// The staging buffer is full: the patch rebuilds more per piece than a valid one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageFull;

/// The running slot as the patch's base: reads only (the trait has no write).
#[derive(Debug)]
pub struct SlotBase<'a, F> {
    /// The flash driver.
    pub flash: &'a mut F,
    /// The running slot's offset in it.
    pub offset: u32,
    /// The running image's length.
    pub len: u32,
}

impl<F: ReadNorFlash> Base for SlotBase<'_, F> {
    type Error = F::Error;

    fn len(&self) -> u64 {
        self.len.into()
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        // The applier reads only inside the base (at most `len`, a u32).
        let at = self.offset + offset as u32;
        self.flash.read(at, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_run_fits_the_ram_budget() {
        // The issue allows the applier 8 KB; the client holds the applier, the staging buffer
        // and the patch's offer (docs/FIRMWARE.md gives the figure).
        let size = core::mem::size_of::<PatchRun>();
        assert!(size <= 2_200, "{size} bytes");
        assert!(size + crate::client::CHUNK_BUF_LEN <= 8 * 1024);
        // A piece's worst case fits with a 64-byte write unit's tail.
        const { assert!(16 * PIECE + 32 + 64 <= STAGE_LEN) };
    }
}
