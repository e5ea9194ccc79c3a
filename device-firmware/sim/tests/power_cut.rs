//! Power cuts at every write and erase of an update that is confirmed, of an update whose trial
//! fails and is reverted, and of journal compactions: a cut before each step, and torn cuts
//! inside it. After each cut, the device boots a verified image (never recovery, never an
//! unverified image), the journal replays to the state before or after the interrupted step,
//! and the device then settles where it should.
//!
//! Run with `--nocapture` to see how many cut points each sweep covered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fota_boot::journal::RecordKind::{self, *};
use fota_boot::journal::MAX_TRIAL_ATTEMPTS;
use fota_boot::{BootJournal, BootMode};
use fota_protocol::SlotId::{self, A, B};
use fota_sim::flash::SimFlash;

fn known_images() -> Vec<Vec<u8>> {
    vec![image_v1_a(), image_v2_b()]
}

/// The application in `slot`: confirms itself unless it is the new image and `b_confirms` is
/// false (an image that boots but never reaches the server).
fn run_app(flash: &mut SimFlash, slot: SlotId, mode: BootMode, b_confirms: bool) {
    if mode != BootMode::Confirmed && (slot == A || b_confirms) {
        confirm(flash, slot).unwrap();
    }
}

/// Keep booting the device after a cut, its applications behaving as in the scenario, and
/// check every boot. Returns how many times B ran on trial.
fn settle(flash: &mut SimFlash, b_confirms: bool, known: &[Vec<u8>]) -> u8 {
    let mut b_trials = 0;
    for _ in 0..MAX_TRIAL_ATTEMPTS + 3 {
        let outcome = reboot(flash).unwrap();
        let (slot, mode) = assert_runs_verified_image(flash, &outcome, known);
        if slot == B && matches!(mode, BootMode::Trial { .. }) {
            b_trials += 1;
        }
        run_app(flash, slot, mode, b_confirms);
    }
    b_trials
}

/// (i) install B, mark it pending, boot it on trial, the application confirms it.
#[test]
fn every_cut_during_install_trial_and_confirm() {
    let start = factory();
    let image = image_v2_b();
    let known = known_images();
    let milestones = milestones(
        &journal_state(&mut start.clone()),
        &[
            Pending { slot: B },
            Attempt { slot: B },
            Confirmed { slot: B },
            SecurityCounter { value: 2 },
        ],
    );
    let scenario = |flash: &mut SimFlash| {
        update(flash, A, &image)?;
        let outcome = reboot(flash)?;
        assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt: 1 }));
        confirm(flash, B)
    };
    let report = sweep(
        "install -> trial -> confirm",
        &start,
        &milestones,
        scenario,
        |flash, cut| {
            settle(flash, true, &known);
            let s = journal_state(flash);
            assert_eq!(s.pending(), None, "{cut:?}");
            match s.confirmed() {
                // The update never became pending (cut while writing B or appending Pending).
                Some(A) => assert_eq!(s.security_counter(), 1, "{cut:?}"),
                // Confirmed, and the floor raised (by the bootloader, if the cut fell between the
                // application's two records).
                Some(B) => assert_eq!(s.security_counter(), 2, "{cut:?}"),
                None => panic!("{cut:?}: nothing confirmed"),
            }
        },
    );
    assert!(report.steps >= 12, "{report:?}");
}

/// (ii) install B, mark it pending, B boots three times and never confirms, the bootloader
/// reverts to A, A keeps booting.
#[test]
fn every_cut_during_install_failed_trial_and_revert() {
    let start = factory();
    let image = image_v2_b();
    let known = known_images();
    let mut steps = vec![Pending { slot: B }];
    steps.extend([Attempt { slot: B }; MAX_TRIAL_ATTEMPTS as usize]);
    steps.push(Reverted { slot: B });
    let milestones = milestones(&journal_state(&mut start.clone()), &steps);
    let scenario = |flash: &mut SimFlash| {
        update(flash, A, &image)?;
        for attempt in 1..=MAX_TRIAL_ATTEMPTS {
            let outcome = reboot(flash)?;
            assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt }));
            // B hangs: the watchdog resets the device without B writing anything.
        }
        let outcome = reboot(flash)?;
        assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
        Ok(())
    };
    let report = sweep(
        "install -> 3 failed trials -> revert",
        &start,
        &milestones,
        scenario,
        |flash, cut| {
            let tried = journal_state(flash).attempts();
            let b_trials = settle(flash, false, &known);
            assert!(
                tried + b_trials <= MAX_TRIAL_ATTEMPTS,
                "{cut:?}: B ran {tried} + {b_trials} times"
            );
            let s = journal_state(flash);
            assert_eq!((s.confirmed(), s.pending()), (Some(A), None), "{cut:?}");
            assert_eq!(
                s.security_counter(),
                1,
                "{cut:?}: the floor rose without a confirmation"
            );
        },
    );
    assert!(report.steps >= 12, "{report:?}");
}

/// A device in the middle of B's trial (one attempt made) whose journal has been compacted
/// `compactions` times and has `free` slots left in its active sector.
fn mid_trial_with_full_journal(compactions: usize, free: u32) -> SimFlash {
    let mut flash = factory();
    update(&mut flash, A, &image_v2_b()).unwrap();
    assert!(matches!(
        jumped(&reboot(&mut flash).unwrap()),
        (B, BootMode::Trial { attempt: 1 })
    ));
    let mut journal = BootJournal::open(&mut flash, LAYOUT.journal).unwrap();
    // Filler that changes nothing: the floor is already 1.
    let filler = RecordKind::SecurityCounter { value: 1 };
    let mut done = 0;
    while done < compactions || journal.remaining() != free {
        let active = journal.active_sector();
        journal.append(filler).unwrap();
        if active != journal.active_sector() {
            done += 1;
        }
    }
    flash
}

/// (iii) journal compaction: the next boot's `Attempt` (or the application's confirmation)
/// finds the active sector full and compacts into the other one first.
#[test]
fn every_cut_during_journal_compaction() {
    let known = known_images();
    // (compactions so far, free slots): compact at the boot's Attempt, into a never-used sector
    // and into one holding an older generation; and with 2 free, between the application's
    // Confirmed and its SecurityCounter.
    for (compactions, free) in [(0, 0), (1, 0), (1, 2)] {
        let start = mid_trial_with_full_journal(compactions, free);
        let before = journal_state(&mut start.clone());
        assert_eq!((before.pending(), before.attempts()), (Some(B), 1));
        let milestones = milestones(
            &before,
            &[
                Attempt { slot: B },
                Confirmed { slot: B },
                SecurityCounter { value: 2 },
            ],
        );
        let scenario = |flash: &mut SimFlash| {
            let outcome = reboot(flash)?;
            assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt: 2 }));
            confirm(flash, B)
        };
        let name = format!("compaction (after {compactions}, {free} free)");
        let report = sweep(&name, &start, &milestones, scenario, |flash, cut| {
            settle(flash, true, &known);
            let s = journal_state(flash);
            assert_eq!(
                (s.confirmed(), s.pending(), s.security_counter()),
                (Some(B), None, 2),
                "{name} {cut:?}"
            );
        });
        // The scenario did compact: an erase, the snapshot, the record that needed the room,
        // and the rest of the scenario.
        let mut end = start.clone();
        scenario(&mut end).unwrap();
        let active = |flash: &mut SimFlash| {
            BootJournal::open(flash, LAYOUT.journal)
                .unwrap()
                .active_sector()
        };
        assert_ne!(active(&mut start.clone()), active(&mut end), "{name}");
        assert!(report.steps >= 6, "{name}: {report:?}");
    }
}
