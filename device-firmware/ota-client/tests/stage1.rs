//! Installing a stage-1 bootloader over the air (issue 18, item 2), on the host: the OTA client
//! over an in-memory F429 flash holding stage-1 A, application A and a real boot journal, with
//! stage-0's own logic (`fota_boot::boot_stage1`) run at every simulated reset. A bootloader
//! offer is downloaded into the stage-1 slot stage-0 is not running, verified before
//! `Stage1Pending`, booted on trial by stage-0, and confirmed only once the application it
//! booted reached the server and passed its self-test; or stage-0 falls back to the old stage-1
//! and the boot through it reports the rollback. Wrong components, wrong stage-1 slots and bad
//! signatures are refused and never marked pending.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::SigningKey;
use fota_boot::journal::{RecordKind, MAX_TRIAL_ATTEMPTS};
use fota_boot::{boot_stage1, BootControl, BootJournal, BootMode, FlashLayout, JournalRegion};
use fota_ota_client::transport::Transport;
use fota_ota_client::{
    AfterBoot, CheckInOutcome, Config, DeviceInfo, Installed, MemPersist, OtaClient, RunningStage1,
    Step,
};
use fota_protocol::image::{Component as Mark, Digest, ImageBuilder, ImageVersion, TrustedKey};
use fota_protocol::layout::{sector_at, STAGE1_B};
use fota_protocol::messages::{
    CheckIn, CheckInResponse, Component, Event, EventKind, Model, Offer, RdpLevel, Report,
    ReportAck, ResetCause,
};
use fota_protocol::SlotId::{self, A, B};

const APP: ImageVersion = ImageVersion::new(1, 4, 0, 0);
const STAGE1_V1: ImageVersion = ImageVersion::new(1, 0, 0, 0);
const STAGE1_V2: ImageVersion = ImageVersion::new(2, 0, 0, 0);
/// What the board says when it cannot read its stage-1 (never used when a stage-1 verifies).
const BOARD_SAYS: ImageVersion = ImageVersion::new(0, 9, 0, 0);
const ROLLOUT: u64 = 31;
const LAYOUT: FlashLayout = FlashLayout::STM32F429;

type MemFlash = fota_boot::testing::MemFlash;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn keys() -> [TrustedKey; 1] {
    [TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()]
}

/// A payload with a vector table for `base`: SP in RAM, a Thumb reset handler inside.
fn payload(base: u32, len: usize, seed: u8) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8 ^ seed).collect();
    p[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
    p[4..8].copy_from_slice(&((base + 0x200 + 0x101) | 1).to_le_bytes());
    p
}

/// An application linked for application slot `slot`.
fn app(slot: SlotId, version: ImageVersion, counter: u32) -> Vec<u8> {
    let base = slot.partition().start;
    ImageBuilder::new(payload(base, 12_345, 1), version)
        .security_counter(counter)
        .rom_fixed(base)
        .sign(&signing_key())
        .unwrap()
}

/// A stage-1 linked for stage-1 slot `linked`, marked for `marked`, signed by `key`; an odd
/// length, so the last word is partial.
fn stage1_signed(
    linked: SlotId,
    marked: SlotId,
    version: ImageVersion,
    counter: u32,
    key: &SigningKey,
) -> Vec<u8> {
    let base = linked.stage1_partition().start;
    ImageBuilder::new(payload(base, 20_001, version.major), version)
        .security_counter(counter)
        .rom_fixed(base)
        .component(Mark::Stage1 { slot: marked })
        .sign(key)
        .unwrap()
}

fn stage1(slot: SlotId, version: ImageVersion, counter: u32) -> Vec<u8> {
    stage1_signed(slot, slot, version, counter, &signing_key())
}

fn bootloader_offer(artifact: &[u8], slot: SlotId, counter: u32) -> Offer {
    Offer {
        rollout_id: ROLLOUT,
        version: STAGE1_V2,
        component: Component::Bootloader,
        slot,
        sha256: Digest::of(artifact),
        size: artifact.len() as u32,
        security_counter: counter,
        patch: None,
    }
}

fn stage1_bytes(flash: &MemFlash, slot: SlotId) -> &[u8] {
    let start = LAYOUT.stage1_offset(slot) as usize;
    &flash.bytes[start..start + slot.stage1_partition().size as usize]
}

/// Out of the factory with two stages: stage-1 v1 (counter 1) in stage-1 slot A, the
/// application in slot A, both confirmed in the journal; then `records`.
fn factory(records: &[RecordKind]) -> MemFlash {
    let mut flash = MemFlash::f429();
    let at = LAYOUT.stage1_offset(A) as usize;
    let s1 = stage1(A, STAGE1_V1, 1);
    flash.bytes[at..at + s1.len()].copy_from_slice(&s1);
    let at = LAYOUT.slot_offset(A) as usize;
    let a = app(A, APP, 1);
    flash.bytes[at..at + a.len()].copy_from_slice(&a);
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    for r in [
        RecordKind::Confirmed { slot: A },
        RecordKind::SecurityCounter { value: 1 },
        RecordKind::Stage1Confirmed { slot: A },
        RecordKind::Stage1Floor { value: 1 },
    ]
    .iter()
    .chain(records)
    {
        journal.append(*r).unwrap();
    }
    let mut flash = journal.into_flash();
    flash.writes = 0;
    flash.erases.clear();
    flash
}

// ---- server ----------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct LinkDown;

#[derive(Debug, Default)]
struct Server {
    artifact: Vec<u8>,
    offer: Option<Offer>,
    /// Check-ins fail while set (the application cannot reach the server).
    down: bool,
    check_ins: Vec<CheckIn>,
    /// Offsets asked for.
    fetches: Vec<u32>,
    reported: Vec<Event>,
}

impl Server {
    fn offering(artifact: Vec<u8>, offer: Offer) -> Self {
        Self {
            artifact,
            offer: Some(offer),
            ..Self::default()
        }
    }
}

impl Transport for Server {
    type Error = LinkDown;

    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, LinkDown> {
        self.check_ins.push(check_in.clone());
        if self.down {
            return Err(LinkDown);
        }
        Ok(CheckInResponse {
            poll_interval_s: 60,
            offer: self.offer.clone(),
        })
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, LinkDown> {
        if self.down {
            return Err(LinkDown);
        }
        self.reported.extend(report.events.iter().cloned());
        Ok(ReportAck {
            stored: report.events.len() as u32,
            duplicates: 0,
        })
    }

    fn fetch_range(
        &mut self,
        sha: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, LinkDown> {
        assert_eq!(*sha, Digest::of(&self.artifact));
        self.fetches.push(offset);
        let start = (offset as usize).min(self.artifact.len());
        let n = buf.len().min(self.artifact.len() - start);
        buf[..n].copy_from_slice(&self.artifact[start..start + n]);
        Ok(n)
    }
}

// ---- device ----------------------------------------------------------------------------------

type Client<'k> = OtaClient<'k, Server, MemFlash, MemPersist>;

fn device(wrp_mask: u32) -> DeviceInfo {
    DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: APP,
        bootloader_version: BOARD_SAYS,
        rdp_level: RdpLevel::Level1,
        wrp_mask,
    }
}

/// The application in slot A starting on `flash` with the persisted `persist`.
fn client<'k>(
    server: Server,
    flash: MemFlash,
    persist: MemPersist,
    wrp_mask: u32,
    keys: &'k [TrustedKey],
) -> Client<'k> {
    let boot = BootControl::open(flash, LAYOUT, A).unwrap();
    OtaClient::new(
        server,
        boot,
        persist,
        device(wrp_mask),
        keys,
        Config::default(),
    )
}

fn run_download(c: &mut Client<'_>) -> Step {
    for _ in 0..100_000 {
        match c.download_step() {
            Step::Continue => {}
            other => return other,
        }
    }
    panic!("download never ended");
}

fn kinds(c: &Client<'_>) -> Vec<EventKind> {
    c.queued_events().iter().map(|e| e.kind).collect()
}

/// A reset: stage-0 decides (and journals) which stage-1 runs, which must be `expect`; the
/// stage-1 boots application A, confirmed (its own decision appends nothing here). Then the
/// application starts again on what the flash and the persisted state hold.
fn reset<'k>(
    c: Client<'k>,
    keys: &'k [TrustedKey],
    expect: Option<(SlotId, BootMode)>,
) -> Client<'k> {
    let (server, boot, persist) = c.into_parts();
    let mut flash = boot.into_flash();
    let outcome = boot_stage1(&mut flash, &LAYOUT, keys);
    assert_eq!(outcome.journal_error, None);
    let ran = outcome.action.target().map(|t| (t.slot(), t.mode));
    assert_eq!(ran, expect, "stage-0 ran {ran:?}");
    let app = fota_boot::boot(&mut flash, &LAYOUT, keys);
    assert_eq!(
        app.action.target().map(|t| (t.slot(), t.mode)),
        Some((A, BootMode::Confirmed))
    );
    let wrp = 0;
    let mut c = client(server, flash, persist, wrp, keys);
    c.boot_reset(ResetCause::Software, None);
    c
}

/// Install `artifact` as offered, and check that it ends pending in stage-1 slot B.
fn install_into_b<'k>(keys: &'k [TrustedKey], artifact: &[u8]) -> Client<'k> {
    let offer = bootloader_offer(artifact, B, 2);
    let mut c = client(
        Server::offering(artifact.to_vec(), offer),
        factory(&[]),
        MemPersist::default(),
        0,
        keys,
    );
    // A factory-fresh power-on: nothing to report, but from now on what runs is recorded.
    c.boot_reset(ResetCause::PowerOn, None);
    assert!(c.queued_events().is_empty());
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Reboot);
    let track = *c.boot().journal().state().stage1();
    assert_eq!(track.pending(), Some(B));
    assert_eq!(track.confirmed(), Some(A));
    c
}

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn a_stage1_is_installed_into_the_inactive_stage1_slot_booted_on_trial_and_confirmed() {
    let keys = keys();
    let artifact = stage1(B, STAGE1_V2, 2);
    let mut c = install_into_b(&keys, &artifact);
    // The check-in said which stage-1 runs: its own header, not the board's constant.
    assert_eq!(c.transport().check_ins[0].bootloader_version, STAGE1_V1);
    assert_eq!(
        kinds(&c),
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::Installed
        ]
    );
    assert!(c
        .queued_events()
        .iter()
        .all(|e| e.rollout_id == Some(ROLLOUT) && e.version == Some(STAGE1_V2)));
    assert_eq!(
        c.persist().installed,
        Some(Installed {
            component: Component::Bootloader,
            slot: B,
            rollout_id: ROLLOUT,
            version: STAGE1_V2,
        })
    );
    assert_eq!(c.persist().download, None);
    // Only stage-1 slot B's sector was erased; the image is there, the rest erased; the
    // application slots, the running stage-1 and the application's confirmation untouched.
    {
        let (server, boot, persist) = c.into_parts();
        let flash = boot.into_flash();
        let b = LAYOUT.stage1_offset(B);
        assert_eq!(flash.erases, [(b, b + STAGE1_B.size)]);
        assert_eq!(sector_at(STAGE1_B.start).unwrap().size, STAGE1_B.size);
        let slot = stage1_bytes(&flash, B);
        assert_eq!(&slot[..artifact.len()], &artifact[..]);
        assert!(slot[artifact.len()..].iter().all(|&b| b == 0xFF));
        assert_eq!(stage1_bytes(&flash, A), stage1_bytes(&factory(&[]), A));
        let boot = BootControl::open(flash, LAYOUT, A).unwrap();
        c = OtaClient::new(server, boot, persist, device(0), &keys, Config::default());
    }
    assert_eq!(c.flush_reports().unwrap(), 3);

    // The reset: stage-0 appends Stage1Attempt(B) and boots stage-1 B on trial.
    let mut c = reset(c, &keys, Some((B, BootMode::Trial { attempt: 1 })));
    assert_eq!(
        c.running_stage1(),
        Some(RunningStage1 {
            slot: B,
            mode: BootMode::Trial { attempt: 1 },
            version: STAGE1_V2
        })
    );
    assert!(
        c.on_trial(),
        "the stage-1's trial is the runtime's deadline"
    );
    // The reset into the installed stage-1 is the update's own.
    assert_eq!(
        c.queued_events()[0].reset.unwrap().cause,
        ResetCause::Update
    );
    // Nothing is installed while the stage-1 is on trial, even if the server still offers.
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::NotConfirmed);
    c.transport_mut().offer = None;

    // Proof: the application reached the server and passed its self-test.
    assert_eq!(
        c.after_boot(|| true).unwrap(),
        AfterBoot::Stage1Confirmed(B)
    );
    let track = *c.boot().journal().state().stage1();
    assert_eq!(track.confirmed(), Some(B));
    assert_eq!(track.pending(), None);
    assert_eq!(track.floor(), 2);
    assert!(!c.on_trial());
    let stage1_events: Vec<_> = c
        .queued_events()
        .iter()
        .filter(|e| e.rollout_id == Some(ROLLOUT))
        .map(|e| (e.kind, e.version))
        .collect();
    assert_eq!(
        stage1_events,
        [
            (EventKind::TrialBoot, Some(STAGE1_V2)),
            (EventKind::Confirmed, Some(STAGE1_V2))
        ]
    );
    c.flush_reports().unwrap();
    assert_eq!(c.persist().installed, None, "settled once acknowledged");
    let last = c.transport().check_ins.last().unwrap().clone();
    assert_eq!(last.bootloader_version, STAGE1_V2);

    // From now on stage-0 boots stage-1 B, confirmed, and nothing more is reported.
    let mut c = reset(c, &keys, Some((B, BootMode::Confirmed)));
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::Confirmed);
    assert!(c.queued_events().iter().all(|e| e.kind == EventKind::Reset));
    // The next bootloader would go to stage-1 slot A, the one stage-0 no longer runs.
    let next = stage1(A, ImageVersion::new(3, 0, 0, 0), 3);
    c.transport_mut().artifact = next.clone();
    c.transport_mut().offer = Some(bootloader_offer(&next, B, 3));
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::WrongSlot);
    c.transport_mut().offer = Some(bootloader_offer(&next, A, 3));
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
}

#[test]
fn a_stage1_that_never_proves_itself_is_reverted_by_stage0_and_the_rollback_reported() {
    let keys = keys();
    let artifact = stage1(B, STAGE1_V2, 2);
    let mut c = install_into_b(&keys, &artifact);
    c.flush_reports().unwrap();
    // Stage-1 B boots the application, which cannot reach the server (say, the new stage-1
    // leaves the modem's clock wrong): never confirmed, reset at the trial deadline each time.
    c.transport_mut().down = true;
    for attempt in 1..=MAX_TRIAL_ATTEMPTS {
        c = reset(c, &keys, Some((B, BootMode::Trial { attempt })));
        assert!(c.on_trial());
        assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::CheckInFailed);
        assert_eq!(c.boot().journal().state().stage1().confirmed(), Some(A));
    }
    // Out of attempts: stage-0 appends Stage1Reverted(B) and falls back to stage-1 A.
    c.transport_mut().down = false;
    let mut c = reset(c, &keys, Some((A, BootMode::Confirmed)));
    assert!(c.boot().journal().state().stage1().is_rejected(B));
    assert!(!c.on_trial());
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::RolledBack);
    let rolled_back = c
        .queued_events()
        .iter()
        .find(|e| e.kind == EventKind::RolledBack)
        .unwrap()
        .clone();
    assert_eq!(rolled_back.rollout_id, Some(ROLLOUT));
    assert_eq!(rolled_back.version, Some(STAGE1_V2));
    assert_eq!(
        rolled_back.reason.as_deref(),
        Some("stage-0 reverted stage-1 slot B to stage-1 slot A")
    );
    // The stage-1 floor stayed at the old stage-1's counter: A still boots.
    assert_eq!(c.boot().journal().state().stage1().floor(), 1);
    // The same offer again, before the server heard of the revert: not downloaded again.
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Reverted);
    assert_eq!(
        c.transport().check_ins.last().unwrap().bootloader_version,
        STAGE1_V1
    );
    c.flush_reports().unwrap();
    assert!(c
        .transport()
        .reported
        .iter()
        .any(|e| e.kind == EventKind::RolledBack));
    assert_eq!(c.persist().installed, None);
}

#[test]
fn a_stage1_that_hangs_is_reverted_and_the_old_stage1_reports_it() {
    // The new stage-1 never reaches the application: the application never runs during its
    // trial; stage-0 counts three attempts (each reset by the watchdog) and reverts.
    let keys = keys();
    let artifact = stage1(B, STAGE1_V2, 2);
    let c = install_into_b(&keys, &artifact);
    let (server, boot, persist) = c.into_parts();
    let mut flash = boot.into_flash();
    for attempt in 1..=MAX_TRIAL_ATTEMPTS {
        let outcome = boot_stage1(&mut flash, &LAYOUT, &keys);
        let target = outcome.action.target().unwrap();
        assert_eq!(
            (target.slot(), target.mode),
            (B, BootMode::Trial { attempt })
        );
    }
    // The fourth reset: Stage1Reverted(B), stage-1 A, and the application at last.
    let outcome = boot_stage1(&mut flash, &LAYOUT, &keys);
    let target = outcome.action.target().unwrap();
    assert_eq!((target.slot(), target.mode), (A, BootMode::Confirmed));
    let mut c = client(server, flash, persist, 0, &keys);
    c.boot_reset(ResetCause::IndependentWatchdog, None);
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::RolledBack);
    let rolled_back = c.queued_events().last().unwrap();
    assert_eq!(rolled_back.kind, EventKind::RolledBack);
    assert_eq!(rolled_back.version, Some(STAGE1_V2));
}

#[test]
fn an_image_of_the_wrong_component_is_refused_and_never_marked_pending() {
    let keys = keys();
    let cases = [
        // An application (linked for slot B) offered as the bootloader for stage-1 slot B.
        (
            app(B, STAGE1_V2, 2),
            Component::Bootloader,
            "offered as bootloader for slot B, the image is an application",
        ),
        // A stage-1 offered as an application for slot B.
        (
            stage1(B, STAGE1_V2, 2),
            Component::Application,
            "offered as application for slot B, the image is a stage-1 for stage-1 slot B",
        ),
    ];
    for (artifact, component, why) in cases {
        let offer = Offer {
            component,
            ..bootloader_offer(&artifact, B, 2)
        };
        let mut c = client(
            Server::offering(artifact, offer),
            factory(&[]),
            MemPersist::default(),
            0,
            &keys,
        );
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        assert_eq!(run_download(&mut c), Step::Failed, "{why}");
        let failed = c.queued_events().last().unwrap();
        assert_eq!(failed.kind, EventKind::VerifyFailed);
        assert_eq!(failed.reason.as_deref(), Some(why));
        let state = c.boot().journal().state();
        assert_eq!(state.stage1().pending(), None);
        assert_eq!(state.pending(), None);
        assert_eq!(c.persist().installed, None);
        assert_eq!(c.persist().download, None);
    }
}

#[test]
fn a_stage1_for_the_wrong_stage1_slot_is_refused() {
    let keys = keys();
    // Offered for stage-1 slot A, the one stage-0 runs: ignored before a byte is fetched.
    let artifact = stage1(A, STAGE1_V2, 2);
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, A, 2)),
        factory(&[]),
        MemPersist::default(),
        0,
        &keys,
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::WrongSlot);
    assert_eq!(c.download_step(), Step::Idle);
    assert!(c.transport().fetches.is_empty());

    // Linked for B but marked for stage-1 slot A, offered for B: refused once downloaded.
    let marked_a = stage1_signed(B, A, STAGE1_V2, 2, &signing_key());
    // Linked for A and marked for B: stage-0's placement check refuses it in B.
    let linked_a = stage1_signed(A, B, STAGE1_V2, 2, &signing_key());
    for (artifact, why) in [
        (
            marked_a,
            "offered as bootloader for slot B, the image is a stage-1 for stage-1 slot A",
        ),
        (
            linked_a,
            "image cannot run from its slot: image is linked for 0x08010000, not slot B at 0x080a0000",
        ),
    ] {
        let mut c = client(
            Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 2)),
            factory(&[]),
            MemPersist::default(),
            0,
            &keys,
        );
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        assert_eq!(run_download(&mut c), Step::Failed);
        let failed = c.queued_events().last().unwrap();
        assert_eq!(failed.kind, EventKind::VerifyFailed);
        assert_eq!(failed.reason.as_deref(), Some(why));
        assert_eq!(c.boot().journal().state().stage1().pending(), None);
        // Stage-0 would not boot it either.
        let (_, boot, _) = c.into_parts();
        let mut flash = boot.into_flash();
        let outcome = boot_stage1(&mut flash, &LAYOUT, &keys);
        let target = outcome.action.target().unwrap();
        assert_eq!((target.slot(), target.mode), (A, BootMode::Confirmed));
    }
}

#[test]
fn a_stage1_with_a_bad_signature_is_refused() {
    let keys = keys();
    // The signature's last byte flipped (the server serves exactly these bytes).
    let mut forged = stage1(B, STAGE1_V2, 2);
    *forged.last_mut().unwrap() ^= 0x01;
    // Signed by a key the device does not trust.
    let stranger = stage1_signed(B, B, STAGE1_V2, 2, &SigningKey::from_bytes(&[9; 32]));
    for (artifact, why) in [
        (forged, "image refused: Ed25519 signature does not verify"),
        (
            stranger,
            "image refused: image is signed by an untrusted key",
        ),
    ] {
        let mut c = client(
            Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 2)),
            factory(&[]),
            MemPersist::default(),
            0,
            &keys,
        );
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        assert_eq!(run_download(&mut c), Step::Failed);
        let failed = c.queued_events().last().unwrap();
        assert_eq!(failed.kind, EventKind::VerifyFailed);
        assert_eq!(failed.reason.as_deref(), Some(why));
        assert_eq!(c.boot().journal().state().stage1().pending(), None);
    }
}

#[test]
fn a_bootloader_offer_is_refused_below_the_stage1_floor_or_on_a_protected_sector() {
    let keys = keys();
    // The stage-1 floor is 1 (stage-1 A's counter): counter 0 is a downgrade.
    let artifact = stage1(B, STAGE1_V2, 0);
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 0)),
        factory(&[]),
        MemPersist::default(),
        0,
        &keys,
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Refused);
    let refused = c.queued_events().last().unwrap();
    assert_eq!(refused.kind, EventKind::VerifyFailed);
    assert_eq!(
        refused.reason.as_deref(),
        Some("security counter 0 is below the stage-1 floor 1")
    );
    assert!(c.transport().fetches.is_empty());
    // The application's floor (3 here) is not the stage-1's: counter 2 is no downgrade.
    let artifact = stage1(B, STAGE1_V2, 2);
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 2)),
        factory(&[RecordKind::SecurityCounter { value: 3 }]),
        MemPersist::default(),
        0,
        &keys,
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);

    // WRP on sector 9 (stage-1 slot B): reported, never written.
    let artifact = stage1(B, STAGE1_V2, 1);
    let sector9 = 1 << 9;
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 1)),
        factory(&[]),
        MemPersist::default(),
        sector9 | 0b11,
        &keys,
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::ProtectionBlocked);
    let blocked = c.queued_events().last().unwrap();
    assert_eq!(blocked.kind, EventKind::ProtectionBlocked);
    assert!(
        blocked
            .reason
            .as_deref()
            .unwrap()
            .starts_with("stage-1 slot B sectors"),
        "{blocked:?}"
    );
    assert_eq!(c.download_step(), Step::Idle);
}

#[test]
fn nothing_is_installed_while_the_stage1_or_the_application_is_unproven() {
    let keys = keys();
    let artifact = stage1(B, STAGE1_V2, 2);
    // An application offer while the stage-1 is on trial waits too.
    let app_b = app(B, ImageVersion::new(1, 5, 0, 0), 1);
    let app_offer = Offer {
        component: Component::Application,
        ..bootloader_offer(&app_b, B, 1)
    };
    let installed = install_into_b(&keys, &artifact);
    let mut c = reset(installed, &keys, Some((B, BootMode::Trial { attempt: 1 })));
    c.transport_mut().artifact = app_b.clone();
    c.transport_mut().offer = Some(app_offer);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::NotConfirmed);

    // A factory journal without stage-1 records: stage-1 A runs unconfirmed. The application
    // adopts it after reaching the server (no rollout: nothing reported for it), and only then
    // takes a bootloader offer.
    let mut flash = MemFlash::f429();
    let put = |flash: &mut MemFlash, at: u32, bytes: &[u8]| {
        flash.bytes[at as usize..at as usize + bytes.len()].copy_from_slice(bytes)
    };
    put(
        &mut flash,
        LAYOUT.stage1_offset(A),
        &stage1(A, STAGE1_V1, 1),
    );
    put(&mut flash, LAYOUT.slot_offset(A), &app(A, APP, 1));
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal.append(RecordKind::Confirmed { slot: A }).unwrap();
    let flash = journal.into_flash();
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 2)),
        flash,
        MemPersist::default(),
        0,
        &keys,
    );
    assert_eq!(
        c.running_stage1().map(|s| s.mode),
        Some(BootMode::Unconfirmed)
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::NotConfirmed);
    c.transport_mut().down = true;
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::CheckInFailed);
    assert_eq!(c.boot().journal().state().stage1().confirmed(), None);
    c.transport_mut().down = false;
    assert_eq!(c.after_boot(|| false).unwrap(), AfterBoot::SelfTestFailed);
    assert_eq!(c.boot().journal().state().stage1().confirmed(), None);
    assert_eq!(
        c.after_boot(|| true).unwrap(),
        AfterBoot::Stage1Confirmed(A)
    );
    assert_eq!(c.boot().journal().state().stage1().confirmed(), Some(A));
    assert!(c.queued_events().is_empty(), "{:?}", c.queued_events());
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
}

#[test]
fn a_device_with_no_stage1_that_verifies_refuses_bootloader_offers() {
    // A single-stage device (or the simulator): application A, nothing in the stage-1 slots.
    let keys = keys();
    let mut flash = MemFlash::f429();
    let at = LAYOUT.slot_offset(A) as usize;
    let a = app(A, APP, 1);
    flash.bytes[at..at + a.len()].copy_from_slice(&a);
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal.append(RecordKind::Confirmed { slot: A }).unwrap();
    let artifact = stage1(B, STAGE1_V2, 2);
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 2)),
        journal.into_flash(),
        MemPersist::default(),
        0,
        &keys,
    );
    assert_eq!(c.running_stage1(), None);
    assert!(!c.on_trial());
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::Confirmed);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Refused);
    // The board's own idea of its bootloader is what it reports.
    assert_eq!(c.transport().check_ins[0].bootloader_version, BOARD_SAYS);
    let refused = c.queued_events().last().unwrap();
    assert_eq!(refused.kind, EventKind::VerifyFailed);
    assert_eq!(
        refused.reason.as_deref(),
        Some("no running stage-1 verifies: cannot install a bootloader")
    );
}

#[test]
fn a_power_cut_mid_stage1_download_resumes_from_the_recorded_offset() {
    let keys = keys();
    let artifact = stage1(B, STAGE1_V2, 2);
    let mut c = client(
        Server::offering(artifact.clone(), bootloader_offer(&artifact, B, 2)),
        factory(&[]),
        MemPersist::default(),
        0,
        &keys,
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    // The erase, then 30 chunks of 512 bytes (about 15 KB), then the power goes.
    for _ in 0..31 {
        assert_eq!(c.download_step(), Step::Continue);
    }
    let (server, boot, persist) = c.into_parts();
    let saved = persist.download.clone().unwrap();
    assert_eq!(saved.offer.component, Component::Bootloader);
    assert_eq!(saved.offset, 12 * 1024, "recorded every 4 KB");
    let fetched_before = server.fetches.len();

    // The next boot (stage-0 and stage-1 unchanged: nothing is pending) resumes.
    let mut c = client(server, boot.into_flash(), persist, 0, &keys);
    let resumed = c.download().unwrap();
    assert_eq!(resumed.offer().component, Component::Bootloader);
    assert_eq!(run_download(&mut c), Step::Reboot);
    let first_after = c.transport().fetches[fetched_before];
    assert_eq!(
        first_after, saved.offset,
        "fetching went on from the recorded offset"
    );
    assert_eq!(c.boot().journal().state().stage1().pending(), Some(B));
    let (_, boot, _) = c.into_parts();
    let flash = boot.into_flash();
    assert_eq!(&stage1_bytes(&flash, B)[..artifact.len()], &artifact[..]);
    // The sector was erased once, before the cut; the resume did not erase it again.
    let b = LAYOUT.stage1_offset(B);
    assert_eq!(flash.erases, [(b, b + STAGE1_B.size)]);
}
