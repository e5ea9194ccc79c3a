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
//! - [`store`]: [`BootJournal`], the journal in flash: two sectors used ping-pong, with a
//!   commit rule that makes compaction safe against a power cut at any point.
//!
//! The journal lives in sectors 2 and 3 ([`fota_protocol::layout::JOURNAL`]), used ping-pong: a
//! 16 KB sector holds [`SECTOR_RECORDS`] records; when one fills, the state is rewritten as a
//! short run of records into the other, which then becomes the active one. The full one is
//! erased only at the next compaction.

pub mod record;
pub mod replay;
pub mod store;

pub use record::{
    decode, Corruption, Decoded, Record, RecordKind, Stage, MAX_SEQUENCE, RECORD_LEN,
};
pub use replay::{replay, BootState, SlotSet, SlotTrack, MAX_TRIAL_ATTEMPTS};
pub use store::{snapshot, BootJournal, JournalError, JournalRegion};

/// Records that fit one 16 KB journal sector.
pub const SECTOR_RECORDS: usize = 16 * 1024 / RECORD_LEN;
