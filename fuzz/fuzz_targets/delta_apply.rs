//! Fuzz the delta patch applier (`fota-delta`): containers made of arbitrary bodies (behind a
//! header sealed for the fuzzed base, so the fuzzer gets past the base check into the decoder
//! and the bsdiff applier), fed in arbitrary pieces, must never panic; a power cut at an
//! arbitrary offset, resumed from the checkpoint record, must give the same bytes and the same
//! verdict as the uninterrupted run; and a record whose state bytes are arbitrary (resealed)
//! must be refused or applied without a panic. Raw bytes as a container must never panic either.
#![no_main]

use fota_delta::header::PatchHeader;
use fota_delta::{PatchApplier, PatchError, CHECKPOINT_LEN};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::convert::Infallible;

type Outcome = (Vec<u8>, Result<(), PatchError<Infallible, ()>>);

/// Where the state after the header starts in the checkpoint record, and its checksum
/// (docs/PROTOCOL.md, "Delta patches").
const RECORD_STATE: usize = 112;
const RECORD_CRC: usize = 1_313;

fn seal(record: &mut [u8; CHECKPOINT_LEN]) {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&record[..RECORD_CRC]);
    record[RECORD_CRC..].copy_from_slice(&crc.to_le_bytes());
}

/// Feed `container` in pieces of `piece` bytes; at `cut`, checkpoint, drop the applier and
/// resume from the record (with `tamper` applied to it first).
fn run(
    base: &[u8],
    container: &[u8],
    piece: usize,
    cut: Option<usize>,
    tamper: &dyn Fn(&mut [u8; CHECKPOINT_LEN]),
) -> Option<Outcome> {
    let mut out = Vec::new();
    let mut applier = PatchApplier::new(1 << 16);
    let mut b = base;
    let split = cut.unwrap_or(container.len()).min(container.len());
    let mut sink = |x: &[u8]| -> Result<(), ()> {
        out.extend_from_slice(x);
        Ok(())
    };
    for part in container[..split].chunks(piece) {
        if let Err(e) = applier.feed(part, &mut b, &mut sink) {
            return Some((out, Err(e)));
        }
    }
    if cut.is_some() {
        let mut record = [0u8; CHECKPOINT_LEN];
        applier.checkpoint(&mut record);
        tamper(&mut record);
        applier = PatchApplier::resume(&record).ok()?;
        let resumed_at = applier.offset() as usize;
        out.truncate(applier.written() as usize);
        let mut sink = |x: &[u8]| -> Result<(), ()> {
            out.extend_from_slice(x);
            Ok(())
        };
        for part in container[resumed_at..].chunks(piece) {
            if let Err(e) = applier.feed(part, &mut b, &mut sink) {
                return Some((out, Err(e)));
            }
        }
    } else {
        for part in container[split..].chunks(piece) {
            if let Err(e) = applier.feed(part, &mut b, &mut sink) {
                return Some((out, Err(e)));
            }
        }
    }
    let verdict = applier.finish();
    Some((out, verdict))
}

fuzz_target!(|data: &[u8]| {
    // [piece, cut (u16), base length, target length (u16), then the base, then the body]
    let Some((head, rest)) = data.split_first_chunk::<6>() else {
        return;
    };
    let piece = usize::from(head[0]).max(1);
    let cut = usize::from(u16::from_le_bytes([head[1], head[2]]));
    let (base, body) = rest.split_at(usize::from(head[3]).min(rest.len()));
    let target_len = u32::from(u16::from_le_bytes([head[4], head[5]]));
    let header = PatchHeader {
        base_len: base.len() as u32,
        base_digest: Sha256::digest(base).into(),
        target_len,
        target_digest: [0; 32],
        body_len: body.len() as u32,
    };
    let mut container = header.to_bytes().to_vec();
    container.extend_from_slice(body);

    // Raw bytes as a container.
    let _ = run(base, data, piece, None, &|_| ());

    // A power cut anywhere changes nothing.
    let straight = run(base, &container, piece, None, &|_| ());
    let resumed = run(base, &container, piece, Some(cut), &|_| ());
    assert_eq!(straight, resumed, "cut at {cut}");

    // A sealed record with arbitrary state bytes: refused, or applied without a panic.
    let state = body.get(..RECORD_CRC - RECORD_STATE).unwrap_or(body);
    let _ = run(
        base,
        &container,
        piece,
        Some(cut),
        &|record: &mut [u8; CHECKPOINT_LEN]| {
            for (r, s) in record[RECORD_STATE..RECORD_CRC].iter_mut().zip(state) {
                *r ^= *s;
            }
            seal(record);
        },
    );
});
