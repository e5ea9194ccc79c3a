//! Delta updates (issue 19): power cuts at every write and erase (a cut before each step and
//! torn cuts inside it) while the real OTA client applies a delta patch, from the offer through
//! the target slot's erase, the patch's application into slot B (its base, slot A, only read),
//! the verification, `mark_pending`, the trial boot and the client's own confirmation. The
//! client keeps its state where the board does, in a `FlashPersist` on sectors 10-11 of the same
//! simulated flash, so its records are cut points too.
//!
//! After each cut the next boot reaches a verified image (checked independently of
//! `fota-boot`), and the device, its client going on from whatever the flash holds, ends with
//! slot B holding exactly the release, confirmed. How it gets there is the documented design
//! (docs/FIRMWARE.md, "Applying a delta patch"): with a checkpoint of the patch recorded (here
//! every 1 KB of patch, so several land in this small one), the patch resumes from the last
//! whole one and only the rest of the patch is fetched; a download recorded without one (the
//! cut came before the first, or tore it) goes on with the full image after the bytes the
//! patch rebuilt (the offset last recorded); with nothing recorded it starts over with the
//! patch.
//!
//! Run with `--nocapture` to see how many cut points the sweep covered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fota_boot::journal::RecordKind::*;
use fota_boot::{BootControl, BootMode};
use fota_ota_client::transport::Transport;
use fota_ota_client::{
    AfterBoot, CheckInOutcome, Config, DeviceInfo, FlashPersist, OtaClient, Persist, SharedFlash,
    Step, StoreRegion,
};
use fota_protocol::image::{Digest, ImageBuilder, ImageVersion};
use fota_protocol::messages::{
    CheckIn, CheckInResponse, Component, EventKind, Model, Offer, PatchOffer, RdpLevel, Report,
    ReportAck,
};
use fota_protocol::SlotId::{self, A, B};
use fota_sim::flash::SimFlash;
use std::cell::RefCell;

const OLD: ImageVersion = ImageVersion::new(1, 0, 0, 0);
/// Patch bytes between checkpoints: small, so that the sweep's small patch has several.
const CHECKPOINT_EVERY: u32 = 1024;
const NEW: ImageVersion = ImageVersion::new(2, 0, 0, 0);

/// A firmware-like application image linked for `slot`, about 10 KB (so the client records its
/// progress, every 4 KB, twice while it applies the patch): code-like half-words and a table
/// of absolute addresses inside the slot, which move when the image is linked for the other
/// slot; `version` rewrites a stretch, as a point release would.
fn app_image(slot: SlotId, version: ImageVersion, counter: u32) -> Vec<u8> {
    let base = slot.partition().start;
    let len = 10_000;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    p.extend_from_slice(&((base + 0x200 + 0x100) | 1).to_le_bytes());
    let mut x = 1u32;
    while p.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if p.len() % 512 < 64 {
            p.extend_from_slice(&(base + 0x400 + (x >> 20)).to_le_bytes());
        } else {
            p.extend_from_slice(&((x >> 16) as u16 & 0x3fff).to_le_bytes());
        }
    }
    p.truncate(len);
    for (i, b) in p[len / 3..len / 3 + 300].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(version.major);
    }
    ImageBuilder::new(p, version)
        .security_counter(counter)
        .rom_fixed(base)
        .sign(&signing_key())
        .unwrap()
}

/// The release's artifacts: the running image (base), the new one (target), the patch.
struct Release {
    base: Vec<u8>,
    target: Vec<u8>,
    patch: Vec<u8>,
}

impl Release {
    fn new() -> Self {
        let base = app_image(A, OLD, 1);
        let target = app_image(B, NEW, 2);
        let patch = fota_delta::generate(&base, &target).unwrap();
        assert!(patch.len() < target.len() / 2, "{} bytes", patch.len());
        Self {
            base,
            target,
            patch,
        }
    }

    fn offer(&self) -> Offer {
        Offer {
            rollout_id: 1,
            version: NEW,
            component: Component::Application,
            slot: B,
            sha256: Digest::of(&self.target),
            size: self.target.len() as u32,
            security_counter: 2,
            patch: Some(PatchOffer {
                sha256: Digest::of(&self.patch),
                size: self.patch.len() as u32,
                base_sha256: Digest::of(&self.base),
            }),
        }
    }
}

/// The server: offers the release (with its patch) to a device still on the old version,
/// serves both artifacts, stores the reports.
struct Server<'r> {
    release: &'r Release,
    /// Bytes served of the full image, and of the patch.
    full_served: usize,
    patch_served: usize,
    /// The offset of the first patch bytes asked for.
    first_patch_fetch: Option<u32>,
    /// The kinds of the events stored, once each.
    events: Vec<EventKind>,
    ids: Vec<u64>,
}

impl<'r> Server<'r> {
    fn new(release: &'r Release) -> Self {
        Self {
            release,
            full_served: 0,
            patch_served: 0,
            first_patch_fetch: None,
            events: Vec::new(),
            ids: Vec::new(),
        }
    }
}

impl Transport for Server<'_> {
    type Error = ();

    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, ()> {
        Ok(CheckInResponse {
            poll_interval_s: 60,
            offer: (check_in.firmware_version == OLD).then(|| self.release.offer()),
        })
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, ()> {
        let mut stored = 0;
        for event in &report.events {
            if !self.ids.contains(&event.id) {
                self.ids.push(event.id);
                self.events.push(event.kind);
                stored += 1;
            }
        }
        Ok(ReportAck {
            stored,
            duplicates: report.events.len() as u32 - stored,
        })
    }

    fn fetch_range(&mut self, sha: &Digest, offset: u32, buf: &mut [u8]) -> Result<usize, ()> {
        let release = self.release;
        let (artifact, served) = if *sha == Digest::of(&release.target) {
            (&release.target, &mut self.full_served)
        } else if *sha == Digest::of(&release.patch) {
            self.first_patch_fetch.get_or_insert(offset);
            (&release.patch, &mut self.patch_served)
        } else {
            panic!("the device asked for an artifact it was not offered");
        };
        let start = (offset as usize).min(artifact.len());
        let n = buf.len().min(artifact.len() - start);
        buf[..n].copy_from_slice(&artifact[start..start + n]);
        *served += n;
        Ok(n)
    }
}

/// What the application did in one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppRun {
    /// Confirmed already, nothing offered: idle.
    Idle,
    /// On trial: reached the server, passed its self-test, confirmed itself.
    Confirmed,
    /// Took the offer, applied it, marked it pending: resets into the trial.
    Installed,
}

/// One boot of the application in `slot` (its version known from the release it is): the real
/// client on the flash, as the board builds it (boot control and `FlashPersist` sharing the
/// driver), confirms a trial, then checks in and installs what it is offered, reporting its
/// events as it goes. The flash is all that survives a cut.
fn app_run(flash: &mut SimFlash, slot: SlotId, server: &mut Server) -> Result<AppRun, PowerLost> {
    let cell = RefCell::new(std::mem::take(flash));
    let result = client_run(&cell, slot, server);
    *flash = cell.into_inner();
    match result {
        _ if !flash.is_powered() => Err(PowerLost),
        Ok(run) => Ok(run),
        Err(e) => panic!("the client failed with the power on: {e}"),
    }
}

fn client_run(
    cell: &RefCell<SimFlash>,
    slot: SlotId,
    server: &mut Server,
) -> Result<AppRun, String> {
    let keys = keys();
    let boot = BootControl::open(SharedFlash(cell), LAYOUT, slot).map_err(|e| format!("{e:?}"))?;
    let persist = FlashPersist::open(SharedFlash(cell), StoreRegion::STM32F429);
    let device = DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: if slot == A { OLD } else { NEW },
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0,
    };
    let config = Config {
        checkpoint_every: CHECKPOINT_EVERY,
        ..Config::default()
    };
    let mut client = OtaClient::new(server, boot, persist, device, &keys, config);
    let after = client.after_boot(|| true).map_err(|e| format!("{e:?}"))?;
    if after == AfterBoot::NewlyConfirmed {
        client.flush_reports().map_err(|e| format!("{e:?}"))?;
        return Ok(AppRun::Confirmed);
    }
    assert_eq!(after, AfterBoot::Confirmed);
    let outcome = client.check_in().map_err(|e| format!("{e:?}"))?;
    let step = match outcome {
        CheckInOutcome::NoOffer => return Ok(AppRun::Idle),
        // A fresh offer, or the download recorded before a cut, resumed.
        CheckInOutcome::Started | CheckInOutcome::Busy => loop {
            match client.download_step() {
                Step::Continue => {}
                step => break step,
            }
        },
        other => return Err(format!("check-in: {other:?}")),
    };
    client.flush_reports().map_err(|e| format!("{e:?}"))?;
    match step {
        Step::Reboot => Ok(AppRun::Installed),
        other => Err(format!(
            "download: {other:?}, events {:?}",
            client.queued_events()
        )),
    }
}

/// A reset: the bootloader from scratch; what it jumped to is checked.
fn power_on(flash: &mut SimFlash, known: &[Vec<u8>]) -> Result<(SlotId, BootMode), PowerLost> {
    let outcome = reboot(flash)?;
    Ok(assert_runs_verified_image(flash, &outcome, known))
}

/// A device out of the factory running `base` from slot A, confirmed at security counter 1.
fn factory_with(base: &[u8]) -> SimFlash {
    let mut flash = SimFlash::new();
    flash.load(LAYOUT.slot_offset(A), base).unwrap();
    let mut journal = fota_boot::BootJournal::open(&mut flash, LAYOUT.journal).unwrap();
    journal.append(SecurityCounter { value: 1 }).unwrap();
    journal.append(Confirmed { slot: A }).unwrap();
    flash
}

/// The bytes of `slot`.
fn slot_bytes(flash: &SimFlash, slot: SlotId) -> &[u8] {
    let start = LAYOUT.slot_offset(slot) as usize;
    &flash.as_bytes()[start..start + slot.partition().size as usize]
}

#[test]
fn every_cut_during_a_patch_application_trial_and_confirm() {
    let release = Release::new();
    let start = factory_with(&release.base);
    let known = vec![release.base.clone(), release.target.clone()];
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
        let mut server = Server::new(&release);
        assert_eq!(power_on(flash, &known)?, (A, BootMode::Confirmed));
        assert_eq!(app_run(flash, A, &mut server)?, AppRun::Installed);
        assert_eq!(
            power_on(flash, &known)?,
            (B, BootMode::Trial { attempt: 1 })
        );
        assert_eq!(app_run(flash, B, &mut server)?, AppRun::Confirmed);
        // Uncut, only the patch went over the link.
        assert_eq!(
            (server.full_served, server.patch_served),
            (0, release.patch.len())
        );
        Ok(())
    };
    let (mut resumed, mut after_rebuilt, mut restarted, mut after_install) = (0, 0, 0, 0);
    let mut from_checkpoint = 0;
    let report = sweep(
        "delta patch -> verify -> pending -> trial -> confirm",
        &start,
        &milestones,
        scenario,
        |flash, cut| {
            // What the client had recorded when the power went.
            let saved = FlashPersist::open(&mut *flash, StoreRegion::STM32F429)
                .load()
                .download
                .map(|d| (d.offset, d.checkpoint));
            let mut server = Server::new(&release);
            let mut first = None;
            let mut settled = false;
            for _ in 0..4 {
                let (slot, mode) = power_on(flash, &known).unwrap();
                if first.is_none() {
                    first = Some((slot, mode));
                }
                let run = app_run(flash, slot, &mut server).unwrap();
                if (slot, mode, run) == (B, BootMode::Confirmed, AppRun::Idle) {
                    settled = true;
                    break;
                }
            }
            assert!(settled, "{cut:?}: never settled on B confirmed");
            let s = journal_state(flash);
            assert_eq!(
                (s.confirmed(), s.pending(), s.security_counter()),
                (Some(B), None, 2),
                "{cut:?}"
            );
            let b = slot_bytes(flash, B);
            let len = release.target.len();
            assert!(
                b[..len] == release.target[..],
                "{cut:?}: slot B is not the release"
            );
            assert!(b[len..].iter().all(|&x| x == 0xFF), "{cut:?}");
            assert!(
                slot_bytes(flash, A)[..release.base.len()] == release.base[..],
                "{cut:?}: the base slot changed"
            );
            // Nothing failed or fell back on the way.
            assert!(
                !server.events.iter().any(|k| matches!(
                    k,
                    EventKind::VerifyFailed | EventKind::DownloadFailed | EventKind::RolledBack
                )),
                "{cut:?}: {:?}",
                server.events
            );
            // The design: a patch with a checkpoint recorded before the cut resumes from it;
            // a download recorded without one goes on with the full image after the bytes the
            // patch rebuilt; with none recorded the patch starts over; once the image was
            // pending nothing more is fetched.
            match (first.unwrap(), saved) {
                ((A, BootMode::Confirmed), Some((_, Some(checkpoint)))) => {
                    from_checkpoint += 1;
                    assert_eq!(server.full_served, 0, "{cut:?}");
                    assert_eq!(
                        server.patch_served,
                        release.patch.len() - checkpoint.fetched as usize,
                        "{cut:?}"
                    );
                    assert_eq!(
                        server.first_patch_fetch,
                        Some(checkpoint.fetched),
                        "{cut:?}"
                    );
                }
                ((A, BootMode::Confirmed), Some((offset, None))) => {
                    resumed += 1;
                    if offset > 0 {
                        after_rebuilt += 1;
                    }
                    assert_eq!(server.full_served, len - offset as usize, "{cut:?}");
                    assert_eq!(server.patch_served, 0, "{cut:?}");
                }
                ((A, BootMode::Confirmed), None) => {
                    restarted += 1;
                    assert_eq!(server.full_served, 0, "{cut:?}");
                    assert_eq!(server.patch_served, release.patch.len(), "{cut:?}");
                }
                _ => {
                    after_install += 1;
                    assert_eq!(server.full_served + server.patch_served, 0, "{cut:?}");
                }
            }
        },
    );
    println!(
        "after the cuts: {from_checkpoint} resumed the patch from a checkpoint, {resumed} \
         resumed with the full image ({after_rebuilt} of them after bytes the patch had \
         rebuilt), {restarted} started over with the patch, {after_install} past the install"
    );
    assert!(report.steps >= 40, "{report:?}");
    // Each way on is covered: resumes of the patch from a checkpoint, of the full image after
    // the bytes rebuilt (a cut before the first checkpoint was whole: most of these cut
    // points are in the checkpoint's own writes), starting over, and past the install.
    assert!(from_checkpoint > 0 && after_rebuilt > 0 && restarted > 0 && after_install > 0);
}
