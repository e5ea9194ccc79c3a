//! Stage-0: the immutable first stage, written and write-protected at the factory, never
//! updated. At every reset it picks one of the two stage-1 slots, verifies the stage-1 there
//! under its own compiled-in key, and jumps to it; stage-1 (the bootloader of
//! [`decision`](crate::decision)) then picks the application.
//!
//! Stage-0's memory is the same journal as stage-1's (sectors 2-3, the same records, the same
//! commit rule, so every write is power-cut safe, CRC'd, and a torn one is skipped): the stage-1
//! kinds `Stage1Pending`, `Stage1Attempt`, `Stage1Confirmed`, `Stage1Reverted`,
//! `Stage1Rejected` and `Stage1Floor` replay into [`BootState::stage1`], and its rules are the
//! application's ([`decide_for`] with [`Stage::Stage1`]):
//!
//! 1. A pending stage-1 with fewer than [`MAX_TRIAL_ATTEMPTS`](crate::journal::MAX_TRIAL_ATTEMPTS)
//!    attempts that verifies (signature, stage-1 mark for this slot, vector table inside the
//!    slot, security counter not below the stage-1 floor): append `Stage1Attempt` **before** the
//!    jump, then jump on trial. If the append fails, the trial does not run.
//! 2. Out of attempts: `Stage1Reverted`; does not verify: `Stage1Rejected`; then fall back.
//! 3. The confirmed stage-1, if it verifies (and `Stage1Floor` once if its counter is above the
//!    floor: the second half of a confirmation cut short).
//! 4. The other stage-1, unless rejected, "unconfirmed" (a factory journal that names none).
//! 5. Nothing: [`BootAction::Recovery`], a defined state the board keeps (watchdog fed, a pin
//!    and a message saying so); never a jump into anything that did not verify, never a halt.
//!
//! **Proving itself.** A stage-1 on trial proves itself when an application it booted confirms
//! during that boot: [`BootControl::confirm_stage1`](crate::control::BootControl::confirm_stage1),
//! which the application calls where it calls `mark_confirmed` (after reaching the server and
//! its self-test), appends `Stage1Confirmed` for the stage-1 on trial and raises the stage-1
//! floor to its counter. A stage-1 that hangs, faults, never reaches an application, or boots
//! one that never confirms is reset (watchdog, trial deadline) and counted by stage-0 at the next
//! reset; after three attempts stage-0 reverts to the confirmed stage-1.

use crate::decision::{decide_for, fallback, BootOutcome, Refusals};
use crate::journal::{BootJournal, BootState, RecordKind, Stage};
use crate::layout::FlashLayout;
use crate::verify::verify_stage1;
use embedded_storage::nor_flash::NorFlash;
use fota_protocol::image::TrustedKey;

/// What [`boot_stage1`] did, for stage-0's log: the same account as the bootloader's
/// [`BootOutcome`], whose `action` here jumps to a stage-1 (its [`BootTarget`](crate::BootTarget)
/// has a stage-1 image) or recovers, and whose `refused` lists stage-1 slots.
pub type Stage0Outcome<E> = BootOutcome<E>;

/// Everything stage-0 does between reset and jump: open the journal, decide which stage-1 runs,
/// append the record, and return the action. Never fails, never panics.
///
/// If the journal cannot be read, any stage-1 that verifies runs (confirmed first is unknown,
/// so A first) and nothing is journaled. If the `Stage1Attempt` cannot be appended, the trial
/// does not run and the confirmed (or other) stage-1 runs instead.
pub fn boot_stage1<F: NorFlash>(
    flash: &mut F,
    layout: &FlashLayout,
    keys: &[TrustedKey],
) -> Stage0Outcome<F::Error> {
    let stage = Stage::Stage1;
    let mut journal = match BootJournal::open(&mut *flash, layout.journal) {
        Ok(journal) => journal,
        Err(e) => {
            let state = BootState::new();
            let decision = fallback(
                stage,
                &state,
                None,
                &mut |slot| verify_stage1(flash, layout.stage1_offset(slot), slot, keys),
                Refusals::default(),
            );
            return Stage0Outcome {
                action: decision.action,
                state,
                appended: None,
                refused: decision.refused,
                journal_error: Some(e),
            };
        }
    };
    let state = *journal.state();
    // `&mut **`: the same `verify_stage1::<F>` as above, not a second copy for `&mut F`.
    let mut verify = |slot| {
        verify_stage1(
            &mut **journal.flash_mut(),
            layout.stage1_offset(slot),
            slot,
            keys,
        )
    };
    let decision = decide_for(stage, &state, &mut verify);
    let mut outcome = Stage0Outcome {
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
            if let RecordKind::Stage1Attempt { slot } = kind {
                let decision = fallback(
                    stage,
                    &state,
                    Some(slot),
                    &mut |slot| {
                        verify_stage1(
                            &mut **journal.flash_mut(),
                            layout.stage1_offset(slot),
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
