//! The server's side: [`generate`] makes a container from a base and a target image (bsdiff,
//! then heatshrink with this format's window and lookahead), and applies it back with the
//! device's own code before returning it, so a patch the device could not rebuild is never
//! offered. Behind the `generate` feature (it needs `std`); the device build stays `no_std`.

extern crate std;

use crate::header::{PatchHeader, HEADER_LEN};
use crate::patch::{PatchApplier, PatchError};
use ::heatshrink::encoder::HeatshrinkEncoder;
use ::heatshrink::{Finish, Poll};
use sha2::{Digest, Sha256};
use std::string::String;
use std::vec::Vec;

/// Why no patch was made.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// An image or the patch is longer than the format's 32-bit lengths.
    #[error("{0} is too long for a delta patch (4 GiB at most)")]
    TooLong(&'static str),
    /// bsdiff failed.
    #[error("bsdiff failed: {0}")]
    Diff(#[from] std::io::Error),
    /// The heatshrink encoder failed.
    #[error("heatshrink compression failed: {0}")]
    Compress(String),
    /// The patch did not rebuild the target when applied back (a bug, never offered).
    #[error("the generated patch does not rebuild the target: {0}")]
    SelfCheck(String),
}

/// The heatshrink encoder with the format's window (2^10) and lookahead (2^5); its input buffer
/// is twice the window.
type Encoder = HeatshrinkEncoder<10, 5, 2048>;

/// A container (header and compressed body) that rebuilds `target` from `base`.
pub fn generate(base: &[u8], target: &[u8]) -> Result<Vec<u8>, GenerateError> {
    let base_len = u32::try_from(base.len()).map_err(|_| GenerateError::TooLong("the base"))?;
    let target_len =
        u32::try_from(target.len()).map_err(|_| GenerateError::TooLong("the target"))?;
    let mut diff = Vec::new();
    ::bsdiff::diff(base, target, &mut diff)?;
    let body = compress(&diff)?;
    let header = PatchHeader {
        base_len,
        base_digest: Sha256::digest(base).into(),
        target_len,
        target_digest: Sha256::digest(target).into(),
        body_len: u32::try_from(body.len()).map_err(|_| GenerateError::TooLong("the patch"))?,
    };
    let mut container = Vec::with_capacity(HEADER_LEN + body.len());
    container.extend_from_slice(&header.to_bytes());
    container.extend_from_slice(&body);
    self_check(base, target, &container)?;
    Ok(container)
}

fn compress(src: &[u8]) -> Result<Vec<u8>, GenerateError> {
    let mut enc = Encoder::new();
    let mut out = Vec::with_capacity(src.len() / 3);
    let mut buf = [0u8; 4096];
    let mut at = 0;
    loop {
        if at < src.len() {
            // Full: poll below makes room.
            if let Ok(n) = enc.sink(&src[at..]) {
                at += n;
            }
        } else if enc.finish() == Finish::Done {
            return Ok(out);
        }
        loop {
            match enc.poll(&mut buf) {
                Ok(Poll::More(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Poll::Empty(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e) => return Err(GenerateError::Compress(std::format!("{e:?}"))),
            }
        }
    }
}

/// Apply a whole container to `base` with the device's own applier (fed at once rather than in
/// pieces): the bytes it rebuilds, checked against the target length and digest its header
/// names.
pub fn apply(
    base: &[u8],
    container: &[u8],
) -> Result<Vec<u8>, PatchError<core::convert::Infallible, ()>> {
    let mut applier = PatchApplier::new(u32::MAX);
    let mut rebuilt = Vec::new();
    let mut b = base;
    applier.feed(container, &mut b, &mut |out: &[u8]| -> Result<(), ()> {
        rebuilt.extend_from_slice(out);
        Ok(())
    })?;
    applier.finish()?;
    Ok(rebuilt)
}

/// Apply the container with the device's applier and compare.
fn self_check(base: &[u8], target: &[u8], container: &[u8]) -> Result<(), GenerateError> {
    let rebuilt =
        apply(base, container).map_err(|e| GenerateError::SelfCheck(std::format!("{e}")))?;
    if rebuilt != target {
        return Err(GenerateError::SelfCheck("rebuilt bytes differ".into()));
    }
    Ok(())
}
