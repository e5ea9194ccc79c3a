//! The bsdiff stage: the streaming applier of a bsdiff-style patch (the decompressed body of a
//! container, see [`crate::patch`]), `no_std`, without an allocator, in a few hundred bytes of
//! RAM.
//!
//! The patch is bsdiff's, in the interleaved layout of the `bsdiff` crate (which generates it on
//! the server): a sequence of entries, each
//!
//! | bytes | field |
//! |---|---|
//! | 8 | mix length m (u64 LE) |
//! | 8 | copy length c (u64 LE) |
//! | 8 | seek s (i64, sign and magnitude, LE) |
//! | m | mix bytes: target byte = mix byte + base byte (wrapping), reading the base from its cursor |
//! | c | copy bytes: target bytes as they are |
//!
//! after which the base cursor moves on by m + s. Interleaved, one sequential stream, so it can
//! be applied as it arrives (and compressed as one stream: the measurement in
//! docs/BENCHMARKS.md compares compressors). Mix bytes are mostly zeros, or the same small
//! difference over and over where code moved (a relinked branch, an address in the other
//! slot), which is what makes the compressed patch small.
//!
//! [`Applier`] takes the patch in pieces of any size, reads the base (on a device, the running
//! slot, only ever read) through [`Base`], and hands the rebuilt target to a sink in order, in
//! pieces of at most [`CHUNK`] bytes. Every length and cursor is checked: a patch that would
//! read outside the base, write past the target's announced length, or end inside an entry is
//! refused ([`ApplyError`]), never applied in part silently. Its whole state is [`Applier`]
//! itself, a `Copy` value of 72 bytes ([`Applier::to_bytes`] is its checkpoint form).

/// The largest piece of target the applier hands to the sink at once (and the stack buffer it
/// reads base bytes into).
pub const CHUNK: usize = 64;

/// The length of [`Applier::to_bytes`]'s record.
pub const APPLIER_RECORD_LEN: usize = 65;

/// The base image a patch applies to: random-access reads (on a device, the running slot).
pub trait Base {
    /// Why a read failed.
    type Error;
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Read `buf.len()` bytes at `offset` (always inside: the applier checks first).
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
}

impl Base for &[u8] {
    type Error = core::convert::Infallible;

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        buf.copy_from_slice(&self[at..at + buf.len()]);
        Ok(())
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError<B, S> {
    /// An entry's mix bytes would read past the base's end (or its seek leaves the base).
    BaseOverrun,
    /// The patch would rebuild more bytes than the target's announced length.
    TargetOverrun,
    /// The patch ended inside an entry, or before the whole target was rebuilt.
    Truncated,
    /// Reading the base failed.
    Base(B),
    /// The sink refused the rebuilt bytes.
    Sink(S),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading an entry's 24-byte header; `usize` of it so far.
    Control(usize),
    /// Mix bytes left.
    Mix(u64),
    /// Copy bytes left.
    Copy(u64),
}

/// The state of one patch application. See the [crate docs](crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applier {
    target_len: u64,
    /// Target bytes rebuilt (handed to the sink) so far.
    written: u64,
    /// Patch bytes consumed so far.
    consumed: u64,
    /// The base cursor.
    base_pos: u64,
    stage: Stage,
    control: [u8; 24],
}

fn u64_at(b: &[u8; 24], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Applier {
    /// An applier that rebuilds a target of `target_len` bytes.
    pub const fn new(target_len: u64) -> Self {
        Self {
            target_len,
            written: 0,
            consumed: 0,
            base_pos: 0,
            stage: Stage::Control(0),
            control: [0; 24],
        }
    }

    /// The target's announced length.
    pub fn target_len(&self) -> u64 {
        self.target_len
    }

    /// Target bytes rebuilt so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Patch bytes consumed so far (where a resumed download of the patch goes on from).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Apply the next piece of the patch: rebuilt target bytes go to `sink`, in order.
    pub fn feed<B: Base, S>(
        &mut self,
        mut patch: &[u8],
        base: &mut B,
        sink: &mut impl FnMut(&[u8]) -> Result<(), S>,
    ) -> Result<(), ApplyError<B::Error, S>> {
        while !patch.is_empty() {
            match self.stage {
                Stage::Control(have) => {
                    let n = (24 - have).min(patch.len());
                    self.control[have..have + n].copy_from_slice(&patch[..n]);
                    self.take(&mut patch, n);
                    if have + n < 24 {
                        self.stage = Stage::Control(have + n);
                        continue;
                    }
                    self.start_entry(base.len())?;
                }
                Stage::Mix(left) => {
                    let n = (left.min(CHUNK as u64) as usize).min(patch.len());
                    let mut out = [0u8; CHUNK];
                    base.read(self.base_pos, &mut out[..n])
                        .map_err(ApplyError::Base)?;
                    for (o, d) in out[..n].iter_mut().zip(&patch[..n]) {
                        *o = o.wrapping_add(*d);
                    }
                    sink(&out[..n]).map_err(ApplyError::Sink)?;
                    self.take(&mut patch, n);
                    self.base_pos += n as u64;
                    self.written += n as u64;
                    self.stage = Stage::Mix(left - n as u64);
                    if left == n as u64 {
                        self.end_mix(base.len())?;
                    }
                }
                Stage::Copy(left) => {
                    let n = (left.min(CHUNK as u64) as usize).min(patch.len());
                    sink(&patch[..n]).map_err(ApplyError::Sink)?;
                    self.take(&mut patch, n);
                    self.written += n as u64;
                    self.stage = if left == n as u64 {
                        Stage::Control(0)
                    } else {
                        Stage::Copy(left - n as u64)
                    };
                }
            }
        }
        Ok(())
    }

    /// The patch has ended: `Ok` only if it ended between entries with the whole target
    /// rebuilt.
    pub fn finish<B, S>(&self) -> Result<(), ApplyError<B, S>> {
        if self.stage == Stage::Control(0) && self.written == self.target_len {
            Ok(())
        } else {
            Err(ApplyError::Truncated)
        }
    }

    /// The state as a fixed-size record (little-endian fields), for a checkpoint.
    pub fn to_bytes(&self) -> [u8; APPLIER_RECORD_LEN] {
        let mut out = [0u8; APPLIER_RECORD_LEN];
        let (tag, value) = match self.stage {
            Stage::Control(have) => (0u8, have as u64),
            Stage::Mix(left) => (1, left),
            Stage::Copy(left) => (2, left),
        };
        out[0..8].copy_from_slice(&self.target_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.written.to_le_bytes());
        out[16..24].copy_from_slice(&self.consumed.to_le_bytes());
        out[24..32].copy_from_slice(&self.base_pos.to_le_bytes());
        out[32] = tag;
        out[33..41].copy_from_slice(&value.to_le_bytes());
        out[41..65].copy_from_slice(&self.control);
        out
    }

    /// The state back from [`Applier::to_bytes`]; `None` if the record cannot be one (an
    /// unknown stage, a header position past 24, more written than the target).
    pub fn from_bytes(record: &[u8; APPLIER_RECORD_LEN]) -> Option<Self> {
        let u64_le = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&record[at..at + 8]);
            u64::from_le_bytes(v)
        };
        let value = u64_le(33);
        let stage = match record[32] {
            0 if value < 24 => Stage::Control(value as usize),
            1 if value > 0 => Stage::Mix(value),
            2 if value > 0 => Stage::Copy(value),
            _ => return None,
        };
        let mut control = [0u8; 24];
        control.copy_from_slice(&record[41..65]);
        let applier = Self {
            target_len: u64_le(0),
            written: u64_le(8),
            consumed: u64_le(16),
            base_pos: u64_le(24),
            stage,
            control,
        };
        (applier.written <= applier.target_len).then_some(applier)
    }

    /// Whether a restored state can go on against a base of `base_len` bytes: the entry in
    /// progress stays inside the base and the target, and the counters are ones a patch can
    /// reach (every target byte costs at least one patch byte). A record that passed its
    /// checksum but not this is refused rather than read outside the base.
    pub fn is_consistent(&self, base_len: u64) -> bool {
        let (base_left, target_left) = match self.stage {
            Stage::Control(_) => (0, 0),
            Stage::Mix(left) => (left, left.saturating_add(u64_at(&self.control, 8))),
            Stage::Copy(left) => (0, left),
        };
        self.base_pos
            .checked_add(base_left)
            .is_some_and(|end| end <= base_len)
            && self
                .written
                .checked_add(target_left)
                .is_some_and(|end| end <= self.target_len)
            && self.consumed >= self.written
            && self.consumed < 1 << 62
    }

    fn take(&mut self, patch: &mut &[u8], n: usize) {
        *patch = &patch[n..];
        self.consumed += n as u64;
    }

    /// A whole entry header is in: check it against the base and the target.
    fn start_entry<B, S>(&mut self, base_len: u64) -> Result<(), ApplyError<B, S>> {
        let mix = u64_at(&self.control, 0);
        let copy = u64_at(&self.control, 8);
        let total = mix.checked_add(copy).ok_or(ApplyError::TargetOverrun)?;
        if self
            .written
            .checked_add(total)
            .is_none_or(|end| end > self.target_len)
        {
            return Err(ApplyError::TargetOverrun);
        }
        if self
            .base_pos
            .checked_add(mix)
            .is_none_or(|end| end > base_len)
        {
            return Err(ApplyError::BaseOverrun);
        }
        self.stage = Stage::Mix(mix);
        if mix == 0 {
            self.end_mix(base_len)?;
        }
        Ok(())
    }

    /// The entry's mix bytes are done: seek the base cursor, go on to its copy bytes.
    fn end_mix<B, S>(&mut self, base_len: u64) -> Result<(), ApplyError<B, S>> {
        let raw = u64_at(&self.control, 16);
        let magnitude = raw & !(1 << 63);
        let pos = if raw & (1 << 63) == 0 {
            self.base_pos.checked_add(magnitude)
        } else {
            self.base_pos.checked_sub(magnitude)
        };
        // The cursor may rest at the base's end (nothing more read from it), not past it.
        self.base_pos = match pos {
            Some(p) if p <= base_len => p,
            _ => return Err(ApplyError::BaseOverrun),
        };
        let copy = u64_at(&self.control, 8);
        self.stage = if copy == 0 {
            Stage::Control(0)
        } else {
            Stage::Copy(copy)
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn diff(base: &[u8], target: &[u8]) -> Vec<u8> {
        let mut patch = Vec::new();
        bsdiff::diff(base, target, &mut patch).unwrap();
        patch
    }

    /// Apply `patch` fed in pieces of `piece` bytes.
    fn apply(
        base: &[u8],
        patch: &[u8],
        target_len: u64,
        piece: usize,
    ) -> Result<Vec<u8>, ApplyError<core::convert::Infallible, ()>> {
        let mut out = Vec::new();
        let mut applier = Applier::new(target_len);
        let mut b = base;
        for part in patch.chunks(piece.max(1)) {
            applier.feed(part, &mut b, &mut |bytes: &[u8]| {
                out.extend_from_slice(bytes);
                Ok(())
            })?;
        }
        assert_eq!(applier.consumed(), patch.len() as u64);
        applier.finish()?;
        Ok(out)
    }

    /// A firmware-like base: code words, a table of absolute addresses, text.
    fn firmware(seed: u32, len: usize, base_addr: u32) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if out.len() % 512 < 64 {
                out.extend_from_slice(&(base_addr + (x >> 20)).to_le_bytes());
            } else {
                out.extend_from_slice(&((x >> 16) as u16 & 0x3fff).to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn rebuilds_the_target_whatever_the_pieces() {
        let base = firmware(1, 20_000, 0x0802_0200);
        let mut target = firmware(1, 20_000, 0x0806_0200);
        target[5_000..5_010].copy_from_slice(b"new string");
        target.splice(12_000..12_000, firmware(7, 700, 0x0806_0200));
        let patch = diff(&base, &target);
        for piece in [1, 7, 24, 25, 64, 1000, patch.len()] {
            assert_eq!(
                apply(&base, &patch, target.len() as u64, piece).unwrap(),
                target,
                "pieces of {piece}"
            );
        }
        // Identical images, an empty base, an empty target.
        assert_eq!(
            apply(&base, &diff(&base, &base), base.len() as u64, 100).unwrap(),
            base
        );
        assert_eq!(
            apply(&[], &diff(&[], &target), target.len() as u64, 100).unwrap(),
            target
        );
        assert_eq!(
            apply(&base, &diff(&base, &[]), 0, 100).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn a_truncated_patch_is_refused_at_every_cut() {
        let base = firmware(2, 3_000, 0x0802_0200);
        let mut target = base.clone();
        target[100..104].copy_from_slice(&[1, 2, 3, 4]);
        target.extend_from_slice(b"tail");
        let patch = diff(&base, &target);
        for cut in 0..patch.len() {
            assert_eq!(
                apply(&base, &patch[..cut], target.len() as u64, 50),
                Err(ApplyError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn entries_outside_the_base_or_past_the_target_are_refused() {
        let base = [0u8; 100];
        let entry = |mix: u64, copy: u64, seek: u64| {
            let mut e = Vec::new();
            e.extend_from_slice(&mix.to_le_bytes());
            e.extend_from_slice(&copy.to_le_bytes());
            e.extend_from_slice(&seek.to_le_bytes());
            e.extend(core::iter::repeat_n(0u8, (mix + copy) as usize));
            e
        };
        // Mix past the base's end.
        assert_eq!(
            apply(&base, &entry(101, 0, 0), 101, 7),
            Err(ApplyError::BaseOverrun)
        );
        // A seek before the base's start, or past its end.
        assert_eq!(
            apply(&base, &entry(10, 0, (1 << 63) | 11), 10, 7),
            Err(ApplyError::BaseOverrun)
        );
        assert_eq!(
            apply(&base, &entry(10, 0, 91), 10, 7),
            Err(ApplyError::BaseOverrun)
        );
        // More than the announced target, and lengths that overflow.
        assert_eq!(
            apply(&base, &entry(10, 5, 0), 14, 7),
            Err(ApplyError::TargetOverrun)
        );
        let mut overflowing = Vec::new();
        overflowing.extend_from_slice(&u64::MAX.to_le_bytes());
        overflowing.extend_from_slice(&1u64.to_le_bytes());
        overflowing.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(
            apply(&base, &overflowing, 10, 7),
            Err(ApplyError::TargetOverrun)
        );
        // A well-formed patch that rebuilds less than announced.
        assert_eq!(
            apply(&base, &entry(10, 5, 0), 16, 7),
            Err(ApplyError::Truncated)
        );
        // Exactly right: the cursor may rest at the base's end.
        assert_eq!(apply(&base, &entry(10, 5, 90), 15, 7).unwrap().len(), 15);
    }

    #[test]
    fn the_state_is_small_and_a_checkpoint_resumes() {
        assert!(core::mem::size_of::<Applier>() <= 72);
        let base = firmware(3, 8_000, 0x0802_0200);
        let target = firmware(3, 8_200, 0x0806_0200);
        let patch = diff(&base, &target);
        let mut out = Vec::new();
        let mut applier = Applier::new(target.len() as u64);
        let mut b = base.as_slice();
        let half = patch.len() / 2;
        applier
            .feed(&patch[..half], &mut b, &mut |x: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(x);
                Ok(())
            })
            .unwrap();
        // A power cut: the checkpoint (the applier's state, the patch offset and the bytes
        // written) is all that survives; the rest of the patch is fetched from there.
        let mut resumed: Applier = applier;
        let at = resumed.consumed() as usize;
        assert_eq!(resumed.written(), out.len() as u64);
        resumed
            .feed(&patch[at..], &mut b, &mut |x: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(x);
                Ok(())
            })
            .unwrap();
        resumed.finish::<core::convert::Infallible, ()>().unwrap();
        assert_eq!(out, target);
    }
}
