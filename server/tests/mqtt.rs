//! The MQTT path against a real Mosquitto (the test's own, with dynamic security): devices get
//! broker accounts when they are registered, report over MQTT and are answered once stored,
//! cannot touch another device's topics, are nudged when a stage reaches them and told to stop
//! when a rollout pauses; a broker outage leaves HTTP serving and the link comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::messages::{Command, CommandKind};
use fota_server::config::MqttSettings;
use fota_testkit::{self as testkit, Db, Mosquitto, TestApp};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn app_on(broker: &Mosquitto) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(Db::Sqlite, dir.path()).await;
    let mut mqtt =
        MqttSettings::from_url(&broker.url(), format!("fota-test-{}", broker.port())).unwrap();
    mqtt.nudge_rate = 1000;
    mqtt.jitter_s = 0;
    config.mqtt = Some(mqtt);
    let app = testkit::spawn_with(Db::Sqlite, dir, config).await;
    mqtt_becomes(&app, "up", Duration::from_secs(10)).await;
    app
}

async fn mqtt_becomes(app: &TestApp, state: &str, within: Duration) {
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
        if ready["mqtt"] == state {
            return;
        }
        assert!(
            started.elapsed() < within,
            "MQTT link not {state} after {within:?}: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A device's MQTT connection, driven in the background; what it receives comes out of `rx`.
struct DeviceLink {
    client: AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

async fn connect(broker: &Mosquitto, id: &str, password: &str) -> Result<DeviceLink, String> {
    let mut options = MqttOptions::new(format!("dev-{id}"), "127.0.0.1", broker.port());
    options
        .set_credentials(id, password)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(options, 64);
    // The first answer decides: a ConnAck, or a refusal.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no ConnAck".into()),
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    Ok(DeviceLink { client, rx })
}

impl DeviceLink {
    /// Subscribe and return the broker's verdict.
    async fn subscribe(&mut self, topic: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match self.next().await {
                Event::Incoming(Packet::SubAck(ack)) => return ack.return_codes[0],
                _ => continue,
            }
        }
    }

    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("an MQTT event within 10 s")
            .expect("the link is open")
    }

    /// The next command received on `topic`, within `within`.
    async fn command(&mut self, within: Duration) -> Option<Command> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Event::Incoming(Packet::Publish(p)))) => {
                    return Some(serde_json::from_slice(&p.payload).unwrap())
                }
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
}

/// `n` devices `{prefix}-0..` registered through `app`, each connected to the broker and
/// subscribed to its command topic: their ids, tokens and links.
async fn subscribed_fleet(
    app: &TestApp,
    broker: &Mosquitto,
    prefix: &str,
    n: usize,
) -> (Vec<String>, Vec<String>, Vec<DeviceLink>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let specs: Vec<(&str, &str, &[&str])> = ids
        .iter()
        .map(|id| (id.as_str(), "f429", &[][..]))
        .collect();
    let tokens = app.provision(&specs).await;
    let mut links = Vec::new();
    for (id, token) in ids.iter().zip(&tokens) {
        let mut link = connect(broker, id, token).await.unwrap();
        link.subscribe(&format!("fota/d/{id}/cmd")).await;
        links.push(link);
    }
    (ids, tokens, links)
}

fn report(events: &[(u64, &str)]) -> Vec<u8> {
    let events: Vec<Value> = events
        .iter()
        .map(|(id, kind)| json!({"id": id, "kind": kind}))
        .collect();
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

async fn events_of(app: &TestApp, id: &str) -> usize {
    app.server
        .state
        .store
        .device_events(id, 100)
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_over_mqtt_are_stored_once_then_answered() {
    let broker = Mosquitto::start();
    let app = app_on(&broker).await;
    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    let mut dev = connect(&broker, "SL-1", &tokens[0]).await.unwrap();
    assert_eq!(
        dev.subscribe("fota/d/SL-1/cmd").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    dev.publish(
        "fota/d/SL-1/report",
        report(&[(1, "offer_accepted"), (2, "download_started")]),
    )
    .await;
    let ack = dev
        .command(Duration::from_secs(10))
        .await
        .expect("an acknowledgement");
    assert_eq!(ack.kind, CommandKind::ReportAck);
    assert_eq!(
        (ack.stored, ack.duplicates, ack.last_event_id),
        (Some(2), Some(0), Some(2))
    );
    assert_eq!(events_of(&app, "SL-1").await, 2);
    // The same report again (a lost acknowledgement): nothing stored twice.
    dev.publish(
        "fota/d/SL-1/report",
        report(&[(1, "offer_accepted"), (2, "download_started")]),
    )
    .await;
    let ack = dev.command(Duration::from_secs(10)).await.unwrap();
    assert_eq!((ack.stored, ack.duplicates), (Some(0), Some(2)));
    // Garbage on its own topic is dropped and counted; the subscriber lives on.
    dev.publish("fota/d/SL-1/report", b"{\"events\": 12".to_vec())
        .await;
    dev.publish("fota/d/SL-1/report", report(&[(3, "download_started")]))
        .await;
    let ack = dev.command(Duration::from_secs(10)).await.unwrap();
    assert_eq!(ack.last_event_id, Some(3));
    let metrics = app
        .client
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("fota_mqtt_dropped_total{reason=\"malformed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("fota_mqtt_connected 1"), "{metrics}");
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_touch_another_devices_topics() {
    let broker = Mosquitto::start();
    let app = app_on(&broker).await;
    let tokens = app
        .provision(&[("SL-A", "f429", &[]), ("SL-B", "f429", &[])])
        .await;
    // Another device's password is not its own.
    assert!(connect(&broker, "SL-A", &tokens[1]).await.is_err());
    assert!(connect(&broker, "SL-A", "dev_wrong").await.is_err());
    let mut a = connect(&broker, "SL-A", &tokens[0]).await.unwrap();
    for topic in ["fota/d/SL-B/cmd", "fota/d/SL-B/report", "fota/d/+/cmd", "#"] {
        assert_eq!(
            a.subscribe(topic).await,
            SubscribeReasonCode::Failure,
            "SL-A subscribed to {topic}"
        );
    }
    // Publishing as SL-B: the broker drops it, the server never sees it.
    a.publish("fota/d/SL-B/report", report(&[(1, "download_started")]))
        .await;
    a.publish(
        "fota/d/SL-B/cmd",
        serde_json::to_vec(&Command::stop(1)).unwrap(),
    )
    .await;
    let mut b = connect(&broker, "SL-B", &tokens[1]).await.unwrap();
    b.subscribe("fota/d/SL-B/cmd").await;
    a.publish(
        "fota/d/SL-B/cmd",
        serde_json::to_vec(&Command::stop(1)).unwrap(),
    )
    .await;
    assert!(
        b.command(Duration::from_millis(800)).await.is_none(),
        "SL-B received a command SL-A published"
    );
    assert_eq!(events_of(&app, "SL-B").await, 0);
    // Revoked: its broker account goes with it.
    let revoked: Value = app
        .post("/v1/devices/SL-B/revoke")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["broker_account_deleted"], true, "{revoked}");
    assert!(connect(&broker, "SL-B", &tokens[1]).await.is_err());
    // Its own report still goes through.
    assert_eq!(
        a.subscribe("fota/d/SL-A/cmd").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    a.publish("fota/d/SL-A/report", report(&[(1, "download_started")]))
        .await;
    assert_eq!(
        a.command(Duration::from_secs(10)).await.unwrap().stored,
        Some(1)
    );
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_nudges_its_devices_and_a_pause_stops_downloads() {
    let broker = Mosquitto::start();
    let app = app_on(&broker).await;
    let (ids, tokens, mut links) = subscribed_fleet(&app, &broker, "N", 8).await;
    for (id, token) in ids.iter().zip(&tokens) {
        let resp = app
            .check_in(id, token, &TestApp::check_in_body("f429", "1.0.0", "a"))
            .await;
        assert_eq!(resp.status(), 200);
    }
    let rel = testkit::release(&app, "f429", "2.0.0", 1).await;
    let rollout = testkit::start_rollout(
        &app,
        json!({"release_id": rel, "stages": [
            {"percent": 25.0, "min_sample": 2, "max_failure_rate": 0.5, "bake_s": 3600, "confirm_deadline_s": 600},
            {"percent": 100.0, "min_sample": 1, "max_failure_rate": 0.5, "bake_s": 0, "confirm_deadline_s": 600}
        ]}),
    )
    .await;
    let id = rollout["id"].as_i64().unwrap();
    // The first stage reaches 2 of 8: exactly those are nudged.
    let rows = app.server.state.store.rollout_devices(id).await.unwrap();
    let threshold = app
        .server
        .state
        .store
        .rollout(id)
        .await
        .unwrap()
        .unwrap()
        .current_threshold;
    let mut nudged = Vec::new();
    // Nudges go out at once (1,000/s here); give them time, then see who got one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (n, link) in links.iter_mut().enumerate() {
        if let Some(c) = link.command(Duration::from_millis(50)).await {
            assert_eq!(c.kind, CommandKind::CheckIn);
            assert_eq!(c.jitter_s, Some(0));
            nudged.push(ids[n].clone());
        }
    }
    let mut in_first: Vec<String> = rows
        .iter()
        .filter(|(_, _, rank, _)| *rank < threshold)
        .map(|(d, ..)| d.clone())
        .collect();
    in_first.sort();
    nudged.sort();
    assert_eq!(nudged.len(), 2, "{nudged:?}");
    assert_eq!(nudged, in_first);
    // The nudged devices check in and get the offer; a pause tells them to stop.
    for d in &nudged {
        let n = ids.iter().position(|i| i == d).unwrap();
        let resp: Value = app
            .check_in(d, &tokens[n], &TestApp::check_in_body("f429", "1.0.0", "a"))
            .await
            .json()
            .await
            .unwrap();
        assert!(resp["offer"].is_object(), "{resp}");
    }
    let paused = app
        .post(&format!("/v1/rollouts/{id}/pause"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200, "{}", paused.text().await.unwrap());
    for d in &nudged {
        let n = ids.iter().position(|i| i == d).unwrap();
        let c = links[n]
            .command(Duration::from_secs(5))
            .await
            .expect("a stop");
        assert_eq!((c.kind, c.rollout_id), (CommandKind::Stop, Some(id as u64)));
    }
    app.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_leaves_http_serving() {
    let mut broker = Mosquitto::start();
    let app = app_on(&broker).await;
    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    broker.stop();
    mqtt_becomes(&app, "down", Duration::from_secs(30)).await;
    let resp = app
        .check_in(
            "SL-1",
            &tokens[0],
            &TestApp::check_in_body("f429", "1.0.0", "a"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let metrics = app
        .client
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fota_mqtt_connected 0"), "{metrics}");
    // Registering needs the broker (each device's account): refused, nothing registered.
    let refused = app
        .post("/v1/devices")
        .json(&json!({"devices": [{"id": "SL-2", "model": "f429"}]}))
        .send()
        .await
        .unwrap();
    testkit::assert_error(refused, 503, "broker_unavailable").await;
    assert!(app
        .server
        .state
        .store
        .device_credentials("SL-2")
        .await
        .unwrap()
        .is_none());
    broker.start_again();
    mqtt_becomes(&app, "up", Duration::from_secs(15)).await;
    // Subscriptions are back: a report over MQTT is answered.
    let mut dev = connect(&broker, "SL-1", &tokens[0]).await.unwrap();
    dev.subscribe("fota/d/SL-1/cmd").await;
    dev.publish("fota/d/SL-1/report", report(&[(1, "download_started")]))
        .await;
    assert_eq!(
        dev.command(Duration::from_secs(10)).await.unwrap().stored,
        Some(1)
    );
    app.server.shutdown().await.unwrap();
}

/// Two replicas on one PostgreSQL and one broker: a report is handled by one of them (stored
/// once, answered once), and a stage's nudges are sent by the replica that opened it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: run with FOTA_TEST_POSTGRES_URL set (scripts/test does)"]
async fn two_replicas_handle_each_report_and_nudge_once() {
    testkit::on_postgres(two_replicas()).await;
}

async fn two_replicas() {
    let broker = Mosquitto::start();
    let replica = |n: u16, database: Option<String>| {
        let url = broker.url();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let mut config = testkit::test_config(Db::Postgres, dir.path()).await;
            if let Some(database) = database {
                config.database_url = database;
            }
            let mut mqtt = MqttSettings::from_url(&url, format!("fota-replica-{n}")).unwrap();
            mqtt.jitter_s = 0;
            config.mqtt = Some(mqtt);
            let app = testkit::spawn_with(Db::Postgres, dir, config).await;
            mqtt_becomes(&app, "up", Duration::from_secs(10)).await;
            app
        }
    };
    let a = replica(1, None).await;
    let b = replica(2, Some(a.database_url.clone())).await;
    let (ids, _, mut links) = subscribed_fleet(&a, &broker, "R", 6).await;
    // Twenty reports from one device: each answered once, each event stored once.
    for n in 1..=20u64 {
        links[0]
            .publish("fota/d/R-0/report", report(&[(n, "offer_accepted")]))
            .await;
    }
    let mut acked = Vec::new();
    while let Some(c) = links[0].command(Duration::from_secs(3)).await {
        assert_eq!(c.kind, CommandKind::ReportAck);
        acked.push(c.last_event_id.unwrap());
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=20).collect::<Vec<u64>>(),
        "one answer per report"
    );
    assert_eq!(events_of(&a, "R-0").await, 20);
    // A rollout to everyone, started through replica b: every device nudged exactly once.
    let rel = testkit::release(&b, "f429", "2.0.0", 1).await;
    testkit::start_rollout(
        &b,
        json!({"release_id": rel, "stages": [
            {"percent": 100.0, "min_sample": 1, "max_failure_rate": 0.5, "bake_s": 0, "confirm_deadline_s": 600}
        ]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (id, link) in ids.iter().zip(links.iter_mut()) {
        let first = link.command(Duration::from_millis(200)).await;
        assert_eq!(first.map(|c| c.kind), Some(CommandKind::CheckIn), "{id}");
        assert!(
            link.command(Duration::from_millis(100)).await.is_none(),
            "{id} nudged twice"
        );
    }
    b.server.shutdown().await.unwrap();
    a.server.shutdown().await.unwrap();
}
