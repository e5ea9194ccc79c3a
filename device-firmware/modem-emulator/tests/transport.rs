//! The modem transport against the emulator against a real `fota serve` (SQLite): every fault
//! the transport must turn into a clear, retryable error (an `ERROR` or `+CME ERROR` answer,
//! unsolicited result codes between answers, a link drop mid-download, a lost PDP context, a
//! silent module, an HTTP error status), and a whole update through the OTA client with a link
//! drop and a resume from the last offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_boot::journal::RecordKind;
use fota_boot::testing::MemFlash;
use fota_boot::{BootControl, BootJournal, FlashLayout, JournalRegion};
use fota_modem::dialect::Timeouts;
use fota_modem::transport::ModemTransport;
use fota_modem::{ModemConfig, ModemError, Sim7600};
use fota_modem_emulator::pipe::{pipe, DeviceEnd, StdClock};
use fota_modem_emulator::{session, Config, FaultPlan, Faults};
use fota_ota_client::transport::Transport;
use fota_ota_client::{CheckInOutcome, DeviceInfo, MemPersist, OtaClient, Step};
use fota_protocol::image::{Digest, ImageVersion, TrustedKey};
use fota_protocol::messages::{BootState, CheckIn, Event, EventKind, Model, RdpLevel, Report};
use fota_protocol::SlotId;
use fota_testkit::{signing_key, start_rollout, Db, TestApp};
use serde_json::json;
use std::time::{Duration, Instant};

const MODEL: &str = "streetlight-f429";

type Modem = ModemTransport<'static, DeviceEnd, StdClock, Sim7600>;

/// A module on an in-process line, its session on a thread, with short test timeouts.
fn modem(base: &str, id: &str, token: &str, faults: &Faults, config: Config) -> Modem {
    let (device, reader, writer) = pipe();
    let faults = faults.clone();
    std::thread::spawn(move || session::serve(reader, writer, &config, &faults));
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let mut config = ModemConfig::new(leak(base), leak(id), leak(token), "internet");
    config.timeouts = Timeouts {
        command_ms: 800,
        action_ms: 5_000,
        read_ms: 3_000,
    };
    config.segment_len = 4096;
    ModemTransport::new(device, StdClock::new(), config)
}

fn check_in_message(version: ImageVersion) -> CheckIn {
    CheckIn {
        model: Model::try_from(MODEL).unwrap(),
        firmware_version: version,
        running_slot: SlotId::A,
        boot_state: BootState::Confirmed,
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0b11,
        security_counter: Some(1),
        stage1: None,
        delta_format: None,
    }
}

/// A server with one device; its id and token.
async fn server_with_device() -> (TestApp, String, String) {
    let app = fota_testkit::spawn_app(Db::Sqlite).await;
    let tokens = app.provision(&[("lamp-1", MODEL, &[])]).await;
    (app, "lamp-1".to_string(), tokens[0].clone())
}

/// Upload a release of `version` with images of `size` bytes of payload; returns its id and the
/// image for slot B.
async fn upload(app: &TestApp, version: &str, size: usize) -> (i64, Vec<u8>) {
    let v: ImageVersion = version.parse().unwrap();
    let key = signing_key();
    let a = fota_protocol::testing::signed_for(SlotId::A, size, v, 2, &key);
    let b = fota_protocol::testing::signed_for(SlotId::B, size, v, 2, &key);
    let resp = app.upload(MODEL, a, b.clone()).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    (id, b)
}

/// Run blocking device code off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Fetch a whole artifact through the transport in 1000-byte reads, retrying failures up to
/// `retries` times; the bytes and the errors seen.
fn fetch_all(
    m: &mut Modem,
    sha: &Digest,
    size: usize,
    retries: usize,
) -> (Vec<u8>, Vec<ModemError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut buf = [0u8; 1000];
    while out.len() < size {
        match m.fetch_range(sha, out.len() as u32, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                errors.push(e);
                assert!(errors.len() <= retries, "too many failures: {errors:?}");
            }
        }
    }
    (out, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_in_report_and_ranged_download_through_the_module() {
    let (app, id, token) = server_with_device().await;
    let (_, image) = upload(&app, "2.0.0", 10_000).await;
    let sha = Digest::of(&image);
    let faults = Faults::new();
    let base = app.url.clone();
    let f = faults.clone();
    let (bytes, errors, ack, stats) = blocking(move || {
        let mut m = modem(&base, &id, &token, &f, Config::default());
        let answer = m
            .check_in(&check_in_message(ImageVersion::new(1, 0, 0, 0)))
            .unwrap();
        assert!(answer.offer.is_none());
        let mut events = heapless::Vec::new();
        events
            .push(Event {
                id: 1,
                kind: EventKind::TrialBoot,
                rollout_id: None,
                version: Some(ImageVersion::new(1, 0, 0, 0)),
                reason: Some("over the modem".try_into().unwrap()),
                reset: None,
            })
            .unwrap();
        let ack = m.report(&Report { events }).unwrap();
        // A report between two reads of one segment: the module's buffer now holds the
        // report's answer, so the next read asks for the segment again instead of reading it.
        let mut first = [0u8; 1000];
        assert_eq!(m.fetch_range(&sha, 0, &mut first).unwrap(), 1000);
        let mut events = heapless::Vec::new();
        events
            .push(Event {
                id: 2,
                kind: EventKind::DownloadStarted,
                rollout_id: None,
                version: None,
                reason: None,
                reset: None,
            })
            .unwrap();
        m.report(&Report { events }).unwrap();
        let (bytes, errors) = fetch_all(&mut m, &sha, image.len(), 0);
        assert_eq!(&bytes[..1000], &first[..]);
        // Past the end: nothing left, not an error.
        let mut buf = [0u8; 16];
        assert_eq!(
            m.fetch_range(&sha, image.len() as u32, &mut buf).unwrap(),
            0
        );
        (bytes, errors, ack, m.stats())
    })
    .await;
    assert!(errors.is_empty());
    assert_eq!(bytes.len(), sha_len(&bytes, &sha));
    assert_eq!(ack.stored, 1);
    let s = faults.stats();
    // 4 KB segments: one read from the first, then (after the report) the artifact again from
    // its start in ceil(size / 4096) requests, each at a segment start.
    let segments = (bytes.len() as u32).div_ceil(4096);
    assert_eq!(s.range_starts[0], 0);
    assert_eq!(
        s.range_starts[1..=segments as usize],
        (0..segments).map(|i| i * 4096).collect::<Vec<_>>()[..]
    );
    assert_eq!(s.artifact_bytes, bytes.len() as u64 + 1000);
    assert_eq!(stats.bring_ups, 1);
    assert_eq!(stats.failures, 0);
}

/// The number of bytes, after checking they hash to `sha`.
fn sha_len(bytes: &[u8], sha: &Digest) -> usize {
    assert_eq!(Digest::of(bytes), *sha, "the bytes are not the artifact");
    bytes.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_and_cme_error_answers_are_errors_and_the_next_request_works() {
    let (app, id, token) = server_with_device().await;
    let faults = Faults::new();
    let base = app.url.clone();
    let f = faults.clone();
    blocking(move || {
        let mut m = modem(&base, &id, &token, &f, Config::default());
        let msg = check_in_message(ImageVersion::new(1, 0, 0, 0));
        m.check_in(&msg).unwrap();
        f.update(|p| p.error_next = 1);
        assert!(matches!(m.check_in(&msg), Err(ModemError::Error(_))));
        m.check_in(&msg).unwrap();
        f.update(|p| p.cme_next = 1);
        assert_eq!(m.check_in(&msg).unwrap_err(), ModemError::Cme(4));
        m.check_in(&msg).unwrap();
        // Errors while bringing the link up (the very first commands) too.
        let mut fresh = modem(&base, &id, &token, &f, Config::default());
        f.update(|p| p.error_next = 4);
        assert!(fresh.check_in(&msg).is_err());
        fresh.check_in(&msg).unwrap();
    })
    .await;
    assert!(faults.stats().errors >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_result_codes_between_answers_change_nothing() {
    let (app, id, token) = server_with_device().await;
    let (_, image) = upload(&app, "2.0.0", 9_000).await;
    let sha = Digest::of(&image);
    let faults = Faults::with(FaultPlan {
        urc_noise: true,
        ..FaultPlan::default()
    });
    let base = app.url.clone();
    let f = faults.clone();
    let (bytes, errors, stats) = blocking(move || {
        let mut m = modem(&base, &id, &token, &f, Config::default());
        m.check_in(&check_in_message(ImageVersion::new(1, 0, 0, 0)))
            .unwrap();
        let (bytes, errors) = fetch_all(&mut m, &sha, image.len(), 0);
        (bytes, errors, m.at().urcs.seen)
    })
    .await;
    assert!(errors.is_empty(), "{errors:?}");
    sha_len(&bytes, &sha);
    assert!(stats > 20, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_drop_mid_download_is_an_error_and_the_download_resumes_at_its_offset() {
    let (app, id, token) = server_with_device().await;
    let (_, image) = upload(&app, "2.0.0", 20_000).await;
    let sha = Digest::of(&image);
    let faults = Faults::with(FaultPlan {
        drop_link_at: Some(8192),
        drop_requests: 2,
        ..FaultPlan::default()
    });
    let base = app.url.clone();
    let f = faults.clone();
    let (bytes, errors) = blocking(move || {
        let mut m = modem(&base, &id, &token, &f, Config::default());
        fetch_all(&mut m, &sha, image.len(), 2)
    })
    .await;
    assert_eq!(errors, [ModemError::Network(706), ModemError::Network(706)]);
    sha_len(&bytes, &sha);
    let s = faults.stats();
    assert_eq!(s.link_drops, 1);
    // The requests after the drop ask for the same offset again: nothing skipped, nothing twice.
    assert_eq!(s.range_starts[..5], [0, 4096, 8192, 8192, 8192]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pdp_context_is_an_error_and_the_next_request_reactivates_it() {
    let (app, id, token) = server_with_device().await;
    let (_, image) = upload(&app, "2.0.0", 20_000).await;
    let sha = Digest::of(&image);
    let faults = Faults::with(FaultPlan {
        pdp_drop_at: Some(4096),
        ..FaultPlan::default()
    });
    let base = app.url.clone();
    let f = faults.clone();
    let (bytes, errors, stats) = blocking(move || {
        let mut m = modem(&base, &id, &token, &f, Config::default());
        let (bytes, errors) = fetch_all(&mut m, &sha, image.len(), 1);
        (bytes, errors, m.stats())
    })
    .await;
    assert_eq!(errors.len(), 1);
    assert!(
        matches!(errors[0], ModemError::PdpLost | ModemError::Network(709)),
        "{errors:?}"
    );
    sha_len(&bytes, &sha);
    assert_eq!(faults.stats().pdp_drops, 1);
    assert_eq!(stats.bring_ups, 2, "the link was brought up again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_module_times_out_in_bounded_time_and_comes_back() {
    let (app, id, token) = server_with_device().await;
    let (_, image) = upload(&app, "2.0.0", 20_000).await;
    let sha = Digest::of(&image);
    let faults = Faults::with(FaultPlan {
        silent_at: Some(8192),
        silent_for: Duration::from_millis(1500),
        ..FaultPlan::default()
    });
    let base = app.url.clone();
    let f = faults.clone();
    let (bytes, errors, slowest) = blocking(move || {
        let mut m = modem(&base, &id, &token, &f, Config::default());
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut slowest = Duration::ZERO;
        let mut buf = [0u8; 1000];
        while out.len() < image.len() {
            let t = Instant::now();
            let r = m.fetch_range(&sha, out.len() as u32, &mut buf);
            slowest = slowest.max(t.elapsed());
            match r {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => errors.push(e),
            }
            assert!(errors.len() < 10, "{errors:?}");
        }
        (out, errors, slowest)
    })
    .await;
    assert!(!errors.is_empty());
    assert!(
        errors.iter().all(|e| matches!(e, ModemError::Timeout(_))),
        "{errors:?}"
    );
    // Never a hang: the longest request is bounded by the HTTP action timeout (5 s here).
    assert!(slowest < Duration::from_secs(7), "{slowest:?}");
    sha_len(&bytes, &sha);
    assert_eq!(faults.stats().silences, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_error_status_is_an_error_with_its_status() {
    let (app, id, _token) = server_with_device().await;
    let base = app.url.clone();
    let faults = Faults::new();
    let f = faults.clone();
    blocking(move || {
        let mut m = modem(&base, &id, "fota_dev_wrong", &f, Config::default());
        let err = m
            .check_in(&check_in_message(ImageVersion::new(1, 0, 0, 0)))
            .unwrap_err();
        assert_eq!(err, ModemError::Http(401));
        // An artifact that does not exist.
        let mut buf = [0u8; 64];
        assert_eq!(
            m.fetch_range(&Digest([7; 32]), 0, &mut buf).unwrap_err(),
            ModemError::Http(404)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_never_answers_fails_every_request_in_bounded_time() {
    let (app, id, token) = server_with_device().await;
    // Nothing on the line at all: the session thread is never started.
    let (device, _reader, _writer) = pipe();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut config = ModemConfig::new(leak(app.url.clone()), leak(id), leak(token), "internet");
    config.timeouts = Timeouts {
        command_ms: 300,
        action_ms: 1_000,
        read_ms: 1_000,
    };
    blocking(move || {
        let mut m: Modem = ModemTransport::new(device, StdClock::new(), config);
        for _ in 0..3 {
            let t = Instant::now();
            let err = m
                .check_in(&check_in_message(ImageVersion::new(1, 0, 0, 0)))
                .unwrap_err();
            assert_eq!(err, ModemError::Timeout("AT"));
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    })
    .await;
}

/// Flash with a signed v1 in slot A, confirmed in the journal.
fn device_flash() -> MemFlash {
    let mut flash = MemFlash::f429();
    let v1 = fota_protocol::testing::signed_for(
        SlotId::A,
        6_000,
        ImageVersion::new(1, 0, 0, 0),
        1,
        &signing_key(),
    );
    let a = FlashLayout::STM32F429.slot_offset(SlotId::A) as usize;
    flash.bytes[a..a + v1.len()].copy_from_slice(&v1);
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal
        .append(RecordKind::Confirmed { slot: SlotId::A })
        .unwrap();
    journal.into_flash()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ota_client_installs_an_update_over_the_modem_through_a_link_drop() {
    let (app, id, token) = server_with_device().await;
    let faults = Faults::with(FaultPlan {
        drop_link_at: Some(12_288),
        drop_requests: 1,
        urc_noise: true,
        ..FaultPlan::default()
    });
    let keys: &'static [TrustedKey] = Box::leak(Box::new([TrustedKey::from_bytes(
        &signing_key().verifying_key().to_bytes(),
    )
    .unwrap()]));
    let info = DeviceInfo {
        model: Model::try_from(MODEL).unwrap(),
        firmware_version: ImageVersion::new(1, 0, 0, 0),
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0b11,
    };
    let base = app.url.clone();
    let f = faults.clone();
    // First contact: the server learns the device before the rollout targets it.
    let (m, flash) = {
        let info = info.clone();
        let (id, token) = (id.clone(), token.clone());
        blocking(move || {
            let m = modem(&base, &id, &token, &f, Config::default());
            let boot =
                BootControl::open(device_flash(), FlashLayout::STM32F429, SlotId::A).unwrap();
            let mut c = OtaClient::new(
                m,
                boot,
                MemPersist::default(),
                info,
                keys,
                Default::default(),
            );
            assert_eq!(c.check_in().unwrap(), CheckInOutcome::NoOffer);
            let (m, boot, _) = c.into_parts();
            (m, boot.into_flash())
        })
        .await
    };
    app.flush().await;
    let (release, image) = upload(&app, "2.0.0", 30_000).await;
    let rollout = start_rollout(
        &app,
        json!({"release_id": release, "stages": [{"percent": 100.0, "bake_s": 0, "min_sample": 1,
               "max_failure_rate": 0.5, "confirm_deadline_s": 600}]}),
    )
    .await;
    let (step, events, pending, slot_b) = blocking(move || {
        let boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A).unwrap();
        let mut c = OtaClient::new(
            m,
            boot,
            MemPersist::default(),
            info,
            keys,
            Default::default(),
        );
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        let mut step = Step::Continue;
        for _ in 0..10_000 {
            step = c.download_step();
            if step != Step::Continue {
                break;
            }
        }
        c.flush_reports().unwrap();
        let events: Vec<EventKind> = c.queued_events().iter().map(|e| e.kind).collect();
        let pending = c.boot().journal().state().pending();
        let (_, boot, _) = c.into_parts();
        let flash = boot.into_flash();
        let b = FlashLayout::STM32F429.slot_offset(SlotId::B) as usize;
        (
            step,
            events,
            pending,
            flash.bytes[b..b + image.len()] == image[..],
        )
    })
    .await;
    assert_eq!(step, Step::Reboot);
    assert!(
        events.is_empty(),
        "every event was acknowledged: {events:?}"
    );
    assert_eq!(pending, Some(SlotId::B));
    assert!(slot_b, "slot B holds the artifact");
    let s = faults.stats();
    assert_eq!(s.link_drops, 1);
    assert_eq!(
        s.range_starts.iter().filter(|&&o| o == 12_288).count(),
        2,
        "the request after the drop resumed at the same offset: {:?}",
        s.range_starts
    );
    // The server saw the whole story.
    let status = fota_testkit::rollout_status(&app, rollout["id"].as_i64().unwrap()).await;
    assert_eq!(status["counts"]["installed"], 1, "{status:#}");
}
