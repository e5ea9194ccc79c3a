//! Two-stage boot (issue 18): stage-0 picks, verifies and trial-boots a stage-1, the stage-1
//! picks the application. Power cuts at every write and erase (a cut before each step and torn
//! cuts inside it) of a stage-1 update: written and marked pending, booted on trial and
//! confirmed by the application it booted (written by hand, and written by the real OTA client
//! from a bootloader offer); and written, pending, failing its trial (a stage-1 that hangs, and
//! one that boots an application that never confirms) and reverted. After each
//! cut the next boot reaches a verified stage-1 (checked here independently of `fota-boot`) and
//! a verified application, and the device then settles where it should.
//!
//! Run with `--nocapture` to see how many cut points each sweep covered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use embedded_storage::nor_flash::NorFlash;
use fota_boot::journal::RecordKind::{self, *};
use fota_boot::journal::MAX_TRIAL_ATTEMPTS;
use fota_boot::{
    boot_stage1, BootAction, BootControl, BootError, BootJournal, BootMode, ControlError,
    Stage0Outcome,
};
use fota_protocol::image::{check_verified_for_stage1, SlotError};
use fota_protocol::image::{verify, Component, ImageBuilder, ImageVersion};
use fota_protocol::ImageError;
use fota_protocol::SlotId::{self, A, B};
use fota_sim::flash::{SimFlash, SimFlashError};

/// How a stage-1 build behaves, carried in its version's minor number (the simulated flash runs
/// exactly what its stage-1 slot holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Runs the stage-1 boot logic and jumps to the application.
    Good,
    /// Hangs before booting anything: the watchdog resets it.
    Hangs,
    /// Boots the application, but leaves it unable to work (say, a clock it misconfigures):
    /// the application never confirms.
    BreaksApp,
}

impl Behaviour {
    fn code(self) -> u8 {
        match self {
            Behaviour::Good => 0,
            Behaviour::Hangs => 1,
            Behaviour::BreaksApp => 2,
        }
    }

    fn of(minor: u8) -> Self {
        match minor {
            1 => Behaviour::Hangs,
            2 => Behaviour::BreaksApp,
            _ => Behaviour::Good,
        }
    }
}

/// A stage-1 build linked for stage-1 slot `slot`: vector table at its start, reset handler
/// inside, marked as a stage-1 for `slot`.
fn stage1_image(slot: SlotId, version: u8, counter: u32, behaviour: Behaviour) -> Vec<u8> {
    let base = slot.stage1_partition().start;
    let mut payload: Vec<u8> = (0..1536u32)
        .map(|i| (i as u8).wrapping_mul(13) ^ version)
        .collect();
    payload[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
    payload[4..8].copy_from_slice(&((base + 0x200 + 0x101) | 1).to_le_bytes());
    ImageBuilder::new(payload, ImageVersion::new(version, behaviour.code(), 0, 0))
        .security_counter(counter)
        .rom_fixed(base)
        .component(Component::Stage1 { slot })
        .sign(&signing_key())
        .unwrap()
}

fn stage1_v1_a() -> Vec<u8> {
    stage1_image(A, 1, 1, Behaviour::Good)
}

/// Write `image` into stage-1 slot `slot` as the OTA client does: erase its sector, program it
/// chunk by chunk.
fn write_stage1(flash: &mut SimFlash, slot: SlotId, image: &[u8]) -> Result<(), SimFlashError> {
    let offset = LAYOUT.stage1_offset(slot);
    flash.erase(offset, offset + slot.stage1_partition().size)?;
    for (i, chunk) in image.chunks(CHUNK).enumerate() {
        let mut words = chunk.to_vec();
        words.resize(chunk.len().div_ceil(4) * 4, 0xFF);
        flash.write(offset + (i * CHUNK) as u32, &words)?;
    }
    Ok(())
}

/// A device out of the factory with two stages: stage-1 v1 in stage-1 slot A, application v1 in
/// slot A, and a journal saying both are confirmed (floors 1).
fn factory2() -> SimFlash {
    let mut flash = factory();
    flash.load(LAYOUT.stage1_offset(A), &stage1_v1_a()).unwrap();
    let mut journal = BootJournal::open(&mut flash, LAYOUT.journal).unwrap();
    journal.append(Stage1Floor { value: 1 }).unwrap();
    journal.append(Stage1Confirmed { slot: A }).unwrap();
    flash
}

/// The application (running from `app`) installs `image` into stage-1 slot `slot` and marks it
/// pending.
fn update_stage1(
    flash: &mut SimFlash,
    app: SlotId,
    slot: SlotId,
    image: &[u8],
) -> Result<(), PowerLost> {
    let result = write_stage1(flash, slot, image);
    alive(flash, result)?;
    let mut control = match BootControl::open(&mut *flash, LAYOUT, app) {
        Ok(control) => control,
        Err(e) => return alive(flash, Err::<(), _>(e)),
    };
    let result = control.mark_stage1_pending(slot, &keys());
    alive(flash, result)
}

/// The application (running from slot A) is offered `image` as a bootloader for stage-1 slot
/// `slot` and installs it with the real OTA client: check-in, erase, download in chunks
/// verified while they stream, the stage-1 checks, `mark_stage1_pending`. The flash is the only
/// thing that survives a cut (the client's state store is left out: a cut download starts over).
fn client_update_stage1(flash: &mut SimFlash, slot: SlotId, image: &[u8]) -> Result<(), PowerLost> {
    use fota_ota_client::transport::Transport;
    use fota_ota_client::{CheckInOutcome, Config, DeviceInfo, MemPersist, OtaClient, Step};
    use fota_protocol::image::Digest;
    use fota_protocol::messages::{
        CheckIn, CheckInResponse, Component, Model, Offer, RdpLevel, Report, ReportAck,
    };

    /// Offers `image` and serves it.
    struct Server<'a>(&'a [u8], SlotId);
    impl Transport for Server<'_> {
        type Error = ();
        fn check_in(&mut self, _: &CheckIn) -> Result<CheckInResponse, ()> {
            let offer = Offer {
                rollout_id: 1,
                version: ImageVersion::new(2, 0, 0, 0),
                component: Component::Bootloader,
                slot: self.1,
                sha256: Digest::of(self.0),
                size: self.0.len() as u32,
                security_counter: 2,
                patch: None,
            };
            Ok(CheckInResponse {
                poll_interval_s: 60,
                offer: Some(offer),
            })
        }
        fn report(&mut self, r: &Report) -> Result<ReportAck, ()> {
            Ok(ReportAck {
                stored: r.events.len() as u32,
                duplicates: 0,
            })
        }
        fn fetch_range(&mut self, _: &Digest, offset: u32, buf: &mut [u8]) -> Result<usize, ()> {
            let start = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - start);
            buf[..n].copy_from_slice(&self.0[start..start + n]);
            Ok(n)
        }
    }

    let keys = keys();
    let control = match BootControl::open(&mut *flash, LAYOUT, A) {
        Ok(control) => control,
        Err(e) => return alive(flash, Err::<(), _>(e)),
    };
    let device = DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: ImageVersion::new(1, 0, 0, 0),
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0,
    };
    let mut client = OtaClient::new(
        Server(image, slot),
        control,
        MemPersist::default(),
        device,
        &keys,
        Config::default(),
    );
    let outcome = client.check_in();
    let step = if outcome == Ok(CheckInOutcome::Started) {
        loop {
            match client.download_step() {
                Step::Continue => {}
                other => break other,
            }
        }
    } else {
        Step::Failed
    };
    let (_, control, _) = client.into_parts();
    let flash = control.into_flash();
    if !flash.is_powered() {
        return Err(PowerLost);
    }
    assert_eq!(outcome, Ok(CheckInOutcome::Started));
    assert_eq!(step, Step::Reboot, "the client did not install the stage-1");
    Ok(())
}

/// What one reset led to.
#[derive(Debug)]
enum Run {
    /// Stage-0 found no stage-1 to run.
    Recovery,
    /// Stage-0 jumped to a stage-1 that hung.
    Hung { stage1: (SlotId, BootMode) },
    /// Stage-0 jumped to a stage-1, which jumped to an application.
    App {
        stage1: (SlotId, BootMode),
        behaviour: Behaviour,
        app: (SlotId, BootMode),
    },
}

impl Run {
    fn stage1(&self) -> (SlotId, BootMode) {
        match self {
            Run::Recovery => panic!("recovery"),
            Run::Hung { stage1 } | Run::App { stage1, .. } => *stage1,
        }
    }
}

/// Check, independently of `fota-boot`, that stage-0 jumped to a genuine stage-1 for the slot
/// it is in, not below the floor, and one of `known`. Returns its behaviour.
fn assert_verified_stage1(
    flash: &SimFlash,
    outcome: &Stage0Outcome<SimFlashError>,
    known: &[Vec<u8>],
) -> Behaviour {
    let BootAction::Jump(target) = outcome.action else {
        panic!("stage-0 in recovery although a valid stage-1 exists: {outcome:?}");
    };
    let slot = target.slot();
    let offset = LAYOUT.stage1_offset(slot) as usize;
    let bytes = &flash.as_bytes()[offset..offset + slot.stage1_partition().size as usize];
    let image = verify(bytes, &keys()).expect("stage-0 jumped to a stage-1 that does not verify");
    check_verified_for_stage1(&image, slot).expect("stage-0 jumped to a misplaced stage-1");
    assert!(image.security_counter >= outcome.state.stage1().floor());
    assert!(
        known
            .iter()
            .any(|k| verify(k, &keys()).unwrap().digest == image.digest),
        "stage-0 jumped to a stage-1 that was never released"
    );
    assert_eq!(target.image.image.digest, image.digest);
    assert_eq!(
        target.image.vector_table_address(),
        slot.stage1_partition().start + 0x200
    );
    Behaviour::of(image.header.version.minor)
}

/// A reset: stage-0, then (if it jumped) the stage-1 it chose, each from scratch on whatever
/// the flash holds. Every jump is checked.
fn power_on(flash: &mut SimFlash, known: &[Vec<u8>]) -> Result<Run, PowerLost> {
    let outcome = boot_stage1(flash, &LAYOUT, &keys());
    if !flash.is_powered() {
        return Err(PowerLost);
    }
    let Some(target) = outcome.action.target() else {
        return Ok(Run::Recovery);
    };
    let stage1 = (target.slot(), target.mode);
    let behaviour = assert_verified_stage1(flash, &outcome, known);
    if behaviour == Behaviour::Hangs {
        return Ok(Run::Hung { stage1 });
    }
    let app = reboot(flash)?;
    let app_known = [image_v1_a(), image_v2_b()];
    let app_target = assert_runs_verified_image(flash, &app, &app_known);
    Ok(Run::App {
        stage1,
        behaviour,
        app: app_target,
    })
}

/// What the application does once it runs: unless the stage-1 broke it, it reaches the server
/// and passes its self-test, then confirms itself (if it is not yet) and the stage-1 that
/// booted it (if that one is on trial or unconfirmed).
fn run_app(flash: &mut SimFlash, run: &Run) -> Result<(), PowerLost> {
    let Run::App { behaviour, app, .. } = run else {
        return Ok(());
    };
    if *behaviour == Behaviour::BreaksApp {
        return Ok(());
    }
    let (slot, mode) = *app;
    if mode != BootMode::Confirmed {
        confirm(flash, slot)?;
    }
    let mut control = match BootControl::open(&mut *flash, LAYOUT, slot) {
        Ok(control) => control,
        Err(e) => return alive(flash, Err::<(), _>(e)),
    };
    let result = control.confirm_stage1(&keys());
    alive(flash, result).map(|_| ())
}

/// Keep resetting the device after a cut, its stage-1s and application behaving as they are
/// built to; every reset must reach a verified stage-1 (and, unless that one hangs, a verified
/// application). Returns how many times stage-1 B ran on trial.
fn settle(flash: &mut SimFlash, known: &[Vec<u8>]) -> u8 {
    let mut b_trials = 0;
    for _ in 0..MAX_TRIAL_ATTEMPTS + 3 {
        let run = power_on(flash, known).unwrap();
        if let Run::Recovery = run {
            panic!("recovery after a cut");
        }
        if matches!(run.stage1(), (B, BootMode::Trial { .. })) {
            b_trials += 1;
        }
        run_app(flash, &run).unwrap();
    }
    b_trials
}

/// The stage-1 state after settling, and that the device still boots the right stage-1.
fn stage1_state(flash: &mut SimFlash) -> (Option<SlotId>, Option<SlotId>, u32) {
    let s = journal_state(flash);
    let t = s.stage1();
    (t.confirmed(), t.pending(), t.floor())
}

/// (i) stage-1 v2 written into stage-1 slot B, marked pending, booted on trial by stage-0;
/// it boots application A, which confirms it (Stage1Confirmed, Stage1Floor 2).
#[test]
fn every_cut_during_stage1_install_trial_and_confirm() {
    install_trial_confirm("stage-1 install -> trial -> confirm", |flash, new| {
        update_stage1(flash, A, B, new)
    });
}

/// (i) again, the stage-1 written and marked pending by the OTA client from a bootloader offer.
#[test]
fn every_cut_during_a_client_stage1_install_trial_and_confirm() {
    install_trial_confirm(
        "OTA client stage-1 install -> trial -> confirm",
        |flash, new| client_update_stage1(flash, B, new),
    );
}

fn install_trial_confirm(
    name: &str,
    install: impl Fn(&mut SimFlash, &[u8]) -> Result<(), PowerLost>,
) {
    let start = factory2();
    let new = stage1_image(B, 2, 2, Behaviour::Good);
    let known = vec![stage1_v1_a(), new.clone()];
    let milestones = milestones(
        &journal_state(&mut start.clone()),
        &[
            Stage1Pending { slot: B },
            Stage1Attempt { slot: B },
            Stage1Confirmed { slot: B },
            Stage1Floor { value: 2 },
        ],
    );
    let scenario = |flash: &mut SimFlash| {
        install(flash, &new)?;
        let run = power_on(flash, &known)?;
        assert_eq!(run.stage1(), (B, BootMode::Trial { attempt: 1 }));
        run_app(flash, &run)
    };
    let report = sweep(name, &start, &milestones, scenario, |flash, cut| {
        settle(flash, &known);
        match stage1_state(flash) {
            // Never became pending (cut while writing stage-1 B or appending Pending).
            (Some(A), None, 1) => {}
            // Confirmed, and the floor raised (by stage-0 if the cut fell between the
            // application's two records).
            (Some(B), None, 2) => {}
            other => panic!("{cut:?}: stage-1 state {other:?}"),
        }
        // The application side is untouched by a stage-1 update.
        let s = journal_state(flash);
        assert_eq!((s.confirmed(), s.pending()), (Some(A), None), "{cut:?}");
    });
    assert!(report.steps >= 10, "{report:?}");
}

/// (ii) and (iii): stage-1 v2 in B pending, it fails its three trials (it hangs, or it boots an
/// application that never confirms), stage-0 reverts to stage-1 A, which keeps booting.
fn failed_stage1_trial(name: &str, behaviour: Behaviour) {
    let start = factory2();
    let new = stage1_image(B, 2, 2, behaviour);
    let known = vec![stage1_v1_a(), new.clone()];
    let mut steps = vec![Stage1Pending { slot: B }];
    steps.extend([Stage1Attempt { slot: B }; MAX_TRIAL_ATTEMPTS as usize]);
    steps.push(Stage1Reverted { slot: B });
    let milestones = milestones(&journal_state(&mut start.clone()), &steps);
    let scenario = |flash: &mut SimFlash| {
        update_stage1(flash, A, B, &new)?;
        for attempt in 1..=MAX_TRIAL_ATTEMPTS {
            let run = power_on(flash, &known)?;
            assert_eq!(run.stage1(), (B, BootMode::Trial { attempt }));
            run_app(flash, &run)?;
            // The watchdog or the application's trial deadline resets the device.
        }
        let run = power_on(flash, &known)?;
        assert_eq!(run.stage1(), (A, BootMode::Confirmed));
        assert!(matches!(
            run,
            Run::App {
                app: (A, BootMode::Confirmed),
                ..
            }
        ));
        Ok(())
    };
    let report = sweep(name, &start, &milestones, scenario, |flash, cut| {
        let tried = journal_state(flash).stage1().attempts();
        let b_trials = settle(flash, &known);
        assert!(
            tried + b_trials <= MAX_TRIAL_ATTEMPTS,
            "{cut:?}: stage-1 B ran {tried} + {b_trials} times"
        );
        assert_eq!(stage1_state(flash), (Some(A), None, 1), "{cut:?}");
        let s = journal_state(flash);
        assert_eq!((s.confirmed(), s.pending()), (Some(A), None), "{cut:?}");
        // And stage-0 keeps booting stage-1 A, confirmed, without writing anything.
        let before = journal_state(flash);
        let run = power_on(flash, &known).unwrap();
        assert_eq!(run.stage1(), (A, BootMode::Confirmed), "{cut:?}");
        assert_eq!(journal_state(flash), before, "{cut:?}");
    });
    assert!(report.steps >= 10, "{report:?}");
}

#[test]
fn every_cut_during_stage1_install_hanging_trials_and_revert() {
    failed_stage1_trial(
        "stage-1 install -> 3 hung trials -> revert",
        Behaviour::Hangs,
    );
}

#[test]
fn every_cut_during_stage1_install_unconfirmed_trials_and_revert() {
    failed_stage1_trial(
        "stage-1 install -> 3 trials whose application never confirms -> revert",
        Behaviour::BreaksApp,
    );
}

/// (iv) stage-0's `Stage1Attempt` finds the journal's active sector full and compacts first:
/// the stage-1 state (and the application's) survive every cut of the compaction.
#[test]
fn every_cut_during_a_compaction_in_a_stage1_trial() {
    let new = stage1_image(B, 2, 2, Behaviour::Good);
    let known = vec![stage1_v1_a(), new.clone()];
    let mut start = factory2();
    update_stage1(&mut start, A, B, &new).unwrap();
    let mut journal = BootJournal::open(&mut start, LAYOUT.journal).unwrap();
    while journal.remaining() != 0 {
        journal.append(SecurityCounter { value: 1 }).unwrap();
    }
    let active = journal.active_sector();
    let before = journal_state(&mut start);
    assert_eq!(before.stage1().pending(), Some(B));
    let milestones = milestones(
        &before,
        &[
            Stage1Attempt { slot: B },
            Stage1Confirmed { slot: B },
            Stage1Floor { value: 2 },
        ],
    );
    let scenario = |flash: &mut SimFlash| {
        let run = power_on(flash, &known)?;
        assert_eq!(run.stage1(), (B, BootMode::Trial { attempt: 1 }));
        run_app(flash, &run)
    };
    let report = sweep(
        "stage-1 trial with a compaction",
        &start,
        &milestones,
        scenario,
        |flash, cut| {
            settle(flash, &known);
            assert_eq!(stage1_state(flash), (Some(B), None, 2), "{cut:?}");
            let s = journal_state(flash);
            assert_eq!(
                (s.confirmed(), s.pending(), s.security_counter()),
                (Some(A), None, 1),
                "{cut:?}"
            );
        },
    );
    let mut end = start.clone();
    scenario(&mut end).unwrap();
    let now = BootJournal::open(&mut end, LAYOUT.journal)
        .unwrap()
        .active_sector();
    assert_ne!(active, now, "the scenario did not compact");
    assert!(report.steps >= 6, "{report:?}");
}

/// A refusal case: its name, the stage-1 image, and what the refusal must say.
type Case = (&'static str, Vec<u8>, fn(&BootError) -> bool);

/// A pending stage-1 that does not verify (damaged signature, another key, marked for the
/// other slot, an application image, below the floor) is rejected by stage-0 before any jump,
/// and stage-1 A runs; `mark_stage1_pending` refuses each of them in the first place.
#[test]
fn stage0_refuses_bad_stage1s_and_falls_back() {
    let mut badsig = stage1_image(B, 2, 2, Behaviour::Good);
    let last = badsig.len() - 1;
    badsig[last] ^= 1;
    let other_key = {
        let base = B.stage1_partition().start;
        let mut payload = vec![0u8; 1024];
        payload[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
        payload[4..8].copy_from_slice(&((base + 0x301) | 1).to_le_bytes());
        ImageBuilder::new(payload, ImageVersion::new(2, 0, 0, 0))
            .security_counter(2)
            .rom_fixed(base)
            .component(Component::Stage1 { slot: B })
            .sign(&ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
            .unwrap()
    };
    let cases: [Case; 5] = [
        ("bad signature", badsig, |e| {
            matches!(e, BootError::Image(ImageError::BadSignature))
        }),
        ("untrusted key", other_key, |e| {
            matches!(e, BootError::Image(ImageError::UntrustedKey))
        }),
        (
            "marked for stage-1 A",
            stage1_image(A, 2, 2, Behaviour::Good),
            |e| matches!(e, BootError::Slot(SlotError::Stage1ForOtherSlot { .. })),
        ),
        ("an application", image_linked_for(B, 2, 2), |e| {
            matches!(e, BootError::Slot(SlotError::NotAStage1))
        }),
        (
            "below the floor",
            stage1_image(B, 2, 0, Behaviour::Good),
            |e| matches!(e, BootError::SecurityCounter { image: 0, floor: 1 }),
        ),
    ];
    for (name, image, why) in cases {
        let known = vec![stage1_v1_a()];
        let mut flash = factory2();
        write_stage1(&mut flash, B, &image).unwrap();
        let mut control = BootControl::open(&mut flash, LAYOUT, A).unwrap();
        match control.mark_stage1_pending(B, &keys()) {
            Err(ControlError::Stage1 { slot: B, error }) => assert!(why(&error), "{name}: {error}"),
            other => panic!("{name}: mark_stage1_pending said {other:?}"),
        }
        // Force it pending anyway, as a journal from a buggy writer would.
        BootJournal::open(&mut flash, LAYOUT.journal)
            .unwrap()
            .append(Stage1Pending { slot: B })
            .unwrap();
        let outcome = boot_stage1(&mut flash, &LAYOUT, &keys());
        assert!(why(&outcome.refused.get(B).unwrap()), "{name}: {outcome:?}");
        assert_eq!(
            outcome.appended.map(|r| r.kind),
            Some(Stage1Rejected { slot: B }),
            "{name}"
        );
        assert_verified_stage1(&flash, &outcome, &known);
        let run = power_on(&mut flash, &known).unwrap();
        assert_eq!(run.stage1(), (A, BootMode::Confirmed), "{name}");
        assert!(matches!(run, Run::App { .. }), "{name}");
    }
    // A stage-1 image in an application slot never boots as an application.
    let mut flash = factory2();
    write_slot(&mut flash, B, &stage1_image(B, 2, 2, Behaviour::Good)).unwrap();
    let mut control = BootControl::open(&mut flash, LAYOUT, A).unwrap();
    assert!(matches!(
        control.mark_pending(B, &keys()),
        Err(ControlError::Image {
            error: BootError::Slot(SlotError::NotAnApplication),
            ..
        })
    ));
}

/// Nothing valid in either stage-1 slot (erased, garbage, or the application slots' images)
/// ends in recovery, whatever the journal says; never a jump. With one valid stage-1, every
/// journal state boots it.
#[test]
fn nothing_valid_is_recovery_and_one_valid_stage1_always_boots() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let journals: [&[RecordKind]; 4] = [
        &[],
        &[Stage1Confirmed { slot: A }],
        &[Stage1Confirmed { slot: A }, Stage1Pending { slot: B }],
        &[
            Stage1Floor { value: 1 },
            Stage1Confirmed { slot: B },
            Stage1Pending { slot: A },
            Stage1Attempt { slot: A },
        ],
    ];
    for records in journals {
        for (a, b) in [
            (None, None),
            (Some(garbage.clone()), Some(image_linked_for(B, 1, 1))),
            (Some(image_linked_for(A, 1, 1)), Some(garbage.clone())),
        ] {
            let mut flash = factory();
            for (slot, image) in [(A, &a), (B, &b)] {
                if let Some(image) = image {
                    flash.load(LAYOUT.stage1_offset(slot), image).unwrap();
                }
            }
            let mut journal = BootJournal::open(&mut flash, LAYOUT.journal).unwrap();
            for &kind in records {
                journal.append(kind).unwrap();
            }
            let outcome = boot_stage1(&mut flash, &LAYOUT, &keys());
            assert_eq!(outcome.action, BootAction::Recovery, "{records:?}");
            assert!(outcome.journal_error.is_none());
            // Recovery is stable: the next reset decides the same.
            let again = boot_stage1(&mut flash, &LAYOUT, &keys());
            assert_eq!(again.action, BootAction::Recovery, "{records:?}");
        }
        for slot in [A, B] {
            let mut flash = factory();
            flash
                .load(
                    LAYOUT.stage1_offset(slot),
                    &stage1_image(slot, 1, 1, Behaviour::Good),
                )
                .unwrap();
            let mut journal = BootJournal::open(&mut flash, LAYOUT.journal).unwrap();
            for &kind in records {
                journal.append(kind).unwrap();
            }
            let known = vec![stage1_image(slot, 1, 1, Behaviour::Good)];
            // Whatever the journal says, a few resets always boot the one valid stage-1.
            for _ in 0..MAX_TRIAL_ATTEMPTS + 2 {
                let run = power_on(&mut flash, &known).unwrap();
                assert_eq!(run.stage1().0, slot, "{records:?}");
                run_app(&mut flash, &run).unwrap();
            }
        }
    }
}

/// A journal that never saw a stage-1 record (a device flashed before the two stages, or a
/// factory journal without them): stage-0 boots stage-1 A unconfirmed, and the application's
/// confirmation adopts it, after which a stage-1 update can start.
#[test]
fn an_unconfirmed_stage1_is_adopted_by_the_application() {
    let mut flash = factory();
    flash.load(LAYOUT.stage1_offset(A), &stage1_v1_a()).unwrap();
    let known = vec![stage1_v1_a()];
    let run = power_on(&mut flash, &known).unwrap();
    assert_eq!(run.stage1(), (A, BootMode::Unconfirmed));
    let mut control = BootControl::open(&mut flash, LAYOUT, A).unwrap();
    assert!(matches!(
        control.mark_stage1_pending(B, &keys()),
        Err(ControlError::Stage1Busy(B))
    ));
    run_app(&mut flash, &run).unwrap();
    assert_eq!(stage1_state(&mut flash), (Some(A), None, 1));
    let run = power_on(&mut flash, &known).unwrap();
    assert_eq!(run.stage1(), (A, BootMode::Confirmed));
    // The running stage-1's own slot is never an update target.
    let mut control = BootControl::open(&mut flash, LAYOUT, A).unwrap();
    assert!(matches!(
        control.mark_stage1_pending(A, &keys()),
        Err(ControlError::Stage1Busy(A))
    ));
    update_stage1(&mut flash, A, B, &stage1_image(B, 2, 2, Behaviour::Good)).unwrap();
    assert_eq!(stage1_state(&mut flash), (Some(A), Some(B), 1));
}
