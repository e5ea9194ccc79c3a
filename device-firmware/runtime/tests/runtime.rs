//! The OTA runtime on the host: identity sector checks, the trial deadline, backoff, an install
//! ending in a reset, and a power cut mid-download resumed by the next boot's runtime. The
//! The commands a server pushes (MQTT) go through the transport's `take_command`: a nudge
//! brings the next check-in forward within its jitter, a stop drops a running download. The
//! transport here is a scripted server (the modem transport has its own tests against the
//! emulator and a real server); time is whatever the test says.
#![allow(clippy::unwrap_used)]

use fota_boot::journal::RecordKind;
use fota_boot::testing::MemFlash;
use fota_boot::{BootControl, BootJournal, FlashLayout, JournalRegion};
use fota_ota_client::transport::Transport;
use fota_ota_client::{Config, DeviceInfo, MemPersist, OtaClient};
use fota_protocol::identity::{Identity, IdentityError, MAX_RECORD_LEN};
use fota_protocol::image::{Digest, ImageVersion, TrustedKey};
use fota_protocol::layout::{FLASH_BASE, IDENTITY};
use fota_protocol::messages::{
    CheckIn, CheckInResponse, Command, Component, EventKind, Model, Offer, RdpLevel, Report,
    ReportAck,
};
use fota_protocol::SlotId;
use fota_runtime::{read_identity, Action, Log, ResetReason, Runtime, RuntimeConfig};
use std::collections::VecDeque;

const V1: ImageVersion = ImageVersion::new(1, 0, 0, 0);
const V2: ImageVersion = ImageVersion::new(2, 0, 0, 0);

fn key() -> ed25519_dalek::SigningKey {
    fota_protocol::testing::test_key(7)
}

fn keys() -> &'static [TrustedKey] {
    Box::leak(Box::new([TrustedKey::from_bytes(
        &key().verifying_key().to_bytes(),
    )
    .unwrap()]))
}

#[derive(Debug, Default)]
struct Lines(Vec<String>);

impl Log for Lines {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        self.0.push(args.to_string());
    }
}

impl Lines {
    fn any(&self, needle: &str) -> bool {
        self.0.iter().any(|l| l.contains(needle))
    }
}

/// A scripted server: offers `artifact` if set; `down` makes every request fail.
#[derive(Debug, Default)]
struct Server {
    artifact: Vec<u8>,
    offer: Option<Offer>,
    down: bool,
    check_ins: usize,
    fetch_offsets: Vec<u32>,
    reported: Vec<EventKind>,
    /// Commands pushed to the device, not taken yet.
    pushed: VecDeque<Command>,
    /// When the device checked in (by the times the test drives).
    now: u64,
    check_in_times: Vec<u64>,
}

#[derive(Debug)]
struct Down;

impl Transport for Server {
    type Error = Down;

    fn check_in(&mut self, _: &CheckIn) -> Result<CheckInResponse, Down> {
        self.check_ins += 1;
        self.check_in_times.push(self.now);
        if self.down {
            return Err(Down);
        }
        Ok(CheckInResponse {
            poll_interval_s: 3600,
            offer: self.offer.clone(),
        })
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, Down> {
        if self.down {
            return Err(Down);
        }
        self.reported.extend(report.events.iter().map(|e| e.kind));
        Ok(ReportAck {
            stored: report.events.len() as u32,
            duplicates: 0,
        })
    }

    fn fetch_range(&mut self, _: &Digest, offset: u32, buf: &mut [u8]) -> Result<usize, Down> {
        if self.down {
            return Err(Down);
        }
        self.fetch_offsets.push(offset);
        let start = (offset as usize).min(self.artifact.len());
        let n = buf.len().min(self.artifact.len() - start);
        buf[..n].copy_from_slice(&self.artifact[start..start + n]);
        Ok(n)
    }

    fn take_command(&mut self) -> Option<Command> {
        self.pushed.pop_front()
    }
}

fn image(slot: SlotId, version: ImageVersion, size: usize) -> Vec<u8> {
    fota_protocol::testing::signed_for(slot, size, version, 1, &key())
}

fn offering(artifact: Vec<u8>) -> Server {
    Server {
        offer: Some(Offer {
            rollout_id: 3,
            version: V2,
            component: Component::Application,
            slot: SlotId::B,
            sha256: Digest::of(&artifact),
            size: artifact.len() as u32,
            security_counter: 1,
            patch: None,
        }),
        artifact,
        ..Server::default()
    }
}

/// v1 in A confirmed, and `records` after it.
fn flash(records: &[RecordKind]) -> MemFlash {
    let mut flash = MemFlash::f429();
    let put = |flash: &mut MemFlash, slot: SlotId, bytes: &[u8]| {
        let at = FlashLayout::STM32F429.slot_offset(slot) as usize;
        flash.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut flash, SlotId::A, &image(SlotId::A, V1, 4000));
    put(&mut flash, SlotId::B, &image(SlotId::B, V2, 4000));
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal
        .append(RecordKind::Confirmed { slot: SlotId::A })
        .unwrap();
    for r in records {
        journal.append(*r).unwrap();
    }
    journal.into_flash()
}

fn device(version: ImageVersion) -> DeviceInfo {
    DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: version,
        bootloader_version: V1,
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0b11,
    }
}

type Rt = Runtime<'static, Server, MemFlash, MemPersist>;

fn runtime(
    server: Server,
    flash: MemFlash,
    slot: SlotId,
    persist: MemPersist,
    log: &mut Lines,
) -> Rt {
    let version = if slot == SlotId::A { V1 } else { V2 };
    let boot = BootControl::open(flash, FlashLayout::STM32F429, slot).unwrap();
    let client = OtaClient::new(
        server,
        boot,
        persist,
        device(version),
        keys(),
        Config::default(),
    );
    let config = RuntimeConfig {
        trial_deadline_ms: 10_000,
        retry_min_ms: 100,
        retry_max_ms: 1_000,
        default_poll_ms: 60_000,
        jitter_seed: 12345,
    };
    Runtime::new(client, config, || true, 0, log)
}

/// Poll at the times the runtime asks for (bounded), until `stop` or a reset; the action that
/// ended it and the time.
fn drive(
    rt: &mut Rt,
    log: &mut Lines,
    from: u64,
    until: u64,
    stop: impl Fn(&Rt) -> bool,
) -> (Action, u64) {
    let mut now = from;
    for _ in 0..200_000 {
        rt.client_mut().transport_mut().now = now;
        let action = rt.poll(now, log);
        match action {
            Action::Reset(_) => return (action, now),
            _ if stop(rt) || now >= until => return (action, now),
            Action::Continue => {}
            Action::Wait(ms) | Action::Idle(ms) => now += ms.max(1),
        }
    }
    panic!("the runtime never settled");
}

#[test]
fn identity_missing_corrupt_or_valid() {
    let mut buf = [0u8; MAX_RECORD_LEN];
    let mut flash = MemFlash::f429();
    assert_eq!(
        read_identity(&mut flash, &mut buf).unwrap_err(),
        IdentityError::Erased
    );
    let identity = Identity {
        device_id: "lamp-7",
        token: "fota_dev_abc",
        server_url: "http://127.0.0.1:8080",
        model: "streetlight-f429",
    };
    let at = (IDENTITY.start - FLASH_BASE) as usize;
    identity.encode(&mut flash.bytes[at..]).unwrap();
    let mut buf = [0u8; MAX_RECORD_LEN];
    assert_eq!(read_identity(&mut flash, &mut buf).unwrap(), identity);
    flash.bytes[at + 12] ^= 0x20;
    let mut buf = [0u8; MAX_RECORD_LEN];
    assert_eq!(
        read_identity(&mut flash, &mut buf).unwrap_err(),
        IdentityError::Crc
    );
}

#[test]
fn a_trial_that_never_reaches_the_server_is_reset_at_the_deadline_and_not_before() {
    let mut log = Lines::default();
    let trial = flash(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
    ]);
    let server = Server {
        down: true,
        ..Server::default()
    };
    let mut rt = runtime(server, trial, SlotId::B, MemPersist::default(), &mut log);
    let (action, at) = drive(&mut rt, &mut log, 0, 60_000, |_| false);
    assert_eq!(action, Action::Reset(ResetReason::TrialDeadline));
    // On time: no backoff sleeps past the deadline.
    assert_eq!(at, 10_000, "reset at {at} ms");
    // It kept trying, with backoff, until then: 100, 200, 400, 800, 1000, 1000, ... ms.
    let tries = rt.client().transport().check_ins;
    assert!((8..=15).contains(&tries), "{tries} check-ins");
    assert!(log.any("trial deadline"));
    assert_eq!(
        rt.client().boot().journal().state().confirmed(),
        Some(SlotId::A),
        "the trial was never confirmed"
    );
}

#[test]
fn a_trial_that_confirms_in_time_is_never_reset_and_a_confirmed_image_never_is() {
    let mut log = Lines::default();
    let trial = flash(&[
        RecordKind::Pending { slot: SlotId::B },
        RecordKind::Attempt { slot: SlotId::B },
    ]);
    let mut rt = runtime(
        Server::default(),
        trial,
        SlotId::B,
        MemPersist::default(),
        &mut log,
    );
    let (action, _) = drive(&mut rt, &mut log, 0, 100_000, |_| false);
    assert!(!matches!(action, Action::Reset(_)), "{action:?}");
    assert!(log.any("confirmed slot B"));
    assert_eq!(
        rt.client().transport().reported,
        [EventKind::TrialBoot, EventKind::Confirmed]
    );
    // Long after the deadline, still no reset.
    assert!(matches!(
        rt.poll(1_000_000, &mut log),
        Action::Idle(_) | Action::Continue
    ));

    // A confirmed image with the server down: retries forever, never resets.
    let mut log = Lines::default();
    let server = Server {
        down: true,
        ..Server::default()
    };
    let mut rt = runtime(
        server,
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    let (action, _) = drive(&mut rt, &mut log, 0, 120_000, |_| false);
    assert!(!matches!(action, Action::Reset(_)), "{action:?}");
    assert!(log.any("check-in failed"));
}

#[test]
fn an_install_reports_and_asks_for_a_reset() {
    let mut log = Lines::default();
    let server = offering(image(SlotId::B, V2, 30_000));
    let mut rt = runtime(
        server,
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    let (action, _) = drive(&mut rt, &mut log, 0, 100_000, |_| false);
    assert_eq!(action, Action::Reset(ResetReason::Installed));
    assert_eq!(
        rt.client().transport().reported,
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::Installed
        ]
    );
    assert_eq!(
        rt.client().boot().journal().state().pending(),
        Some(SlotId::B)
    );
    assert!(log.any("offer 2.0.0 for slot B"));
}

#[test]
fn a_power_cut_mid_download_resumes_at_the_next_boot() {
    let mut log = Lines::default();
    let artifact = image(SlotId::B, V2, 40_000);
    let mut rt = runtime(
        offering(artifact.clone()),
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    // Run until 20 KB are in, then cut: only flash and the persisted state survive.
    drive(&mut rt, &mut log, 0, 100_000, |rt| {
        rt.client()
            .download()
            .is_some_and(|d| d.resume_offset() >= 20_000)
    });
    let (_, boot, persist) = rt.into_client().into_parts();
    let recorded = persist.download.as_ref().unwrap().offset;
    assert!(recorded >= 16_384, "{recorded}");

    let mut log = Lines::default();
    let mut rt = runtime(
        offering(artifact.clone()),
        boot.into_flash(),
        SlotId::A,
        persist,
        &mut log,
    );
    assert!(log.any("resuming download of 2.0.0"));
    let (action, _) = drive(&mut rt, &mut log, 0, 100_000, |_| false);
    assert_eq!(action, Action::Reset(ResetReason::Installed));
    assert_eq!(rt.client().transport().fetch_offsets[0], recorded);
}

#[test]
fn a_server_that_fails_mid_download_is_retried_with_backoff() {
    let mut log = Lines::default();
    let mut rt = runtime(
        offering(image(SlotId::B, V2, 30_000)),
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    drive(&mut rt, &mut log, 0, 100_000, |rt| {
        rt.client()
            .download()
            .is_some_and(|d| d.resume_offset() >= 8_000)
    });
    rt.client_mut().transport_mut().down = true;
    let mut waits = Vec::new();
    let mut now = 0;
    for _ in 0..4 {
        match rt.poll(now, &mut log) {
            Action::Wait(ms) => {
                waits.push(ms);
                now += ms;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, [100, 200, 400, 800]);
    rt.client_mut().transport_mut().down = false;
    let (action, _) = drive(&mut rt, &mut log, now, 1_000_000, |_| false);
    assert_eq!(action, Action::Reset(ResetReason::Installed));
}

/// A stage-1 for stage-1 slot `slot` (vector table inside it, the COMPONENT mark for it).
fn stage1_image(slot: SlotId, version: ImageVersion, counter: u32) -> Vec<u8> {
    let base = slot.stage1_partition().start;
    let mut payload = fota_protocol::testing::app_for(slot, 3000);
    payload[4..8].copy_from_slice(&((base + 0x200 + 0x101) | 1).to_le_bytes());
    fota_protocol::image::ImageBuilder::new(payload, version)
        .security_counter(counter)
        .rom_fixed(base)
        .component(fota_protocol::image::Component::Stage1 { slot })
        .sign(&key())
        .unwrap()
}

/// v1 in A confirmed, stage-1 A (v1) confirmed, stage-1 B (v2) pending and booted once by
/// stage-0: the application runs through a stage-1 on trial.
fn flash_through_stage1_trial() -> MemFlash {
    let mut flash = flash(&[
        RecordKind::Stage1Floor { value: 1 },
        RecordKind::Stage1Confirmed { slot: SlotId::A },
        RecordKind::Stage1Pending { slot: SlotId::B },
        RecordKind::Stage1Attempt { slot: SlotId::B },
    ]);
    for (slot, version, counter) in [(SlotId::A, V1, 1), (SlotId::B, V2, 2)] {
        let at = FlashLayout::STM32F429.stage1_offset(slot) as usize;
        let image = stage1_image(slot, version, counter);
        flash.bytes[at..at + image.len()].copy_from_slice(&image);
    }
    flash
}

#[test]
fn a_stage1_on_trial_is_held_to_the_deadline_and_confirmed_once_the_server_is_reached() {
    // The application is confirmed, the stage-1 that booted it is not: it cannot reach the
    // server, so the deadline resets it (stage-0 counts the attempt).
    let mut log = Lines::default();
    let server = Server {
        down: true,
        ..Server::default()
    };
    let flash = flash_through_stage1_trial();
    let mut rt = runtime(
        server,
        flash.clone(),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    assert!(rt.client().on_trial());
    assert!(log.any("booted through stage-1 slot B 2.0.0 (trial, attempt 1)"));
    let (action, at) = drive(&mut rt, &mut log, 0, 60_000, |_| false);
    assert_eq!(action, Action::Reset(ResetReason::TrialDeadline));
    assert_eq!(at, 10_000, "reset at {at} ms");
    let track = *rt.client().boot().journal().state().stage1();
    assert_eq!(
        (track.confirmed(), track.pending()),
        (Some(SlotId::A), Some(SlotId::B))
    );

    // The same boot with the server up: the stage-1 is confirmed, and nothing resets it.
    let mut log = Lines::default();
    let mut rt = runtime(
        Server::default(),
        flash,
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    let (action, _) = drive(&mut rt, &mut log, 0, 60_000, |_| false);
    assert!(!matches!(action, Action::Reset(_)), "{action:?}");
    assert!(log.any("confirmed stage-1 slot B"), "{:?}", log.0);
    assert!(!rt.client().on_trial());
    let track = *rt.client().boot().journal().state().stage1();
    assert_eq!(
        (track.confirmed(), track.pending(), track.floor()),
        (Some(SlotId::B), None, 2)
    );
}

#[test]
fn a_pushed_nudge_brings_the_next_check_in_forward_within_its_jitter() {
    let mut log = Lines::default();
    let mut rt = runtime(
        Server::default(),
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    // The first check-in, then idle for the server's hour.
    drive(&mut rt, &mut log, 0, 1_000, |rt| {
        rt.client().transport().check_ins == 1
    });
    let action = rt.poll(50_000, &mut log);
    assert!(
        matches!(action, Action::Idle(ms) if ms > 3_000_000),
        "{action:?}"
    );
    // A stage opened: the server nudges with a 30 s jitter at t = 100 s.
    rt.client_mut()
        .transport_mut()
        .pushed
        .push_back(Command::check_in(30));
    drive(&mut rt, &mut log, 100_000, 4_000_000, |rt| {
        rt.client().transport().check_ins == 2
    });
    let second = rt.client().transport().check_in_times[1];
    assert!(
        (100_000..=130_000).contains(&second),
        "checked in at {second} ms"
    );
    assert!(log.any("ota: pushed check_in (jitter 30 s)"), "{:?}", log.0);
}

#[test]
fn without_a_nudge_the_device_waits_for_its_poll() {
    let mut log = Lines::default();
    let mut rt = runtime(
        Server::default(),
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    drive(&mut rt, &mut log, 0, 4_000_000, |rt| {
        rt.client().transport().check_ins == 2
    });
    // The next check-in is the server's hour later.
    assert_eq!(rt.client().transport().check_in_times, [0, 3_600_000]);
}

#[test]
fn a_pushed_stop_drops_a_running_download_at_once() {
    let mut log = Lines::default();
    let mut rt = runtime(
        offering(image(SlotId::B, V2, 60_000)),
        flash(&[]),
        SlotId::A,
        MemPersist::default(),
        &mut log,
    );
    drive(&mut rt, &mut log, 0, 100_000, |rt| {
        rt.client()
            .download()
            .is_some_and(|d| d.resume_offset() >= 8_000)
    });
    // A stop for another rollout changes nothing.
    rt.client_mut()
        .transport_mut()
        .pushed
        .push_back(Command::stop(9));
    rt.poll(1_000, &mut log);
    assert!(rt.client().download().is_some());
    assert!(log.any("ota: pushed stop: nothing to do"));
    // The rollout being downloaded halts: the next poll drops it, before fetching more.
    let fetched = rt.client().transport().fetch_offsets.len();
    rt.client_mut()
        .transport_mut()
        .pushed
        .push_back(Command::stop(3));
    let action = rt.poll(1_001, &mut log);
    assert!(rt.client().download().is_none(), "{action:?}");
    assert_eq!(rt.client().transport().fetch_offsets.len(), fetched);
    assert!(log.any("ota: pushed stop of rollout 3: download dropped"));
    // Nothing is installed; the device idles until its next poll.
    let (action, _) = drive(&mut rt, &mut log, 1_001, 1_000_000, |_| false);
    assert!(!matches!(action, Action::Reset(_)), "{action:?}");
    assert_eq!(rt.client().boot().journal().state().pending(), None);
    assert!(!rt
        .client()
        .transport()
        .reported
        .contains(&EventKind::Installed));
}
