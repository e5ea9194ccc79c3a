//! The boot state machine end to end on the simulated F429: real signed images in the slots,
//! the real journal, the bootloader's decision and the application's API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use fota_boot::journal::RecordKind::{self, *};
use fota_boot::{
    boot, BootAction, BootControl, BootError, BootJournal, BootMode, ControlError, JournalError,
};
use fota_protocol::image::SlotError;
use fota_protocol::image::{ImageBuilder, ImageError, ImageVersion};
use fota_protocol::SlotId::{self, A, B};
use fota_sim::flash::{SimFlash, SimFlashError};

/// Append records to the journal directly, as if an earlier boot or application had.
fn journal(flash: &mut SimFlash, kinds: &[RecordKind]) {
    let mut journal = BootJournal::open(flash, LAYOUT.journal).unwrap();
    for &kind in kinds {
        journal.append(kind).unwrap();
    }
}

/// Flip one bit of `slot` at `at` bytes in, as a probe (or bit rot) would.
fn corrupt(flash: &mut SimFlash, slot: SlotId, at: u32) {
    let offset = LAYOUT.slot_offset(slot) + at;
    let byte = flash.as_bytes()[offset as usize] ^ 0x01;
    flash.load(offset, &[byte]).unwrap();
}

#[test]
fn install_trial_confirm_raises_the_floor_at_confirmation_only() {
    let mut flash = factory();
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
    assert_eq!(outcome.appended, None);

    update(&mut flash, A, &image_v2_b()).unwrap();
    assert_eq!(journal_state(&mut flash).security_counter(), 1);
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt: 1 }));
    assert_eq!(outcome.appended.map(|r| r.kind), Some(Attempt { slot: B }));
    assert_eq!(
        journal_state(&mut flash).security_counter(),
        1,
        "a trial does not raise the floor: A must stay bootable"
    );
    let target = *outcome.action.target().unwrap();
    assert_eq!(target.image.vector_table_address(), 0x0806_0200);
    assert_eq!(target.image.initial_sp, 0x2002_0000);
    assert_eq!(target.image.reset_vector, 0x0806_0301);
    assert_eq!(target.image.security_counter(), 2);

    let mut control = BootControl::open(&mut flash, LAYOUT, B).unwrap();
    assert!(control.info().is_trial());
    control.mark_confirmed(&keys()).unwrap();
    assert_eq!(control.info().mode, BootMode::Confirmed);
    assert_eq!(control.info().security_counter, 2);
    // Idempotent: nothing more to write.
    let steps = flash.steps();
    confirm(&mut flash, B).unwrap();
    assert_eq!(flash.steps(), steps);

    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Confirmed));
    assert_eq!(outcome.appended, None);
}

#[test]
fn a_pending_image_with_a_bad_signature_is_rejected_and_a_runs() {
    let mut flash = factory();
    update(&mut flash, A, &image_v2_b()).unwrap();
    // The last byte of the image is in the Ed25519 signature.
    corrupt(&mut flash, B, image_v2_b().len() as u32 - 1);
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
    assert_eq!(outcome.appended.map(|r| r.kind), Some(Rejected { slot: B }));
    assert_eq!(
        outcome.refused.get(B),
        Some(BootError::Image(ImageError::BadSignature))
    );
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
    assert_eq!(outcome.appended, None, "decided once, journaled once");
}

#[test]
fn mark_pending_refuses_what_the_bootloader_would_refuse() {
    let unsigned = ImageBuilder::new(payload(B, 2), ImageVersion::new(2, 0, 0, 0))
        .security_counter(2)
        .rom_fixed(SlotId::B.partition().start)
        .build_unsigned()
        .unwrap();
    /// An image in B, and what its refusal must say.
    type Case = (Vec<u8>, fn(&BootError) -> bool);
    let cases: [Case; 3] = [
        (image_linked_for(A, 2, 2), |e| {
            matches!(e, BootError::Slot(SlotError::WrongLoadAddress { .. }))
        }),
        (image_linked_for(B, 0, 0), |e| {
            *e == BootError::SecurityCounter { image: 0, floor: 1 }
        }),
        (unsigned, |e| {
            matches!(e, BootError::Image(ImageError::MissingTlv(_)))
        }),
    ];
    for (image, expected) in cases {
        let mut flash = factory();
        write_slot(&mut flash, B, &image).unwrap();
        let before = journal_state(&mut flash);
        let mut control = BootControl::open(&mut flash, LAYOUT, A).unwrap();
        match control.mark_pending(B, &keys()) {
            Err(ControlError::Image { slot: B, error }) => assert!(expected(&error), "{error:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(*control.journal().state(), before);
        assert!(matches!(
            control.mark_pending(A, &keys()),
            Err(ControlError::RunningSlot(A))
        ));
    }
}

#[test]
fn an_image_linked_for_the_other_slot_never_runs_even_if_pending() {
    let mut flash = factory();
    write_slot(&mut flash, B, &image_linked_for(A, 2, 2)).unwrap();
    journal(&mut flash, &[Pending { slot: B }]);
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
    assert!(matches!(
        outcome.refused.get(B),
        Some(BootError::Slot(SlotError::WrongLoadAddress { .. }))
    ));
    assert_eq!(outcome.appended.map(|r| r.kind), Some(Rejected { slot: B }));
}

#[test]
fn nothing_valid_is_recovery_mode() {
    // Blank device, and a device whose only image is corrupted.
    let mut blank = SimFlash::new();
    let outcome = reboot(&mut blank).unwrap();
    assert_eq!(outcome.action, BootAction::Recovery);
    assert_eq!(outcome.appended, None);

    let mut flash = factory();
    corrupt(&mut flash, A, 0x300);
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(outcome.action, BootAction::Recovery);
    assert_eq!(
        outcome.refused.get(A),
        Some(BootError::Image(ImageError::HashMismatch))
    );
    assert!(matches!(
        outcome.refused.get(B),
        Some(BootError::Image(ImageError::BadMagic(_)))
    ));
}

#[test]
fn a_broken_confirmed_slot_falls_back_to_a_valid_other_slot() {
    let mut flash = factory();
    // B holds v2 (written, never pended); then A's image rots.
    write_slot(&mut flash, B, &image_v2_b()).unwrap();
    corrupt(&mut flash, A, 0x300);
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Unconfirmed));
    assert_eq!(outcome.appended, None);
    let info = BootControl::open(&mut flash, LAYOUT, B).unwrap().info();
    assert_eq!(info.mode, BootMode::Unconfirmed);
    // B may not start an update before it confirms itself.
    let mut control = BootControl::open(&mut flash, LAYOUT, B).unwrap();
    assert!(matches!(
        control.mark_pending(A, &keys()),
        Err(ControlError::NotConfirmed(BootMode::Unconfirmed))
    ));
    control.mark_confirmed(&keys()).unwrap();
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Confirmed));
    assert_eq!(journal_state(&mut flash).security_counter(), 2);
}

#[test]
fn after_a_confirmation_the_old_image_is_a_rollback() {
    let mut flash = factory();
    update(&mut flash, A, &image_v2_b()).unwrap();
    reboot(&mut flash).unwrap();
    confirm(&mut flash, B).unwrap();
    // B rots: A (counter 1) is below the floor (2) and may not run.
    corrupt(&mut flash, B, 0x300);
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(outcome.action, BootAction::Recovery);
    assert_eq!(
        outcome.refused.get(A),
        Some(BootError::SecurityCounter { image: 1, floor: 2 })
    );
}

#[test]
fn an_empty_journal_runs_a_unconfirmed_until_it_confirms_itself() {
    let mut flash = SimFlash::new();
    flash.load(LAYOUT.slot_offset(A), &image_v1_a()).unwrap();
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Unconfirmed));
    assert_eq!(flash.steps(), 0, "nothing journaled");
    confirm(&mut flash, A).unwrap();
    let state = journal_state(&mut flash);
    assert_eq!((state.confirmed(), state.security_counter()), (Some(A), 1));
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
}

#[test]
fn mark_pending_is_refused_while_on_trial() {
    let mut flash = factory();
    update(&mut flash, A, &image_v2_b()).unwrap();
    reboot(&mut flash).unwrap();
    write_slot(&mut flash, A, &image_linked_for(A, 3, 3)).unwrap();
    let mut control = BootControl::open(&mut flash, LAYOUT, B).unwrap();
    assert!(matches!(
        control.mark_pending(A, &keys()),
        Err(ControlError::NotConfirmed(BootMode::Trial { attempt: 1 }))
    ));
}

/// The flash, with every write and erase refused: a journal that cannot be appended to.
#[derive(Debug)]
struct WriteProtected<'a>(&'a mut SimFlash);

impl ErrorType for WriteProtected<'_> {
    type Error = SimFlashError;
}

impl ReadNorFlash for WriteProtected<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl NorFlash for WriteProtected<'_> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 16 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        Err(SimFlashError::OutOfBounds {
            offset: from,
            len: (to - from) as usize,
        })
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        Err(SimFlashError::OutOfBounds {
            offset,
            len: bytes.len(),
        })
    }
}

#[test]
fn a_trial_that_cannot_be_recorded_does_not_run() {
    let mut flash = factory();
    update(&mut flash, A, &image_v2_b()).unwrap();
    let outcome = boot(&mut WriteProtected(&mut flash), &LAYOUT, &keys());
    // An unrecorded trial could crash-loop forever without counting: A runs instead.
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
    assert!(matches!(
        outcome.journal_error,
        Some(JournalError::Flash(SimFlashError::OutOfBounds { .. }))
    ));
    assert_eq!(journal_state(&mut flash).attempts(), 0);
    // Once the journal takes writes again, the trial goes ahead.
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt: 1 }));
}

#[test]
fn many_updates_through_many_compactions() {
    let mut flash = factory();
    let mut running = A;
    let mut compactions = 0;
    let mut active = BootJournal::open(&mut flash, LAYOUT.journal)
        .unwrap()
        .active_sector();
    for release in 2..700u32 {
        let target = running.other();
        let image = image_linked_for(target, (release % 250) as u8, release);
        update(&mut flash, running, &image).unwrap();
        // Every fifth release hangs and is reverted; the others confirm.
        let good = release % 5 != 0;
        loop {
            let outcome = reboot(&mut flash).unwrap();
            let (slot, mode) = jumped(&outcome);
            if slot == running {
                assert!(!good, "release {release}");
                assert_eq!(mode, BootMode::Confirmed);
                break;
            }
            assert!(matches!(mode, BootMode::Trial { .. }));
            if good {
                confirm(&mut flash, slot).unwrap();
                running = slot;
                break;
            }
        }
        let state = journal_state(&mut flash);
        assert_eq!(state.confirmed(), Some(running));
        assert_eq!(state.pending(), None);
        let now = BootJournal::open(&mut flash, LAYOUT.journal)
            .unwrap()
            .active_sector();
        if now != active {
            compactions += 1;
            active = now;
        }
    }
    assert!(compactions >= 2, "{compactions} compactions");
    // Each journal sector was erased once per compaction into it, not once per boot.
    let erases = flash.erase_count(2).unwrap() + flash.erase_count(3).unwrap();
    assert_eq!(
        erases as usize,
        compactions + 1,
        "the first append also erased sector 2"
    );
}
