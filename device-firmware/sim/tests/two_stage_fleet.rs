//! A two-stage virtual device (issue 18, item 6): the fleet's factory flash with a stage-1,
//! simulated stage-1 builds read back as stage-0 would boot them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use fota_boot::stage0::boot_stage1;
use fota_boot::{boot, BootControl, BootMode};
use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::SlotId;
use fota_sim::app::{image, stage1_behaviour_of, stage1_image};
use fota_sim::device::LAYOUT;
use fota_sim::{factory_flash_two_stage, AppBehaviour, Stage1Behaviour};

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn keys() -> [TrustedKey; 1] {
    [TrustedKey::from_bytes(&key().verifying_key().to_bytes()).unwrap()]
}

#[test]
fn a_two_stage_factory_boots_stage1_a_then_the_application_and_the_client_sees_it() {
    let v1 = ImageVersion::new(1, 0, 0, 0);
    let mut flash = factory_flash_two_stage(
        &image(&key(), SlotId::A, v1, 1, AppBehaviour::Good, 2048),
        1,
        &stage1_image(&key(), SlotId::A, v1, 1, Stage1Behaviour::Good, 2048),
        1,
    );
    let outcome = boot_stage1(&mut flash, &LAYOUT, &keys());
    let target = *outcome
        .action
        .target()
        .unwrap_or_else(|| panic!("stage-0 boots stage-1 A: {outcome:?}"));
    assert_eq!(
        (target.slot(), target.mode),
        (SlotId::A, BootMode::Confirmed)
    );
    assert_eq!(
        stage1_behaviour_of(&mut flash, &LAYOUT, &target),
        Some(Stage1Behaviour::Good)
    );
    let app = boot(&mut flash, &LAYOUT, &keys());
    let app = *app.action.target().expect("stage-1 boots the application");
    assert_eq!((app.slot(), app.mode), (SlotId::A, BootMode::Confirmed));
    let mut control = BootControl::open(flash, LAYOUT, SlotId::A).unwrap();
    assert_eq!(
        control.running_stage1(&keys()),
        Some((SlotId::A, BootMode::Confirmed))
    );
    assert!(control.verify_stage1(SlotId::A, &keys()).is_ok());
}
