//! Benchmark: how long a device takes to take an update through the modem, and how many bytes
//! cross the serial link for it (AT commands, answers, JSON and the image).
//!
//! ```text
//! cargo run --release -p fota-modem-emulator --example update_bench -- [BYTES_PER_SEC] [IMAGE_BYTES]
//! cargo run --release -p fota-modem-emulator --example update_bench -- BYTES_PER_SEC DIR
//! ```
//!
//! With a directory instead of a size (what `scripts/delta-bench` leaves in
//! `target/delta-bench`: `old-{a,b}.bin` signed as 1.0.0, `new-{a,b}.bin` as 1.1.0, both
//! real builds of the reference application, and `key.pub.pem`), the device runs `old-a.bin`
//! and is offered `new-b.bin` twice: once as the full image (`--delta-max-percent 0`), once
//! with the delta patch the server makes from the release it runs (issue 19).
//!
//! A real `fota serve` (SQLite, in process), one device running the real `OtaClient` over the
//! real `ModemTransport` (SIM7600 dialect, 16 KB segments, 1016-byte reads), the emulator on an
//! in-process line paced at BYTES_PER_SEC (default 11520: 115200 baud 8N1), and a release whose
//! slot-B image is IMAGE_BYTES long (default: a full 256 KB slot). Timed from the check-in that
//! brings the offer to the image marked pending (download, verify, install); the flash is RAM,
//! so this is the link's time, not the F4's programming time (about 1 s per 128 KB sector erase
//! plus 16 us per word, on top).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_boot::journal::RecordKind;
use fota_boot::testing::MemFlash;
use fota_boot::{BootControl, BootJournal, FlashLayout, JournalRegion};
use fota_modem::dialect::Timeouts;
use fota_modem::{ModemConfig, ModemTransport, Sim7600};
use fota_modem_emulator::pipe::{pipe, StdClock};
use fota_modem_emulator::{session, Config, Faults, Pacing};
use fota_ota_client::{CheckInOutcome, DeviceInfo, MemPersist, OtaClient, Step};
use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::messages::{Model, RdpLevel};
use fota_protocol::SlotId;
use fota_testkit::{signing_key, start_rollout, test_config, Db};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const MODEL: &str = "bench-f429";

/// The images of one run: what the device runs in slot A, the release it runs (if the server
/// is to know it), the release offered, and the key they are signed with.
struct Images {
    running: Vec<u8>,
    running_release: Option<(Vec<u8>, Vec<u8>)>,
    offered: (Vec<u8>, Vec<u8>),
    key: TrustedKey,
    versions: (ImageVersion, ImageVersion),
}

/// What one update took.
struct Figures {
    elapsed: Duration,
    tx: u64,
    rx: u64,
    commands: u32,
    http_requests: u64,
    artifact_bytes: u64,
    failures: u32,
    bring_ups: u32,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u32 = args
        .next()
        .map_or(11_520, |a| a.parse().expect("BYTES_PER_SEC"));
    let second = args.next();
    if let Some(dir) = second.as_deref().map(Path::new).filter(|p| p.is_dir()) {
        let read =
            |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", name));
        let key =
            fota_server::config::load_trusted_key(&dir.join("key.pub.pem")).expect("key.pub.pem");
        let images = || Images {
            running: read("old-a.bin"),
            running_release: Some((read("old-a.bin"), read("old-b.bin"))),
            offered: (read("new-a.bin"), read("new-b.bin")),
            key: key.clone(),
            versions: (ImageVersion::new(1, 0, 0, 0), ImageVersion::new(1, 1, 0, 0)),
        };
        let image_len = images().offered.1.len();
        println!(
            "{}: old-a.bin -> new-b.bin ({image_len} bytes); line rate {rate} bytes/s",
            dir.display()
        );
        for (what, percent) in [("full image", 0), ("delta patch", 50)] {
            let f = run(rate, images(), percent).await;
            println!(
                "{what}: update time {:.1} s; {} artifact bytes ({:.1}% of the image); {} bytes on the serial link, {} AT commands, {} HTTP requests",
                f.elapsed.as_secs_f64(),
                f.artifact_bytes,
                f.artifact_bytes as f64 * 100.0 / image_len as f64,
                f.tx + f.rx,
                f.commands,
                f.http_requests,
            );
        }
        return;
    }
    // The largest image a 256 KB slot takes: the slot minus nothing (header and TLVs included).
    let size: usize = second.map_or(256 * 1024, |a| a.parse().expect("IMAGE_BYTES"));
    let key = signing_key();
    let v1 = ImageVersion::new(1, 0, 0, 0);
    let v2 = ImageVersion::new(2, 0, 0, 0);
    // Payload sized so the signed image (0x200 header, ~150 bytes of TLVs) is `size` bytes.
    let payload = size - 0x200 - 256;
    let a = fota_protocol::testing::signed_for(SlotId::A, payload, v2, 1, &key);
    let b = fota_protocol::testing::signed_for(SlotId::B, payload, v2, 1, &key);
    let image_len = b.len();
    assert!(
        image_len <= 256 * 1024,
        "{image_len} bytes do not fit a slot"
    );
    let images = Images {
        running: fota_protocol::testing::signed_for(SlotId::A, 4096, v1, 1, &key),
        running_release: None,
        offered: (a, b),
        key: TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap(),
        versions: (v1, v2),
    };
    let f = run(rate, images, 0).await;
    let link = f.tx + f.rx;
    println!("image: {image_len} bytes; line rate {rate} bytes/s");
    println!(
        "update time (check-in with the offer -> image verified and pending, reports sent): {:.1} s",
        f.elapsed.as_secs_f64()
    );
    println!(
        "bytes on the serial link: {link} ({} to the module, {} from it), {} AT commands, {} HTTP requests",
        f.tx, f.rx, f.commands, f.http_requests
    );
    println!(
        "overhead over the image: {:.1}% ({} bytes)",
        (link as f64 - image_len as f64) * 100.0 / image_len as f64,
        link - image_len as u64
    );
    println!(
        "floor at this rate (image bytes only): {:.1} s; failed requests: {}; link bring-ups: {}",
        image_len as f64 / f64::from(rate),
        f.failures,
        f.bring_ups
    );
}

/// One device updated through the modem from `images.running` to `images.offered`, the server
/// offering patches below `delta_max_percent` of the image.
async fn run(rate: u32, images: Images, delta_max_percent: u8) -> Figures {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(Db::Sqlite, data_dir.path()).await;
    config.trusted_keys.push(images.key.clone());
    config.delta_max_percent = delta_max_percent;
    let app = fota_testkit::spawn_with(Db::Sqlite, data_dir, config).await;
    let token = app.provision(&[("bench-1", MODEL, &[])]).await.remove(0);
    let (v1, _) = images.versions;

    let keys: &'static [TrustedKey] = Box::leak(Box::new([images.key.clone()]));
    let info = DeviceInfo {
        model: Model::try_from(MODEL).unwrap(),
        firmware_version: v1,
        bootloader_version: v1,
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0b11,
    };
    let mut flash = MemFlash::f429();
    let old = &images.running;
    let at = FlashLayout::STM32F429.slot_offset(SlotId::A) as usize;
    flash.bytes[at..at + old.len()].copy_from_slice(old);
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal
        .append(RecordKind::Confirmed { slot: SlotId::A })
        .unwrap();
    let flash = journal.into_flash();

    let faults = Faults::new();
    let config = Config {
        pacing: Pacing::BytesPerSecond(rate),
        ..Config::default()
    };
    let (device, reader, writer) = pipe();
    {
        let faults = faults.clone();
        std::thread::spawn(move || session::serve(reader, writer, &config, &faults));
    }
    let base: &'static str = Box::leak(app.url.clone().into_boxed_str());
    let token: &'static str = Box::leak(token.into_boxed_str());
    let mut modem_config = ModemConfig::new(base, "bench-1", token, "internet");
    modem_config.timeouts = Timeouts {
        command_ms: 5_000,
        action_ms: 65_000,
        read_ms: 20_000,
    };
    let transport: ModemTransport<'static, _, _, Sim7600> =
        ModemTransport::new(device, StdClock::new(), modem_config);
    let client_config = fota_ota_client::Config {
        max_fetch_failures: 5,
        chunk_len: 1016,
        ..fota_ota_client::Config::default()
    };

    // First contact, then the release and its rollout.
    let first_info = info.clone();
    let (transport, flash) = tokio::task::spawn_blocking(move || {
        let boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A).unwrap();
        let mut c = OtaClient::new(
            transport,
            boot,
            MemPersist::default(),
            first_info,
            keys,
            client_config,
        );
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::NoOffer);
        let (t, boot, _) = c.into_parts();
        (t, boot.into_flash())
    })
    .await
    .unwrap();
    app.flush().await;
    if let Some((a, b)) = images.running_release {
        let resp = app.upload(MODEL, a, b).await;
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
    let (a, b) = images.offered;
    let resp = app.upload(MODEL, a, b).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let release = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    start_rollout(
        &app,
        json!({"release_id": release, "stages": [{"percent": 100.0, "bake_s": 0, "min_sample": 1,
               "max_failure_rate": 0.5, "confirm_deadline_s": 3600}]}),
    )
    .await;

    let before = faults.stats();
    let (elapsed, counters, stats, failures) = tokio::task::spawn_blocking(move || {
        let boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A).unwrap();
        let mut c = OtaClient::new(
            transport,
            boot,
            MemPersist::default(),
            info,
            keys,
            client_config,
        );
        let start = Instant::now();
        let counters_before = c.transport().counters();
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        let mut failures = 0;
        loop {
            match c.download_step() {
                Step::Continue => {
                    if c.fetch_failures() > 0 {
                        failures += 1;
                    }
                }
                Step::Reboot => break,
                other => panic!("download ended: {other:?} {:?}", c.queued_events()),
            }
        }
        c.flush_reports().unwrap();
        let elapsed = start.elapsed();
        let after = c.transport().counters();
        (
            elapsed,
            (
                after.tx - counters_before.tx,
                after.rx - counters_before.rx,
                after.commands - counters_before.commands,
            ),
            c.transport().stats(),
            failures,
        )
    })
    .await
    .unwrap();
    let s = faults.stats();
    let (tx, rx, commands) = counters;
    Figures {
        elapsed,
        tx,
        rx,
        commands,
        http_requests: s.http_requests - before.http_requests,
        artifact_bytes: s.artifact_bytes - before.artifact_bytes,
        failures,
        bring_ups: stats.bring_ups,
    }
}
