//! The `OtaClient` state machine on the host: an in-memory server, an in-memory NOR flash with
//! the F429 map and a real boot journal, signed images built like the release pipeline does.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::SigningKey;
use embedded_storage::nor_flash::{
    check_erase, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use fota_boot::journal::RecordKind;
use fota_boot::{BootControl, BootJournal, BootMode, FlashLayout, JournalRegion};
use fota_ota_client::client::{pack_version, EVENT_QUEUE_LEN};
use fota_ota_client::transport::Transport;
use fota_ota_client::{
    AfterBoot, CheckInOutcome, Config, DeviceInfo, OtaClient, Persist, PersistKey, Step,
};
use fota_protocol::image::{Digest, ImageBuilder, ImageVersion, TrustedKey};
use fota_protocol::messages::{
    CheckIn, CheckInResponse, EventKind, Model, Offer, RdpLevel, Report, ReportAck,
};
use fota_protocol::SlotId;
use std::collections::HashMap;

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
        slot: SlotId::B,
        sha256: Digest::of(artifact),
        size: artifact.len() as u32,
        security_counter: 4,
    }
}

// ---- flash -----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlashError(NorFlashErrorKind);

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

/// The F429's 1 MB as offsets from 0x0800_0000, NOR rules enforced (program only erased bits,
/// 4-byte program unit), erase in 16 KB units (every F429 sector is a whole number of them).
#[derive(Debug)]
struct MemFlash {
    bytes: Vec<u8>,
    writes: usize,
    erases: Vec<(u32, u32)>,
}

impl MemFlash {
    fn new() -> Self {
        Self {
            bytes: vec![0xFF; 1024 * 1024],
            writes: 0,
            erases: Vec::new(),
        }
    }

    fn slot(&self, slot: SlotId) -> &[u8] {
        let start = FlashLayout::STM32F429.slot_offset(slot) as usize;
        &self.bytes[start..start + slot.partition().size as usize]
    }

    fn put(&mut self, slot: SlotId, image: &[u8]) {
        let start = FlashLayout::STM32F429.slot_offset(slot) as usize;
        self.bytes[start..start + image.len()].copy_from_slice(image);
    }
}

impl ErrorType for MemFlash {
    type Error = FlashError;
}

impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let start = offset as usize;
        let src = self
            .bytes
            .get(start..start + bytes.len())
            .ok_or(FlashError(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 16 * 1024;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to).map_err(FlashError)?;
        self.bytes[from as usize..to as usize].fill(0xFF);
        self.erases.push((from, to));
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len()).map_err(FlashError)?;
        let cells = &mut self.bytes[offset as usize..offset as usize + bytes.len()];
        if cells.iter().zip(bytes).any(|(c, b)| b & !c != 0) {
            return Err(FlashError(NorFlashErrorKind::Other));
        }
        for (c, b) in cells.iter_mut().zip(bytes) {
            *c &= b;
        }
        self.writes += 1;
        Ok(())
    }
}

// ---- persistent store ------------------------------------------------------------------------

#[derive(Debug, Default)]
struct MemPersist(HashMap<PersistKey, u64>);

impl Persist for MemPersist {
    type Error = ();

    fn get(&mut self, key: PersistKey) -> Option<u64> {
        self.0.get(&key).copied()
    }

    fn set(&mut self, key: PersistKey, value: u64) -> Result<(), ()> {
        self.0.insert(key, value);
        Ok(())
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
    let mut flash = MemFlash::new();
    flash.put(SlotId::A, &image(SlotId::A, OLD, 3, 12_345));
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
    assert_eq!(c.persist().0[&PersistKey::InstalledSlot], 2);
    assert_eq!(c.persist().0[&PersistKey::InstalledRollout], ROLLOUT);
    assert_eq!(
        c.persist().0[&PersistKey::InstalledVersion],
        pack_version(NEW)
    );
    // Nothing more to do.
    assert_eq!(c.download_step(), Step::Idle);

    let (_, boot, _) = c.into_parts();
    let flash = boot.into_flash();
    let slot = flash.slot(SlotId::B);
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
    assert_eq!(&flash.slot(SlotId::B)[..artifact.len()], &artifact[..]);
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
    assert_eq!(c.persist().0.get(&PersistKey::InstalledSlot), None);
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
    flash.put(SlotId::B, &new_image());
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
    flash.put(SlotId::B, &new_image());
    let mut persist = MemPersist::default();
    persist.set(PersistKey::InstalledSlot, 2).unwrap();
    persist.set(PersistKey::InstalledRollout, ROLLOUT).unwrap();
    persist
        .set(PersistKey::InstalledVersion, pack_version(NEW))
        .unwrap();
    persist.set(PersistKey::NextEventId, 40).unwrap();
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
    assert_eq!(c.persist().0[&PersistKey::InstalledSlot], 0);
    assert_eq!(c.persist().0[&PersistKey::NextEventId], 42);
}

#[test]
fn a_confirmed_boot_after_a_revert_reports_the_rollback() {
    let keys = keys();
    let mut flash = flash_with(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
        RecordKind::Reverted { slot: SlotId::B },
    ]);
    flash.put(SlotId::B, &new_image());
    let mut persist = MemPersist::default();
    persist.set(PersistKey::InstalledSlot, 2).unwrap();
    persist.set(PersistKey::InstalledRollout, ROLLOUT).unwrap();
    persist
        .set(PersistKey::InstalledVersion, pack_version(NEW))
        .unwrap();
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
