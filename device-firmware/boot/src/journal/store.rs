//! The journal in flash: [`BootJournal`], two erase sectors used ping-pong, read at open,
//! appended one record at a time, compacted into the other sector when one fills.
//!
//! # Which sector holds the state: the commit rule
//!
//! Slot 0 (the first 16 bytes) of a sector is its *commit record*. A sector is **committed** when
//! its slot 0 decodes as a valid record, and the state is the replay of the committed sector
//! whose slot-0 sequence number is the higher, alone and from the empty state. The other sector
//! is ignored entirely: it is either the previous generation (superseded) or the remains of an
//! interrupted compaction (an erase or a snapshot cut short).
//!
//! # Compaction (when the active sector is full)
//!
//! 1. Erase the other sector (the target).
//! 2. Write the snapshot of the current state into slots 1, 2, ... of the target:
//!    `Confirmed`, `Rejected` (each rejected slot), `Pending`, `Attempt` x attempts.
//! 3. Read them back and check they decode as exactly those records.
//! 4. Only then program slot 0 of the target: `SecurityCounter{floor}`, carrying the *lowest*
//!    sequence number of the snapshot, one above the last record of the active sector.
//!
//! The snapshot alone replays to the state it was written from (the record semantics keep a
//! confirmed, a pending and a rejected slot distinct, so the records do not interfere), and its
//! sequence numbers, slot 0 first, increase in slot order.
//!
//! Why a power cut at any point leaves the state unchanged: until step 4 completes, the target's
//! slot 0 is erased, torn (decodes as corrupt: the record format is canonical and CRC-protected),
//! or, during an interrupted erase, still the *old* commit of the generation before, whose
//! sequence number is lower than the active sector's. In every case the active sector stays the
//! newest committed one and still holds every record. Once step 4 completes, the target is
//! committed with a higher sequence number than any record of the old sector, and replays to the
//! same state. No step ever writes to the active sector, and the old sector is not erased until
//! the *next* compaction, when the new one is itself full and committed. A write never touches a
//! committed sector's slot 0 again, so a commit, once made, stays.
//!
//! A journal with no committed sector (a new device, or one whose first append was cut) replays
//! to the empty state; the first append then compacts that empty state into sector 0 (erase,
//! commit `SecurityCounter{0}`) before appending. A factory image of the journal is just records
//! from slot 0 of either sector onwards.
//!
//! # Appending
//!
//! A record goes to the first erased slot after the last programmed one of the active sector. A
//! slot holding a torn or corrupt record is never reused (its bits cannot be set back to 1
//! without an erase); replay skips it. Each append programs one whole 16-byte record (four
//! 32-bit words), then reads it back.

use super::record::Stage;
use super::record::{decode, Decoded, Record, RecordKind, MAX_SEQUENCE, RECORD_LEN};
use super::replay::{BootState, SlotTrack};
use embedded_storage::nor_flash::NorFlash;
use fota_protocol::layout::{FLASH_BASE, JOURNAL};

/// Records read per flash read while scanning a sector (256 bytes of stack).
const READ_RECORDS: usize = 16;

/// Where the journal's two sectors are, as offsets into the flash the driver exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRegion {
    /// Offsets of the two sectors. Each must be one whole erase sector of the flash.
    pub sectors: [u32; 2],
    /// Size of each sector in bytes (a multiple of the 16-byte record).
    pub sector_size: u32,
}

impl JournalRegion {
    /// Sectors 2 and 3 of the STM32F429 ([`JOURNAL`]), as offsets from the start of flash.
    pub const STM32F429: JournalRegion = JournalRegion {
        sectors: [
            JOURNAL.start - FLASH_BASE,
            JOURNAL.start - FLASH_BASE + JOURNAL.size / 2,
        ],
        sector_size: JOURNAL.size / 2,
    };

    /// Records one sector holds (1024 for 16 KB).
    pub const fn records_per_sector(&self) -> u32 {
        self.sector_size / RECORD_LEN as u32
    }

    /// Offset of record `slot` of sector `sector`.
    fn offset(&self, sector: usize, slot: u32) -> u32 {
        self.sectors[sector & 1] + slot * RECORD_LEN as u32
    }

    /// Whether the region can hold a journal on a flash of `capacity` bytes written in units of
    /// `write_size`: two non-overlapping, record-aligned sectors inside flash, and records made
    /// of whole write units so that appending never re-programs a neighbour's unit.
    fn fits(&self, capacity: usize, write_size: usize) -> bool {
        let record = RECORD_LEN as u32;
        let inside = |start: u32| {
            start
                .checked_add(self.sector_size)
                .is_some_and(|end| end as usize <= capacity)
        };
        let [a, b] = self.sectors;
        self.sector_size >= 2 * record
            && self.sector_size % record == 0
            && write_size != 0
            && RECORD_LEN % write_size == 0
            && a % record == 0
            && b % record == 0
            && inside(a)
            && inside(b)
            && (a.saturating_add(self.sector_size) <= b || b.saturating_add(self.sector_size) <= a)
    }
}

/// Why the journal could not be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JournalError<E> {
    /// The flash driver refused or failed an operation.
    #[error("journal flash operation failed: {0:?}")]
    Flash(E),
    /// The [`JournalRegion`] does not describe two usable sectors of this flash.
    #[error("the journal region is not two aligned, separate sectors inside flash")]
    BadRegion,
    /// A record did not read back as written (a failing flash cell, or a write that did not
    /// complete). The slot is spent; the state did not change.
    #[error("record {slot} of journal sector {sector} did not read back as written")]
    ReadBack {
        /// Sector index (0 or 1).
        sector: u8,
        /// Record slot within it.
        slot: u32,
    },
    /// The state needs more records than a sector holds (only possible with tiny test sectors).
    #[error("the state needs {records} records, more than a journal sector holds")]
    SnapshotTooLarge {
        /// Records the snapshot needs, the appended record included.
        records: u32,
    },
    /// The sequence numbers ran out ([`MAX_SEQUENCE`]): only a journal holding a forged record
    /// gets here, since the F4's erase endurance allows about 2^24 records. Nothing was written.
    #[error("the journal's sequence numbers are exhausted")]
    SequenceExhausted,
}

/// The records that replay, from the empty state, to `state` (up to sequence numbering). The
/// first is the `SecurityCounter` that goes to slot 0 as the commit record.
///
/// Exact because of three invariants of [`BootState::apply`]: the confirmed slot is never
/// rejected, the pending slot is neither confirmed nor rejected, and attempts are 0 when nothing
/// is pending. So `Confirmed`, `Rejected` and `Pending` here never undo one another.
pub fn snapshot(state: &BootState) -> impl Iterator<Item = RecordKind> {
    let floor = core::iter::once(RecordKind::SecurityCounter {
        value: state.security_counter(),
    });
    // The stage-1 floor only when it is above the empty state's 0, so a journal that never saw
    // a stage-1 record compacts exactly as before.
    let stage1_floor = Some(state.stage1().floor())
        .filter(|&value| value > 0)
        .map(|value| RecordKind::Stage1Floor { value });
    floor
        .chain(track(*state.app(), Stage::Application))
        .chain(stage1_floor)
        .chain(track(*state.stage1(), Stage::Stage1))
}

/// `Confirmed`, `Rejected` (each), `Pending`, `Attempt` x attempts, of one pair of slots.
fn track(track: SlotTrack, stage: Stage) -> impl Iterator<Item = RecordKind> {
    let confirmed = track.confirmed().map(|slot| stage.confirmed(slot));
    let rejected = track
        .rejected()
        .iter()
        .map(move |slot| stage.rejected(slot));
    let pending = track.pending().map(|slot| stage.pending(slot));
    let attempts = track.pending().into_iter().flat_map({
        let n = usize::from(track.attempts());
        move |slot| core::iter::repeat_n(stage.attempt(slot), n)
    });
    confirmed
        .into_iter()
        .chain(rejected)
        .chain(pending)
        .chain(attempts)
}

/// What a scan of one sector found.
struct Scan {
    state: BootState,
    /// The slot after the last programmed (valid or corrupt) one.
    next_slot: u32,
}

/// The boot-state journal over two sectors of a [`NorFlash`].
///
/// Holds the replayed [`BootState`] and the append position; nothing else, and nothing that
/// survives a reset: every boot opens it afresh from flash.
#[derive(Debug)]
pub struct BootJournal<F> {
    flash: F,
    region: JournalRegion,
    state: BootState,
    /// The newest committed sector, if any.
    active: Option<usize>,
    /// Where the next record goes in the active sector (`records_per_sector` when full).
    next_slot: u32,
}

impl<F: NorFlash> BootJournal<F> {
    /// Read both sectors and replay the newest committed one (see the [module docs](self)).
    /// Writes nothing.
    pub fn open(mut flash: F, region: JournalRegion) -> Result<Self, JournalError<F::Error>> {
        if !region.fits(flash.capacity(), F::WRITE_SIZE) {
            return Err(JournalError::BadRegion);
        }
        let mut heads = [None; 2];
        for (sector, head) in heads.iter_mut().enumerate() {
            *head = match read_record(&mut flash, &region, sector, 0)? {
                Decoded::Valid(r) => Some(r.sequence),
                Decoded::Erased | Decoded::Corrupt(_) => None,
            };
        }
        let active = match heads {
            [Some(a), Some(b)] => Some(if b > a { 1 } else { 0 }),
            [Some(_), None] => Some(0),
            [None, Some(_)] => Some(1),
            [None, None] => None,
        };
        let scan = match active {
            Some(sector) => scan(&mut flash, &region, sector)?,
            None => Scan {
                state: BootState::new(),
                next_slot: 0,
            },
        };
        Ok(Self {
            flash,
            region,
            state: scan.state,
            active,
            next_slot: scan.next_slot,
        })
    }

    /// The state the journal replays to.
    pub fn state(&self) -> &BootState {
        &self.state
    }

    /// The region it was opened on.
    pub fn region(&self) -> JournalRegion {
        self.region
    }

    /// The sector (0 or 1) holding the state, `None` while nothing was ever committed.
    pub fn active_sector(&self) -> Option<usize> {
        self.active
    }

    /// Records that can be appended before the next append compacts.
    pub fn remaining(&self) -> u32 {
        match self.active {
            Some(_) => self
                .region
                .records_per_sector()
                .saturating_sub(self.next_slot),
            None => 0,
        }
    }

    /// The flash, e.g. to read the slots. Writing the journal's sectors through it behind the
    /// journal's back makes the cached append position wrong: reopen after doing so.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Give the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Append one record: compact first if the active sector is full (or nothing is committed
    /// yet), then program the record and read it back. On success the state includes it.
    ///
    /// On error the state is unchanged, unless the record nevertheless reads back complete, in
    /// which case it counts (the flash has it, so the next boot will too).
    pub fn append(&mut self, kind: RecordKind) -> Result<Record, JournalError<F::Error>> {
        if self.remaining() == 0 {
            self.compact()?;
        }
        if self.state.next_sequence() > MAX_SEQUENCE {
            return Err(JournalError::SequenceExhausted);
        }
        let Some(sector) = self.active else {
            // compact() commits a sector or fails; this is not reached.
            return Err(JournalError::BadRegion);
        };
        let record = Record::new(self.state.next_sequence(), kind);
        let slot = self.next_slot;
        // Spent whatever happens next: a torn record must not be programmed over.
        self.next_slot += 1;
        let written = self
            .flash
            .write(self.region.offset(sector, slot), &record.encode());
        match read_record(&mut self.flash, &self.region, sector, slot) {
            Ok(Decoded::Valid(back)) if back == record => {
                self.state.apply(&record);
                Ok(record)
            }
            Ok(_) => Err(written.err().map_or(
                JournalError::ReadBack {
                    sector: sector as u8,
                    slot,
                },
                JournalError::Flash,
            )),
            Err(e) => Err(written.err().map_or(e, JournalError::Flash)),
        }
    }

    /// Rewrite the state into the other sector and make that the active one (see the
    /// [module docs](self) for the order and why it survives a power cut anywhere). Called by
    /// [`append`](Self::append) when the active sector is full; public for tests and for a
    /// board that wants to compact at a quiet moment.
    pub fn compact(&mut self) -> Result<(), JournalError<F::Error>> {
        let target = match self.active {
            Some(sector) => 1 - sector,
            None => 0,
        };
        let records = snapshot(&self.state).count() as u32;
        // Leave room for at least the record being appended.
        if records >= self.region.records_per_sector() {
            return Err(JournalError::SnapshotTooLarge {
                records: records + 1,
            });
        }
        if self.state.next_sequence() > MAX_SEQUENCE - records {
            return Err(JournalError::SequenceExhausted);
        }
        let from = self.region.sectors[target];
        self.flash
            .erase(from, from + self.region.sector_size)
            .map_err(JournalError::Flash)?;

        let first = self.state.next_sequence();
        let record_at = |slot: u32, kind: RecordKind| Record::new(first.saturating_add(slot), kind);
        // Slots 1.. first: the commit in slot 0 must be the last thing written.
        for (slot, kind) in (0u32..).zip(snapshot(&self.state)).skip(1) {
            let record = record_at(slot, kind);
            self.flash
                .write(self.region.offset(target, slot), &record.encode())
                .map_err(JournalError::Flash)?;
        }
        let mut replayed = BootState::new();
        for (slot, kind) in (0u32..).zip(snapshot(&self.state)) {
            let record = record_at(slot, kind);
            if slot > 0 {
                self.expect(target, slot, &record)?;
            }
            replayed.apply(&record);
        }
        let commit = record_at(
            0,
            RecordKind::SecurityCounter {
                value: self.state.security_counter(),
            },
        );
        self.flash
            .write(self.region.offset(target, 0), &commit.encode())
            .map_err(JournalError::Flash)?;
        self.expect(target, 0, &commit)?;

        debug_assert!(replayed.equivalent(&self.state));
        self.state = replayed;
        self.active = Some(target);
        self.next_slot = records;
        Ok(())
    }

    /// Check that slot `slot` of `sector` reads back as `record`.
    fn expect(
        &mut self,
        sector: usize,
        slot: u32,
        record: &Record,
    ) -> Result<(), JournalError<F::Error>> {
        match read_record(&mut self.flash, &self.region, sector, slot)? {
            Decoded::Valid(back) if back == *record => Ok(()),
            _ => Err(JournalError::ReadBack {
                sector: sector as u8,
                slot,
            }),
        }
    }
}

/// Read and decode record `slot` of `sector`.
fn read_record<F: NorFlash>(
    flash: &mut F,
    region: &JournalRegion,
    sector: usize,
    slot: u32,
) -> Result<Decoded, JournalError<F::Error>> {
    let mut bytes = [0u8; RECORD_LEN];
    flash
        .read(region.offset(sector, slot), &mut bytes)
        .map_err(JournalError::Flash)?;
    Ok(decode(&bytes))
}

/// Replay every valid record of `sector` in slot order and find the append position.
fn scan<F: NorFlash>(
    flash: &mut F,
    region: &JournalRegion,
    sector: usize,
) -> Result<Scan, JournalError<F::Error>> {
    let mut state = BootState::new();
    let mut next_slot = 0;
    let total = region.records_per_sector();
    let mut buf = [0u8; READ_RECORDS * RECORD_LEN];
    let mut slot = 0u32;
    while slot < total {
        let count = (total - slot).min(READ_RECORDS as u32);
        let bytes = &mut buf[..count as usize * RECORD_LEN];
        flash
            .read(region.offset(sector, slot), bytes)
            .map_err(JournalError::Flash)?;
        for (at, chunk) in (slot..).zip(bytes.chunks_exact(RECORD_LEN)) {
            let Ok(record) = <&[u8; RECORD_LEN]>::try_from(chunk) else {
                continue;
            };
            match decode(record) {
                Decoded::Erased => {}
                Decoded::Valid(r) => {
                    state.apply(&r);
                    next_slot = at + 1;
                }
                Decoded::Corrupt(_) => next_slot = at + 1,
            }
        }
        slot += count;
    }
    Ok(Scan { state, next_slot })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SECTOR_RECORDS;
    use crate::testing::MemFlash;
    use fota_protocol::SlotId::{self, A, B};
    use proptest::prelude::*;
    use RecordKind::*;

    /// Sectors 1 and 2 of the 64 KB test flash.
    const REGION: JournalRegion = JournalRegion {
        sectors: [0x4000, 0x8000],
        sector_size: 0x4000,
    };

    fn open(flash: MemFlash) -> BootJournal<MemFlash> {
        BootJournal::open(flash, REGION).unwrap()
    }

    fn slot_bytes(flash: &MemFlash, sector: usize, slot: u32) -> [u8; RECORD_LEN] {
        let at = REGION.offset(sector, slot) as usize;
        flash.bytes[at..at + RECORD_LEN].try_into().unwrap()
    }

    /// A realistic history, repeated: installs that confirm, revert and get rejected.
    const HISTORY: [RecordKind; 14] = [
        Pending { slot: B },
        Attempt { slot: B },
        Attempt { slot: B },
        Confirmed { slot: B },
        SecurityCounter { value: 2 },
        Pending { slot: A },
        Attempt { slot: A },
        Attempt { slot: A },
        Attempt { slot: A },
        Reverted { slot: A },
        Pending { slot: A },
        Rejected { slot: A },
        Pending { slot: A },
        Attempt { slot: A },
    ];

    #[test]
    fn the_f429_journal_is_sectors_2_and_3() {
        let r = JournalRegion::STM32F429;
        assert_eq!(r.sectors, [0x8000, 0xC000]);
        assert_eq!(r.sector_size, 16 * 1024);
        assert_eq!(r.records_per_sector() as usize, SECTOR_RECORDS);
    }

    #[test]
    fn an_erased_journal_is_empty_and_the_first_append_commits_sector_0() {
        let mut j = open(MemFlash::new());
        assert_eq!(*j.state(), BootState::new());
        assert_eq!((j.active_sector(), j.remaining()), (None, 0));

        let r = j.append(Confirmed { slot: A }).unwrap();
        assert_eq!(r, Record::new(1, Confirmed { slot: A }));
        assert_eq!(j.active_sector(), Some(0));
        let flash = j.into_flash();
        assert_eq!(
            decode(&slot_bytes(&flash, 0, 0)),
            Decoded::Valid(Record::new(0, SecurityCounter { value: 0 }))
        );
        assert_eq!(decode(&slot_bytes(&flash, 0, 1)), Decoded::Valid(r));

        let j = open(flash);
        assert_eq!(j.state().confirmed(), Some(A));
        assert_eq!(j.state().next_sequence(), 2);
        assert_eq!(j.remaining(), 1022);
    }

    #[test]
    fn state_survives_reopening_and_many_compactions() {
        let mut j = open(MemFlash::new());
        let mut expected = BootState::new();
        let mut compactions = 0;
        let mut active = None;
        for i in 0..3000 {
            let kind = HISTORY[i % HISTORY.len()];
            let r = j.append(kind).unwrap();
            expected.apply(&Record::new(expected.next_sequence(), kind));
            assert!(j.state().equivalent(&expected), "after append {i}");
            assert_eq!(j.state().last_sequence(), Some(r.sequence));
            if j.active_sector() != active {
                compactions += 1;
                active = j.active_sector();
            }
            if i % 211 == 0 || j.remaining() == 0 {
                let reopened = open(j.flash_mut().clone());
                assert_eq!(reopened.state(), j.state(), "reopened after append {i}");
                assert_eq!(reopened.remaining(), j.remaining());
                assert_eq!(reopened.active_sector(), j.active_sector());
            }
        }
        // The first append commits sector 0; 3000 records then fill it and the other twice.
        assert!(compactions >= 3, "{compactions}");
    }

    #[test]
    fn a_torn_append_is_skipped_and_its_slot_never_reused() {
        let mut j = open(MemFlash::new());
        j.append(Confirmed { slot: A }).unwrap();
        j.append(Pending { slot: B }).unwrap();
        let before = *j.state();
        // An Attempt cut after six bytes, in slot 3.
        let torn = Record::new(3, Attempt { slot: B }).encode();
        let mut flash = j.into_flash();
        let at = REGION.offset(0, 3) as usize;
        flash.bytes[at..at + 6].copy_from_slice(&torn[..6]);

        let mut j = open(flash);
        assert_eq!(*j.state(), before);
        assert_eq!(j.remaining(), 1024 - 4);
        let r = j.append(Attempt { slot: B }).unwrap();
        assert_eq!(
            r.sequence, 3,
            "the torn record's sequence number was never used"
        );
        let flash = j.into_flash();
        assert_eq!(decode(&slot_bytes(&flash, 0, 4)), Decoded::Valid(r));
        let j = open(flash);
        assert_eq!((j.state().pending(), j.state().attempts()), (Some(B), 1));
    }

    /// Fill the active sector with records until one more append compacts.
    fn fill(j: &mut BootJournal<MemFlash>) {
        while j.remaining() > 0 {
            j.append(SecurityCounter { value: 1 }).unwrap();
        }
    }

    fn mid_trial() -> BootJournal<MemFlash> {
        let mut j = open(MemFlash::new());
        for kind in [
            SecurityCounter { value: 1 },
            Confirmed { slot: A },
            Pending { slot: B },
            Attempt { slot: B },
            Attempt { slot: B },
        ] {
            j.append(kind).unwrap();
        }
        j
    }

    #[test]
    fn compaction_cut_before_its_commit_leaves_the_old_sector_in_charge() {
        let mut j = mid_trial();
        fill(&mut j);
        let before = *j.state();
        let records = snapshot(&before).count();
        assert_eq!(records, 5, "counter, confirmed, pending, 2 attempts");
        // Every write of the compaction succeeds but the commit (and the append after it).
        j.flash_mut().fail_writes_after = Some(records - 1);
        assert!(j.append(Attempt { slot: B }).is_err());
        assert_eq!(*j.state(), before);
        let mut flash = j.into_flash();
        assert_eq!(decode(&slot_bytes(&flash, 1, 0)), Decoded::Erased);
        assert!(matches!(
            decode(&slot_bytes(&flash, 1, 1)),
            Decoded::Valid(_)
        ));
        flash.fail_writes_after = None;

        let mut j = open(flash);
        assert_eq!(j.active_sector(), Some(0));
        assert_eq!(*j.state(), before);
        // The next append redoes the compaction from the start.
        j.append(Attempt { slot: B }).unwrap();
        assert_eq!(j.active_sector(), Some(1));
        let j = open(j.into_flash());
        assert_eq!(j.active_sector(), Some(1));
        assert_eq!((j.state().pending(), j.state().attempts()), (Some(B), 3));
        assert_eq!(j.state().confirmed(), Some(A));
        assert_eq!(j.remaining(), 1024 - records as u32 - 1);
    }

    #[test]
    fn a_half_erased_old_sector_is_ignored() {
        let mut j = mid_trial();
        fill(&mut j);
        j.append(Attempt { slot: B }).unwrap();
        fill(&mut j);
        j.append(Confirmed { slot: B }).unwrap();
        // Now sector 0 is active again and sector 1 holds the previous generation.
        assert_eq!(j.active_sector(), Some(0));
        let state = *j.state();
        let flash = j.into_flash();
        // Damage the old sector the way an interrupted erase does: every other word, or all
        // but its first record.
        let old = REGION.sectors[1] as usize..(REGION.sectors[1] + REGION.sector_size) as usize;
        for keep_head in [false, true] {
            let mut damaged = flash.clone();
            for (i, word) in damaged.bytes[old.clone()].chunks_exact_mut(4).enumerate() {
                if i % 2 == 1 || (keep_head && i >= 4) {
                    word.fill(0xFF);
                }
            }
            let j = open(damaged);
            assert_eq!(*j.state(), state, "keep_head {keep_head}");
            assert_eq!(j.active_sector(), Some(0));
        }
    }

    #[test]
    fn a_failed_append_changes_nothing_and_spends_its_slot() {
        let mut j = mid_trial();
        let before = *j.state();
        let remaining = j.remaining();
        j.flash_mut().fail_writes_after = Some(0);
        assert!(matches!(
            j.append(Attempt { slot: B }),
            Err(JournalError::Flash(_))
        ));
        assert_eq!(*j.state(), before);
        assert_eq!(j.remaining(), remaining - 1);
        j.flash_mut().fail_writes_after = None;
        j.append(Attempt { slot: B }).unwrap();
        assert_eq!(j.state().attempts(), 3);
    }

    #[test]
    fn a_journal_at_the_end_of_its_sequence_numbers_refuses_to_write() {
        // Only a forged record gets a journal here; it must refuse, not write records that
        // replay out of order.
        let mut flash = MemFlash::new();
        let at = REGION.offset(0, 0) as usize;
        flash.bytes[at..at + RECORD_LEN]
            .copy_from_slice(&Record::new(MAX_SEQUENCE, Confirmed { slot: A }).encode());
        let mut j = open(flash);
        assert_eq!(j.state().confirmed(), Some(A));
        let before = j.flash_mut().bytes.clone();
        assert_eq!(
            j.append(Pending { slot: B }),
            Err(JournalError::SequenceExhausted)
        );
        assert_eq!(j.compact(), Err(JournalError::SequenceExhausted));
        assert!(j.flash_mut().bytes == before, "nothing written");
        assert_eq!(j.state().confirmed(), Some(A));
    }

    #[test]
    fn a_factory_journal_in_either_sector_is_read() {
        for sector in [0, 1] {
            let mut flash = MemFlash::new();
            for (slot, kind) in (0u32..).zip([SecurityCounter { value: 1 }, Confirmed { slot: A }])
            {
                let at = REGION.offset(sector, slot) as usize;
                flash.bytes[at..at + RECORD_LEN]
                    .copy_from_slice(&Record::new(slot + 1, kind).encode());
            }
            let j = open(flash);
            assert_eq!(j.active_sector(), Some(sector));
            assert_eq!(j.state().confirmed(), Some(A));
            assert_eq!(j.state().security_counter(), 1);
        }
    }

    #[test]
    fn regions_that_cannot_hold_a_journal_are_refused() {
        for region in [
            // Overlapping.
            JournalRegion {
                sectors: [0x4000, 0x6000],
                sector_size: 0x4000,
            },
            // Past the end of the 64 KB flash.
            JournalRegion {
                sectors: [0x8000, 0xC000 + 16],
                sector_size: 0x4000,
            },
            // Not record-aligned.
            JournalRegion {
                sectors: [0x4008, 0x8000],
                sector_size: 0x4000,
            },
            JournalRegion {
                sectors: [0x4000, 0x8000],
                sector_size: 0x4004,
            },
            JournalRegion {
                sectors: [0x4000, u32::MAX - 15],
                sector_size: 0x4000,
            },
        ] {
            assert!(
                matches!(
                    BootJournal::open(MemFlash::new(), region),
                    Err(JournalError::BadRegion)
                ),
                "{region:?}"
            );
        }
    }

    fn any_kind() -> impl Strategy<Value = RecordKind> {
        let slot = prop_oneof![Just(A), Just(B)];
        prop_oneof![
            slot.clone().prop_map(|slot| Pending { slot }),
            slot.clone().prop_map(|slot| Attempt { slot }),
            slot.clone().prop_map(|slot| Confirmed { slot }),
            slot.clone().prop_map(|slot| Reverted { slot }),
            slot.prop_map(|slot| Rejected { slot }),
            (0u32..5).prop_map(|value| SecurityCounter { value }),
        ]
    }

    proptest! {
        #[test]
        fn a_snapshot_replays_to_the_state_it_was_taken_from(
            kinds in proptest::collection::vec(any_kind(), 0..60)
        ) {
            let state = crate::journal::replay((0..).zip(&kinds).map(|(seq, &k)| Record::new(seq, k)));
            let again = crate::journal::replay(
                (100..).zip(snapshot(&state)).map(|(seq, k)| Record::new(seq, k)),
            );
            prop_assert!(again.equivalent(&state), "{state:?} vs {again:?}");
            // Slot 0 is the commit: always the floor.
            prop_assert_eq!(
                snapshot(&state).next(),
                Some(SecurityCounter { value: state.security_counter() })
            );
        }
    }

    #[test]
    fn every_slot_id_has_a_distinct_snapshot_record() {
        // Both slots rejected, nothing else: two Rejected records after the floor.
        let state = crate::journal::replay([
            Record::new(1, Rejected { slot: A }),
            Record::new(2, Rejected { slot: B }),
        ]);
        let kinds: Vec<_> = snapshot(&state).collect();
        assert_eq!(
            kinds,
            [
                SecurityCounter { value: 0 },
                Rejected { slot: SlotId::A },
                Rejected { slot: SlotId::B }
            ]
        );
    }
}
