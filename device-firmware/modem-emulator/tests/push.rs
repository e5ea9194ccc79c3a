//! The push path end to end: the modem transport's MQTT session through the emulator's module
//! to a real Mosquitto the test starts on its own port (dynamic security, the device's account
//! created by a real `fota serve` when it registers the device), and the server's own pushes:
//! a rollout that starts nudges the device, an abort stops its download in flight. Then the
//! broker goes away (`+CMQTTCONNLOST`) and comes back: the device reconnects and subscribes by
//! itself, and receives again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_modem::dialect::Timeouts;
use fota_modem::transport::ModemTransport;
use fota_modem::{ModemConfig, PushConfig, Sim7600};
use fota_modem_emulator::pipe::{pipe, DeviceEnd, StdClock};
use fota_modem_emulator::{session, Config, Faults};
use fota_ota_client::transport::Transport;
use fota_protocol::image::ImageVersion;
use fota_protocol::messages::{BootState, CheckIn, Command, CommandKind, Model, RdpLevel};
use fota_protocol::SlotId;
use fota_server::config::MqttSettings;
use fota_testkit::{self as testkit, signing_key, start_rollout, Db, Mosquitto, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const MODEL: &str = "streetlight-f429";

type Modem = ModemTransport<'static, DeviceEnd, StdClock, Sim7600>;

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// A device's modem on the emulator, holding an MQTT session with `broker_port`.
fn modem(base: &str, id: &str, token: &str, broker_port: u16, faults: &Faults) -> Modem {
    let (device, reader, writer) = pipe();
    let faults = faults.clone();
    let config = Config {
        verbose: true,
        ..Config::default()
    };
    std::thread::spawn(move || session::serve(reader, writer, &config, &faults));
    let mut config = ModemConfig::new(leak(base), leak(id), leak(token), "internet");
    config.timeouts = Timeouts {
        command_ms: 2_000,
        action_ms: 5_000,
        read_ms: 3_000,
    };
    let mut m = ModemTransport::new(device, StdClock::new(), config);
    let mut push = PushConfig::from_url(leak(&format!("mqtt://127.0.0.1:{broker_port}"))).unwrap();
    push.connect_timeout_ms = 5_000;
    push.retry_min_ms = 200;
    push.retry_max_ms = 1_000;
    m.enable_push(push).unwrap();
    m
}

/// Take commands until `want` says one is it, or `timeout`; every command seen, in order.
fn take_until(
    m: &mut Modem,
    timeout: Duration,
    want: impl Fn(&Command) -> bool,
) -> (Option<Command>, Vec<Command>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < timeout {
        if let Some(c) = m.take_command() {
            seen.push(c);
            if want(&c) {
                return (Some(c), seen);
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (None, seen)
}

fn wait_connected(m: &mut Modem, up: bool, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        m.take_command();
        if m.push_connected() == Some(up) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A server that pushes through `broker` (provisioning device accounts there).
async fn server(broker: &Mosquitto) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(Db::Sqlite, dir.path()).await;
    let mut mqtt =
        MqttSettings::from_url(&broker.url(), format!("fota-emu-{}", broker.port())).unwrap();
    mqtt.jitter_s = 1;
    config.mqtt = Some(mqtt);
    let app = testkit::spawn_with(Db::Sqlite, dir, config).await;
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
            return app;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn check_in_message() -> CheckIn {
    CheckIn {
        model: Model::try_from(MODEL).unwrap(),
        firmware_version: ImageVersion::new(1, 0, 0, 0),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_nudges_and_stops_the_device_through_the_module_and_a_real_broker() {
    let mut broker = Mosquitto::start();
    let app = server(&broker).await;
    let tokens = app.provision(&[("lamp-1", MODEL, &[])]).await;
    let faults = Faults::new();
    let (base, token, port, f) = (
        app.url.clone(),
        tokens[0].clone(),
        broker.port(),
        faults.clone(),
    );
    let mut m = blocking(move || {
        let mut m = modem(&base, "lamp-1", &token, port, &f);
        // The first check-in: known to the server, on 1.0.0, nothing offered.
        let r = m.check_in(&check_in_message()).unwrap();
        assert!(r.offer.is_none());
        assert!(
            wait_connected(&mut m, true, Duration::from_secs(10)),
            "{:?}",
            m.push_stats()
        );
        m
    })
    .await;
    assert_eq!(faults.stats().mqtt_connects, 1);

    // A rollout starts: the server nudges the device (jitter 1 s).
    let v: ImageVersion = "2.0.0".parse().unwrap();
    let a = fota_protocol::testing::signed_for(SlotId::A, 20_000, v, 2, &signing_key());
    let b = fota_protocol::testing::signed_for(SlotId::B, 20_000, v, 2, &signing_key());
    let resp = app.upload(MODEL, a, b).await;
    assert_eq!(resp.status(), 201);
    let release = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let rollout = start_rollout(
        &app,
        json!({"release_id": release, "stages": [{"percent": 100.0, "bake_s": 0, "min_sample": 1,
               "max_failure_rate": 0.5, "confirm_deadline_s": 600}]}),
    )
    .await;
    let rollout_id = rollout["id"].as_i64().unwrap();
    let (nudge, m2) = blocking(move || {
        let (nudge, _) = take_until(&mut m, Duration::from_secs(15), |c| {
            c.kind == CommandKind::CheckIn
        });
        // It checks in: offered the release, its download is in flight.
        let r = m.check_in(&check_in_message()).unwrap();
        assert!(r.offer.is_some(), "{r:?}");
        (nudge, m)
    })
    .await;
    m = m2;
    assert_eq!(nudge, Some(Command::check_in(1)));

    // The operator aborts the rollout: the device is told to stop.
    let resp = app
        .post(&format!("/v1/rollouts/{rollout_id}/abort"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let (stop, m2) = blocking(move || {
        let (stop, _) = take_until(&mut m, Duration::from_secs(15), |c| {
            c.kind == CommandKind::Stop
        });
        (stop, m)
    })
    .await;
    m = m2;
    assert_eq!(stop, Some(Command::stop(rollout_id as u64)));

    // The broker goes away: the module reports it, the device notes it.
    broker.stop();
    let m2 = blocking(move || {
        assert!(wait_connected(&mut m, false, Duration::from_secs(10)));
        m
    })
    .await;
    m = m2;
    assert_eq!(faults.stats().mqtt_lost, 1);
    assert_eq!(m.push_stats().connections_lost, 1);
    // It comes back: the device reconnects and subscribes by itself, with backoff.
    broker.start_again();
    let m2 = blocking(move || {
        assert!(
            wait_connected(&mut m, true, Duration::from_secs(15)),
            "{:?}",
            m.push_stats()
        );
        m
    })
    .await;
    m = m2;
    assert!(faults.stats().mqtt_connects >= 2);
    // And receives again: a publish by the server's own account (a nudge, as a new stage
    // would send) arrives.
    let url = broker.url();
    let publisher = std::thread::spawn(move || publish_as_server(&url, "fota/d/lamp-1/cmd"));
    let (nudge, _) = blocking(move || {
        take_until(&mut m, Duration::from_secs(15), |c| {
            c.kind == CommandKind::CheckIn
        })
    })
    .await;
    publisher.join().unwrap();
    assert_eq!(nudge, Some(Command::check_in(7)));
}

/// Publish a nudge on `topic` with the broker's admin account, as the server does.
fn publish_as_server(url: &str, topic: &str) {
    let rest = url.strip_prefix("mqtt://").unwrap();
    let (creds, host_port) = rest.split_once('@').unwrap();
    let (user, password) = creds.split_once(':').unwrap();
    let (host, port) = host_port.split_once(':').unwrap();
    let mut options = rumqttc::MqttOptions::new("test-publisher", host, port.parse().unwrap());
    options.set_credentials(user, password);
    let (client, mut connection) = rumqttc::Client::new(options, 10);
    let payload = serde_json::to_vec(&Command::check_in(7)).unwrap();
    // Publish a few times (QoS 1) until the device's session certainly exists.
    for _ in 0..3 {
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
            .unwrap();
    }
    client.disconnect().unwrap();
    for event in connection.iter() {
        if event.is_err() {
            break;
        }
    }
}
