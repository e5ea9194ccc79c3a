//! Delta updates (issue 19): the patch container, its `no_std` streaming applier without an
//! allocator, resumable from a checkpoint, and (feature `generate`) the server's generator.
//!
//! A patch is a container ([`header`]): a 92-byte header (magic, format version, compression
//! parameters, the base image's length and SHA-256, the target's length and SHA-256, the body's
//! length), then a bsdiff patch ([`apply`]) compressed with heatshrink, window 2^10, lookahead
//! 2^5 ([`heatshrink`]). docs/PROTOCOL.md ("Delta patches") has the byte layout;
//! docs/BENCHMARKS.md the measurement that chose the scheme (27.5% of the full image for a point
//! release, across slots).
//!
//! On the device, [`PatchApplier`] takes the container in ranged segments as they arrive, reads
//! the base (the running slot, only ever read) through [`Base`], and hands the rebuilt target to
//! a sink in order; the caller writes it to the inactive slot. Its RAM is its own state, about
//! 1.4 KB (1 KB of it the decompressor's window; `size_of::<PatchApplier>()`, checked by a test),
//! plus under 200 bytes of stack buffers: well inside the 8 KB. The state serialises to
//! a fixed [`CHECKPOINT_LEN`]-byte record ([`PatchApplier::checkpoint`],
//! [`PatchApplier::resume`]) kept in flash next to the download's progress, so a power cut
//! anywhere costs only the bytes since the last checkpoint.
//!
//! The heatshrink decoder is this crate's own: the maintained `no_std` crate's decoder
//! (`heatshrink-lib`, whose encoder the generator uses) cannot be saved and restored, see
//! [`heatshrink`].
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod digest;
#[cfg(feature = "generate")]
pub mod generate;
pub mod header;
pub mod heatshrink;
pub mod patch;

pub use apply::{Applier, ApplyError, Base, CHUNK};
#[cfg(feature = "generate")]
pub use generate::{apply, generate, GenerateError};
pub use header::{PatchHeader, HEADER_LEN};
pub use patch::{CheckpointError, PatchApplier, PatchError, CHECKPOINT_LEN};
