//! The virtual fleet over MQTT, end to end: a real `fota serve` provisions each device's account
//! on a real Mosquitto (the test's own, with dynamic security), every virtual device holds an
//! MQTT session with its own credentials, and the devices poll only once an hour. A rollout
//! still completes, stage after stage, because the server nudges each stage's devices; and a
//! halt stops the downloads in flight at once, because the server tells them to. The devices
//! publish their reports through their sessions too (all but the one each sends over HTTP right
//! before it resets into a new image), so every confirmation and every rollback the gate counts
//! here came through the broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::SlotId;
use fota_server::config::MqttSettings;
use fota_sim::device::Timing;
use fota_sim::{
    app, factory_flash, AppBehaviour, DeviceSpec, Faults, Fleet, FleetConfig, FleetSummary,
    MqttConfig,
};
use fota_testkit::{self as testkit, backend_tests, signing_key, wait_for, Api, Db, Mosquitto};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const MODEL: &str = "f429";
/// The devices' poll: an hour. Nothing in these tests may wait for it.
const POLL: Duration = Duration::from_secs(3600);

fn version(major: u8) -> ImageVersion {
    ImageVersion::new(major, 0, 0, 0)
}

async fn upload(app: &impl Api, v: ImageVersion, behaviour: AppBehaviour, len: usize) -> i64 {
    let build = |slot| app::image(&signing_key(), slot, v, 1, behaviour, len);
    let resp = app
        .upload_release(MODEL, build(SlotId::A), build(SlotId::B))
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

async fn start_rollout(app: &impl Api, release: i64, stages: Value) -> i64 {
    let resp = app
        .admin_post("/v1/rollouts")
        .json(&json!({"release_id": release, "stages": stages}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

fn stage(percent: f64, min_sample: u64) -> Value {
    json!({"percent": percent, "bake_s": 0, "min_sample": min_sample,
           "max_failure_rate": 0.05, "confirm_deadline_s": 3600})
}

async fn wait_fleet(
    fleet: &Fleet,
    timeout: Duration,
    done: impl Fn(&FleetSummary) -> bool,
) -> (FleetSummary, bool) {
    let start = Instant::now();
    loop {
        let summary = fleet.summary();
        if done(&summary) {
            return (summary, true);
        }
        if start.elapsed() > timeout {
            return (summary, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 200 devices, one in ten with a fast link (the rest pause 100 ms after each 1 KiB chunk),
/// registered through the server (which creates their broker accounts) and connected to the
/// broker, each as itself.
async fn mqtt_fleet(db: Db, broker: &Mosquitto) -> (testkit::TestApp, Fleet, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(db, dir.path()).await;
    let mut mqtt =
        MqttSettings::from_url(&broker.url(), format!("fota-fleet-{}", broker.port())).unwrap();
    mqtt.nudge_rate = 2000;
    mqtt.jitter_s = 1;
    config.mqtt = Some(mqtt);
    let app = testkit::spawn_with(db, dir, config).await;
    // Registration creates broker accounts: it waits for the server's link.
    let started = Instant::now();
    loop {
        let ready: Value = app
            .client
            .get(app.at("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["mqtt"] == "up" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = 200;
    let specs: Vec<DeviceSpec> = testkit::provision_devices(&app, "push", n, MODEL)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (id, token))| DeviceSpec {
            id,
            token,
            model: MODEL.to_string(),
            faults: Faults {
                slow_link: i % 10 != 0,
                ..Faults::default()
            },
        })
        .collect();
    let factory = factory_flash(
        &app::image(
            &signing_key(),
            SlotId::A,
            version(1),
            1,
            AppBehaviour::Good,
            8 * 1024,
        ),
        1,
    );
    let config = FleetConfig {
        server: app.url.clone(),
        keys: vec![TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()],
        timing: Timing {
            check_in_interval: POLL,
            first_check_in_spread: Duration::from_secs(2),
            slow_link_pause: Duration::from_millis(100),
            ..Timing::default()
        },
        client: fota_ota_client::Config::default(),
        threads: 8,
        mqtt: Some(MqttConfig::new(format!("127.0.0.1:{}", broker.port()))),
    };
    let fleet = tokio::task::spawn_blocking(move || Fleet::start(config, &factory, specs))
        .await
        .unwrap();
    // Up on v1, checked in once, and every session subscribed as its own device.
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(60), |s| {
        s.confirmed_on(version(1)) == n
            && s.check_ins >= n as u64
            && fleet.mqtt_stats().unwrap().connected == n
    })
    .await;
    assert!(
        ok,
        "the fleet did not come up: {summary:?}, MQTT {:?}\nbroker log:\n{}",
        fleet.mqtt_stats(),
        broker.log()
    );
    assert_eq!(fleet.mqtt_stats().unwrap().refused, 0);
    (app, fleet, n)
}

/// With an hour between polls, a four-stage rollout completes in seconds: each stage's devices
/// are nudged (once each) and check in within the server's jitter.
async fn a_rollout_completes_by_push_long_before_any_poll(db: Db) {
    let broker = Mosquitto::start();
    let (app, fleet, n) = mqtt_fleet(db, &broker).await;
    let polls_before = fleet.summary().check_ins;
    let v2 = upload(&app, version(2), AppBehaviour::Good, 8 * 1024).await;
    let started = Instant::now();
    let id = start_rollout(
        &app,
        v2,
        json!([
            stage(5.0, 5),
            stage(25.0, 20),
            stage(60.0, 50),
            stage(100.0, 50)
        ]),
    )
    .await;
    // Far less than one poll interval: nothing but the pushes can have moved it.
    let status = wait_for(&app, id, Duration::from_secs(180), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    assert!(started.elapsed() < POLL / 10);
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(30), |s| {
        s.confirmed_on(version(2)) == n
    })
    .await;
    assert!(ok, "not every device confirmed v2: {summary:?}");
    // Every device was nudged exactly once (its stage's), and none polled on its own: each
    // check-in since the rollout began follows a nudge or a reboot into the new image.
    assert_eq!(summary.nudges, n as u64, "{summary:?}");
    assert!(
        summary.check_ins - polls_before <= 3 * n as u64,
        "{summary:?}"
    );
    let mqtt = fleet.mqtt_stats().unwrap();
    // The nudges, and at most one report_ack for each report published (some acknowledge
    // events an HTTP report before a reset settled already, some reach a device resetting).
    assert!(
        (n as u64 + summary.mqtt_reports..=n as u64 + mqtt.reports_published)
            .contains(&mqtt.commands),
        "{mqtt:?}, {summary:?}"
    );
    assert_eq!(mqtt.malformed, 0, "{mqtt:?}");
    // Reports went through the broker: at least each device's confirmation; over HTTP only the
    // one before each reset into the new image.
    assert!(summary.mqtt_reports >= n as u64, "{summary:?}");
    assert!(
        summary.reports - summary.mqtt_reports <= summary.installs,
        "{summary:?}"
    );
    assert!(mqtt.reports_published >= summary.mqtt_reports, "{mqtt:?}");
    // ... and the server has each device's confirmation of v2, stored once.
    for device in fleet.statuses() {
        let events = app
            .server
            .state
            .store
            .device_events(&device.id, 100)
            .await
            .unwrap();
        let confirmed = events
            .iter()
            .filter(|e| e.kind == "confirmed" && e.rollout_id == Some(id))
            .count();
        assert_eq!(confirmed, 1, "{}: {events:?}", device.id);
    }
}

/// A bad release halts in its first stage while most of that stage's downloads are still on
/// their way (slow links): the server tells each of them to stop, they drop the download at
/// once, and none of them installs it, though none polls for an hour.
async fn a_halt_stops_in_flight_downloads_by_push(db: Db) {
    let broker = Mosquitto::start();
    let (app, fleet, n) = mqtt_fleet(db, &broker).await;
    // 96 KiB: about 10 s on a slow link, 1 s on a fast one.
    let bad = upload(
        &app,
        version(3),
        AppBehaviour::NeverReachesServer,
        96 * 1024,
    )
    .await;
    let id = start_rollout(&app, bad, json!([stage(100.0, 5)])).await;
    let status = wait_for(&app, id, Duration::from_secs(120), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "halted", "{status:#}");
    // Every download stops: nobody is left downloading the halted release.
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(30), |_| {
        fleet
            .statuses()
            .iter()
            .all(|d| d.downloading != Some(version(3)))
    })
    .await;
    assert!(ok, "downloads still running after the halt: {summary:?}");
    let statuses = fleet.statuses();
    let accepted: Vec<_> = statuses
        .iter()
        .filter(|d| d.accepted.contains(&version(3)))
        .collect();
    let installed = statuses
        .iter()
        .filter(|d| d.installed.contains(&version(3)))
        .count();
    let stopped = statuses.iter().filter(|d| d.pushed_stops > 0).count();
    // Most of the fleet had taken the offer (nudged at once, within a second of jitter); the
    // halt came from the few fast devices that installed it and were reverted.
    assert!(accepted.len() > n / 2, "{summary:?}");
    assert!(
        installed <= n / 10 + 5,
        "{installed} installed: {summary:?}"
    );
    // Every device that took the offer either installed it before the halt or was stopped
    // by push: none found out at a poll.
    assert_eq!(stopped + installed, accepted.len(), "{summary:?}");
    assert_eq!(summary.withdrawn, 0, "{summary:?}");
    let stopped_at: Vec<u64> = statuses.iter().filter_map(|d| d.stopped_at_ms).collect();
    assert_eq!(stopped_at.len(), stopped);
    // The rollbacks that halted it were published through the broker: the devices that
    // installed v3 reported over HTTP only before their reset into it.
    assert!(statuses.iter().any(|d| d.rollbacks > 0), "{summary:?}");
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(30), |_| {
        fleet
            .statuses()
            .iter()
            .filter(|d| d.rollbacks > 0)
            .all(|d| d.mqtt_reports > 0)
    })
    .await;
    assert!(ok, "a rollback not acknowledged over MQTT: {summary:?}");
    assert!(
        summary.reports - summary.mqtt_reports <= summary.installs,
        "{summary:?}"
    );
}

backend_tests!(
    a_rollout_completes_by_push_long_before_any_poll,
    a_halt_stops_in_flight_downloads_by_push,
);
