//! Fuzz the boot journal on arbitrary flash: whatever the two journal sectors hold (valid
//! records with any sequence numbers, torn records, raw garbage, in any order), opening the
//! journal must not panic or write, must replay to a state that keeps the journal's invariants,
//! and every append or compaction that follows must leave flash that the next boot replays to
//! exactly the state the running code believes it wrote. That last property is the one the
//! field incident broke: the bootloader's belief and the flash disagreed.
#![no_main]

use fota_boot::journal::record::{Record, RecordKind, MAX_SEQUENCE, RECORD_LEN};
use fota_boot::testing::MemFlash;
use fota_boot::{BootJournal, BootState, JournalError, JournalRegion};
use fota_protocol::SlotId;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const SECTOR: usize = MemFlash::SECTOR;
const REGION: JournalRegion = JournalRegion {
    sectors: [0, SECTOR as u32],
    sector_size: SECTOR as u32,
};

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Kind {
    Pending(bool),
    Attempt(bool),
    Confirmed(bool),
    Reverted(bool),
    Rejected(bool),
    SecurityCounter(u32),
    Stage1Pending(bool),
    Stage1Attempt(bool),
    Stage1Confirmed(bool),
    Stage1Reverted(bool),
    Stage1Rejected(bool),
    Stage1Floor(u32),
}

impl Kind {
    fn record(self) -> RecordKind {
        let slot = |b: bool| if b { SlotId::B } else { SlotId::A };
        match self {
            Kind::Pending(b) => RecordKind::Pending { slot: slot(b) },
            Kind::Attempt(b) => RecordKind::Attempt { slot: slot(b) },
            Kind::Confirmed(b) => RecordKind::Confirmed { slot: slot(b) },
            Kind::Reverted(b) => RecordKind::Reverted { slot: slot(b) },
            Kind::Rejected(b) => RecordKind::Rejected { slot: slot(b) },
            Kind::SecurityCounter(v) => RecordKind::SecurityCounter { value: v },
            Kind::Stage1Pending(b) => RecordKind::Stage1Pending { slot: slot(b) },
            Kind::Stage1Attempt(b) => RecordKind::Stage1Attempt { slot: slot(b) },
            Kind::Stage1Confirmed(b) => RecordKind::Stage1Confirmed { slot: slot(b) },
            Kind::Stage1Reverted(b) => RecordKind::Stage1Reverted { slot: slot(b) },
            Kind::Stage1Rejected(b) => RecordKind::Stage1Rejected { slot: slot(b) },
            Kind::Stage1Floor(v) => RecordKind::Stage1Floor { value: v },
        }
    }
}

/// What one 16-byte journal slot holds before the boot.
#[derive(Debug, Arbitrary)]
enum Slot {
    Erased,
    /// A complete record (valid CRC), with any sequence number.
    Record {
        sequence: u32,
        kind: Kind,
    },
    /// A record cut by a power loss after `keep` bytes (the rest still erased).
    Torn {
        sequence: u32,
        kind: Kind,
        keep: u8,
    },
    /// Anything at all.
    Raw([u8; RECORD_LEN]),
}

/// What the running code does after the boot.
#[derive(Debug, Arbitrary)]
enum Op {
    Append(Kind),
    Compact,
    /// Power off and on: the next boot opens the journal from flash.
    Reboot,
}

#[derive(Debug, Arbitrary)]
struct Input {
    sectors: [Vec<Slot>; 2],
    ops: Vec<Op>,
}

fn write_sector(flash: &mut MemFlash, sector: usize, slots: &[Slot]) {
    let base = sector * SECTOR;
    for (i, slot) in slots.iter().take(SECTOR / RECORD_LEN).enumerate() {
        let at = base + i * RECORD_LEN;
        let bytes = match *slot {
            Slot::Erased => continue,
            Slot::Record { sequence, kind } => Record::new(sequence, kind.record()).encode(),
            Slot::Torn {
                sequence,
                kind,
                keep,
            } => {
                let mut b = Record::new(sequence, kind.record()).encode();
                b[usize::from(keep) % RECORD_LEN..].fill(0xFF);
                b
            }
            Slot::Raw(raw) => raw,
        };
        flash.bytes[at..at + RECORD_LEN].copy_from_slice(&bytes);
    }
}

/// The invariants every replayed state keeps (journal/replay.rs), for the application slots
/// and the stage-1 slots alike.
fn check_invariants(state: &BootState) {
    for s in [state.app(), state.stage1()] {
        check_track(s);
    }
}

fn check_track(s: &fota_boot::journal::SlotTrack) {
    if s.pending().is_none() {
        assert_eq!(s.attempts(), 0, "{s:?}");
    }
    if let (Some(c), Some(p)) = (s.confirmed(), s.pending()) {
        assert_ne!(c, p, "{s:?}");
    }
    if let Some(c) = s.confirmed() {
        assert!(!s.is_rejected(c), "{s:?}");
    }
    if let Some(p) = s.pending() {
        assert!(!s.is_rejected(p), "{s:?}");
    }
}

/// Boot: open the journal; it must succeed, write nothing and keep the invariants.
fn boot(flash: MemFlash) -> BootJournal<MemFlash> {
    let before = flash.bytes.clone();
    let writes = flash.writes;
    let mut journal = BootJournal::open(flash, REGION).expect("a region that fits always opens");
    assert_eq!(journal.flash_mut().writes, writes, "opening wrote");
    assert!(journal.flash_mut().bytes == before, "opening changed flash");
    check_invariants(journal.state());
    journal
}

fuzz_target!(|input: Input| {
    let mut flash = MemFlash::new();
    for (sector, slots) in input.sectors.iter().enumerate() {
        write_sector(&mut flash, sector, slots);
    }
    let mut journal = boot(flash);
    for op in input.ops.iter().take(32) {
        // The flash never fails here and the append position is always erased, so the one
        // acceptable failure is a journal whose (forged) sequence numbers ran out.
        let near_the_end =
            journal.state().next_sequence() > MAX_SEQUENCE - REGION.records_per_sector();
        let acceptable = |e: JournalError<_>| {
            assert!(
                near_the_end && e == JournalError::SequenceExhausted,
                "{op:?} failed: {e:?}"
            )
        };
        match op {
            Op::Append(kind) => {
                let floor = journal.state().security_counter();
                match journal.append(kind.record()) {
                    Ok(record) => assert_eq!(record.kind, kind.record()),
                    Err(e) => acceptable(e),
                }
                assert!(
                    journal.state().security_counter() >= floor,
                    "the floor went down"
                );
            }
            Op::Compact => {
                if let Err(e) = journal.compact() {
                    acceptable(e);
                }
            }
            Op::Reboot => {}
        }
        check_invariants(journal.state());
        // The next boot sees exactly what the running code believes it wrote.
        let believed = *journal.state();
        let next_boot = boot(journal.flash_mut().clone());
        assert!(
            next_boot.state().equivalent(&believed),
            "after {op:?}: flash replays to {:?}, the code believed {believed:?}",
            next_boot.state()
        );
        if matches!(op, Op::Reboot) {
            // Carry on from the reopened journal: its append position comes from flash alone.
            journal = next_boot;
        }
    }
});
