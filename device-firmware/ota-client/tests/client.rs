//! The `OtaClient` state machine on the host: an in-memory server, an in-memory NOR flash with
//! the F429 map and a real boot journal, signed images built like the release pipeline does.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::SigningKey;
use fota_boot::journal::RecordKind;
use fota_boot::{BootControl, BootJournal, BootMode, FlashLayout, JournalRegion};
use fota_ota_client::client::EVENT_QUEUE_LEN;
use fota_ota_client::transport::Transport;
use fota_ota_client::{
    AfterBoot, CheckInOutcome, Config, DeviceInfo, Installed, MemPersist, OtaClient, Running, Step,
    MAX_QUEUED_RESETS, UPTIME_RECORD_EVERY_S,
};
use fota_protocol::image::{Digest, ImageBuilder, ImageVersion, TrustedKey};
use fota_protocol::messages::{
    CheckIn, CheckInResponse, Component, EventKind, Model, Offer, RdpLevel, Report, ReportAck,
    ResetCause,
};
use fota_protocol::SlotId;

const OLD: ImageVersion = ImageVersion::new(1, 4, 0, 1);
const NEW: ImageVersion = ImageVersion::new(1, 5, 0, 2);
const ROLLOUT: u64 = 9;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn keys() -> [TrustedKey; 1] {
    [TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()]
}

/// A signed image linked for `slot`, with an odd length so the last word is partial.
fn image(slot: SlotId, version: ImageVersion, counter: u32, len: usize) -> Vec<u8> {
    let entry = slot.partition().start + 0x200 + 0x100;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    p.extend_from_slice(&(entry | 1).to_le_bytes());
    p.extend((8..len).map(|i| (i * 31 % 251) as u8));
    ImageBuilder::new(p, version)
        .security_counter(counter)
        .rom_fixed(slot.partition().start)
        .sign(&signing_key())
        .unwrap()
}

fn new_image() -> Vec<u8> {
    image(SlotId::B, NEW, 4, 20_001)
}

fn offer_for(artifact: &[u8]) -> Offer {
    Offer {
        rollout_id: ROLLOUT,
        version: NEW,
        component: Component::Application,
        slot: SlotId::B,
        sha256: Digest::of(artifact),
        size: artifact.len() as u32,
        security_counter: 4,
        patch: None,
    }
}

// ---- flash ----------------------------------------------------------------------------------

/// The F429's 1 MB as offsets from 0x0800_0000, NOR rules enforced: fota-boot's test flash.
type MemFlash = fota_boot::testing::MemFlash;

fn slot_of(flash: &MemFlash, slot: SlotId) -> &[u8] {
    let start = FlashLayout::STM32F429.slot_offset(slot) as usize;
    &flash.bytes[start..start + slot.partition().size as usize]
}

fn put(flash: &mut MemFlash, slot: SlotId, image: &[u8]) {
    let start = FlashLayout::STM32F429.slot_offset(slot) as usize;
    flash.bytes[start..start + image.len()].copy_from_slice(image);
}

/// The persisted state after `installed` was recorded (and, when given, the event counter).
fn persisted(installed: Option<Installed>, next_event_id: Option<u64>) -> MemPersist {
    MemPersist {
        installed,
        next_event_id: next_event_id.unwrap_or(1),
        ..MemPersist::default()
    }
}

fn installed_new() -> Installed {
    Installed {
        component: Component::Application,
        slot: SlotId::B,
        rollout_id: ROLLOUT,
        version: NEW,
    }
}

// ---- server ----------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct LinkDown;

/// What a fetch request got: its offset and the bytes served (`None`: the link dropped).
type Fetch = (u32, Option<usize>);

#[derive(Debug, Default)]
struct Server {
    artifact: Vec<u8>,
    offer: Option<Offer>,
    /// Check-ins that fail before one succeeds.
    failing_check_ins: usize,
    /// Every `drop_every`-th fetch fails (0: never).
    drop_every: usize,
    max_read: usize,
    /// Reports that fail before one succeeds.
    failing_reports: usize,
    check_ins: Vec<CheckIn>,
    fetches: Vec<Fetch>,
    reports: Vec<Report>,
    acked: Vec<Report>,
}

impl Server {
    fn offering(artifact: Vec<u8>) -> Self {
        Self {
            offer: Some(offer_for(&artifact)),
            artifact,
            max_read: usize::MAX,
            ..Self::default()
        }
    }
}

impl Transport for Server {
    type Error = LinkDown;

    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, LinkDown> {
        self.check_ins.push(check_in.clone());
        if self.failing_check_ins > 0 {
            self.failing_check_ins -= 1;
            return Err(LinkDown);
        }
        Ok(CheckInResponse {
            poll_interval_s: 60,
            offer: self.offer.clone(),
        })
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, LinkDown> {
        self.reports.push(report.clone());
        if self.failing_reports > 0 {
            self.failing_reports -= 1;
            return Err(LinkDown);
        }
        self.acked.push(report.clone());
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
        if self.drop_every > 0 && (self.fetches.len() + 1) % self.drop_every == 0 {
            self.fetches.push((offset, None));
            return Err(LinkDown);
        }
        let start = (offset as usize).min(self.artifact.len());
        let n = buf
            .len()
            .min(self.max_read)
            .min(self.artifact.len() - start);
        buf[..n].copy_from_slice(&self.artifact[start..start + n]);
        self.fetches.push((offset, Some(n)));
        Ok(n)
    }
}

// ---- device setup ----------------------------------------------------------------------------

fn device(wrp_mask: u32) -> DeviceInfo {
    DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: OLD,
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask,
    }
}

/// Flash with the old image in slot A, confirmed in the journal, and `records` appended.
fn flash_with(records: &[RecordKind]) -> MemFlash {
    let mut flash = MemFlash::f429();
    put(&mut flash, SlotId::A, &image(SlotId::A, OLD, 3, 12_345));
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal
        .append(RecordKind::Confirmed { slot: SlotId::A })
        .unwrap();
    for r in records {
        journal.append(*r).unwrap();
    }
    let mut flash = journal.into_flash();
    flash.writes = 0;
    flash.erases.clear();
    flash
}

type Client<'k> = OtaClient<'k, Server, MemFlash, MemPersist>;

fn client<'k>(
    server: Server,
    flash: MemFlash,
    running: SlotId,
    persist: MemPersist,
    wrp_mask: u32,
    keys: &'k [TrustedKey],
    config: Config,
) -> Client<'k> {
    let boot = BootControl::open(flash, FlashLayout::STM32F429, running).unwrap();
    OtaClient::new(server, boot, persist, device(wrp_mask), keys, config)
}

/// Step until the client stops asking for more (bounded: it must never spin forever).
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

// ---- tests -----------------------------------------------------------------------------------

#[test]
fn happy_path_installs_marks_pending_and_asks_for_a_reboot() {
    let keys = keys();
    let artifact = new_image();
    let mut c = client(
        Server::offering(artifact.clone()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0b11, // the bootloader's sectors only
        &keys,
        Config::default(),
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    let sent = &c.transport().check_ins[0];
    assert_eq!(sent.running_slot, SlotId::A);
    assert_eq!(sent.firmware_version, OLD);
    assert_eq!(sent.wrp_mask, 0b11);

    assert_eq!(run_download(&mut c), Step::Reboot);
    assert_eq!(c.boot().journal().state().pending(), Some(SlotId::B));
    assert_eq!(c.boot().journal().state().confirmed(), Some(SlotId::A));
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
        .all(|e| e.rollout_id == Some(ROLLOUT)));
    assert_eq!(c.persist().installed, Some(installed_new()));
    // The download is over: nothing to resume after the reset.
    assert_eq!(c.persist().download, None);
    // Nothing more to do.
    assert_eq!(c.download_step(), Step::Idle);

    let (_, boot, _) = c.into_parts();
    let flash = boot.into_flash();
    let slot = slot_of(&flash, SlotId::B);
    assert_eq!(&slot[..artifact.len()], &artifact[..]);
    // The padding of the last word and the rest of the slot are erased.
    assert!(slot[artifact.len()..].iter().all(|&b| b == 0xFF));
    // Both 128 KB sectors of slot B, each erased once.
    let b = FlashLayout::STM32F429.slot_offset(SlotId::B);
    assert_eq!(
        flash.erases,
        [(b, b + 128 * 1024), (b + 128 * 1024, b + 256 * 1024)]
    );
}

#[test]
fn a_link_that_keeps_dropping_resumes_from_the_flash_offset_and_completes() {
    let keys = keys();
    let artifact = new_image();
    let mut server = Server::offering(artifact.clone());
    server.drop_every = 3;
    server.max_read = 301; // odd short reads: a tail waits for the next chunk
    let mut c = client(
        server,
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config {
            max_fetch_failures: 2,
            chunk_len: 512,
            ..Config::default()
        },
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Reboot);
    assert_eq!(c.boot().journal().state().pending(), Some(SlotId::B));
    assert_eq!(
        kinds(&c),
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::Installed
        ]
    );

    // Every request starts right after the bytes received so far: no gap, nothing twice; a
    // request after a drop asks for the same offset again.
    let fetches = &c.transport().fetches;
    let drops = fetches.iter().filter(|f| f.1.is_none()).count();
    assert!(drops > 10, "{drops} drops");
    let mut expected = 0u32;
    for (i, &(offset, got)) in fetches.iter().enumerate() {
        assert_eq!(offset, expected, "request {i}");
        if let Some(n) = got {
            expected += n as u32;
        } else {
            assert_eq!(fetches[i + 1].0, offset, "resume after drop {i}");
        }
    }
    assert_eq!(expected as usize, artifact.len());
    // Resumes also happen at offsets that are not word-aligned (the tail held in RAM).
    assert!(fetches.iter().any(|f| f.1.is_none() && f.0 % 4 != 0));

    let (_, boot, _) = c.into_parts();
    let flash = boot.into_flash();
    assert_eq!(&slot_of(&flash, SlotId::B)[..artifact.len()], &artifact[..]);
}

#[test]
fn a_dead_link_gives_up_after_n_consecutive_failures() {
    let keys = keys();
    let mut server = Server::offering(new_image());
    server.drop_every = 1;
    let mut c = client(
        server,
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config {
            max_fetch_failures: 4,
            chunk_len: 512,
            ..Config::default()
        },
    );
    c.check_in().unwrap();
    assert_eq!(run_download(&mut c), Step::Failed);
    assert_eq!(c.transport().fetches.len(), 4);
    assert_eq!(
        kinds(&c),
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::DownloadFailed
        ]
    );
    assert_eq!(c.boot().journal().state().pending(), None);
    assert_eq!(c.download_step(), Step::Idle);
}

#[test]
fn a_tampered_image_fails_verification_and_is_not_marked_pending() {
    let keys = keys();
    let mut artifact = new_image();
    artifact[0x200 + 100] ^= 0x01; // a payload byte; the offer matches the tampered bytes
    let mut c = client(
        Server::offering(artifact),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Failed);
    assert_eq!(
        kinds(&c),
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::VerifyFailed
        ]
    );
    let failed = &c.queued_events()[2];
    assert_eq!(failed.rollout_id, Some(ROLLOUT));
    assert!(!failed.reason.as_ref().unwrap().is_empty());
    assert_eq!(c.boot().journal().state().pending(), None);
    assert_eq!(c.persist().installed, None);
    assert_eq!(c.download_step(), Step::Idle);
}

#[test]
fn a_write_protected_target_slot_is_reported_and_never_written() {
    let keys = keys();
    let mut c = client(
        Server::offering(new_image()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        SlotId::B.partition().sector_mask() | 0b11,
        &keys,
        Config::default(),
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::ProtectionBlocked);
    assert_eq!(kinds(&c), [EventKind::ProtectionBlocked]);
    let reason = c.queued_events()[0].reason.clone().unwrap();
    assert!(reason.contains("write-protected"), "{reason}");
    assert_eq!(c.download_step(), Step::Idle);
    assert!(c.transport().fetches.is_empty());
    let (_, boot, _) = c.into_parts();
    let flash = boot.into_flash();
    assert_eq!(flash.writes, 0);
    assert!(flash.erases.is_empty());
}

#[test]
fn a_trial_image_does_not_take_offers() {
    let keys = keys();
    let mut flash = flash_with(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
    ]);
    put(&mut flash, SlotId::B, &new_image());
    let mut server = Server::offering(image(SlotId::A, NEW, 4, 9_999));
    server.offer.as_mut().unwrap().slot = SlotId::A;
    let mut c = client(
        server,
        flash,
        SlotId::B,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::NotConfirmed);
    assert!(c.queued_events().is_empty());
    assert_eq!(c.download_step(), Step::Idle);
}

/// Slot B holds the new image on its first trial boot; the persisted store remembers the rollout.
fn trial_boot(server: Server, keys: &[TrustedKey]) -> Client<'_> {
    let mut flash = flash_with(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
    ]);
    put(&mut flash, SlotId::B, &new_image());
    let persist = persisted(Some(installed_new()), Some(40));
    let c = client(
        server,
        flash,
        SlotId::B,
        persist,
        0,
        keys,
        Config::default(),
    );
    assert!(c.boot().info().is_trial());
    c
}

#[test]
fn after_boot_without_reaching_the_server_does_not_confirm() {
    let keys = keys();
    let server = Server {
        failing_check_ins: 1,
        ..Server::default()
    };
    let mut c = trial_boot(server, &keys);
    let mut self_tested = false;
    let outcome = c
        .after_boot(|| {
            self_tested = true;
            true
        })
        .unwrap();
    assert_eq!(outcome, AfterBoot::CheckInFailed);
    assert!(!self_tested);
    assert_eq!(c.transport().check_ins.len(), 1);
    assert_eq!(c.boot().journal().state().confirmed(), Some(SlotId::A));
    assert!(c.boot().info().is_trial());
    assert!(!kinds(&c).contains(&EventKind::Confirmed));
}

#[test]
fn after_boot_with_a_failing_self_test_does_not_confirm() {
    let keys = keys();
    let mut c = trial_boot(Server::default(), &keys);
    assert_eq!(c.after_boot(|| false).unwrap(), AfterBoot::SelfTestFailed);
    assert_eq!(c.boot().journal().state().confirmed(), Some(SlotId::A));
    assert!(!kinds(&c).contains(&EventKind::Confirmed));
}

#[test]
fn after_boot_confirms_reports_and_forgets_the_rollout_once_acknowledged() {
    let keys = keys();
    let mut c = trial_boot(Server::default(), &keys);
    assert_eq!(c.transport().check_ins.len(), 0);
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::NewlyConfirmed);
    let sent = &c.transport().check_ins[0];
    assert_eq!(sent.running_slot, SlotId::B);
    assert_eq!(sent.boot_state, fota_protocol::messages::BootState::Trial);
    assert_eq!(c.boot().journal().state().confirmed(), Some(SlotId::B));
    assert_eq!(c.boot().info().mode, BootMode::Confirmed);
    // The anti-rollback floor rose to the new image's counter, and check-ins say so (the
    // trial's check-in still carried the old floor: the server must not count on the new one
    // before the bootloader holds it).
    assert_eq!(c.boot().info().security_counter, 4);
    assert!(sent.security_counter.is_some_and(|f| f < 4), "{sent:?}");
    assert_eq!(c.check_in_message().security_counter, Some(4));

    // The trial boot, then its confirmation, both about the rollout it came from.
    let events = c.queued_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].kind, EventKind::TrialBoot);
    assert_eq!(events[1].kind, EventKind::Confirmed);
    assert!(events.iter().all(|e| e.rollout_id == Some(ROLLOUT)));
    assert_eq!((events[0].id, events[1].id), (40, 41));

    assert_eq!(c.flush_reports().unwrap(), 2);
    assert!(c.queued_events().is_empty());
    assert_eq!(c.persist().installed, None);
    assert_eq!(c.persist().next_event_id, 42);
    // Acknowledged events are not kept for the next boot.
    assert!(c.persist().events.is_empty());
}

/// Flash where the new image in slot B was installed, failed its three trials and was reverted.
fn reverted_b() -> MemFlash {
    let mut flash = flash_with(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
        RecordKind::Reverted { slot: SlotId::B },
    ]);
    put(&mut flash, SlotId::B, &new_image());
    flash
}

#[test]
fn a_confirmed_boot_after_a_revert_reports_the_rollback() {
    let keys = keys();
    let flash = reverted_b();
    let persist = persisted(Some(installed_new()), None);
    let mut c = client(
        Server::default(),
        flash,
        SlotId::A,
        persist,
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::RolledBack);
    let events = c.queued_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::RolledBack);
    assert_eq!(events[0].rollout_id, Some(ROLLOUT));
    assert_eq!(events[0].version, Some(NEW));
    // A confirmed boot does not need the server to stay confirmed.
    assert!(c.transport().check_ins.is_empty());
    assert_eq!(c.flush_reports().unwrap(), 1);
    // Reported once: the next boot has nothing to say.
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::Confirmed);
    assert!(c.queued_events().is_empty());
}

/// Until the server has the revert, an offer of the very image the bootloader reverted is not
/// downloaded again; once the `RolledBack` report is acknowledged, offers are considered again.
#[test]
fn the_image_just_reverted_is_not_downloaded_again_before_the_server_knows() {
    let keys = keys();
    let flash = reverted_b();
    let mut c = client(
        Server::offering(new_image()),
        flash,
        SlotId::A,
        persisted(Some(installed_new()), None),
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(c.after_boot(|| true).unwrap(), AfterBoot::RolledBack);
    // The check-in goes out before the report (the server still thinks it is downloading).
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Reverted);
    assert!(c.download().is_none());
    assert_eq!(kinds(&c), vec![EventKind::RolledBack]);
    // Another version of the same rollout is considered as usual.
    let mut other = offer_for(&new_image());
    other.version = ImageVersion::new(2, 0, 1, 0);
    c.transport_mut().offer = Some(other);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
}

#[test]
fn reports_are_retried_until_acknowledged_with_the_same_ids() {
    let keys = keys();
    let mut server = Server::offering(new_image());
    server.failing_reports = 2;
    let mut c = client(
        server,
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        SlotId::B.partition().sector_mask(),
        &keys,
        Config::default(),
    );
    // Three check-ins, three ProtectionBlocked events.
    for _ in 0..3 {
        c.check_in().unwrap();
    }
    assert_eq!(c.queued_events().len(), 3);
    assert!(c.flush_reports().is_err());
    assert!(c.flush_reports().is_err());
    assert_eq!(c.queued_events().len(), 3);
    assert_eq!(c.flush_reports().unwrap(), 3);
    assert!(c.queued_events().is_empty());
    assert_eq!(c.flush_reports().unwrap(), 0);

    let reports = &c.transport().reports;
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| *r == reports[0]));
    let ids: Vec<u64> = reports[0].events.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(c.transport().acked.len(), 1);
}

#[test]
fn a_full_queue_drops_the_oldest_and_flushes_in_batches() {
    let keys = keys();
    let mut c = client(
        Server::offering(new_image()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        SlotId::B.partition().sector_mask(),
        &keys,
        Config::default(),
    );
    for _ in 0..EVENT_QUEUE_LEN + 2 {
        c.check_in().unwrap();
    }
    assert_eq!(c.queued_events().len(), EVENT_QUEUE_LEN);
    assert_eq!(c.dropped_events(), 2);
    assert_eq!(c.queued_events()[0].id, 3);
    assert_eq!(c.flush_reports().unwrap(), EVENT_QUEUE_LEN);
    assert_eq!(c.transport().acked[0].events.len(), EVENT_QUEUE_LEN);
}

#[test]
fn a_halted_rollout_stops_a_running_download_without_a_failure() {
    let keys = keys();
    let mut c = client(
        Server::offering(new_image()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    for _ in 0..4 {
        assert_eq!(c.download_step(), Step::Continue);
    }
    // Still offered: the download goes on.
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Busy);
    assert!(c.download().is_some());
    // The rollout halts: the server stops offering it, and the device stops downloading.
    c.transport_mut().offer = None;
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Withdrawn);
    assert!(c.download().is_none());
    assert_eq!(c.download_step(), Step::Idle);
    assert_eq!(c.boot().journal().state().pending(), None);
    assert!(
        c.queued_events().iter().all(|e| !e.kind.is_failure()),
        "a withdrawn offer is not the device's failure: {:?}",
        kinds(&c)
    );
}

#[test]
fn pushed_commands_nudge_stop_and_acknowledge() {
    use fota_ota_client::Pushed;
    use fota_protocol::messages::{Command, ReportAck};
    let keys = keys();
    let mut c = client(
        Server::offering(new_image()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    // A nudge: a wait within the jitter, chosen by the caller's random number.
    assert_eq!(
        c.command(&Command::check_in(30), 1_000),
        Pushed::CheckInAfter(1_000 % 31)
    );
    assert_eq!(
        c.command(&Command::check_in(0), 12_345),
        Pushed::CheckInAfter(0)
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    for _ in 0..4 {
        assert_eq!(c.download_step(), Step::Continue);
    }
    let rollout = c.download().unwrap().offer().rollout_id;
    // A stop for another rollout changes nothing; one for this download drops it at once,
    // without a failure, and nothing is installed.
    assert_eq!(c.command(&Command::stop(rollout + 1), 0), Pushed::Ignored);
    assert!(c.download().is_some());
    assert_eq!(c.command(&Command::stop(rollout), 0), Pushed::Stopped);
    assert!(c.download().is_none());
    assert_eq!(c.download_step(), Step::Idle);
    assert_eq!(c.boot().journal().state().pending(), None);
    assert!(
        c.queued_events().iter().all(|e| !e.kind.is_failure()),
        "{:?}",
        kinds(&c)
    );
    // Reports over MQTT: publish the pending report, forget it once acknowledged.
    let report = c.pending_report().expect("events queued");
    let queued = c.queued_events().len();
    assert_eq!(report.events.len(), queued);
    let last = report.events.last().unwrap().id;
    let ack = ReportAck {
        stored: 1,
        duplicates: 0,
    };
    assert_eq!(
        c.command(&Command::report_ack(ack, last - 1), 0),
        Pushed::Acknowledged(queued - 1)
    );
    assert_eq!(c.queued_events().len(), 1);
    assert_eq!(
        c.command(&Command::report_ack(ack, last), 0),
        Pushed::Acknowledged(1)
    );
    assert!(c.pending_report().is_none());
    assert_eq!(
        c.command(&Command::report_ack(ack, last), 0),
        Pushed::Ignored
    );
}

/// Cut the power after `steps` download steps: the client, its transport and everything in RAM
/// are gone; the flash and the persisted state are what the next boot has.
fn power_cut(mut c: Client<'_>, steps: usize) -> (MemFlash, MemPersist) {
    for _ in 0..steps {
        assert_eq!(c.download_step(), Step::Continue);
    }
    let (_, boot, persist) = c.into_parts();
    (boot.into_flash(), persist)
}

#[test]
fn a_power_cut_mid_download_resumes_from_the_recorded_offset() {
    let keys = keys();
    let artifact = image(SlotId::B, NEW, 4, 30_001);
    let mut c = client(
        Server::offering(artifact.clone()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    // Two erases, then 38 chunks of 512 bytes: 19,456 bytes in the slot, 16,384 recorded.
    let (flash, persist) = power_cut(c, 2 + 38);
    let saved = persist.download.clone().expect("the download is recorded");
    assert_eq!(saved.offset, 16_384);
    assert_eq!(saved.offer, offer_for(&artifact));
    let erases_before = flash.erases.len();
    let queued: Vec<u64> = persist.events.iter().map(|e| e.id).collect();
    assert_eq!(
        queued.len(),
        2,
        "OfferAccepted and DownloadStarted survive the cut"
    );

    // The next boot: a fresh client on the same flash and store resumes without erasing.
    let mut c = client(
        Server::offering(artifact.clone()),
        flash,
        SlotId::A,
        persist,
        0,
        &keys,
        Config::default(),
    );
    assert_eq!(
        c.download().map(|d| d.offer().size),
        Some(artifact.len() as u32)
    );
    assert_eq!(
        c.queued_events().iter().map(|e| e.id).collect::<Vec<_>>(),
        queued
    );
    assert_eq!(run_download(&mut c), Step::Reboot);
    // The first request after the cut asks for the recorded offset, not for byte 0.
    assert_eq!(c.transport().fetches[0].0, 16_384);
    assert_eq!(c.boot().journal().state().pending(), Some(SlotId::B));
    assert_eq!(
        kinds(&c),
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::Installed
        ]
    );
    let (_, boot, persist) = c.into_parts();
    assert_eq!(persist.download, None);
    let flash = boot.into_flash();
    assert_eq!(
        flash.erases.len(),
        erases_before,
        "the slot was not erased again"
    );
    assert_eq!(&slot_of(&flash, SlotId::B)[..artifact.len()], &artifact[..]);
}

#[test]
fn a_cut_during_the_erase_starts_over_and_a_corrupted_slot_is_not_installed() {
    let keys = keys();
    let artifact = image(SlotId::B, NEW, 4, 30_001);
    let c = client(
        Server::offering(artifact.clone()),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    let mut c = c;
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    // Cut after the first of the two erases: nothing is recorded, nothing is resumed.
    let (flash, persist) = power_cut(c, 1);
    assert_eq!(persist.download, None);
    let c = client(
        Server::offering(artifact.clone()),
        flash,
        SlotId::A,
        persist,
        0,
        &keys,
        Config::default(),
    );
    assert!(c.download().is_none());

    // A cut after 38 chunks, then the bytes in the slot are damaged behind the client's back:
    // the resumed download reads them back through the verifier and gives up instead of
    // installing an image it has not seen whole.
    let mut c = c;
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    let (mut flash, persist) = power_cut(c, 2 + 38);
    let b = FlashLayout::STM32F429.slot_offset(SlotId::B) as usize;
    flash.bytes[b + 0x300] &= 0x0F;
    let mut c = client(
        Server::offering(artifact.clone()),
        flash,
        SlotId::A,
        persist,
        0,
        &keys,
        Config::default(),
    );
    assert!(c.download().is_some());
    assert_eq!(run_download(&mut c), Step::Failed);
    assert_eq!(c.boot().journal().state().pending(), None);
    assert!(c.download().is_none());
    assert!(c.persist().download.is_none());
}

#[test]
fn a_resumed_download_of_a_trial_or_a_slot_now_running_is_dropped() {
    let keys = keys();
    let artifact = new_image();
    // A download for slot B recorded, but slot B is now the running (trial) image.
    let persist = MemPersist {
        download: Some(fota_ota_client::SavedDownload {
            offer: offer_for(&artifact),
            offset: 4096,
            checkpoint: None,
        }),
        ..MemPersist::default()
    };
    let mut flash = flash_with(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
    ]);
    put(&mut flash, SlotId::B, &artifact);
    let c = client(
        Server::default(),
        flash,
        SlotId::B,
        persist,
        0,
        &keys,
        Config::default(),
    );
    assert!(c.download().is_none());
    assert_eq!(c.persist().download, None);
}

#[test]
fn the_client_on_flash_persist_resumes_after_a_cut() {
    use fota_ota_client::{FlashPersist, SharedFlash, StoreRegion};
    use std::cell::RefCell;

    let keys = keys();
    let artifact = image(SlotId::B, NEW, 4, 30_001);
    let flash = RefCell::new(flash_with(&[]));
    let open = |server: Server| {
        let boot =
            BootControl::open(SharedFlash(&flash), FlashLayout::STM32F429, SlotId::A).unwrap();
        let store = FlashPersist::open(SharedFlash(&flash), StoreRegion::STM32F429);
        OtaClient::new(server, boot, store, device(0), &keys, Config::default())
    };
    let mut c = open(Server::offering(artifact.clone()));
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    for _ in 0..2 + 38 {
        assert_eq!(c.download_step(), Step::Continue);
    }
    drop(c);
    let mut c = open(Server::offering(artifact.clone()));
    assert_eq!(c.persist_errors(), 0);
    assert_eq!(
        kinds_of(c.queued_events()),
        [EventKind::OfferAccepted, EventKind::DownloadStarted]
    );
    for _ in 0..100_000 {
        match c.download_step() {
            Step::Continue => {}
            Step::Reboot => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.transport().fetches[0].0, 16_384);
    assert_eq!(c.flush_reports().unwrap(), 3);
    drop(c);
    // After the reset into the trial, the store has nothing left to send and the installed
    // image to report on.
    let boot = BootControl::open(SharedFlash(&flash), FlashLayout::STM32F429, SlotId::B).unwrap();
    let store = FlashPersist::open(SharedFlash(&flash), StoreRegion::STM32F429);
    let c = OtaClient::new(
        Server::default(),
        boot,
        store,
        device(0),
        &keys,
        Config::default(),
    );
    assert!(c.queued_events().is_empty());
    assert!(c.download().is_none());
    assert_eq!(c.next_event_id(), 4);
}

fn kinds_of(events: &[fota_protocol::messages::Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// A client after a reset: the same flash and persisted state, a new RAM.
fn rebooted<'k>(c: Client<'k>, keys: &'k [TrustedKey]) -> Client<'k> {
    let running = c.boot().info().slot;
    let (server, boot, persist) = c.into_parts();
    client(
        server,
        boot.into_flash(),
        running,
        persist,
        0,
        keys,
        Config::default(),
    )
}

fn reset_of(e: &fota_protocol::messages::Event) -> (Option<ImageVersion>, ResetCause, u32) {
    let r = e.reset.expect("a reset event carries its detail");
    (e.version, r.cause, r.uptime_s)
}

#[test]
fn resets_are_reported_at_the_next_boot_with_what_ran_and_for_how_long() {
    let keys = keys();
    let mut c = client(
        Server::default(),
        flash_with(&[]),
        SlotId::A,
        MemPersist::default(),
        0,
        &keys,
        Config::default(),
    );
    // A factory-fresh device's first power-on has nothing to tell.
    c.boot_reset(ResetCause::PowerOn, None);
    assert!(c.queued_events().is_empty());
    let at = |c: &Client<'_>| c.running().map(|r| (r.version, r.uptime_s));
    assert_eq!(at(&c), Some((OLD, 0)));
    // The uptime is written every UPTIME_RECORD_EVERY_S, not at every call.
    let every = UPTIME_RECORD_EVERY_S;
    for (uptime, recorded) in [
        (1, 0),
        (every - 1, 0),
        (every, every),
        (2 * every - 1, every),
    ] {
        c.record_uptime(uptime);
        assert_eq!(at(&c), Some((OLD, recorded)), "after {uptime} s");
    }
    c.record_uptime(2 * every + 7);

    // The watchdog fires: the next boot reports it with the last recorded uptime.
    let mut c = rebooted(c, &keys);
    c.boot_reset(ResetCause::IndependentWatchdog, None);
    assert_eq!(kinds(&c), [EventKind::Reset]);
    let e = &c.queued_events()[0];
    assert_eq!(
        reset_of(e),
        (Some(OLD), ResetCause::IndependentWatchdog, 2 * every + 7)
    );
    assert_eq!(e.rollout_id, None);
    assert_eq!(at(&c), Some((OLD, 0)), "this boot runs from 0 s");

    // An emulator's empty RCC_CSR says nothing; a fault record names the faulting image.
    let mut c = rebooted(c, &keys);
    c.boot_reset(ResetCause::Unknown, None);
    assert_eq!(c.queued_events().len(), 1);
    let fault = Running {
        version: NEW,
        uptime_s: 5,
    };
    let mut c = rebooted(c, &keys);
    c.boot_reset(ResetCause::Fault, Some(fault));
    assert_eq!(
        reset_of(&c.queued_events()[1]),
        (Some(NEW), ResetCause::Fault, 5)
    );

    // A reset loop without a link: at most MAX_QUEUED_RESETS wait, the rest are counted.
    for _ in 0..5 {
        c = rebooted(c, &keys);
        c.boot_reset(ResetCause::BrownOut, None);
    }
    let resets = kinds(&c).iter().filter(|k| **k == EventKind::Reset).count();
    assert_eq!(resets, MAX_QUEUED_RESETS);
    // The count of dropped events is this boot's (it lives in RAM).
    assert_eq!(c.dropped_events(), 1);
}

#[test]
fn the_reset_into_an_installed_image_is_the_update() {
    let keys = keys();
    let mut c = trial_boot(Server::default(), &keys);
    c.boot_reset(ResetCause::Software, None);
    // Nothing was recorded as running before (the persisted state predates it): nothing to
    // report, but this boot is recorded.
    assert!(c.queued_events().is_empty());
    let mut c = trial_boot(Server::default(), &keys);
    let before = Running {
        version: OLD,
        uptime_s: 120,
    };
    c.boot_reset(ResetCause::Software, Some(before));
    assert_eq!(
        reset_of(&c.queued_events()[0]),
        (Some(OLD), ResetCause::Update, 120)
    );
    assert!(!ResetCause::Update.is_unexpected());
}

#[test]
fn a_fault_recorded_by_the_handler_is_reported_once_as_a_fault_with_its_detail() {
    use fota_ota_client::{FaultRecord, FlashPersist, SharedFlash, StoreRegion};
    use std::cell::RefCell;

    let keys = keys();
    let flash = RefCell::new(flash_with(&[]));
    let open = || {
        let boot =
            BootControl::open(SharedFlash(&flash), FlashLayout::STM32F429, SlotId::A).unwrap();
        let store = FlashPersist::open(SharedFlash(&flash), StoreRegion::STM32F429);
        OtaClient::new(
            Server::default(),
            boot,
            store,
            device(0),
            &keys,
            Config::default(),
        )
    };
    // First boot: nothing recorded yet; the client records that OLD runs.
    let mut c = open();
    assert_eq!(c.recorded_fault(), None);
    c.boot_reset(ResetCause::PowerOn, None);
    c.record_uptime(UPTIME_RECORD_EVERY_S + 1);
    drop(c);

    // The image faults 400 s in: the handler appends its record, reading only the flash.
    let fault = FaultRecord {
        version: OLD,
        uptime_s: 400,
        pc: 0x0802_1a2c,
        lr: 0x0802_0f11,
        cfsr: 1 << 16,
        hfsr: 1 << 30,
        address: 0,
    };
    FlashPersist::append_fault(SharedFlash(&flash), StoreRegion::STM32F429, &fault).unwrap();

    // The next boot sees it, decodes the software reset the handler asked for as a fault, and
    // reports it with the fault's uptime (not the last 5-minute record) and its registers.
    let mut c = open();
    assert_eq!(c.recorded_fault(), Some(&fault));
    let recorded = c.recorded_fault().map(|_| ResetCause::Fault);
    let sftrst_pinrst = (1 << 28) | (1 << 26);
    let cause = ResetCause::from_rcc_csr(sftrst_pinrst, recorded);
    assert_eq!(cause, ResetCause::Fault);
    c.boot_reset(cause, None);
    assert_eq!(c.recorded_fault(), None);
    let e = &c.queued_events()[0];
    assert_eq!(reset_of(e), (Some(OLD), ResetCause::Fault, 400));
    assert_eq!(
        e.reason.as_deref(),
        Some(
            "fault after 400 s: UNDEFINSTR pc 0x08021a2c lr 0x08020f11 cfsr 0x00010000 \
             hfsr 0x40000000"
        )
    );
    drop(c);

    // Read once: the boot after that (a pin reset) has no fault left to tell.
    let mut c = open();
    assert_eq!(c.recorded_fault(), None);
    c.boot_reset(ResetCause::Pin, None);
    let resets: Vec<_> = c
        .queued_events()
        .iter()
        .filter(|e| e.kind == EventKind::Reset)
        .map(reset_of)
        .collect();
    assert_eq!(resets.len(), 2);
    assert_eq!(resets[1].1, ResetCause::Pin);
    assert_eq!(c.queued_events()[1].reason, None);
    drop(c);

    // A record left when the register says a watchdog fired (the handler could not reset, the
    // watchdog did) does not turn the watchdog into a fault, and is taken all the same.
    FlashPersist::append_fault(SharedFlash(&flash), StoreRegion::STM32F429, &fault).unwrap();
    let mut c = open();
    let iwdg_pinrst = (1 << 29) | (1 << 26);
    let cause =
        ResetCause::from_rcc_csr(iwdg_pinrst, c.recorded_fault().map(|_| ResetCause::Fault));
    c.boot_reset(cause, None);
    let last = c.queued_events().last().unwrap();
    assert_eq!(last.reset.unwrap().cause, ResetCause::IndependentWatchdog);
    assert_eq!(last.reason, None);
    drop(c);
    assert_eq!(open().recorded_fault(), None);
}
