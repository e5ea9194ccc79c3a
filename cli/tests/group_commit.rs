//! Acknowledged means committed: a `fota serve` process killed with SIGKILL while devices post
//! reports concurrently (group commits in flight, reports queued behind them), then started
//! again on the same database. Every event the server acknowledged is in the database, and a
//! retry of any report sent before the kill is stored at most once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_testkit::{self as testkit, provision_devices, release, Api as _};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `fota` binary under test.
const FOTA: &str = env!("CARGO_BIN_EXE_fota");

const DEVICES: usize = 120;
const EVENTS_PER_REPORT: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_report_survives_a_kill_mid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite:{}", dir.path().join("fota.db").display());
    let admin = {
        let store = fota_server::store::Store::connect(&database_url)
            .await
            .unwrap();
        let admin = testkit::token(&store, "ops", fota_server::domain::auth::Role::Admin).await;
        store.close().await;
        admin
    };
    let mut server = testkit::spawn_process(FOTA.as_ref(), &database_url, dir.path(), &admin).await;
    let devices = provision_devices(&server, "K", DEVICES, "f429").await;
    let rel = release(&server, "f429", "2.0.0", 1).await;
    let rollout = testkit::start_rollout(
        &server,
        json!({"release_id": rel, "stages": [{"percent": 100, "bake_s": 0, "min_sample": 1, "max_failure_rate": 0.5, "confirm_deadline_s": 3600}]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();

    // Every device posts reports back to back, each a batch of new events, and records what was
    // acknowledged and what was sent without an answer.
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let unanswered: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let url = server.url.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for (n, (id, token)) in devices.clone().into_iter().enumerate() {
        let (acked, unanswered, url, client) = (
            acked.clone(),
            unanswered.clone(),
            url.clone(),
            client.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut next = 1u64;
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                let events: Vec<Value> = (next..next + EVENTS_PER_REPORT)
                    .map(|e| json!({"id": e, "kind": if e % 2 == 1 { "download_started" } else { "installed" }, "rollout_id": rollout}))
                    .collect();
                let resp = client
                    .post(format!("{url}/v1/devices/{id}/reports"))
                    .bearer_auth(&token)
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let ack: Value = r.json().await.unwrap();
                        assert_eq!(ack["stored"], EVENTS_PER_REPORT, "{ack}");
                        let mut a = acked.lock().unwrap();
                        for e in next..next + EVENTS_PER_REPORT {
                            a.push((id.clone(), e));
                        }
                        next += EVENTS_PER_REPORT;
                    }
                    _ => {
                        // The server is gone: this report may or may not be stored.
                        unanswered.lock().unwrap().push((n, next));
                        return;
                    }
                }
            }
        }));
    }
    // Let the load build up, then kill the server mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = acked.lock().unwrap().len();
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    assert!(
        before_kill >= 100,
        "only {before_kill} events acknowledged before the kill: no load to kill under"
    );
    assert!(
        !unanswered.is_empty(),
        "no report was in flight when the server died"
    );

    // Started again on the same database.
    let server = testkit::spawn_process(FOTA.as_ref(), &database_url, dir.path(), &admin).await;
    let store = fota_server::store::Store::connect(&database_url)
        .await
        .unwrap();
    let mut missing = Vec::new();
    let mut by_device: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for (id, _) in &devices {
        let stored = store.device_events(id, 100_000).await.unwrap();
        by_device.insert(id.clone(), stored.iter().map(|e| e.event_id).collect());
    }
    for (id, e) in &acked {
        if !by_device[id].contains(&(*e as i64)) {
            missing.push((id.clone(), *e));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are not in the database after the kill: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );

    // The devices retry what went unanswered: stored now or recognised as stored, never twice.
    for (n, first) in unanswered {
        let (id, token) = &devices[n];
        let events: Vec<Value> = (first..first + EVENTS_PER_REPORT)
            .map(|e| json!({"id": e, "kind": if e % 2 == 1 { "download_started" } else { "installed" }, "rollout_id": rollout}))
            .collect();
        let resp = server
            .client()
            .post(server.url_of(&format!("/v1/devices/{id}/reports")))
            .bearer_auth(token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ack: Value = resp.json().await.unwrap();
        assert_eq!(
            ack["stored"].as_u64().unwrap() + ack["duplicates"].as_u64().unwrap(),
            EVENTS_PER_REPORT
        );
        let stored = store.device_events(id, 100_000).await.unwrap();
        let mut ids: Vec<i64> = stored.iter().map(|e| e.event_id).collect();
        ids.sort_unstable();
        let len = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), len, "{id}: an event stored twice");
    }
    store.close().await;
}
