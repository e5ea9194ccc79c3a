//! Replaying the journal: the valid records, in journal order, folded into a [`BootState`].
//!
//! Replay is a pure function of the records, so the state after any power cut is whatever the
//! records that made it to flash say, and the bootloader and the application (which reads the
//! journal to report its boot state) cannot disagree about it.
//!
//! # Semantics
//!
//! Starting from the empty state (nothing confirmed, nothing pending, no attempts, nothing
//! rejected, security counter 0), each record is applied in order:
//!
//! - `Pending{s}`: `s` becomes the pending slot with 0 attempts (a new trial period, even if `s`
//!   was already pending); `s` is no longer rejected; if `s` was the confirmed slot, nothing is
//!   confirmed any more (its image has been overwritten).
//! - `Attempt{s}`: if `s` is the pending slot, one more attempt (saturating at 255, never
//!   wrapping to a fresh trial); otherwise nothing.
//! - `Confirmed{s}`: `s` becomes the confirmed slot and is no longer rejected (the application's
//!   own word that it runs and reaches the server is the strongest evidence there is); if `s`
//!   was pending, nothing is pending and attempts return to 0. A pending *other* slot stays
//!   pending.
//! - `Reverted{s}` and `Rejected{s}`: `s` is rejected until a later `Pending{s}` (or
//!   `Confirmed{s}`); if `s` was pending, nothing is pending and attempts return to 0; if `s` was
//!   confirmed, nothing is confirmed. The two differ only in why (out of attempts, failed
//!   verification), which the device reports.
//! - `SecurityCounter{v}`: the counter becomes `max(current, v)`; it never goes down.
//!
//! The stage-1 kinds (`Stage1Pending`, `Stage1Attempt`, `Stage1Confirmed`, `Stage1Reverted`,
//! `Stage1Rejected`, `Stage1Floor`) do the same to the stage-1 slots ([`BootState::stage1`]),
//! and the two pairs of slots never affect each other.
//!
//! Sequence numbers must increase: a record whose sequence is not greater than the last one
//! applied is ignored. Such a record can only come from a stale journal sector read in the wrong
//! order, or a bug; applying it would move the state backwards.
//!
//! Corrupt and erased records are not records: the caller skips them before replay (see
//! [`decode`](super::decode)).

use super::record::{Record, RecordKind, Stage};
use fota_protocol::SlotId;

/// Trial boots a pending image gets before the bootloader reverts it: a hang or crash resets
/// into the bootloader and counts as one, so a bad image costs at most this many reboots.
pub const MAX_TRIAL_ATTEMPTS: u8 = 3;

/// A set of slots (at most both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SlotSet(u8);

impl SlotSet {
    /// No slot.
    pub const EMPTY: SlotSet = SlotSet(0);

    const fn bit(slot: SlotId) -> u8 {
        match slot {
            SlotId::A => 1,
            SlotId::B => 2,
        }
    }

    /// Whether `slot` is in the set.
    pub const fn contains(self, slot: SlotId) -> bool {
        self.0 & Self::bit(slot) != 0
    }

    /// Add `slot`.
    pub fn insert(&mut self, slot: SlotId) {
        self.0 |= Self::bit(slot);
    }

    /// Remove `slot`.
    pub fn remove(&mut self, slot: SlotId) {
        self.0 &= !Self::bit(slot);
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The slots in the set, A first.
    pub fn iter(self) -> impl Iterator<Item = SlotId> {
        SlotId::ALL.into_iter().filter(move |&s| self.contains(s))
    }
}

impl FromIterator<SlotId> for SlotSet {
    fn from_iter<I: IntoIterator<Item = SlotId>>(iter: I) -> Self {
        let mut set = SlotSet::EMPTY;
        for slot in iter {
            set.insert(slot);
        }
        set
    }
}

/// What the journal says about one pair of slots (the application slots, or the stage-1
/// slots): confirmed, pending, attempts, rejected, floor. Both pairs follow the same rules (see
/// the [module docs](self)); only the record kinds differ ([`Stage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SlotTrack {
    confirmed: Option<SlotId>,
    pending: Option<SlotId>,
    attempts: u8,
    rejected: SlotSet,
    floor: u32,
}

impl SlotTrack {
    /// Nothing confirmed, pending or rejected, floor 0.
    pub const fn new() -> Self {
        Self {
            confirmed: None,
            pending: None,
            attempts: 0,
            rejected: SlotSet::EMPTY,
            floor: 0,
        }
    }

    fn pending_record(&mut self, slot: SlotId) {
        self.pending = Some(slot);
        self.attempts = 0;
        self.rejected.remove(slot);
        if self.confirmed == Some(slot) {
            self.confirmed = None;
        }
    }

    fn attempt(&mut self, slot: SlotId) {
        if self.pending == Some(slot) {
            self.attempts = self.attempts.saturating_add(1);
        }
    }

    fn confirm(&mut self, slot: SlotId) {
        self.confirmed = Some(slot);
        self.rejected.remove(slot);
        self.clear_pending(slot);
    }

    fn reject(&mut self, slot: SlotId) {
        self.rejected.insert(slot);
        self.clear_pending(slot);
        if self.confirmed == Some(slot) {
            self.confirmed = None;
        }
    }

    fn raise_floor(&mut self, value: u32) {
        self.floor = self.floor.max(value);
    }

    fn clear_pending(&mut self, slot: SlotId) {
        if self.pending == Some(slot) {
            self.pending = None;
            self.attempts = 0;
        }
    }

    /// The confirmed slot, if it still is.
    pub const fn confirmed(&self) -> Option<SlotId> {
        self.confirmed
    }

    /// The slot on trial, if any.
    pub const fn pending(&self) -> Option<SlotId> {
        self.pending
    }

    /// Trial boots of the pending slot since it became pending (0 when nothing is pending).
    pub const fn attempts(&self) -> u8 {
        self.attempts
    }

    /// Whether the pending slot has used up its [`MAX_TRIAL_ATTEMPTS`].
    pub const fn trial_exhausted(&self) -> bool {
        self.pending.is_some() && self.attempts >= MAX_TRIAL_ATTEMPTS
    }

    /// Slots reverted or rejected and not re-installed or confirmed since.
    pub const fn rejected(&self) -> SlotSet {
        self.rejected
    }

    /// Whether `slot` is rejected.
    pub const fn is_rejected(&self, slot: SlotId) -> bool {
        self.rejected.contains(slot)
    }

    /// The lowest security counter an image in these slots must carry.
    pub const fn floor(&self) -> u32 {
        self.floor
    }
}

/// What the journal says about the slots. Built only by replaying records, so its fields are
/// always a state some sequence of records leads to. The getters without a prefix are about the
/// application slots; [`stage1`](Self::stage1) is stage-0's view of the stage-1 slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BootState {
    app: SlotTrack,
    stage1: SlotTrack,
    last_sequence: Option<u32>,
}

impl BootState {
    /// The state of an empty journal: nothing confirmed, pending or rejected, counters 0.
    pub const fn new() -> Self {
        Self {
            app: SlotTrack::new(),
            stage1: SlotTrack::new(),
            last_sequence: None,
        }
    }

    /// Apply one record (see the [module docs](self) for the exact effect of each kind).
    /// Returns `false` if it was ignored because its sequence number does not follow the
    /// last one applied.
    pub fn apply(&mut self, record: &Record) -> bool {
        if self
            .last_sequence
            .is_some_and(|last| record.sequence <= last)
        {
            return false;
        }
        self.last_sequence = Some(record.sequence);
        let (app, stage1) = (&mut self.app, &mut self.stage1);
        match record.kind {
            RecordKind::Pending { slot } => app.pending_record(slot),
            RecordKind::Attempt { slot } => app.attempt(slot),
            RecordKind::Confirmed { slot } => app.confirm(slot),
            RecordKind::Reverted { slot } | RecordKind::Rejected { slot } => app.reject(slot),
            RecordKind::SecurityCounter { value } => app.raise_floor(value),
            RecordKind::Stage1Pending { slot } => stage1.pending_record(slot),
            RecordKind::Stage1Attempt { slot } => stage1.attempt(slot),
            RecordKind::Stage1Confirmed { slot } => stage1.confirm(slot),
            RecordKind::Stage1Reverted { slot } | RecordKind::Stage1Rejected { slot } => {
                stage1.reject(slot)
            }
            RecordKind::Stage1Floor { value } => stage1.raise_floor(value),
        }
        true
    }

    /// The application slots.
    pub const fn app(&self) -> &SlotTrack {
        &self.app
    }

    /// The stage-1 slots (stage-0's records).
    pub const fn stage1(&self) -> &SlotTrack {
        &self.stage1
    }

    /// The slots of `stage`.
    pub const fn track(&self, stage: Stage) -> &SlotTrack {
        match stage {
            Stage::Application => &self.app,
            Stage::Stage1 => &self.stage1,
        }
    }

    /// The slot whose image the application confirmed, if it still is.
    pub const fn confirmed(&self) -> Option<SlotId> {
        self.app.confirmed
    }

    /// The slot on trial, if any.
    pub const fn pending(&self) -> Option<SlotId> {
        self.app.pending
    }

    /// Trial boots of the pending slot since it became pending (0 when nothing is pending).
    pub const fn attempts(&self) -> u8 {
        self.app.attempts
    }

    /// Whether the pending slot has used up its [`MAX_TRIAL_ATTEMPTS`]: the bootloader must
    /// append `Reverted` rather than try it again.
    pub const fn trial_exhausted(&self) -> bool {
        self.app.trial_exhausted()
    }

    /// Slots reverted or rejected and not re-installed or confirmed since.
    pub const fn rejected(&self) -> SlotSet {
        self.app.rejected
    }

    /// Whether `slot` is rejected.
    pub const fn is_rejected(&self, slot: SlotId) -> bool {
        self.app.rejected.contains(slot)
    }

    /// The highest security counter recorded: images below it must not run.
    pub const fn security_counter(&self) -> u32 {
        self.app.floor
    }

    /// Whether `other` describes the same slots: equal in everything but sequence numbering.
    /// A compaction rewrites the state as fresh records with new sequence numbers, so the state
    /// it replays to is equivalent to, not equal to, the one it was written from.
    pub fn equivalent(&self, other: &BootState) -> bool {
        self.app == other.app && self.stage1 == other.stage1
    }

    /// Sequence number of the last record applied, `None` for an empty journal.
    pub const fn last_sequence(&self) -> Option<u32> {
        self.last_sequence
    }

    /// The sequence number the next appended record must carry. Replayed records carry at
    /// most [`MAX_SEQUENCE`](super::record::MAX_SEQUENCE), so this never saturates.
    pub const fn next_sequence(&self) -> u32 {
        match self.last_sequence {
            Some(last) => last.saturating_add(1),
            None => 0,
        }
    }
}

/// Fold the valid records of the journal, in journal order, into the state they describe.
pub fn replay<I>(records: I) -> BootState
where
    I: IntoIterator<Item = Record>,
{
    let mut state = BootState::new();
    for record in records {
        state.apply(&record);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{decode, Decoded, RECORD_LEN};
    use RecordKind::*;
    use SlotId::{A, B};

    /// Records numbered from 1 in the given order.
    fn numbered(kinds: &[RecordKind]) -> Vec<Record> {
        (1..)
            .zip(kinds)
            .map(|(seq, &kind)| Record::new(seq, kind))
            .collect()
    }

    fn run(kinds: &[RecordKind]) -> BootState {
        replay(numbered(kinds))
    }

    /// A device out of the factory: image in A, confirmed, counter 1.
    const FACTORY: [RecordKind; 2] = [SecurityCounter { value: 1 }, Confirmed { slot: A }];

    fn after_factory(more: &[RecordKind]) -> BootState {
        let mut kinds = FACTORY.to_vec();
        kinds.extend_from_slice(more);
        run(&kinds)
    }

    #[test]
    fn empty_journal() {
        let s = replay([]);
        assert_eq!(s, BootState::new());
        assert_eq!(s.confirmed(), None);
        assert_eq!(s.pending(), None);
        assert!(s.rejected().is_empty());
        assert_eq!(s.security_counter(), 0);
        assert_eq!(s.next_sequence(), 0);
    }

    #[test]
    fn install_attempt_confirm() {
        let s = after_factory(&[Pending { slot: B }]);
        assert_eq!(
            (s.confirmed(), s.pending(), s.attempts()),
            (Some(A), Some(B), 0)
        );

        let s = after_factory(&[Pending { slot: B }, Attempt { slot: B }]);
        assert_eq!((s.pending(), s.attempts()), (Some(B), 1));
        assert!(!s.trial_exhausted());

        let s = after_factory(&[
            Pending { slot: B },
            Attempt { slot: B },
            Confirmed { slot: B },
            SecurityCounter { value: 2 },
        ]);
        assert_eq!(
            (s.confirmed(), s.pending(), s.attempts()),
            (Some(B), None, 0)
        );
        assert!(s.rejected().is_empty());
        assert_eq!(s.security_counter(), 2);
        assert_eq!(s.last_sequence(), Some(6));
        assert_eq!(s.next_sequence(), 7);
    }

    #[test]
    fn install_three_attempts_revert() {
        let tries = [
            Pending { slot: B },
            Attempt { slot: B },
            Attempt { slot: B },
        ];
        let s = after_factory(&tries);
        assert_eq!(s.attempts(), 2);
        assert!(!s.trial_exhausted());

        let mut three = tries.to_vec();
        three.push(Attempt { slot: B });
        let s = after_factory(&three);
        assert_eq!(s.attempts(), MAX_TRIAL_ATTEMPTS);
        assert!(s.trial_exhausted());
        assert_eq!(s.pending(), Some(B));

        three.push(Reverted { slot: B });
        let s = after_factory(&three);
        assert_eq!(
            (s.confirmed(), s.pending(), s.attempts()),
            (Some(A), None, 0)
        );
        assert!(s.is_rejected(B));
        assert!(!s.is_rejected(A));
        assert!(!s.trial_exhausted());
        // Nothing raised the counter (that waits for a confirmation), so A's image still runs.
        assert_eq!(s.security_counter(), 1);
    }

    #[test]
    fn an_invalid_pending_image_is_rejected_without_attempts() {
        let s = after_factory(&[Pending { slot: B }, Rejected { slot: B }]);
        assert_eq!((s.confirmed(), s.pending()), (Some(A), None));
        assert_eq!(s.rejected().iter().collect::<Vec<_>>(), [B]);
    }

    #[test]
    fn a_rejected_slot_can_be_pended_again() {
        let s = after_factory(&[
            Pending { slot: B },
            Attempt { slot: B },
            Attempt { slot: B },
            Attempt { slot: B },
            Reverted { slot: B },
            Pending { slot: B },
        ]);
        assert!(!s.is_rejected(B));
        assert_eq!((s.pending(), s.attempts()), (Some(B), 0));

        let s = after_factory(&[
            Pending { slot: B },
            Rejected { slot: B },
            Pending { slot: B },
            Attempt { slot: B },
            Confirmed { slot: B },
        ]);
        assert_eq!((s.confirmed(), s.pending()), (Some(B), None));
        assert!(s.rejected().is_empty());
    }

    #[test]
    fn pending_again_starts_a_new_trial_period() {
        let s = after_factory(&[
            Pending { slot: B },
            Attempt { slot: B },
            Attempt { slot: B },
            Pending { slot: B },
            Attempt { slot: B },
        ]);
        assert_eq!(s.attempts(), 1);
    }

    #[test]
    fn attempts_only_count_for_the_pending_slot() {
        // A trial boot logged for a slot that is not on trial counts for nothing.
        let s = after_factory(&[Attempt { slot: A }, Attempt { slot: B }]);
        assert_eq!((s.pending(), s.attempts()), (None, 0));
        let s = after_factory(&[Pending { slot: B }, Attempt { slot: A }]);
        assert_eq!((s.pending(), s.attempts()), (Some(B), 0));
        // Saturates rather than wrapping to 0 (which would grant a fresh trial).
        let mut kinds = vec![Pending { slot: B }];
        kinds.extend([Attempt { slot: B }; 300]);
        let s = after_factory(&kinds);
        assert_eq!(s.attempts(), u8::MAX);
        assert!(s.trial_exhausted());
    }

    #[test]
    fn confirming_one_slot_leaves_the_other_on_trial() {
        let s = after_factory(&[Pending { slot: B }, Confirmed { slot: A }]);
        assert_eq!((s.confirmed(), s.pending()), (Some(A), Some(B)));
    }

    #[test]
    fn overwriting_or_rejecting_the_confirmed_slot_unconfirms_it() {
        let s = after_factory(&[Pending { slot: A }]);
        assert_eq!((s.confirmed(), s.pending()), (None, Some(A)));
        let s = after_factory(&[Rejected { slot: A }]);
        assert_eq!(s.confirmed(), None);
        assert!(s.is_rejected(A));
        // Both rejected: recovery mode, until a new image is pended.
        let s = after_factory(&[
            Pending { slot: B },
            Rejected { slot: B },
            Rejected { slot: A },
        ]);
        assert_eq!((s.confirmed(), s.pending()), (None, None));
        assert_eq!(s.rejected(), [A, B].into_iter().collect());
    }

    #[test]
    fn security_counter_never_goes_down() {
        let s = run(&[
            SecurityCounter { value: 5 },
            SecurityCounter { value: 3 },
            SecurityCounter { value: 4 },
        ]);
        assert_eq!(s.security_counter(), 5);
        let s = run(&[
            SecurityCounter { value: u32::MAX },
            SecurityCounter { value: 0 },
        ]);
        assert_eq!(s.security_counter(), u32::MAX);
    }

    #[test]
    fn stale_sequence_numbers_are_ignored() {
        let mut s = BootState::new();
        assert!(s.apply(&Record::new(10, Confirmed { slot: A })));
        assert!(s.apply(&Record::new(11, Pending { slot: B })));
        // A record from an older sector, read after the newer one.
        assert!(!s.apply(&Record::new(4, Confirmed { slot: B })));
        assert!(!s.apply(&Record::new(11, Reverted { slot: B })));
        assert_eq!((s.confirmed(), s.pending()), (Some(A), Some(B)));
        assert_eq!(s.next_sequence(), 12);
        // Gaps are fine: replay needs order, not contiguity.
        assert!(s.apply(&Record::new(13, Attempt { slot: B })));
        assert_eq!(s.attempts(), 1);
    }

    #[test]
    fn a_torn_record_in_the_journal_is_skipped() {
        let records = numbered(&[
            SecurityCounter { value: 1 },
            Confirmed { slot: A },
            Pending { slot: B },
            Attempt { slot: B },
            Attempt { slot: B },
        ]);
        let mut sector = [0xFF_u8; 8 * RECORD_LEN];
        for (i, r) in records.iter().enumerate() {
            sector[i * RECORD_LEN..(i + 1) * RECORD_LEN].copy_from_slice(&r.encode());
        }
        // The second attempt's append was cut after 6 bytes.
        let torn = 4 * RECORD_LEN;
        sector[torn + 6..torn + RECORD_LEN].fill(0xFF);

        let mut valid = Vec::new();
        for chunk in sector.chunks_exact(RECORD_LEN) {
            match decode(chunk.try_into().unwrap()) {
                Decoded::Erased => break,
                Decoded::Valid(r) => valid.push(r),
                Decoded::Corrupt(_) => continue,
            }
        }
        let s = replay(valid);
        assert_eq!(s, replay(records[..4].iter().copied()));
        assert_eq!((s.pending(), s.attempts()), (Some(B), 1));
    }
}
