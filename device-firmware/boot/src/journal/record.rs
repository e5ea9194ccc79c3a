//! The boot-state journal's record format: 16 bytes, CRC-protected, appended to erased flash.
//!
//! ```text
//! offset  size  field
//!      0     2  magic 0xB0 0x07                 (never 0xFF: a started record is not "erased")
//!      2     1  format version, 1
//!      3     1  kind: 1 Pending, 2 Attempt, 3 Confirmed, 4 Reverted, 5 Rejected, 6 SecurityCounter
//!                  (application slots); 7-12 the same six for the stage-1 slots (stage-0's)
//!      4     4  sequence number, u32 little endian, at most MAX_SEQUENCE (2^31 - 1)
//!      8     4  payload, u32 little endian: slot (0 = A, 1 = B) or the security counter value
//!     12     4  CRC-32/ISO-HDLC of bytes 0..12, u32 little endian
//! ```
//!
//! Why 16 bytes: the F429 programs flash one 32-bit word at a time (PSIZE x32 at 2.7-3.6 V), so
//! a record that is a whole number of words, at a multiple-of-16 offset, never shares a word with
//! its neighbour. Appending a record then never re-programs a word of an earlier one, and a power
//! cut while programming can only damage the record being written. 16 bytes is also a multiple
//! of the 8- and 16-byte program units of other STM32 families. A 16 KB sector holds 1024.
//!
//! Decoding is total: every 16-byte pattern is [`Decoded::Erased`] (all 0xFF, the end of the
//! journal), [`Decoded::Valid`] or [`Decoded::Corrupt`], and nothing panics. It is also
//! canonical: a pattern decodes as `Valid(r)` only if it is exactly `r.encode()`, so a damaged
//! record can never pass for a *different* valid record unless the damage also forges the CRC.
//! In a 128-bit record, CRC-32/ISO-HDLC detects every error of up to 6 bits (checked
//! exhaustively) and every burst of up to 32 bits, so a flipped bit or one word left
//! half-programmed is always caught; heavier damage passes with probability about 2^-32.

use fota_protocol::SlotId;

/// Length of one record in bytes.
pub const RECORD_LEN: usize = 16;

/// The first two bytes of every record. Neither is 0xFF, so a record whose first word was
/// programmed at all is never mistaken for erased flash, and neither is 0x00, so a zeroed
/// (or wiped) area is not mistaken for records.
pub const MAGIC: [u8; 2] = [0xB0, 0x07];

/// The largest sequence number a valid record carries. Two sectors of 1024 records erased
/// 10,000 times each (the F4's endurance) number about 2^24 records, so no journal this code
/// wrote gets near it; a record claiming more decodes as [`Corruption::Unsupported`]. The cap
/// keeps every sequence a compaction renumbers from (the last one plus a sector's worth) far
/// from `u32::MAX`, where adding would saturate and records would stop being ordered: a
/// fuzzed journal holding a forged record with sequence `u32::MAX` once made compaction write
/// a state that replayed differently from the one it was written from.
pub const MAX_SEQUENCE: u32 = i32::MAX as u32;

/// The record format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes covered by the CRC: everything before it.
const CRC_COVERS: usize = 12;

/// CRC-32/ISO-HDLC (the zlib/Ethernet CRC), bitwise without a lookup table: a record is 12 bytes,
/// so speed does not matter and the 1 KB table would cost bootloader flash.
const CRC32: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A new image was written to `slot` and verified: boot it on trial.
    Pending {
        /// The slot holding the new image.
        slot: SlotId,
    },
    /// The bootloader is about to jump to the pending image in `slot` (one trial boot).
    Attempt {
        /// The slot being tried.
        slot: SlotId,
    },
    /// The application in `slot` reached the server and passed its self-test.
    Confirmed {
        /// The slot that confirmed itself.
        slot: SlotId,
    },
    /// The trial of `slot` ran out of attempts; the bootloader fell back.
    Reverted {
        /// The slot given up on.
        slot: SlotId,
    },
    /// The image in `slot` failed verification (hash, signature, slot or security counter).
    Rejected {
        /// The slot refused.
        slot: SlotId,
    },
    /// The lowest security counter an image must carry from now on (anti-rollback).
    SecurityCounter {
        /// The counter value.
        value: u32,
    },
    /// A new stage-1 was written to stage-1 slot `slot` and verified: stage-0 boots it on trial.
    Stage1Pending {
        /// The stage-1 slot holding it.
        slot: SlotId,
    },
    /// Stage-0 is about to jump to the pending stage-1 in `slot` (one trial boot).
    Stage1Attempt {
        /// The stage-1 slot being tried.
        slot: SlotId,
    },
    /// The stage-1 in `slot` proved itself: an application it booted confirmed during that boot.
    Stage1Confirmed {
        /// The stage-1 slot.
        slot: SlotId,
    },
    /// The trial of the stage-1 in `slot` ran out of attempts; stage-0 fell back.
    Stage1Reverted {
        /// The stage-1 slot given up on.
        slot: SlotId,
    },
    /// The stage-1 in `slot` failed stage-0's verification.
    Stage1Rejected {
        /// The stage-1 slot refused.
        slot: SlotId,
    },
    /// The lowest security counter a stage-1 must carry from now on (stage-0's version floor).
    Stage1Floor {
        /// The counter value.
        value: u32,
    },
}

/// Which pair of slots a record is about: the application slots (the stage-1 bootloader's
/// records) or the stage-1 slots (stage-0's). Both follow the same replay rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Application slots A and B; kinds 1-6.
    Application,
    /// Stage-1 slots A and B; kinds 7-12.
    Stage1,
}

impl Stage {
    /// `Pending` or `Stage1Pending`.
    pub const fn pending(self, slot: SlotId) -> RecordKind {
        match self {
            Stage::Application => RecordKind::Pending { slot },
            Stage::Stage1 => RecordKind::Stage1Pending { slot },
        }
    }

    /// `Attempt` or `Stage1Attempt`.
    pub const fn attempt(self, slot: SlotId) -> RecordKind {
        match self {
            Stage::Application => RecordKind::Attempt { slot },
            Stage::Stage1 => RecordKind::Stage1Attempt { slot },
        }
    }

    /// `Confirmed` or `Stage1Confirmed`.
    pub const fn confirmed(self, slot: SlotId) -> RecordKind {
        match self {
            Stage::Application => RecordKind::Confirmed { slot },
            Stage::Stage1 => RecordKind::Stage1Confirmed { slot },
        }
    }

    /// `Reverted` or `Stage1Reverted`.
    pub const fn reverted(self, slot: SlotId) -> RecordKind {
        match self {
            Stage::Application => RecordKind::Reverted { slot },
            Stage::Stage1 => RecordKind::Stage1Reverted { slot },
        }
    }

    /// `Rejected` or `Stage1Rejected`.
    pub const fn rejected(self, slot: SlotId) -> RecordKind {
        match self {
            Stage::Application => RecordKind::Rejected { slot },
            Stage::Stage1 => RecordKind::Stage1Rejected { slot },
        }
    }

    /// `SecurityCounter` or `Stage1Floor`.
    pub const fn floor(self, value: u32) -> RecordKind {
        match self {
            Stage::Application => RecordKind::SecurityCounter { value },
            Stage::Stage1 => RecordKind::Stage1Floor { value },
        }
    }
}

impl RecordKind {
    /// The kind byte and payload word this kind is encoded as.
    fn to_wire(self) -> (u8, u32) {
        let slot_word = |slot: SlotId| match slot {
            SlotId::A => 0,
            SlotId::B => 1,
        };
        match self {
            RecordKind::Pending { slot } => (1, slot_word(slot)),
            RecordKind::Attempt { slot } => (2, slot_word(slot)),
            RecordKind::Confirmed { slot } => (3, slot_word(slot)),
            RecordKind::Reverted { slot } => (4, slot_word(slot)),
            RecordKind::Rejected { slot } => (5, slot_word(slot)),
            RecordKind::SecurityCounter { value } => (6, value),
            RecordKind::Stage1Pending { slot } => (7, slot_word(slot)),
            RecordKind::Stage1Attempt { slot } => (8, slot_word(slot)),
            RecordKind::Stage1Confirmed { slot } => (9, slot_word(slot)),
            RecordKind::Stage1Reverted { slot } => (10, slot_word(slot)),
            RecordKind::Stage1Rejected { slot } => (11, slot_word(slot)),
            RecordKind::Stage1Floor { value } => (12, value),
        }
    }

    /// The inverse of [`to_wire`](Self::to_wire); `None` for anything it never produces, which
    /// keeps decoding canonical (a slot payload of 2 is not "B with a stray bit").
    fn from_wire(kind: u8, payload: u32) -> Option<Self> {
        let slot = match payload {
            0 => Some(SlotId::A),
            1 => Some(SlotId::B),
            _ => None,
        };
        Some(match kind {
            1 => RecordKind::Pending { slot: slot? },
            2 => RecordKind::Attempt { slot: slot? },
            3 => RecordKind::Confirmed { slot: slot? },
            4 => RecordKind::Reverted { slot: slot? },
            5 => RecordKind::Rejected { slot: slot? },
            6 => RecordKind::SecurityCounter { value: payload },
            7 => RecordKind::Stage1Pending { slot: slot? },
            8 => RecordKind::Stage1Attempt { slot: slot? },
            9 => RecordKind::Stage1Confirmed { slot: slot? },
            10 => RecordKind::Stage1Reverted { slot: slot? },
            11 => RecordKind::Stage1Rejected { slot: slot? },
            12 => RecordKind::Stage1Floor { value: payload },
            _ => return None,
        })
    }
}

/// One journal record: a kind and its place in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Record {
    /// Increases by one with every record appended, across both journal sectors, so replay can
    /// order records and ignore stale ones.
    pub sequence: u32,
    /// What happened.
    pub kind: RecordKind,
}

/// Why a programmed (not erased) record is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// The first two bytes are not [`MAGIC`]: a record torn in its first word, or not a record.
    BadMagic,
    /// The CRC does not match: a record torn after its first word, or damaged.
    BadCrc,
    /// The CRC matches but the version, kind or payload is not one this code writes: a record
    /// from another format version. Skipped like a torn one, since nothing here can act on it.
    Unsupported,
}

/// What 16 bytes of journal flash hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decoded {
    /// All 0xFF: nothing was ever programmed here. The journal ends at the first such slot, and
    /// the next record is appended there.
    Erased,
    /// A complete record.
    Valid(Record),
    /// Programmed, but not a valid record (typically a power cut mid-append). Replay skips it;
    /// the writer must not reuse the slot (its bits cannot be set back to 1 without an erase).
    Corrupt(Corruption),
}

impl Record {
    /// A record of `kind` at position `sequence`.
    pub const fn new(sequence: u32, kind: RecordKind) -> Self {
        Self { sequence, kind }
    }

    /// The 16 bytes to program into an erased slot.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let (kind, payload) = self.kind.to_wire();
        let mut out = [0u8; RECORD_LEN];
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = FORMAT_VERSION;
        out[3] = kind;
        out[4..8].copy_from_slice(&self.sequence.to_le_bytes());
        out[8..12].copy_from_slice(&payload.to_le_bytes());
        let crc = CRC32.checksum(&out[..CRC_COVERS]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode 16 bytes read from the journal. See [`decode`].
    pub fn decode(bytes: &[u8; RECORD_LEN]) -> Decoded {
        decode(bytes)
    }
}

/// Little-endian u32 at `at`; the caller passes an in-bounds offset of a fixed-size array.
fn word(bytes: &[u8; RECORD_LEN], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Decode 16 bytes read from the journal: erased, valid or corrupt. Never panics.
///
/// Checked in this order: all 0xFF (erased), magic, CRC, then version/kind/payload, so the
/// [`Corruption`] says how far the record got before it went wrong.
pub fn decode(bytes: &[u8; RECORD_LEN]) -> Decoded {
    if bytes.iter().all(|&b| b == 0xFF) {
        return Decoded::Erased;
    }
    if bytes[0..2] != MAGIC {
        return Decoded::Corrupt(Corruption::BadMagic);
    }
    if CRC32.checksum(&bytes[..CRC_COVERS]) != word(bytes, 12) {
        return Decoded::Corrupt(Corruption::BadCrc);
    }
    if bytes[2] != FORMAT_VERSION {
        return Decoded::Corrupt(Corruption::Unsupported);
    }
    let sequence = word(bytes, 4);
    if sequence > MAX_SEQUENCE {
        return Decoded::Corrupt(Corruption::Unsupported);
    }
    match RecordKind::from_wire(bytes[3], word(bytes, 8)) {
        Some(kind) => Decoded::Valid(Record::new(sequence, kind)),
        None => Decoded::Corrupt(Corruption::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every kind, for both slots and at the edges of the counter.
    fn every_kind() -> Vec<RecordKind> {
        let mut kinds = Vec::new();
        for slot in SlotId::ALL {
            kinds.extend([
                RecordKind::Pending { slot },
                RecordKind::Attempt { slot },
                RecordKind::Confirmed { slot },
                RecordKind::Reverted { slot },
                RecordKind::Rejected { slot },
                RecordKind::Stage1Pending { slot },
                RecordKind::Stage1Attempt { slot },
                RecordKind::Stage1Confirmed { slot },
                RecordKind::Stage1Reverted { slot },
                RecordKind::Stage1Rejected { slot },
            ]);
        }
        for value in [0, 1, 7, 0xFFFF_FFFE, u32::MAX] {
            kinds.push(RecordKind::SecurityCounter { value });
            kinds.push(RecordKind::Stage1Floor { value });
        }
        kinds
    }

    fn every_record() -> Vec<Record> {
        let mut records = Vec::new();
        for kind in every_kind() {
            for sequence in [0, 1, 0x1234_5678, MAX_SEQUENCE] {
                records.push(Record::new(sequence, kind));
            }
        }
        records
    }

    /// Whether `bytes` decoding as something other than `original` is acceptable: erased and
    /// corrupt are (replay skips them), the same record is (the damage changed nothing that
    /// matters), a different valid record never is.
    fn harmless(bytes: &[u8; RECORD_LEN], original: &Record) -> bool {
        match decode(bytes) {
            Decoded::Erased | Decoded::Corrupt(_) => true,
            Decoded::Valid(r) => r == *original,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let r = Record::new(0x0403_0201, RecordKind::Rejected { slot: SlotId::B });
        let bytes = r.encode();
        assert_eq!(&bytes[0..4], &[0xB0, 0x07, 1, 5]);
        assert_eq!(&bytes[4..8], &[1, 2, 3, 4]);
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        // CRC-32/ISO-HDLC check value, so another implementation (the board's, a Python tool)
        // can be checked against this one.
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
            CRC32.checksum(&bytes[..12])
        );
        assert_eq!(RECORD_LEN % 4, 0, "records must be whole 32-bit words");
    }

    #[test]
    fn every_kind_round_trips() {
        for r in every_record() {
            assert_eq!(decode(&r.encode()), Decoded::Valid(r), "{r:?}");
        }
    }

    #[test]
    fn sequences_beyond_the_cap_are_unsupported() {
        for sequence in [MAX_SEQUENCE + 1, u32::MAX] {
            let r = Record::new(sequence, RecordKind::Confirmed { slot: SlotId::A });
            assert_eq!(
                decode(&r.encode()),
                Decoded::Corrupt(Corruption::Unsupported),
                "{sequence:#x}"
            );
        }
    }

    #[test]
    fn erased_flash_is_the_end_of_the_journal() {
        assert_eq!(decode(&[0xFF; RECORD_LEN]), Decoded::Erased);
        // One programmed bit anywhere is enough not to be erased.
        for byte in 0..RECORD_LEN {
            let mut bytes = [0xFF; RECORD_LEN];
            bytes[byte] = 0xFE;
            assert!(matches!(decode(&bytes), Decoded::Corrupt(_)), "byte {byte}");
        }
        assert_eq!(
            decode(&[0; RECORD_LEN]),
            Decoded::Corrupt(Corruption::BadMagic)
        );
    }

    #[test]
    fn every_single_bit_flip_is_corrupt() {
        for r in every_record() {
            let good = r.encode();
            for bit in 0..RECORD_LEN * 8 {
                let mut bytes = good;
                bytes[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    matches!(decode(&bytes), Decoded::Corrupt(_)),
                    "{r:?} with bit {bit} flipped decodes as {:?}",
                    decode(&bytes)
                );
            }
        }
    }

    #[test]
    fn every_two_and_three_bit_error_is_corrupt() {
        let r = Record::new(41, RecordKind::Pending { slot: SlotId::B });
        let good = r.encode();
        let flip = |bytes: &mut [u8; RECORD_LEN], bit: usize| bytes[bit / 8] ^= 1 << (bit % 8);
        let bits = RECORD_LEN * 8;
        for a in 0..bits {
            for b in a + 1..bits {
                let mut two = good;
                flip(&mut two, a);
                flip(&mut two, b);
                assert!(matches!(decode(&two), Decoded::Corrupt(_)), "bits {a} {b}");
                for c in b + 1..bits {
                    let mut three = two;
                    flip(&mut three, c);
                    assert!(matches!(decode(&three), Decoded::Corrupt(_)), "{a} {b} {c}");
                }
            }
        }
    }

    #[test]
    fn a_record_torn_at_any_byte_is_never_a_different_record() {
        for r in every_record() {
            let good = r.encode();
            for programmed in 0..=RECORD_LEN {
                let mut torn = [0xFF; RECORD_LEN];
                torn[..programmed].copy_from_slice(&good[..programmed]);
                let decoded = decode(&torn);
                match programmed {
                    0 => assert_eq!(decoded, Decoded::Erased),
                    RECORD_LEN => assert_eq!(decoded, Decoded::Valid(r)),
                    // Valid only if the unprogrammed tail was 0xFF anyway: the same record.
                    _ => assert!(
                        harmless(&torn, &r),
                        "{r:?} torn at {programmed}: {decoded:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn unknown_versions_kinds_and_slots_are_skipped_even_with_a_good_crc() {
        let forge = |version: u8, kind: u8, payload: u32| {
            let mut bytes = Record::new(9, RecordKind::Attempt { slot: SlotId::A }).encode();
            bytes[2] = version;
            bytes[3] = kind;
            bytes[8..12].copy_from_slice(&payload.to_le_bytes());
            let crc = CRC32.checksum(&bytes[..12]);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
            decode(&bytes)
        };
        let unsupported = Decoded::Corrupt(Corruption::Unsupported);
        assert_eq!(forge(2, 1, 0), unsupported);
        assert_eq!(forge(1, 0, 0), unsupported);
        assert_eq!(forge(1, 13, 0), unsupported);
        assert_eq!(forge(1, 0xFF, 0), unsupported);
        for kind in (1..=5).chain(7..=11) {
            assert_eq!(forge(1, kind, 2), unsupported, "kind {kind}");
            assert_eq!(forge(1, kind, 0x100), unsupported, "kind {kind}");
            assert!(matches!(forge(1, kind, 1), Decoded::Valid(_)));
        }
        assert!(matches!(forge(1, 6, 0xDEAD_BEEF), Decoded::Valid(_)));
        assert!(matches!(forge(1, 12, 0xDEAD_BEEF), Decoded::Valid(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Total and canonical: any 16 bytes decode without panicking, and only the exact
        /// encoding of a record decodes as that record.
        #[test]
        fn any_bytes_decode_canonically(bytes in any::<[u8; RECORD_LEN]>()) {
            if let Decoded::Valid(r) = decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes);
            }
        }

        /// A program interrupted at bit level: any subset of the bits the record clears is
        /// cleared, the rest still read 1 (MultiwriteNorFlash's power-loss model).
        #[test]
        fn partially_programmed_bits_are_never_a_different_record(
            index in 0..every_record().len(),
            keep in any::<[u8; RECORD_LEN]>(),
        ) {
            let r = every_record()[index];
            let good = r.encode();
            let mut partial = [0u8; RECORD_LEN];
            for i in 0..RECORD_LEN {
                // Bits that should become 0 and did: good's zeros masked by `keep`.
                partial[i] = !(!good[i] & keep[i]);
            }
            prop_assert!(harmless(&partial, &r), "{:?} -> {:?}", r, decode(&partial));
        }

        /// Garbage that starts with the magic (the most record-like garbage) is still refused
        /// unless it is a record's exact encoding.
        #[test]
        fn magic_prefixed_garbage_is_canonical(rest in any::<[u8; RECORD_LEN - 2]>()) {
            let mut bytes = [0u8; RECORD_LEN];
            bytes[..2].copy_from_slice(&MAGIC);
            bytes[2..].copy_from_slice(&rest);
            if let Decoded::Valid(r) = decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes);
            }
        }
    }
}
