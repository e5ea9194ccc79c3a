//! A database outage, for real: a PostgreSQL server of the test's own ([`PrivatePostgres`]) is
//! stopped under a running fota server and started again.
//!
//! While it is down: `/readyz` says 503 within a second; a device seen before is still answered
//! from memory (200, no offer) in well under a second; what needs the database (a report, an
//! unknown device, an admin request) answers 503 `database_unavailable` with `Retry-After` in
//! well under a second, never 500. When it returns: `/readyz` says 200 within a second, the
//! check-in facts buffered during the outage are written, and a report retried is stored.
//! Nothing acknowledged is lost. A second server whose health check would not notice the outage
//! in time shows the other half: the pool's acquire timeout still turns it into a 503 within a
//! few seconds, not a 500 after thirty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_testkit::{self as testkit, assert_error, Db, PrivatePostgres, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Poll `/readyz` until it answers `status`; returns how long that took.
async fn ready_becomes(app: &TestApp, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = app.client.get(app.at("/readyz")).send().await.unwrap();
        if got.status() == status {
            if status == 503 {
                assert!(got.headers().contains_key("retry-after"));
            }
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readyz still {} after {within:?}",
            got.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn report(app: &TestApp, id: &str, token: &str, event: u64) -> reqwest::Response {
    app.client
        .post(app.at(&format!("/v1/devices/{id}/reports")))
        .bearer_auth(token)
        .json(&json!({"events": [{"id": event, "kind": "offer_accepted", "rollout_id": 9, "version": "2.0.0"}]}))
        .send()
        .await
        .unwrap()
}

/// Time one request.
async fn timed(req: reqwest::RequestBuilder) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let resp = req.send().await.unwrap();
    (resp, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_answered_fast_and_loses_nothing() {
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(Db::Sqlite, dir.path()).await;
    config.database_url = pg.url();
    let app = testkit::spawn_with(Db::Postgres, dir, config.clone()).await;

    // The same database behind a server whose health check runs once a minute: while it has
    // not noticed, only the pool's acquire timeout stands between a request and a hang.
    let slow_dir = tempfile::tempdir().unwrap();
    let mut slow_config = config.clone();
    slow_config.data_dir = slow_dir.path().to_path_buf();
    slow_config.database_health_interval = Duration::from_secs(60);
    let slow = testkit::spawn_with(Db::Postgres, slow_dir, slow_config).await;

    let tokens = app
        .provision(&[("SEEN", "f429", &[]), ("UNSEEN", "f429", &[])])
        .await;
    let (seen, unseen) = (tokens[0].as_str(), tokens[1].as_str());
    let before = TestApp::check_in_body("f429", "1.0.0", "a");
    assert_eq!(app.check_in("SEEN", seen, &before).await.status(), 200);
    assert_eq!(slow.check_in("SEEN", seen, &before).await.status(), 200);
    let acked = report(&app, "SEEN", seen, 1).await;
    assert_eq!(acked.status(), 200, "{}", acked.text().await.unwrap());
    app.flush().await;
    // The slow server's facts too: a flush that failed during the outage would tell it.
    slow.flush().await;

    pg.stop();
    let went_down = ready_becomes(&app, 503, Duration::from_secs(1)).await;

    // A device seen before: answered from memory, at once, without an offer; for longer than
    // the engine's cache of active rollouts lives, so the engine's own reads fail too.
    let during = TestApp::check_in_body("f429", "1.0.1", "b");
    let mut check_in_took = Duration::ZERO;
    for _ in 0..4 {
        let started = Instant::now();
        let resp = app.check_in("SEEN", seen, &during).await;
        check_in_took = check_in_took.max(started.elapsed());
        assert_eq!(resp.status(), 200);
        let answer: Value = resp.json().await.unwrap();
        assert!(answer.get("offer").is_none(), "{answer}");
        tokio::time::sleep(fota_server::rollout::engine::ACTIVE_CACHE_TTL / 2).await;
    }
    assert!(
        check_in_took < Duration::from_millis(500),
        "{check_in_took:?}"
    );

    // What needs the database: 503 with Retry-After, at once.
    let (resp, report_took) = timed(
        app.client
            .post(app.at("/v1/devices/SEEN/reports"))
            .bearer_auth(seen)
            .json(&json!({"events": [{"id": 2, "kind": "installed", "rollout_id": 9}]})),
    )
    .await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 503, "database_unavailable").await;
    assert!(report_took < Duration::from_millis(500), "{report_took:?}");
    let (resp, unseen_took) = timed(
        app.client
            .post(app.at("/v1/devices/UNSEEN/check-in"))
            .bearer_auth(unseen)
            .json(&before),
    )
    .await;
    assert_error(resp, 503, "database_unavailable").await;
    assert!(unseen_took < Duration::from_millis(500), "{unseen_took:?}");
    let (resp, admin_took) = timed(app.get("/v1/devices")).await;
    assert_error(resp, 503, "database_unavailable").await;
    assert!(admin_took < Duration::from_millis(500), "{admin_took:?}");
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
        metrics
            .lines()
            .any(|l| l.starts_with("fota_check_ins_without_database_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The server that has not noticed: a 503 within the acquire timeout (2 s), never a 500.
    assert!(slow.server.state.store.is_up(), "not noticed yet");
    let (resp, slow_took) = timed(slow.get("/v1/devices")).await;
    assert_error(resp, 503, "database_unavailable").await;
    assert!(slow_took < Duration::from_secs(4), "{slow_took:?}");
    let resp = slow.check_in("SEEN", seen, &during).await;
    assert_eq!(resp.status(), 200, "answered from memory there too");

    pg.start_again();
    let came_back = ready_becomes(&app, 200, Duration::from_secs(1)).await;
    eprintln!(
        "readyz: 503 after {went_down:?}, 200 after {came_back:?}; during the outage a known \
         check-in took {check_in_took:?}, a report {report_took:?}, an unknown device \
         {unseen_took:?}, an admin request {admin_took:?} (unnoticed: {slow_took:?})"
    );

    // The facts of the check-in made during the outage reach the database.
    let started = Instant::now();
    loop {
        let d: Value = app
            .get("/v1/devices/SEEN")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["firmware_version"] == "1.0.1" {
            assert_eq!(d["running_slot"], "b", "{d}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "facts of the outage not flushed: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The report refused during the outage is stored when retried; the one acknowledged before
    // it is still there.
    let retried = report(&app, "SEEN", seen, 2).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(
        retried.json::<Value>().await.unwrap(),
        json!({"stored": 1, "duplicates": 0})
    );
    let events = app
        .server
        .state
        .store
        .device_events("SEEN", 10)
        .await
        .unwrap();
    let mut ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(
        app.check_in("UNSEEN", unseen, &before).await.status(),
        200,
        "unknown devices are answered again"
    );
    slow.server.shutdown().await.unwrap();
    app.server.shutdown().await.unwrap();
}
