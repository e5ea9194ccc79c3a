//! The boot-state journal: what the bootloader and the application know about the slots,
//! kept in flash as an append-only sequence of fixed-size records.
//!
//! RAM is never trusted across a reset (the field incident), so every decision the bootloader
//! takes is a function of this journal alone:
//!
//! - [`record`]: the 16-byte record format, and decoding that tells an erased slot (end of the
//!   journal) from a valid record from a torn or corrupt one.
//! - [`replay`](mod@replay): folding the valid records, in order, into a [`BootState`]:
//!   confirmed slot, pending slot, trial attempts, rejected slots, highest security counter.
//!
//! The journal lives in sectors 2 and 3 ([`fota_protocol::layout::JOURNAL`]), used ping-pong: a
//! 16 KB sector holds [`SECTOR_RECORDS`] records; when one fills, the state is rewritten as a
//! short run of records into the other, then the full one is erased. (That compaction is the
//! later bootloader issue; the record format and replay do not depend on it.)

pub mod record;
pub mod replay;

pub use record::{decode, Corruption, Decoded, Record, RecordKind, RECORD_LEN};
pub use replay::{replay, BootState, SlotSet, MAX_TRIAL_ATTEMPTS};

/// Records that fit one 16 KB journal sector.
pub const SECTOR_RECORDS: usize = 16 * 1024 / RECORD_LEN;
