//! A simulated device for the boot tests: signed images for both slots, a factory-fresh flash,
//! what the OTA client and the application do, and the power-cut sweep.
//!
//! Nothing here survives a "reset" except the [`SimFlash`]: every boot and every application
//! run builds its `fota-boot` objects afresh from flash, as a device whose RAM is zeroed would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::NorFlash;
use fota_boot::journal::{decode, Decoded, RecordKind, RECORD_LEN};
use fota_boot::{
    boot, BootAction, BootControl, BootJournal, BootMode, BootOutcome, BootState, FlashLayout,
};
use fota_protocol::image::check_verified_for_slot;
use fota_protocol::image::{verify, Digest, ImageBuilder, ImageVersion, TrustedKey};
use fota_protocol::SlotId;
use fota_sim::flash::{PowerCut, SimFlash, SimFlashError};
use std::time::{Duration, Instant};

pub const LAYOUT: FlashLayout = FlashLayout::STM32F429;

/// Bytes the OTA client programs per write.
pub const CHUNK: usize = 256;

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

pub fn keys() -> Vec<TrustedKey> {
    vec![TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()]
}

/// An application binary linked for `slot`: initial SP at the top of SRAM1, reset handler
/// 0x100 into the payload (Thumb bit set), and a body that differs per version.
pub fn payload(slot: SlotId, version: u8) -> Vec<u8> {
    let base = slot.partition().start;
    let mut payload: Vec<u8> = (0..1024u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ version)
        .collect();
    payload[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
    payload[4..8].copy_from_slice(&((base + 0x200 + 0x100) | 1).to_le_bytes());
    payload
}

/// A signed image of `payload(linked_for, version)` with security counter `counter`.
pub fn image_linked_for(linked_for: SlotId, version: u8, counter: u32) -> Vec<u8> {
    ImageBuilder::new(
        payload(linked_for, version),
        ImageVersion::new(version, 0, 0, 0),
    )
    .security_counter(counter)
    .rom_fixed(linked_for.partition().start)
    .sign(&signing_key())
    .unwrap()
}

/// The release images of the tests: v1 (counter 1) for A, v2 (counter 2) for B.
pub fn image_v1_a() -> Vec<u8> {
    image_linked_for(SlotId::A, 1, 1)
}

pub fn image_v2_b() -> Vec<u8> {
    image_linked_for(SlotId::B, 2, 2)
}

/// A device out of the factory: v1 in slot A (put there by the programming probe) and a
/// journal saying A is confirmed at security counter 1.
pub fn factory() -> SimFlash {
    let mut flash = SimFlash::new();
    flash
        .load(LAYOUT.slot_offset(SlotId::A), &image_v1_a())
        .unwrap();
    let mut journal = BootJournal::open(&mut flash, LAYOUT.journal).unwrap();
    journal
        .append(RecordKind::SecurityCounter { value: 1 })
        .unwrap();
    journal
        .append(RecordKind::Confirmed { slot: SlotId::A })
        .unwrap();
    flash
}

/// The power went off in the middle of what the device was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerLost;

/// `Err(PowerLost)` once the power is off; panics on any other failure, which in an uncut run
/// is a bug.
pub fn alive<T, E: std::fmt::Debug>(
    flash: &SimFlash,
    result: Result<T, E>,
) -> Result<T, PowerLost> {
    match result {
        Ok(v) => Ok(v),
        Err(_) if !flash.is_powered() => Err(PowerLost),
        Err(e) => panic!("unexpected failure with the power on: {e:?}"),
    }
}

/// The journal's state as the next boot will read it.
pub fn journal_state(flash: &mut SimFlash) -> BootState {
    *BootJournal::open(flash, LAYOUT.journal).unwrap().state()
}

/// Write `image` into `slot` as the OTA client does: erase the slot, program it chunk by chunk.
pub fn write_slot(flash: &mut SimFlash, slot: SlotId, image: &[u8]) -> Result<(), SimFlashError> {
    let offset = LAYOUT.slot_offset(slot);
    flash.erase(offset, offset + slot.partition().size)?;
    for (i, chunk) in image.chunks(CHUNK).enumerate() {
        let mut words = chunk.to_vec();
        words.resize(chunk.len().div_ceil(4) * 4, 0xFF);
        flash.write(offset + (i * CHUNK) as u32, &words)?;
    }
    Ok(())
}

/// The application in `running` installs `image` into the other slot and marks it pending.
pub fn update(flash: &mut SimFlash, running: SlotId, image: &[u8]) -> Result<(), PowerLost> {
    let target = running.other();
    let result = write_slot(flash, target, image);
    alive(flash, result)?;
    let mut control = match BootControl::open(&mut *flash, LAYOUT, running) {
        Ok(control) => control,
        Err(e) => return alive(flash, Err::<(), _>(e)),
    };
    let result = control.mark_pending(target, &keys());
    alive(flash, result)
}

/// A reset: the bootloader runs from scratch on whatever the flash holds.
pub fn reboot(flash: &mut SimFlash) -> Result<BootOutcome<SimFlashError>, PowerLost> {
    let outcome = boot(flash, &LAYOUT, &keys());
    if flash.is_powered() {
        Ok(outcome)
    } else {
        Err(PowerLost)
    }
}

/// The application running from `slot` reached the server and passed its self-test.
pub fn confirm(flash: &mut SimFlash, slot: SlotId) -> Result<(), PowerLost> {
    let mut control = match BootControl::open(&mut *flash, LAYOUT, slot) {
        Ok(control) => control,
        Err(e) => return alive(flash, Err::<(), _>(e)),
    };
    let result = control.mark_confirmed(&keys());
    alive(flash, result)
}

/// The slot and mode a boot jumped to; panics on recovery.
pub fn jumped(outcome: &BootOutcome<SimFlashError>) -> (SlotId, BootMode) {
    match outcome.action {
        BootAction::Jump(target) => (target.slot(), target.mode),
        BootAction::Recovery => panic!("recovery mode: {outcome:?}"),
    }
}

/// Check, independently of `fota-boot`, that what a boot jumped to is a genuine, runnable
/// image not below the journal's floor, and one of `known`. Returns its slot and mode.
pub fn assert_runs_verified_image(
    flash: &SimFlash,
    outcome: &BootOutcome<SimFlashError>,
    known: &[Vec<u8>],
) -> (SlotId, BootMode) {
    let BootAction::Jump(target) = outcome.action else {
        panic!("recovery mode although a valid image exists: {outcome:?}");
    };
    let slot = target.slot();
    let offset = LAYOUT.slot_offset(slot) as usize;
    let bytes = &flash.as_bytes()[offset..offset + slot.partition().size as usize];
    let image = verify(bytes, &keys()).expect("jumped to an image that does not verify");
    check_verified_for_slot(&image, slot).expect("jumped to an image linked for another slot");
    assert!(image.security_counter >= outcome.state.security_counter());
    assert!(
        known
            .iter()
            .any(|k| verify(k, &keys()).unwrap().digest == image.digest),
        "jumped to an image that was never released"
    );
    assert_eq!(target.image.image.digest, image.digest);
    (slot, target.mode)
}

/// The digest of a signed image.
pub fn digest(image: &[u8]) -> Digest {
    verify(image, &keys()).unwrap().digest
}

/// Journal slots, in both sectors, holding a torn or otherwise corrupt record.
pub fn damaged_journal_slots(flash: &SimFlash) -> usize {
    let region = LAYOUT.journal;
    region
        .sectors
        .iter()
        .flat_map(|&start| {
            flash.as_bytes()[start as usize..(start + region.sector_size) as usize]
                .chunks_exact(RECORD_LEN)
        })
        .filter(|&slot| matches!(decode(slot.try_into().unwrap()), Decoded::Corrupt(_)))
        .count()
}

/// Torn cuts tried per step, each with its own seed.
pub const TORN_SEEDS: u64 = 6;

/// One cut: the step (from the start of the scenario) and how.
#[derive(Debug, Clone, Copy)]
pub struct CutPoint {
    pub step: u64,
    pub cut: PowerCut,
}

/// What a sweep covered.
#[derive(Debug, Clone, Copy)]
pub struct SweepReport {
    /// Write and erase steps in the scenario.
    pub steps: u64,
    /// Cuts made: one before each step and [`TORN_SEEDS`] inside each.
    pub cut_points: u64,
    /// Torn cuts that left damaged records in the journal (a torn append or compaction write,
    /// or a partly erased sector) for the next boot to read past.
    pub damaged_journals: u64,
    pub elapsed: Duration,
}

/// The states the journal passes through: `start`, then after each record of `steps`.
pub fn milestones(start: &BootState, steps: &[RecordKind]) -> Vec<BootState> {
    let mut state = *start;
    let mut out = vec![state];
    for &kind in steps {
        state.apply(&fota_boot::journal::Record::new(
            state.next_sequence(),
            kind,
        ));
        out.push(state);
    }
    out
}

/// Run `scenario` from `start` once to count its steps; then once per cut (before each step,
/// and torn inside it with several seeds), each time from a copy of `start`. After each cut:
/// power on and check that the journal replays to the state before or after the cut step, then
/// hand the flash to `after_cut`, which boots it and checks what runs.
///
/// The states before each step (from the cuts before each step) must walk through
/// `milestones` in order, one at most per step: a step never skips or undoes a record.
pub fn sweep(
    name: &str,
    start: &SimFlash,
    milestones: &[BootState],
    scenario: impl Fn(&mut SimFlash) -> Result<(), PowerLost>,
    mut after_cut: impl FnMut(&mut SimFlash, CutPoint),
) -> SweepReport {
    let began = Instant::now();
    let first = start.steps();
    let damaged_before = damaged_journal_slots(start);
    let mut damaged_journals = 0;
    let mut reference = start.clone();
    scenario(&mut reference).expect("the scenario runs without a cut");
    let steps = reference.steps() - first;
    assert!(steps > 0, "{name}: the scenario writes nothing");
    assert!(
        journal_state(&mut reference).equivalent(milestones.last().unwrap()),
        "{name}: the scenario does not end at its last milestone"
    );

    // states[n]: the journal before step n (states[steps]: after the whole scenario). They
    // must walk through the milestones in order, at most one per step: a step never skips or
    // undoes a record.
    let mut states: Vec<BootState> = Vec::new();
    let mut milestone = 0;
    let mut cut_points = 0;
    for n in 0..=steps {
        let mut flash = start.clone();
        let cut = PowerCut::Before;
        flash.cut_power_at(first + n, cut);
        let result = scenario(&mut flash);
        if n == steps {
            assert!(result.is_ok() && flash.is_powered());
        } else {
            assert_eq!(result, Err(PowerLost), "{name}: cut before step {n} missed");
            flash.power_on();
        }
        let state = journal_state(&mut flash);
        let found = milestones[milestone..]
            .iter()
            .position(|m| m.equivalent(&state))
            .unwrap_or_else(|| {
                panic!("{name}: before step {n} the journal is at {state:?}, not at a milestone")
            });
        assert!(found <= 1, "{name}: step {n} skipped a milestone");
        milestone += found;
        states.push(state);
        if n < steps {
            cut_points += 1;
            after_cut(&mut flash, CutPoint { step: n, cut });
        }
    }
    assert_eq!(
        milestone,
        milestones.len() - 1,
        "{name}: milestones not all reached"
    );

    for n in 0..steps {
        for seed in 0..TORN_SEEDS {
            let cut = PowerCut::Torn {
                seed: n * 1000 + seed,
            };
            let mut flash = start.clone();
            flash.cut_power_at(first + n, cut);
            assert_eq!(
                scenario(&mut flash),
                Err(PowerLost),
                "{name}: torn cut in step {n} missed"
            );
            flash.power_on();
            if damaged_journal_slots(&flash) > damaged_before {
                damaged_journals += 1;
            }
            let state = journal_state(&mut flash);
            let (before, after) = (&states[n as usize], &states[n as usize + 1]);
            assert!(
                state.equivalent(before) || state.equivalent(after),
                "{name}: torn cut in step {n} (seed {seed}) replays to {state:?}, \
                 neither {before:?} nor {after:?}"
            );
            cut_points += 1;
            after_cut(&mut flash, CutPoint { step: n, cut });
        }
    }
    let report = SweepReport {
        steps,
        cut_points,
        damaged_journals,
        elapsed: began.elapsed(),
    };
    println!(
        "{name}: {steps} flash steps, {cut_points} cut points ({} before a step, {} torn inside \
         one, {damaged_journals} of them leaving damaged journal records), {:.2?}",
        steps,
        steps * TORN_SEEDS,
        report.elapsed
    );
    report
}
