//! The patch container applied as it arrives: [`PatchApplier`] takes the container (header, then
//! the heatshrink-compressed bsdiff stream) in pieces of any size, checks the header and the
//! base, decompresses, applies, and hands the rebuilt target to a sink in order while hashing
//! it; [`PatchApplier::finish`] says whether the whole target was rebuilt and hashes to the
//! announced digest.
//!
//! Its whole state serialises to a fixed-size record of [`CHECKPOINT_LEN`] bytes
//! ([`PatchApplier::checkpoint`]), which says where the download resumes
//! ([`PatchApplier::offset`]) and where the target resumes ([`PatchApplier::written`]). A device
//! keeps it in flash once the sink's bytes up to then are durable; after a power cut,
//! [`PatchApplier::resume`] and the rest of the container from that offset rebuild the exact
//! target. The record is mostly the decompressor's 1 KB window: the decompressed stream refers
//! back up to 1 KB, and those bytes are neither in the container nor in the target.

use crate::apply::{Applier, ApplyError, Base, APPLIER_RECORD_LEN, CHUNK};
use crate::digest::{Sha256, SHA256_RECORD_LEN};
use crate::header::{HeaderError, PatchHeader, HEADER_LEN};
use crate::heatshrink::{Decoder, DECODER_RECORD_LEN};

/// Why a container could not be applied. After any of these the applier is not to be fed
/// again: resume from a checkpoint, or give the patch up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatchError<B, S> {
    /// The header was refused.
    #[error("bad delta patch header: {0}")]
    Header(#[from] HeaderError),
    /// The base given is not the one the patch applies to (its length or its SHA-256).
    #[error("the patch does not apply to this base image")]
    BaseMismatch,
    /// The patch would read outside the base.
    #[error("the patch reads outside the base image")]
    BaseOverrun,
    /// The patch would rebuild more than the target's announced length.
    #[error("the patch rebuilds more than the announced target length")]
    TargetOverrun,
    /// The container ended before the whole target was rebuilt.
    #[error("the patch is truncated")]
    Truncated,
    /// More container bytes than the header announces.
    #[error("bytes past the end of the patch")]
    TrailingBytes,
    /// The rebuilt target does not hash to the announced digest.
    #[error("the rebuilt image does not match the patch's target digest")]
    TargetMismatch,
    /// Reading the base failed.
    #[error("reading the base image failed: {0:?}")]
    Base(B),
    /// The sink refused the rebuilt bytes.
    #[error("writing the rebuilt image failed: {0:?}")]
    Sink(S),
}

impl<B, S> From<ApplyError<B, S>> for PatchError<B, S> {
    fn from(e: ApplyError<B, S>) -> Self {
        match e {
            ApplyError::BaseOverrun => Self::BaseOverrun,
            ApplyError::TargetOverrun => Self::TargetOverrun,
            ApplyError::Truncated => Self::Truncated,
            ApplyError::Base(b) => Self::Base(b),
            ApplyError::Sink(s) => Self::Sink(s),
        }
    }
}

/// Why a checkpoint record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not a record of this format, or a torn or corrupted one (magic, version or checksum).
    #[error("not a delta checkpoint record, or a corrupted one")]
    Corrupt,
    /// A well-formed record whose parts contradict each other.
    #[error("inconsistent delta checkpoint record")]
    Inconsistent,
}

const RECORD_MAGIC: [u8; 4] = *b"FDCK";
const RECORD_VERSION: u8 = 1;
const AT_OFFSET: usize = 8;
const AT_MAX_TARGET: usize = AT_OFFSET + 8;
const AT_HEADER: usize = AT_MAX_TARGET + 4;
const AT_DECODER: usize = AT_HEADER + HEADER_LEN;
const AT_APPLIER: usize = AT_DECODER + DECODER_RECORD_LEN;
const AT_HASH: usize = AT_APPLIER + APPLIER_RECORD_LEN;
const AT_CRC: usize = AT_HASH + SHA256_RECORD_LEN;
/// The checkpoint record's length in bytes: 8 of magic and version, the container offset, the
/// slot limit, the header, the decoder (1 KB window), the applier, the target's hash state and
/// a CRC-32.
pub const CHECKPOINT_LEN: usize = AT_CRC + 4;

fn crc32(bytes: &[u8]) -> u32 {
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes)
}

/// A container being applied. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchApplier {
    max_target_len: u32,
    /// Container bytes consumed.
    offset: u64,
    header_bytes: [u8; HEADER_LEN],
    /// Once the header is complete and checked.
    header: Option<PatchHeader>,
    /// Whether the base has been hashed and found to be the header's (not in the record: after
    /// a resume it is hashed again, in case the device now runs something else).
    base_checked: bool,
    decoder: Decoder,
    applier: Applier,
    target_hash: Sha256,
}

impl PatchApplier {
    /// An applier at the start of a container; a header announcing a target longer than
    /// `max_target_len` (the slot it is written to) is refused.
    pub const fn new(max_target_len: u32) -> Self {
        Self {
            max_target_len,
            offset: 0,
            header_bytes: [0; HEADER_LEN],
            header: None,
            base_checked: false,
            decoder: Decoder::new(),
            applier: Applier::new(0),
            target_hash: Sha256::new(),
        }
    }

    /// Container bytes consumed so far: where the download goes on from.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Target bytes handed to the sink so far: where the target goes on from.
    pub fn written(&self) -> u64 {
        self.applier.written()
    }

    /// The header, once it has arrived and been checked.
    pub fn header(&self) -> Option<&PatchHeader> {
        self.header.as_ref()
    }

    /// Apply the next piece of the container (the bytes from [`PatchApplier::offset`] on):
    /// rebuilt target bytes go to `sink`, in order, in pieces of at most 64 bytes. `base` is
    /// the image the patch applies to; it is hashed once the header is in (and again after a
    /// resume) and must match the header's length and digest.
    pub fn feed<B: Base, S>(
        &mut self,
        mut piece: &[u8],
        base: &mut B,
        sink: &mut impl FnMut(&[u8]) -> Result<(), S>,
    ) -> Result<(), PatchError<B::Error, S>> {
        let at = self.offset as usize;
        if at < HEADER_LEN {
            let n = (HEADER_LEN - at).min(piece.len());
            self.header_bytes[at..at + n].copy_from_slice(&piece[..n]);
            piece = &piece[n..];
            self.offset += n as u64;
            if self.offset < HEADER_LEN as u64 {
                return Ok(());
            }
        }
        let header = match self.header {
            Some(header) => header,
            None => {
                let header = PatchHeader::parse(&self.header_bytes, self.max_target_len)?;
                self.applier = Applier::new(header.target_len.into());
                self.header = Some(header);
                header
            }
        };
        if !self.base_checked {
            check_base(&header, base)?;
            self.base_checked = true;
        }
        let body_left = HEADER_LEN as u64 + u64::from(header.body_len) - self.offset;
        if piece.len() as u64 > body_left {
            return Err(PatchError::TrailingBytes);
        }
        let (applier, hash) = (&mut self.applier, &mut self.target_hash);
        self.decoder.decode(piece, &mut |bytes: &[u8]| {
            applier.feed(bytes, base, &mut |out: &[u8]| {
                sink(out)?;
                hash.update(out);
                Ok(())
            })
        })?;
        self.offset += piece.len() as u64;
        Ok(())
    }

    /// The container has ended: `Ok` only if all of it was applied, the whole target rebuilt,
    /// and the target hashes to the header's digest.
    pub fn finish<B, S>(&self) -> Result<(), PatchError<B, S>> {
        let Some(header) = self.header else {
            return Err(PatchError::Truncated);
        };
        if self.offset != HEADER_LEN as u64 + u64::from(header.body_len) {
            return Err(PatchError::Truncated);
        }
        self.applier.finish::<B, S>()?;
        if self.target_hash.digest() != header.target_digest {
            return Err(PatchError::TargetMismatch);
        }
        Ok(())
    }

    /// The whole state as a record, to keep (with the target bytes written up to
    /// [`PatchApplier::written`] durable) so that [`PatchApplier::resume`] goes on from here.
    pub fn checkpoint(&self, record: &mut [u8; CHECKPOINT_LEN]) {
        record.fill(0);
        record[0..4].copy_from_slice(&RECORD_MAGIC);
        record[4] = RECORD_VERSION;
        record[AT_OFFSET..AT_MAX_TARGET].copy_from_slice(&self.offset.to_le_bytes());
        record[AT_MAX_TARGET..AT_HEADER].copy_from_slice(&self.max_target_len.to_le_bytes());
        record[AT_HEADER..AT_DECODER].copy_from_slice(&self.header_bytes);
        record[AT_DECODER..AT_APPLIER].copy_from_slice(&self.decoder.to_bytes());
        record[AT_APPLIER..AT_HASH].copy_from_slice(&self.applier.to_bytes());
        record[AT_HASH..AT_CRC].copy_from_slice(&self.target_hash.to_bytes());
        let crc = crc32(&record[..AT_CRC]);
        record[AT_CRC..].copy_from_slice(&crc.to_le_bytes());
    }

    /// The applier back from a [`PatchApplier::checkpoint`] record: feed it the container from
    /// [`PatchApplier::offset`] on, after truncating (or erasing) the target to
    /// [`PatchApplier::written`]. A torn, corrupted or self-contradictory record is refused.
    pub fn resume(record: &[u8; CHECKPOINT_LEN]) -> Result<Self, CheckpointError> {
        if record[0..4] != RECORD_MAGIC
            || record[4] != RECORD_VERSION
            || record[5..AT_OFFSET] != [0, 0, 0]
            || crc32(&record[..AT_CRC]) != u32::from_le_bytes(sub(record, AT_CRC))
        {
            return Err(CheckpointError::Corrupt);
        }
        let offset = u64::from_le_bytes(sub(record, AT_OFFSET));
        let max_target_len = u32::from_le_bytes(sub(record, AT_MAX_TARGET));
        let header_bytes: [u8; HEADER_LEN] = sub(record, AT_HEADER);
        let decoder =
            Decoder::from_bytes(&sub(record, AT_DECODER)).ok_or(CheckpointError::Inconsistent)?;
        let applier =
            Applier::from_bytes(&sub(record, AT_APPLIER)).ok_or(CheckpointError::Inconsistent)?;
        let target_hash = Sha256::from_bytes(&sub(record, AT_HASH));
        if offset < HEADER_LEN as u64 {
            // Inside the header: nothing past it can have moved.
            let fresh = Self::new(max_target_len);
            let consistent = header_bytes[offset as usize..].iter().all(|&b| b == 0)
                && decoder == fresh.decoder
                && applier == fresh.applier
                && target_hash == fresh.target_hash;
            return consistent
                .then_some(Self {
                    offset,
                    header_bytes,
                    ..fresh
                })
                .ok_or(CheckpointError::Inconsistent);
        }
        let header = PatchHeader::parse(&header_bytes, max_target_len)
            .map_err(|_| CheckpointError::Inconsistent)?;
        let consistent = offset <= HEADER_LEN as u64 + u64::from(header.body_len)
            && applier.target_len() == u64::from(header.target_len)
            && applier.is_consistent(header.base_len.into())
            && target_hash.len() == applier.written();
        if !consistent {
            return Err(CheckpointError::Inconsistent);
        }
        Ok(Self {
            max_target_len,
            offset,
            header_bytes,
            header: Some(header),
            base_checked: false,
            decoder,
            applier,
            target_hash,
        })
    }
}

/// `N` bytes of `record` from `at`.
fn sub<const N: usize>(record: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&record[at..at + N]);
    out
}

/// Whether `base` is the image the header names: its length, then its SHA-256.
fn check_base<B: Base, S>(
    header: &PatchHeader,
    base: &mut B,
) -> Result<(), PatchError<B::Error, S>> {
    let len = u64::from(header.base_len);
    if base.len() != len {
        return Err(PatchError::BaseMismatch);
    }
    let mut hash = Sha256::new();
    let mut buf = [0u8; CHUNK];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK as u64) as usize;
        base.read(at, &mut buf[..n]).map_err(PatchError::Base)?;
        hash.update(&buf[..n]);
        at += n as u64;
    }
    if hash.digest() != header.base_digest {
        return Err(PatchError::BaseMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::generate::generate;
    use core::convert::Infallible;
    use std::vec::Vec;

    type Error = PatchError<Infallible, ()>;

    /// A firmware-like image: code words, a table of absolute addresses (which move with the
    /// slot), text.
    fn firmware(seed: u32, len: usize, base_addr: u32) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if out.len() % 512 < 64 {
                out.extend_from_slice(&(base_addr + (x >> 20)).to_le_bytes());
            } else if out.len() % 4096 < 300 {
                out.extend_from_slice(b"fota ");
            } else {
                out.extend_from_slice(&((x >> 16) as u16 & 0x3fff).to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// A point release across slots: relinked, a change in the middle, code added.
    fn release(len: usize) -> (Vec<u8>, Vec<u8>) {
        let base = firmware(1, len, 0x0802_0200);
        let mut target = firmware(1, len, 0x0806_0200);
        target[len / 4..len / 4 + 10].copy_from_slice(b"new string");
        target.splice(len / 2..len / 2, firmware(7, len / 30, 0x0806_0200));
        (base, target)
    }

    /// Apply `container` fed in pieces of `piece` bytes.
    fn apply(base: &[u8], container: &[u8], piece: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut applier = PatchApplier::new(1 << 20);
        let mut b = base;
        for part in container.chunks(piece.max(1)) {
            applier.feed(part, &mut b, &mut |bytes: &[u8]| {
                assert!(bytes.len() <= CHUNK);
                out.extend_from_slice(bytes);
                Ok(())
            })?;
        }
        applier.finish::<Infallible, ()>()?;
        Ok(out)
    }

    /// Re-seal a container whose header was edited.
    fn reseal(container: &mut [u8]) {
        let crc = crc32(&container[..88]);
        container[88..92].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn generated_containers_rebuild_the_target_whatever_the_pieces() {
        let (base, target) = release(30_000);
        let container = generate(&base, &target).unwrap();
        assert!(
            container.len() < target.len() / 3,
            "{} bytes for a {}-byte target",
            container.len(),
            target.len()
        );
        for piece in [1, 7, 91, 92, 93, 512, 4096, container.len()] {
            assert_eq!(
                apply(&base, &container, piece).unwrap(),
                target,
                "pieces of {piece}"
            );
        }
        // Identical images, an empty base, an empty target.
        assert_eq!(
            apply(&base, &generate(&base, &base).unwrap(), 100).unwrap(),
            base
        );
        assert_eq!(
            apply(&[], &generate(&[], &target).unwrap(), 100).unwrap(),
            target
        );
        assert_eq!(
            apply(&base, &generate(&base, &[]).unwrap(), 100).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn a_patch_for_another_base_is_refused_before_any_byte_is_written() {
        let (base, target) = release(8_000);
        let container = generate(&base, &target).unwrap();
        let mut other = base.clone();
        other[4_000] ^= 1;
        let mut written = 0;
        let mut applier = PatchApplier::new(1 << 20);
        let mut b = other.as_slice();
        let got = applier.feed(&container, &mut b, &mut |x: &[u8]| -> Result<(), ()> {
            written += x.len();
            Ok(())
        });
        assert_eq!(got, Err(PatchError::BaseMismatch));
        assert_eq!(written, 0);
        // A base of another length.
        assert_eq!(
            apply(&base[1..], &container, 1000),
            Err(PatchError::BaseMismatch)
        );
    }

    #[test]
    fn a_truncated_container_is_refused_at_every_cut() {
        let (base, target) = release(3_000);
        let container = generate(&base, &target).unwrap();
        for cut in 0..container.len() {
            assert_eq!(
                apply(&base, &container[..cut], 50),
                Err(PatchError::Truncated),
                "cut at {cut}"
            );
        }
        // And bytes past the announced end.
        let mut long = container.clone();
        long.push(0);
        assert_eq!(apply(&base, &long, 50), Err(PatchError::TrailingBytes));
    }

    #[test]
    fn a_corrupt_body_never_rebuilds_a_wrong_target() {
        let (base, target) = release(4_000);
        let container = generate(&base, &target).unwrap();
        for at in HEADER_LEN..container.len() {
            for flip in [0x01, 0x80] {
                let mut bad = container.clone();
                bad[at] ^= flip;
                // Some flips land in padding or re-encode the same bytes; any other is refused.
                match apply(&base, &bad, 64) {
                    Ok(out) => assert_eq!(out, target, "byte {at} ^ {flip:#x}"),
                    Err(e) => assert_ne!(e, PatchError::TrailingBytes, "byte {at}"),
                }
            }
        }
        // A corrupt header is the header's error.
        let mut bad = container.clone();
        bad[50] ^= 4;
        assert_eq!(
            apply(&base, &bad, 64),
            Err(PatchError::Header(HeaderError::Checksum))
        );
    }

    #[test]
    fn a_target_longer_than_announced_is_refused() {
        let (base, target) = release(4_000);
        let mut container = generate(&base, &target).unwrap();
        let short = target.len() as u32 - 1;
        container[48..52].copy_from_slice(&short.to_le_bytes());
        reseal(&mut container);
        assert_eq!(apply(&base, &container, 64), Err(PatchError::TargetOverrun));
        // Shorter than announced: truncated. A longer target than the slot: refused up front.
        let mut container = generate(&base, &target).unwrap();
        let long = target.len() as u32 + 1;
        container[48..52].copy_from_slice(&long.to_le_bytes());
        reseal(&mut container);
        assert_eq!(apply(&base, &container, 64), Err(PatchError::Truncated));
        let mut applier = PatchApplier::new(target.len() as u32 - 1);
        let mut b = base.as_slice();
        let got = applier.feed(
            &generate(&base, &target).unwrap(),
            &mut b,
            &mut |_: &[u8]| -> Result<(), ()> { Ok(()) },
        );
        assert!(matches!(
            got,
            Err(PatchError::Header(HeaderError::TargetTooLarge { .. }))
        ));
    }

    #[test]
    fn a_wrong_target_digest_is_refused_at_the_end() {
        let (base, target) = release(4_000);
        let mut container = generate(&base, &target).unwrap();
        container[60] ^= 1;
        reseal(&mut container);
        assert_eq!(
            apply(&base, &container, 64),
            Err(PatchError::TargetMismatch)
        );
    }

    /// A device: feeds the container in segments of `segment` bytes, keeps a checkpoint record
    /// (in "flash") after every `every`-th segment once the sink's bytes are durable, and loses
    /// its RAM when `cut` container bytes have been fed (the segment in flight, and the target
    /// bytes written since the last checkpoint, are lost). Then it resumes from the record and
    /// finishes. Returns the target as it ends up in the slot.
    fn power_cut(
        base: &[u8],
        container: &[u8],
        segment: usize,
        every: usize,
        cut: usize,
    ) -> Vec<u8> {
        let mut slot: Vec<u8> = Vec::new();
        let mut record = [0u8; CHECKPOINT_LEN];
        PatchApplier::new(1 << 20).checkpoint(&mut record);
        let mut applier = PatchApplier::new(1 << 20);
        let mut b = base;
        let mut fed = 0;
        for (i, part) in container.chunks(segment).enumerate() {
            if fed + part.len() > cut {
                // The cut, in the middle of this segment: a part of it applied, then power off.
                let mut lost = applier.clone();
                lost.feed(
                    &part[..cut - fed],
                    &mut b,
                    &mut |x: &[u8]| -> Result<(), ()> {
                        slot.extend_from_slice(x);
                        Ok(())
                    },
                )
                .unwrap();
                break;
            }
            applier
                .feed(part, &mut b, &mut |x: &[u8]| -> Result<(), ()> {
                    slot.extend_from_slice(x);
                    Ok(())
                })
                .unwrap();
            fed += part.len();
            if (i + 1) % every == 0 {
                applier.checkpoint(&mut record);
            }
        }
        // Power back: only the record and the slot's bytes survive (`applier` is RAM, gone).
        let mut resumed = PatchApplier::resume(&record).unwrap();
        slot.truncate(resumed.written() as usize);
        let from = resumed.offset() as usize;
        for part in container[from..].chunks(segment) {
            resumed
                .feed(part, &mut b, &mut |x: &[u8]| -> Result<(), ()> {
                    slot.extend_from_slice(x);
                    Ok(())
                })
                .unwrap();
        }
        resumed.finish::<Infallible, ()>().unwrap();
        slot
    }

    #[test]
    fn a_power_cut_at_every_byte_resumes_to_the_exact_target() {
        let (base, target) = release(3_000);
        let container = generate(&base, &target).unwrap();
        for cut in 0..=container.len() {
            // A checkpoint after every byte: the cut is right after one.
            assert_eq!(
                power_cut(&base, &container, 1, 1, cut),
                target,
                "cut at {cut}"
            );
            // Segments of 37 bytes, a checkpoint after every 3rd: work since it is redone.
            assert_eq!(
                power_cut(&base, &container, 37, 3, cut),
                target,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_power_cut_in_a_large_patch_resumes_to_the_exact_target() {
        let (base, target) = release(200_000);
        let container = generate(&base, &target).unwrap();
        for cut in (0..=container.len()).step_by(997) {
            assert_eq!(
                power_cut(&base, &container, 512, 2, cut),
                target,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn the_state_fits_the_budget_and_a_bad_record_is_refused() {
        // The RAM the issue allows the applier: 8 KB. State plus the stack buffers of feed (the
        // decoder's 64-byte output, the applier's 64-byte base read) and a record on the stack.
        let state = core::mem::size_of::<PatchApplier>();
        assert!(state <= 1_400, "{state} bytes of state");
        assert!(state + 2 * 64 + CHECKPOINT_LEN <= 8 * 1024);
        assert_eq!(CHECKPOINT_LEN, 1_317);
        // The record's layout as docs/PROTOCOL.md gives it.
        assert_eq!(
            (AT_HEADER, AT_DECODER, AT_APPLIER, AT_HASH, AT_CRC),
            (20, 112, 1_144, 1_209, 1_313)
        );

        let (base, target) = release(5_000);
        let container = generate(&base, &target).unwrap();
        let mut applier = PatchApplier::new(1 << 20);
        let mut b = base.as_slice();
        applier
            .feed(
                &container[..container.len() / 2],
                &mut b,
                &mut |_: &[u8]| -> Result<(), ()> { Ok(()) },
            )
            .unwrap();
        let mut record = [0u8; CHECKPOINT_LEN];
        applier.checkpoint(&mut record);
        let resumed = PatchApplier::resume(&record).unwrap();
        assert_eq!(
            (resumed.offset(), resumed.written(), resumed.header()),
            (applier.offset(), applier.written(), applier.header())
        );
        // A torn or corrupted record: any byte.
        for at in 0..CHECKPOINT_LEN {
            let mut bad = record;
            bad[at] ^= 0x40;
            assert_eq!(
                PatchApplier::resume(&bad),
                Err(CheckpointError::Corrupt),
                "byte {at}"
            );
        }
        // Sealed but self-contradictory: the hash's length is not the bytes written; a base
        // cursor past the base; an offset past the container's end; a decoder mid-header.
        let seal = |mut r: [u8; CHECKPOINT_LEN]| {
            let crc = crc32(&r[..AT_CRC]);
            r[AT_CRC..].copy_from_slice(&crc.to_le_bytes());
            r
        };
        let mut bad = record;
        bad[AT_HASH + 32] ^= 1;
        assert_eq!(
            PatchApplier::resume(&seal(bad)),
            Err(CheckpointError::Inconsistent)
        );
        let mut bad = record;
        bad[AT_OFFSET..AT_OFFSET + 8].copy_from_slice(&(container.len() as u64 + 1).to_le_bytes());
        assert_eq!(
            PatchApplier::resume(&seal(bad)),
            Err(CheckpointError::Inconsistent)
        );
        let mut bad = record;
        bad[AT_APPLIER + 24..AT_APPLIER + 32]
            .copy_from_slice(&(base.len() as u64 + 1).to_le_bytes());
        assert_eq!(
            PatchApplier::resume(&seal(bad)),
            Err(CheckpointError::Inconsistent)
        );
        let mut bad = record;
        bad[AT_OFFSET..AT_OFFSET + 8].copy_from_slice(&10u64.to_le_bytes());
        assert_eq!(
            PatchApplier::resume(&seal(bad)),
            Err(CheckpointError::Inconsistent)
        );
    }
}
