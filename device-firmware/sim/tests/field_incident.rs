//! The field incident (shared/seeds/000): new firmware cleared the RAM the bootloader kept its
//! upgrade flag in, and 100,000 devices stopped in the bootloader for good.
//!
//! Here the new image in B is as hostile: it zeroes all RAM and never confirms itself. Nothing
//! survives a reset but the flash (every boot below builds the bootloader's state from flash
//! alone), and the device must still revert to A after exactly three attempts, then keep
//! booting A, without writing the journal on every boot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fota_boot::journal::RecordKind::Reverted;
use fota_boot::journal::MAX_TRIAL_ATTEMPTS;
use fota_boot::{BootControl, BootMode};
use fota_protocol::SlotId::{A, B};

#[test]
fn an_image_that_zeroes_ram_and_never_confirms_is_reverted_after_three_attempts() {
    let mut flash = factory();
    update(&mut flash, A, &image_v2_b()).unwrap();

    for attempt in 1..=MAX_TRIAL_ATTEMPTS {
        let outcome = reboot(&mut flash).unwrap();
        assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt }));
        // The application learns it is on trial from flash, not from anything the bootloader
        // left in RAM; then it zeroes all RAM and hangs until the watchdog resets it. Nothing
        // it does reaches the flash.
        let info = BootControl::open(&mut flash, LAYOUT, B).unwrap().info();
        assert_eq!(info.mode, BootMode::Trial { attempt });
        assert_eq!(info.attempts, attempt);
    }

    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
    assert_eq!(outcome.appended.map(|r| r.kind), Some(Reverted { slot: B }));
    let state = journal_state(&mut flash);
    assert_eq!((state.confirmed(), state.pending()), (Some(A), None));
    assert!(state.is_rejected(B));
    assert_eq!(
        state.security_counter(),
        1,
        "B never confirmed: the floor stays"
    );

    // A keeps booting, and a confirmed boot writes nothing: the journal cannot fill up.
    let steps = flash.steps();
    for _ in 0..50 {
        let outcome = reboot(&mut flash).unwrap();
        assert_eq!(jumped(&outcome), (A, BootMode::Confirmed));
        assert_eq!(outcome.appended, None);
    }
    assert_eq!(flash.steps(), steps, "confirmed boots wrote to flash");

    // A reports the rollback and can take a fixed release into B later.
    let info = BootControl::open(&mut flash, LAYOUT, A).unwrap().info();
    assert_eq!(info.mode, BootMode::Confirmed);
    update(&mut flash, A, &image_linked_for(B, 3, 2)).unwrap();
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Trial { attempt: 1 }));
    confirm(&mut flash, B).unwrap();
    let outcome = reboot(&mut flash).unwrap();
    assert_eq!(jumped(&outcome), (B, BootMode::Confirmed));
    assert_eq!(journal_state(&mut flash).security_counter(), 2);
}
