//! The boot decision: from the journal's state and a way to verify a slot, which slot runs,
//! in which mode, and which record must be in the journal first. DESIGN.md "Boot state machine".
//!
//! [`decide`] is pure apart from the `verify` callback, so every branch is testable without
//! flash or images. [`boot`] is what the bootloader calls at every reset: open the journal,
//! decide, append the record, and hand back what to jump to. It never fails and never panics:
//! the worst outcome is [`BootAction::Recovery`].
//!
//! 1. A pending slot with attempts left that verifies: append `Attempt`, jump to it on trial.
//!    The attempt is durable *before* the jump, so a hang or crash that resets into the
//!    bootloader has been counted; if the append fails, the trial does not run (an uncounted
//!    trial could crash-loop forever) and the fallback below runs instead.
//! 2. A pending slot out of attempts: append `Reverted` (without reading it). A pending slot
//!    that does not verify, or whose security counter is below the floor: append `Rejected`.
//!    Then fall back.
//! 3. The confirmed slot, if it verifies: jump, nothing journaled (so the journal does not grow
//!    with every boot). Exception: if its security counter is above the floor, append
//!    `SecurityCounter` once, completing a confirmation cut short between its two records.
//! 4. Otherwise the other slot(s), unless rejected, if one verifies: jump, "unconfirmed"
//!    (the application should confirm it; nothing else is journaled).
//! 5. Nothing verifies: [`BootAction::Recovery`]; never a halt.

use crate::journal::{BootJournal, BootState, JournalError, Record, RecordKind, Stage};
use crate::layout::FlashLayout;
use crate::verify::{verify_slot, BootError, VerifiedSlot};
use embedded_storage::nor_flash::NorFlash;
use fota_protocol::image::TrustedKey;
use fota_protocol::SlotId;

/// How the image that runs came to be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    /// A pending image on trial; `attempt` counts this boot (1 = first). It must confirm itself
    /// before [`MAX_TRIAL_ATTEMPTS`](crate::journal::MAX_TRIAL_ATTEMPTS) boots or it is reverted.
    Trial {
        /// Which trial boot this is, from 1.
        attempt: u8,
    },
    /// The confirmed image.
    Confirmed,
    /// Neither confirmed nor on trial: the confirmed image is missing or invalid (or nothing was
    /// ever confirmed) and this one verified. It should confirm itself once it works.
    Unconfirmed,
}

impl BootMode {
    /// How the boot logs name it: "trial, attempt 2", "confirmed", "unconfirmed".
    pub fn label(self) -> &'static str {
        match self {
            BootMode::Trial { attempt: 1 } => "trial, attempt 1",
            BootMode::Trial { attempt: 2 } => "trial, attempt 2",
            BootMode::Trial { attempt: 3 } => "trial, attempt 3",
            // MAX_TRIAL_ATTEMPTS is 3; a larger number would be a bug worth seeing.
            BootMode::Trial { .. } => "trial, attempt > 3",
            BootMode::Confirmed => "confirmed",
            BootMode::Unconfirmed => "unconfirmed",
        }
    }
}

/// The image the bootloader jumps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTarget {
    /// Trial, confirmed or unconfirmed.
    pub mode: BootMode,
    /// The verified image and its slot.
    pub image: VerifiedSlot,
}

impl BootTarget {
    /// The slot that runs.
    pub fn slot(&self) -> SlotId {
        self.image.slot
    }
}

/// What the bootloader does after the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAction {
    /// Start the watchdog, set VTOR and MSP, jump.
    Jump(BootTarget),
    /// No slot holds a runnable image: keep the modem link and ask the server for one.
    Recovery,
}

impl BootAction {
    /// The target, if it jumps.
    pub fn target(&self) -> Option<&BootTarget> {
        match self {
            BootAction::Jump(target) => Some(target),
            BootAction::Recovery => None,
        }
    }
}

/// Why each slot was refused during a decision, for the boot log and the device's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refusals([Option<BootError>; 2]);

impl Refusals {
    const fn index(slot: SlotId) -> usize {
        match slot {
            SlotId::A => 0,
            SlotId::B => 1,
        }
    }

    /// Why `slot` was refused, if it was.
    pub fn get(&self, slot: SlotId) -> Option<BootError> {
        self.0[Self::index(slot)]
    }

    fn set(&mut self, slot: SlotId, error: BootError) {
        self.0[Self::index(slot)] = Some(error);
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The record to append before acting. For `Attempt`, the trial may only run if the
    /// append succeeds ([`boot`] takes care of that).
    pub record: Option<RecordKind>,
    /// What to do.
    pub action: BootAction,
    /// Slots refused on the way, and why.
    pub refused: Refusals,
}

/// Decide which slot runs (see the [module docs](self) for the rules).
///
/// `verify` checks a slot's image (hash, signature, slot); the security counter is checked
/// here, against `state`'s floor. Each slot is verified at most once.
pub fn decide(
    state: &BootState,
    verify: impl FnMut(SlotId) -> Result<VerifiedSlot, BootError>,
) -> Decision {
    decide_for(Stage::Application, state, verify)
}

/// [`decide`] over the slots of `stage`: the application slots (what the stage-1 bootloader
/// decides) or the stage-1 slots (what stage-0 decides, [`crate::stage0`]). The rules are the
/// same; the records are `stage`'s kinds.
pub fn decide_for(
    stage: Stage,
    state: &BootState,
    mut verify: impl FnMut(SlotId) -> Result<VerifiedSlot, BootError>,
) -> Decision {
    let mut refused = Refusals::default();
    let track = state.track(stage);
    let Some(pending) = track.pending() else {
        return fallback(stage, state, None, &mut verify, refused);
    };
    let kind = if track.trial_exhausted() {
        stage.reverted(pending)
    } else {
        match verify(pending).and_then(|image| image.check_floor(track.floor())) {
            Ok(image) => {
                return Decision {
                    record: Some(stage.attempt(pending)),
                    action: BootAction::Jump(BootTarget {
                        mode: BootMode::Trial {
                            attempt: track.attempts().saturating_add(1),
                        },
                        image,
                    }),
                    refused,
                };
            }
            Err(e) => {
                refused.set(pending, e);
                stage.rejected(pending)
            }
        }
    };
    // Decide the fallback from the state as it will be once the record is in.
    let mut after = *state;
    after.apply(&Record::new(state.next_sequence(), kind));
    let mut decision = fallback(stage, &after, None, &mut verify, refused);
    decision.record = Some(kind);
    decision
}

/// Steps 3-5: the confirmed slot, then any other slot that is not rejected (nor `exclude`d).
pub(crate) fn fallback(
    stage: Stage,
    state: &BootState,
    exclude: Option<SlotId>,
    // `dyn`: one copy of this function in a bootloader however many closures call it (each
    // monomorphized copy cost flash that stage-0's 32 KB - 512 B has little of).
    verify: &mut dyn FnMut(SlotId) -> Result<VerifiedSlot, BootError>,
    mut refused: Refusals,
) -> Decision {
    let state = state.track(stage);
    let floor = state.floor();
    let confirmed = state.confirmed().filter(|&c| Some(c) != exclude);
    if let Some(slot) = confirmed {
        match verify(slot).and_then(|image| image.check_floor(floor)) {
            Ok(image) => {
                let record = (image.security_counter() > floor)
                    .then(|| stage.floor(image.security_counter()));
                return Decision {
                    record,
                    action: BootAction::Jump(BootTarget {
                        mode: BootMode::Confirmed,
                        image,
                    }),
                    refused,
                };
            }
            Err(e) => refused.set(slot, e),
        }
    }
    // The slot after the confirmed one first ("the other slot"); A first when none is.
    let start = state.confirmed().map_or(SlotId::A, SlotId::other);
    for slot in [start, start.other()] {
        if Some(slot) == state.confirmed()
            || Some(slot) == exclude
            || Some(slot) == state.pending()
            || state.is_rejected(slot)
        {
            continue;
        }
        match verify(slot).and_then(|image| image.check_floor(floor)) {
            Ok(image) => {
                return Decision {
                    record: None,
                    action: BootAction::Jump(BootTarget {
                        mode: BootMode::Unconfirmed,
                        image,
                    }),
                    refused,
                }
            }
            Err(e) => refused.set(slot, e),
        }
    }
    Decision {
        record: None,
        action: BootAction::Recovery,
        refused,
    }
}

/// What [`boot`] did, for the boot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOutcome<E> {
    /// Jump or recovery.
    pub action: BootAction,
    /// The journal's state before this boot (empty if it could not be read).
    pub state: BootState,
    /// The record appended this boot, if any.
    pub appended: Option<Record>,
    /// Slots refused, and why.
    pub refused: Refusals,
    /// The journal could not be read or the record not appended.
    pub journal_error: Option<JournalError<E>>,
}

/// Everything the bootloader does between reset and jump, over the whole flash: open the
/// journal, [`decide`], append the record, and return the action. Never fails.
///
/// If the journal cannot be read, the decision is made from the empty state (any slot that
/// verifies runs, unconfirmed, and nothing is journaled). If the `Attempt` record cannot be
/// appended, the trial does not run and the confirmed (or other) slot runs instead. A failed
/// `Reverted`/`Rejected` append changes nothing about this boot: the next boot decides the same.
pub fn boot<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    keys: &[TrustedKey],
) -> BootOutcome<F::Error> {
    let mut journal = match BootJournal::open(&mut *flash, layout.journal) {
        Ok(journal) => journal,
        Err(e) => {
            let state = BootState::new();
            let decision = fallback(
                Stage::Application,
                &state,
                None,
                &mut |slot| verify_slot(flash, layout.slot_offset(slot), slot, keys),
                Refusals::default(),
            );
            return BootOutcome {
                action: decision.action,
                state,
                appended: None,
                refused: decision.refused,
                journal_error: Some(e),
            };
        }
    };
    let state = *journal.state();
    let mut verify = |slot| {
        verify_slot(
            &mut **journal.flash_mut(),
            layout.slot_offset(slot),
            slot,
            keys,
        )
    };
    let decision = decide(&state, &mut verify);
    let mut outcome = BootOutcome {
        action: decision.action,
        state,
        appended: None,
        refused: decision.refused,
        journal_error: None,
    };
    let Some(kind) = decision.record else {
        return outcome;
    };
    match journal.append(kind) {
        Ok(record) => outcome.appended = Some(record),
        Err(e) => {
            outcome.journal_error = Some(e);
            if let RecordKind::Attempt { slot } = kind {
                let decision = fallback(
                    Stage::Application,
                    &state,
                    Some(slot),
                    &mut |slot| {
                        verify_slot(
                            &mut **journal.flash_mut(),
                            layout.slot_offset(slot),
                            slot,
                            keys,
                        )
                    },
                    outcome.refused,
                );
                outcome.action = decision.action;
                outcome.refused = decision.refused;
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{replay, MAX_TRIAL_ATTEMPTS};
    use fota_protocol::image::{Digest, ImageFlags, ImageHeader, ImageVersion, VerifiedImage};
    use fota_protocol::SlotId::{A, B};
    use RecordKind::*;

    /// What each slot holds: an image with this security counter, or nothing valid.
    #[derive(Clone, Copy)]
    struct Slots {
        a: Option<u32>,
        b: Option<u32>,
    }

    fn image(slot: SlotId, counter: u32) -> VerifiedSlot {
        let start = slot.partition().start;
        VerifiedSlot {
            stage: Stage::Application,
            slot,
            image: VerifiedImage {
                header: ImageHeader {
                    load_addr: start,
                    hdr_size: 0x200,
                    protect_tlv_size: 0,
                    img_size: 1024,
                    flags: ImageFlags(ImageFlags::ROM_FIXED),
                    version: ImageVersion::new(1, 0, 0, counter),
                },
                digest: Digest::default(),
                security_counter: counter,
                key_index: 0,
                total_len: 2048,
                vector_table: Some([0x2002_0000, start + 0x301]),
                component: fota_protocol::image::Component::Application,
            },
            initial_sp: 0x2002_0000,
            reset_vector: start + 0x301,
        }
    }

    /// Decide over `slots` after `kinds`, and list the slots verified, in order.
    fn run(kinds: &[RecordKind], slots: Slots) -> (Decision, Vec<SlotId>) {
        let state = replay((1..).zip(kinds).map(|(seq, &k)| Record::new(seq, k)));
        let mut verified = Vec::new();
        let decision = decide(&state, |slot| {
            verified.push(slot);
            let counter = match slot {
                A => slots.a,
                B => slots.b,
            };
            counter
                .map(|c| image(slot, c))
                .ok_or(BootError::Image(fota_protocol::ImageError::BadSignature))
        });
        (decision, verified)
    }

    fn jumped(d: &Decision) -> Option<(SlotId, BootMode)> {
        d.action.target().map(|t| (t.slot(), t.mode))
    }

    const FACTORY: [RecordKind; 2] = [SecurityCounter { value: 1 }, Confirmed { slot: A }];
    const BOTH: Slots = Slots {
        a: Some(1),
        b: Some(2),
    };

    fn after_factory(more: &[RecordKind]) -> Vec<RecordKind> {
        let mut kinds = FACTORY.to_vec();
        kinds.extend_from_slice(more);
        kinds
    }

    #[test]
    fn a_confirmed_boot_is_not_journaled() {
        let (d, verified) = run(&FACTORY, BOTH);
        assert_eq!(jumped(&d), Some((A, BootMode::Confirmed)));
        assert_eq!(d.record, None);
        assert_eq!(verified, [A], "the other slot is not even read");
    }

    #[test]
    fn a_pending_slot_gets_an_attempt_before_the_jump() {
        for tried in 0..MAX_TRIAL_ATTEMPTS {
            let mut kinds = after_factory(&[Pending { slot: B }]);
            kinds.extend(std::iter::repeat_n(Attempt { slot: B }, tried.into()));
            let (d, _) = run(&kinds, BOTH);
            assert_eq!(d.record, Some(Attempt { slot: B }));
            assert_eq!(
                jumped(&d),
                Some((B, BootMode::Trial { attempt: tried + 1 }))
            );
        }
    }

    #[test]
    fn out_of_attempts_reverts_without_reading_the_slot() {
        let (d, verified) = run(
            &after_factory(&[
                Pending { slot: B },
                Attempt { slot: B },
                Attempt { slot: B },
                Attempt { slot: B },
            ]),
            BOTH,
        );
        assert_eq!(d.record, Some(Reverted { slot: B }));
        assert_eq!(jumped(&d), Some((A, BootMode::Confirmed)));
        assert_eq!(verified, [A]);
    }

    #[test]
    fn an_invalid_or_rolled_back_pending_image_is_rejected() {
        for slots in [
            Slots {
                a: Some(1),
                b: None,
            },
            // Signed, but below the floor of 1 set at the factory.
            Slots {
                a: Some(1),
                b: Some(0),
            },
        ] {
            let (d, verified) = run(&after_factory(&[Pending { slot: B }]), slots);
            assert_eq!(d.record, Some(Rejected { slot: B }));
            assert_eq!(jumped(&d), Some((A, BootMode::Confirmed)));
            assert!(d.refused.get(B).is_some());
            assert_eq!(verified, [B, A]);
        }
        let (d, _) = run(
            &after_factory(&[Pending { slot: B }]),
            Slots {
                a: Some(1),
                b: Some(0),
            },
        );
        assert_eq!(
            d.refused.get(B),
            Some(BootError::SecurityCounter { image: 0, floor: 1 })
        );
    }

    #[test]
    fn an_invalid_confirmed_slot_falls_back_to_the_other_unless_rejected() {
        let broken_a = Slots {
            a: None,
            b: Some(2),
        };
        let (d, _) = run(&FACTORY, broken_a);
        assert_eq!(jumped(&d), Some((B, BootMode::Unconfirmed)));
        assert_eq!(d.record, None);
        assert!(d.refused.get(A).is_some());

        // B was reverted earlier: it stays out even though it verifies.
        let (d, _) = run(
            &after_factory(&[Pending { slot: B }, Rejected { slot: B }]),
            broken_a,
        );
        assert_eq!(d.action, BootAction::Recovery);
        // A pending B that fails verification, with A broken too: nothing runs.
        let (d, _) = run(
            &after_factory(&[Pending { slot: B }]),
            Slots { a: None, b: None },
        );
        assert_eq!(d.record, Some(Rejected { slot: B }));
        assert_eq!(d.action, BootAction::Recovery);
    }

    #[test]
    fn nothing_valid_is_recovery_never_a_halt() {
        for kinds in [&[][..], &FACTORY[..]] {
            let (d, verified) = run(kinds, Slots { a: None, b: None });
            assert_eq!(d.action, BootAction::Recovery);
            assert_eq!(d.record, None);
            assert_eq!(verified.len(), 2, "each slot is tried once");
        }
    }

    #[test]
    fn an_empty_journal_runs_any_valid_image_unconfirmed() {
        let (d, _) = run(&[], BOTH);
        assert_eq!(jumped(&d), Some((A, BootMode::Unconfirmed)));
        let (d, _) = run(
            &[],
            Slots {
                a: None,
                b: Some(0),
            },
        );
        assert_eq!(jumped(&d), Some((B, BootMode::Unconfirmed)));
    }

    #[test]
    fn rollback_below_the_floor_never_runs() {
        // A confirmed at counter 1, floor raised to 2 by a later confirmation of B that was
        // then overwritten: A is refused.
        let (d, _) = run(
            &[Confirmed { slot: A }, SecurityCounter { value: 2 }],
            Slots {
                a: Some(1),
                b: None,
            },
        );
        assert_eq!(d.action, BootAction::Recovery);
        assert_eq!(
            d.refused.get(A),
            Some(BootError::SecurityCounter { image: 1, floor: 2 })
        );
    }

    #[test]
    fn a_confirmed_image_above_the_floor_raises_it_once() {
        // Confirmed{B} made it to flash, the SecurityCounter after it did not.
        let kinds = after_factory(&[
            Pending { slot: B },
            Attempt { slot: B },
            Confirmed { slot: B },
        ]);
        let (d, _) = run(&kinds, BOTH);
        assert_eq!(jumped(&d), Some((B, BootMode::Confirmed)));
        assert_eq!(d.record, Some(SecurityCounter { value: 2 }));
        let mut kinds = kinds;
        kinds.push(SecurityCounter { value: 2 });
        let (d, _) = run(&kinds, BOTH);
        assert_eq!(d.record, None);
    }
}
