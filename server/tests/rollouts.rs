//! Staged rollouts end to end over HTTP, on SQLite and (with `FOTA_TEST_POSTGRES_URL`)
//! PostgreSQL: the field incident halts in its canary, a good release walks to 100%, a gate
//! without its sample never advances, rollbacks, operator actions and the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::messages::{Event, EventKind};
use fota_server::domain::cohort;
use fota_server::domain::DeviceState;
use fota_server::store::{installed_exposure_sql, now_ms, Exposure, Tally, FOLD_AT};
use fota_testkit::{
    self as testkit, assert_error, backend_tests, fleet, provision_devices, release,
    rollout_status, spawn_app, wait_for, Behaviour, Db,
};
use serde_json::{json, Value};
use sqlx::{Connection as _, Row as _};
use std::time::Duration;

backend_tests!(
    field_incident_halts_in_the_first_stage,
    good_release_walks_every_stage_to_100_percent,
    failing_release_below_min_sample_never_advances,
    plans_fit_small_fleets,
    rollback_reports_halt_at_once,
    protection_blocked_devices_are_skipped,
    operator_actions_and_audit,
    rollout_refusals,
    fleet_rollback_brings_devices_back,
    selector_targets_tags_versions_and_late_joiners,
    anti_rollback_holds_on_start_late_joiners_and_every_offer,
    anti_rollback_holds_when_a_stage_advances,
    resets_count_on_the_new_release_only_after_confirmation,
    counts_kept_as_devices_move_agree_with_a_recount,
    exposure_kept_as_events_arrive_agrees_with_its_definition,
    offers_asked_at_once_share_commits_and_each_device_is_offered_once,
);

async fn start(app: &impl testkit::Api, body: Value) -> Value {
    testkit::start_rollout(app, body).await
}

/// The threshold of a stage that reaches the `reach` lowest-ranked of `devices`.
fn first_stage(id: i64, devices: &[testkit::Device], reach: u64) -> u64 {
    let mut ranks: Vec<u32> = devices.iter().map(|d| cohort::rank(id, &d.id)).collect();
    cohort::threshold_for_count(&mut ranks, reach)
}

fn stage(percent: f64, min_sample: u64, max_rate: f64, deadline_s: i64) -> Value {
    json!({"percent": percent, "bake_s": 0, "min_sample": min_sample, "max_failure_rate": max_rate, "confirm_deadline_s": deadline_s})
}

/// Start a rollout of `release` in one stage of the whole fleet with a long bake (an hour), so
/// it stays in that stage while a test moves its devices. Returns its id.
async fn start_one_long_stage(app: &impl testkit::Api, release: i64, min_sample: u64) -> i64 {
    let mut only = stage(100.0, min_sample, 0.5, 3600);
    only["bake_s"] = json!(3600);
    start(app, json!({"release_id": release, "stages": [only]})).await["id"]
        .as_i64()
        .unwrap()
}

/// The field incident at small scale: the new firmware boots and never reaches the server. The
/// rollout halts in its first stage on silence alone, and no device outside it is ever offered.
async fn field_incident_halts_in_the_first_stage(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "SL", 200, "f429", "1.0.0").await;
    let bad = release(&app, "f429", "2.0.0", 1).await;
    let r = start(
        &app,
        json!({"release_id": bad, "stages": [stage(5.0, 4, 0.25, 2), stage(50.0, 4, 0.25, 2), stage(100.0, 4, 0.25, 2)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["targets"], 200);
    assert_eq!(r["state"], "active");
    // 5% of 200 targets: the 10 lowest ranks.
    let first_threshold = first_stage(id, &devices, 10);

    let mut silent = std::collections::HashSet::new();
    let started = std::time::Instant::now();
    let status = loop {
        for d in devices.iter_mut() {
            if silent.contains(&d.id) {
                continue;
            }
            if let Some(offer) = d.check_in(&app).await {
                assert!(
                    cohort::is_in(cohort::rank(id, &d.id), first_threshold),
                    "{} was offered outside the first stage",
                    d.id
                );
                assert_eq!(offer["slot"], "b", "the inactive slot");
                assert_eq!(offer["version"], "2.0.0");
                if !d.take(&app, &offer, Behaviour::Silent).await {
                    silent.insert(d.id.clone());
                }
            }
        }
        let s = rollout_status(&app, id).await;
        if s["state"] != "active" || started.elapsed() > Duration::from_secs(20) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["state"], "halted", "{status:#}");
    assert_eq!(status["current_stage"], 1);
    assert!(
        status["halt_reason"]["timed_out"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    assert!(status["halt_message"].as_str().unwrap().contains("silent"));
    let exposed = silent.len();
    assert!(
        exposed > 0 && exposed <= 25,
        "{exposed} devices took the bad release"
    );

    // A halted rollout still owns its model: no new rollout until it is aborted.
    let other = release(&app, "f429", "2.0.1", 1).await;
    assert_error(
        app.post("/v1/rollouts")
            .json(&json!({"release_id": other}))
            .send()
            .await
            .unwrap(),
        409,
        "rollout_in_progress",
    )
    .await;
    // Resuming it answers with the truth: the gate still fails, so it is halted again.
    let resumed: Value = app
        .post(&format!("/v1/rollouts/{id}/resume"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["state"], "halted", "{resumed:#}");
    // After the halt nothing more is offered, to anyone.
    for d in devices.iter_mut().filter(|d| !silent.contains(&d.id)) {
        assert!(d.check_in(&app).await.is_none(), "offered after the halt");
    }
    let offered_outside: Vec<_> = app
        .server
        .state
        .store
        .rollout_devices(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, state, rank, _)| {
            state != "eligible" && !cohort::is_in(*rank as u32, first_threshold)
        })
        .collect();
    assert!(offered_outside.is_empty(), "{offered_outside:?}");
    // The automatic decision is in the audit log, with its numbers.
    let audit: Value = app
        .get(&format!("/v1/audit?rollout_id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let halt = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.halt")
        .expect("halt audited");
    assert_eq!(halt["actor"], "fota");
    assert!(
        halt["detail"]["numbers"]["timed_out"].as_u64().unwrap() >= 1,
        "{halt:#}"
    );
    assert_eq!(
        halt["detail"]["numbers"]["stage"], 1,
        "stages count from 1 everywhere"
    );
}

/// A good release: every stage passes its gate and the rollout completes with every device
/// confirmed on the new version.
async fn good_release_walks_every_stage_to_100_percent(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "G", 60, "f429", "1.0.0").await;
    let good = release(&app, "f429", "1.1.0", 1).await;
    let r = start(
        &app,
        json!({"release_id": good, "stages": [stage(10.0, 2, 0.1, 60), stage(50.0, 5, 0.1, 60), stage(100.0, 5, 0.1, 60)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        let s = rollout_status(&app, id).await;
        if s["state"] != "active" || started.elapsed() > Duration::from_secs(30) {
            break s;
        }
        for d in devices.iter_mut() {
            if let Some(offer) = d.check_in(&app).await {
                d.take(&app, &offer, Behaviour::Good).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert_eq!(status["state"], "completed", "{status:#}");
    assert_eq!(status["current_stage"], 3);
    assert_eq!(status["counts"]["confirmed"], 60);
    assert!(devices
        .iter()
        .all(|d| d.version == "1.1.0" && d.slot == "b"));
    let audit: Value = app
        .get(&format!("/v1/audit?rollout_id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "rollout.create",
            "rollout.advance",
            "rollout.advance",
            "rollout.complete"
        ]
    );
    app.flush().await;
    let summary: Value = app
        .get("/v1/fleet/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        summary["by_version"][0],
        json!({"version": "1.1.0", "devices": 60})
    );
}

/// A failing release whose failures stay under the halt line but whose stage never reaches its
/// minimum sample: it waits, says for what, and does not advance. The plan's minimum sample (50)
/// is capped at the stage's 10 devices; 4 of them never check in.
async fn failing_release_below_min_sample_never_advances(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "F", 100, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "1.2.0", 1).await;
    // 10 devices in stage 1; the plan asks 50 decided to advance; 50% failures tolerated.
    let r = start(
        &app,
        json!({"release_id": rel, "stages": [stage(10.0, 50, 0.5, 60), stage(100.0, 1, 0.5, 60)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["stages"][0]["reach"], 10, "{r:#}");
    assert_eq!(r["stages"][0]["min_sample_applied"], 10, "{r:#}");
    let canary = first_stage(id, &devices, 10);
    let mut n = 0;
    for d in devices.iter_mut() {
        if n == 6 {
            break;
        }
        if let Some(offer) = d.check_in(&app).await {
            let behaviour = if n % 3 == 0 {
                Behaviour::RollsBack
            } else {
                Behaviour::Good
            };
            n += 1;
            d.take(&app, &offer, behaviour).await;
        }
    }
    assert_eq!(n, 6);
    // Several sweeps later, still stage 1.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = rollout_status(&app, id).await;
    assert_eq!(s["state"], "active", "{s:#}");
    assert_eq!(s["current_stage"], 1, "{s:#}");
    assert_eq!(s["counts"]["rolled_back"], 2, "{s:#}");
    assert_eq!(
        s["next"],
        "minimum sample: 6 of 10 devices decided in this stage (the plan asks 50; capped at the 10 devices of the stage); 0 updating, 4 not offered yet (they have not checked in)",
        "{s:#}"
    );
    assert_eq!(
        s["gate"],
        json!({"decided": 6, "min_sample": 10, "min_sample_asked": 50, "in_flight": 0,
               "not_offered": 4, "bake_s": 0, "bake_left_s": 0, "needs_approval": false,
               "approved": false, "rate_min_sample": 10}),
        "{s:#}"
    );
    // The gate's rate divides by the minimum sample (capped at the 10 devices of the cohorts
    // so far) until more devices have decided.
    assert!(
        (s["gate_failure_rate"].as_f64().unwrap() - 2.0 / 10.0).abs() < 1e-9,
        "{s:#}"
    );
    // And nobody outside stage 1 is offered.
    for d in devices
        .iter_mut()
        .filter(|d| !cohort::is_in(cohort::rank(id, &d.id), canary))
    {
        assert!(d.check_in(&app).await.is_none());
    }
}

/// Plans fit the fleet: on 1, 5, 20 and 200 devices the default plan's stages each take at least
/// one device, its minimum sample of 20 is capped at each stage's cohort, and a good release
/// walks to 100%. A plan some stage of which would take nobody is refused at the start with
/// what would fit; the only canary of a bench failing halts at once.
async fn plans_fit_small_fleets(db: Db) {
    let app = spawn_app(db).await;
    // The default sizes, baking 0 s so the test does not wait (the default is 30 min).
    let default_plan = json!([1, 10, 50, 100]
        .map(|p| json!({"percent": p, "bake_s": 0, "min_sample": 20, "max_failure_rate": 0.05})));
    for (n, reach, applied) in [
        (1usize, vec![1], vec![1]),
        (5, vec![1, 2, 3, 5], vec![1, 1, 1, 2]),
        (20, vec![1, 2, 10, 20], vec![1, 1, 8, 10]),
        (200, vec![2, 20, 100, 200], vec![2, 18, 20, 20]),
    ] {
        let model = format!("bench-{n}");
        let mut devices = fleet(&app, &format!("N{n}"), n, &model, "1.0.0").await;
        let rel = release(&app, &model, "1.1.0", 1).await;
        let plan = if n == 1 {
            // Four stages over one device: refused, saying what would work.
            let resp = app
                .post("/v1/rollouts")
                .json(&json!({"release_id": rel, "stages": default_plan}))
                .send()
                .await
                .unwrap();
            let text = resp.text().await.unwrap();
            let e: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(e["error"], "plan_does_not_fit", "{text}");
            assert_eq!(
                e["message"],
                "1 target device fills this plan by stage 1 of 4 (devices reached: 1%: 1), so stages 2-4 would take no device: use at most 1 stage, e.g. 100%, or target more devices"
            );
            json!([{"percent": 100, "bake_s": 0, "min_sample": 20}])
        } else {
            default_plan.clone()
        };
        let r = start(&app, json!({"release_id": rel, "stages": plan})).await;
        let id = r["id"].as_i64().unwrap();
        let stages = r["stages"].as_array().unwrap();
        let got: Vec<u64> = stages
            .iter()
            .map(|s| s["reach"].as_u64().unwrap())
            .collect();
        assert_eq!(got, reach, "{n} devices: {r:#}");
        let got: Vec<u64> = stages
            .iter()
            .map(|s| s["min_sample_applied"].as_u64().unwrap())
            .collect();
        assert_eq!(got, applied, "{n} devices: {r:#}");
        let s = drive(&app, id, &mut devices, Behaviour::Good, |s| {
            s["state"] != "active"
        })
        .await;
        assert_eq!(s["state"], "completed", "{n} devices: {s:#}");
        assert_eq!(s["counts"]["confirmed"], n as u64, "{s:#}");
        // The audit log says how far each stage reached, in devices.
        let audit: Value = app
            .get(&format!("/v1/audit?rollout_id={id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = audit["entries"].as_array().unwrap();
        let create = entries
            .iter()
            .find(|e| e["action"] == "rollout.create")
            .unwrap();
        let first = if n == 1 {
            "1 of 1 targets (100%)".to_string()
        } else {
            format!("{} of {n} targets (1%)", reach[0])
        };
        assert_eq!(
            create["detail"]["first_stage"],
            first.as_str(),
            "{create:#}"
        );
        assert!(create["detail"].get("threshold").is_none(), "{create:#}");
        if n == 20 {
            let advance = entries
                .iter()
                .rev()
                .find(|e| e["action"] == "rollout.advance")
                .unwrap();
            assert_eq!(
                advance["detail"]["reaches"], "2 of 20 targets (10%)",
                "{advance:#}"
            );
        }
    }

    // The plan over 20 targets: accepted, and the status says what it waits for.
    let mut devices = fleet(&app, "W", 20, "wait-20", "1.0.0").await;
    let rel = release(&app, "wait-20", "1.1.0", 1).await;
    let plan = json!([1, 10, 50, 100].map(|p| json!({"percent": p, "bake_s": 1800, "min_sample": 20, "max_failure_rate": 0.05, "confirm_deadline_s": 7200})));
    let id = start(&app, json!({"release_id": rel, "stages": plan})).await["id"]
        .as_i64()
        .unwrap();
    let s = drive(&app, id, &mut devices, Behaviour::Good, |s| {
        s["gate"]["decided"] == 1
    })
    .await;
    assert_eq!(s["current_stage"], 1, "{s:#}");
    let next = s["next"].as_str().unwrap();
    assert!(
        next.starts_with("baking: 29m") || next.starts_with("baking: 30m"),
        "{next}"
    );
    assert!(next.ends_with("left of 30m"), "{next}");
    assert_eq!(s["gate"]["min_sample"], 1, "{s:#}");
    assert_eq!(s["gate"]["min_sample_asked"], 20, "{s:#}");

    // A bench of 5 whose only canary rolls back halts at once: 1 failure of 1, not of 20.
    let mut devices = fleet(&app, "H", 5, "halt-5", "1.0.0").await;
    let rel = release(&app, "halt-5", "1.1.0", 1).await;
    let id = start(&app, json!({"release_id": rel, "stages": default_plan})).await["id"]
        .as_i64()
        .unwrap();
    let s = drive(&app, id, &mut devices, Behaviour::RollsBack, |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(s["state"], "halted", "{s:#}");
    assert_eq!(s["counts"]["rolled_back"], 1, "{s:#}");
    assert_eq!(s["halt_reason"]["min_sample"], 1, "{s:#}");
}

/// Check every device in, let it take any offer the way `behaviour` says, until `done(status)`
/// (or 30 s); returns the last status.
async fn drive(
    app: &testkit::TestApp,
    id: i64,
    devices: &mut [testkit::Device],
    behaviour: Behaviour,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let s = rollout_status(app, id).await;
        if done(&s) || started.elapsed() > Duration::from_secs(30) {
            return s;
        }
        for d in devices.iter_mut() {
            if let Some(offer) = d.check_in(app).await {
                d.take(app, &offer, behaviour).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bootloader rollbacks are failures: reported by the old firmware, they halt the rollout in the
/// request that crosses the gate.
async fn rollback_reports_halt_at_once(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "R", 100, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "3.0.0", 1).await;
    let r = start(&app, json!({"release_id": rel, "stages": [stage(20.0, 5, 0.2, 3600), stage(100.0, 5, 0.2, 3600)]})).await;
    let id = r["id"].as_i64().unwrap();
    let mut halted_after = None;
    for d in devices.iter_mut() {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, Behaviour::RollsBack).await;
            // No waiting for a sweep: the report itself halted it.
            if rollout_status(&app, id).await["state"] == "halted" {
                halted_after = Some(d.id.clone());
                break;
            }
        }
    }
    assert!(halted_after.is_some(), "never halted");
    let s = rollout_status(&app, id).await;
    // max(decided, min_sample 5) * 20% = 1 failure allowed: the second one halts.
    assert_eq!(s["halt_reason"]["rolled_back"], 2, "{s:#}");
    let d: Value = app
        .get(&format!("/v1/devices/{}", halted_after.unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(d["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "rolled_back"));
}

/// A device whose write protection covers the slot it would write is skipped and listed.
async fn protection_blocked_devices_are_skipped(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "W", 5, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "1.0.1", 1).await;
    let id = start(
        &app,
        json!({"release_id": rel, "stages": [stage(100.0, 1, 0.5, 60)]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    // Slot B is sectors 7-8.
    devices[0].wrp_mask = 1 << 7;
    assert!(devices[0].check_in(&app).await.is_none());
    assert!(devices[1].check_in(&app).await.is_some());
    let s = rollout_status(&app, id).await;
    assert_eq!(s["counts"]["protection_blocked"], 1, "{s:#}");
    assert_eq!(s["counts"]["offered"], 1);
    assert_eq!(s["state"], "active", "a blocked device is not a failure");
}

async fn operator_actions_and_audit(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "O", 40, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "1.3.0", 1).await;
    let manual = json!({"percent": 25, "bake_s": 0, "min_sample": 1, "max_failure_rate": 0.5, "auto_advance": false});
    let id = start(
        &app,
        json!({"release_id": rel, "stages": [manual, stage(100.0, 1, 0.5, 60)]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let post = |action: &str| app.post(&format!("/v1/rollouts/{id}/{action}")).send();

    // Pause: no offers.
    assert_eq!(post("pause").await.unwrap().status(), 200);
    for d in devices.iter_mut() {
        assert!(d.check_in(&app).await.is_none());
    }
    assert_error(post("pause").await.unwrap(), 409, "invalid_state").await;
    assert_eq!(post("resume").await.unwrap().status(), 200);
    let mut offered = 0;
    for d in devices.iter_mut() {
        if let Some(o) = d.check_in(&app).await {
            d.take(&app, &o, Behaviour::Good).await;
            offered += 1;
        }
    }
    assert!(offered > 0);
    // A manual stage waits for approval however healthy it is, and says so.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = rollout_status(&app, id).await;
    assert_eq!(s["current_stage"], 1);
    assert!(s["next"].as_str().unwrap().contains("approval"), "{s:#}");
    assert_eq!(s["approved"], false);
    assert_eq!(post("approve").await.unwrap().status(), 200);
    let s = wait_for(&app, id, Duration::from_secs(5), |s| {
        s["current_stage"] == 2
    })
    .await;
    assert_eq!(s["current_stage"], 2, "{s:#}");
    assert_eq!(post("abort").await.unwrap().status(), 200);
    assert_error(post("resume").await.unwrap(), 409, "invalid_state").await;
    for d in devices.iter_mut() {
        assert!(d.check_in(&app).await.is_none(), "offered after abort");
    }
    // Viewers may not steer.
    let viewer = testkit::token(
        &app.server.state.store,
        "v",
        fota_server::domain::auth::Role::Viewer,
    )
    .await;
    let resp = app
        .client
        .post(app.at(&format!("/v1/rollouts/{id}/pause")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;

    let audit: Value = app
        .get(&format!("/v1/audit?rollout_id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .rev()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("test-admin", "rollout.create"),
            ("test-admin", "rollout.pause"),
            ("test-admin", "rollout.resume"),
            ("test-admin", "rollout.approve"),
            ("fota", "rollout.advance"),
            ("test-admin", "rollout.abort"),
        ]
    );
    assert!(entries.iter().all(|e| e["at"].as_i64().unwrap() > 0));
}

async fn rollout_refusals(db: Db) {
    let app = spawn_app(db).await;
    fleet(&app, "X", 10, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "1.4.0", 1).await;
    for (body, status, code) in [
        (
            json!({"release_id": rel, "stages": []}),
            400,
            "invalid_plan",
        ),
        (
            json!({"release_id": rel, "stages": [{"percent": 50}, {"percent": 10}]}),
            400,
            "invalid_plan",
        ),
        (
            json!({"release_id": rel, "selector": {"version_min": "2.0.0", "version_max": "1.0.0"}}),
            400,
            "invalid_selector",
        ),
        (json!({"release_id": 999}), 404, "release_not_found"),
        (
            json!({"release_id": rel, "selector": {"tags": ["nobody"]}}),
            422,
            "no_targets",
        ),
        (
            json!({"release_id": rel, "colour": "red"}),
            400,
            "invalid_body",
        ),
        // Every list in a request is bounded: 17 tags, 999 tags, 21 stages.
        (
            json!({"release_id": rel, "selector": {"tags": (0..17).map(|i| format!("t{i}")).collect::<Vec<_>>()}}),
            400,
            "invalid_selector",
        ),
        (
            json!({"release_id": rel, "selector": {"tags": (0..999).map(|i| format!("t{i}")).collect::<Vec<_>>()}}),
            400,
            "invalid_selector",
        ),
        (
            json!({"release_id": rel, "stages": (1..=21).map(|p| json!({"percent": p})).collect::<Vec<_>>()}),
            400,
            "invalid_plan",
        ),
    ] {
        assert_error(
            app.post("/v1/rollouts").json(&body).send().await.unwrap(),
            status,
            code,
        )
        .await;
    }
    let id = start(&app, json!({"release_id": rel})).await["id"]
        .as_i64()
        .unwrap();
    let other = release(&app, "f429", "1.5.0", 1).await;
    assert_error(
        app.post("/v1/rollouts")
            .json(&json!({"release_id": other}))
            .send()
            .await
            .unwrap(),
        409,
        "rollout_in_progress",
    )
    .await;
    // A release a rollout uses cannot be deleted.
    let resp = app
        .client
        .delete(app.at(&format!("/v1/releases/{rel}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_error(resp, 409, "release_in_use").await;
    assert_error(
        app.get("/v1/rollouts/424242").send().await.unwrap(),
        404,
        "rollout_not_found",
    )
    .await;
    assert_error(
        app.get("/v1/rollouts?state=sleepy").send().await.unwrap(),
        400,
        "invalid_query",
    )
    .await;
    let list: Value = app
        .get("/v1/rollouts?state=active")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["rollouts"][0]["id"], id);
    // The default plan: 1% -> 10% -> 50% -> 100%.
    let s = rollout_status(&app, id).await;
    let percents: Vec<f64> = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["percent"].as_f64().unwrap())
        .collect();
    assert_eq!(percents, [1.0, 10.0, 50.0, 100.0]);
}

/// A release that confirmed everywhere but is faulty: `rollback` rolls its devices forward to
/// the previous release; a release below the devices' security counter is refused.
async fn fleet_rollback_brings_devices_back(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "B", 20, "f429", "1.0.0").await;
    let old = release(&app, "f429", "1.0.0", 1).await;
    let bad = release(&app, "f429", "1.1.0", 2).await;
    let id = start(
        &app,
        json!({"release_id": bad, "stages": [stage(100.0, 1, 0.5, 60)]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    for d in devices.iter_mut() {
        if let Some(o) = d.check_in(&app).await {
            d.take(&app, &o, Behaviour::Good).await;
        }
    }
    wait_for(&app, id, Duration::from_secs(5), |s| {
        s["state"] == "completed"
    })
    .await;
    app.flush().await;

    // 1.0.0 has security counter 1; the devices now hold 2: refused.
    let resp = app
        .post("/v1/rollbacks")
        .json(&json!({"release_id": old, "from_release_id": bad}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("security_counter_too_low") && text.contains("hold 2"),
        "{text}"
    );
    // A re-signed 1.0.0 build with counter 2 (a new version number) is accepted.
    let fixed = release(&app, "f429", "1.0.1", 2).await;
    let resp = app
        .post("/v1/rollbacks")
        .json(&json!({"release_id": fixed, "from_release_id": bad}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let rb: Value = resp.json().await.unwrap();
    assert_eq!(rb["kind"], "rollback");
    assert_eq!(rb["targets"], 20);
    let rb_id = rb["id"].as_i64().unwrap();
    for d in devices.iter_mut() {
        let offer = d
            .check_in(&app)
            .await
            .expect("every device that took the bad release");
        assert_eq!(offer["version"], "1.0.1");
        d.take(&app, &offer, Behaviour::Good).await;
    }
    let s = wait_for(&app, rb_id, Duration::from_secs(5), |s| {
        s["state"] == "completed"
    })
    .await;
    assert_eq!(s["state"], "completed", "{s:#}");
    assert!(devices.iter().all(|d| d.version == "1.0.1"));
    let audit: Value = app
        .get("/v1/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "rollback.create"));
}

/// The selector picks by tags and running-version range; a device provisioned after the start
/// that matches joins the rollout; one that does not never gets an offer.
async fn selector_targets_tags_versions_and_late_joiners(db: Db) {
    let app = spawn_app(db).await;
    let mut old = fleet(&app, "OLD", 10, "f429", "0.9.0").await;
    let mut new = fleet(&app, "NEW", 10, "f429", "1.0.0").await;
    let tokens = app
        .provision(&[("T-1", "f429", &["pole"]), ("T-2", "f429", &["pole"])])
        .await;
    let rel = release(&app, "f429", "1.1.0", 1).await;
    let r = start(
        &app,
        json!({"release_id": rel, "selector": {"version_min": "1.0.0", "version_max": "1.0.9"}, "stages": [stage(100.0, 1, 0.5, 60)]}),
    )
    .await;
    assert_eq!(r["targets"], 10, "only the 1.0.x devices: {r:#}");
    assert_eq!(r["version_min"], "1.0.0");
    assert_eq!(r["version_max"], "1.0.9");
    for d in old.iter_mut() {
        assert!(d.check_in(&app).await.is_none(), "{} runs 0.9.0", d.id);
    }
    for d in new.iter_mut() {
        assert!(d.check_in(&app).await.is_some(), "{} runs 1.0.0", d.id);
    }
    // T-1 and T-2 were never seen at the start: they join when they check in on 1.0.x.
    let id = r["id"].as_i64().unwrap();
    let mut late = testkit::Device::new("T-1", &tokens[0], "f429", "1.0.3");
    assert!(
        late.check_in(&app).await.is_some(),
        "a matching late joiner is offered (100% stage)"
    );
    let mut stale = testkit::Device::new("T-2", &tokens[1], "f429", "0.8.0");
    assert!(stale.check_in(&app).await.is_none());
    assert_eq!(rollout_status(&app, id).await["targets"], 11);
    app.post(&format!("/v1/rollouts/{id}/abort"))
        .send()
        .await
        .unwrap();

    // Tags: only devices with every tag.
    let tagged = start(
        &app,
        json!({"release_id": rel, "selector": {"tags": ["pole"]}, "stages": [{"percent": 50}, {"percent": 100}]}),
    )
    .await;
    assert_eq!(tagged["targets"], 2, "{tagged:#}");
    assert_eq!(tagged["tags"], json!(["pole"]));
    let id = tagged["id"].as_i64().unwrap();
    app.post(&format!("/v1/rollouts/{id}/abort"))
        .send()
        .await
        .unwrap();

    // The most tags a selector may name (16), a repeat among them: only the device holding all.
    let many: Vec<String> = (0..15).map(|i| format!("t{i}")).collect();
    let all: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut some = all.clone();
    some.pop();
    app.provision(&[("M-ALL", "f429", &all), ("M-SOME", "f429", &some)])
        .await;
    let mut selector = many.clone();
    selector.push("t0".to_string());
    let r = start(
        &app,
        json!({"release_id": rel, "selector": {"tags": selector}, "stages": [{"percent": 100}]}),
    )
    .await;
    assert_eq!(r["targets"], 1, "only M-ALL has all 15: {r:#}");
}

/// The security counter a device holds: what it reports, or the counter of the release it runs.
/// No path offers an image below it: a rollout where every target holds more is refused (as a
/// rollback is), one where some do skips them and lists them, and every offer at check-in checks
/// again (late joiners, a floor that rose since the start, a download in flight).
async fn anti_rollback_holds_on_start_late_joiners_and_every_offer(db: Db) {
    let app = spawn_app(db).await;
    // Ten devices confirmed on 1.2.0 (counter 3); they report no floor, the server infers it.
    let mut high = fleet(&app, "HI", 10, "f429", "1.2.0").await;
    release(&app, "f429", "1.2.0", 3).await;
    let older = release(&app, "f429", "1.1.0", 2).await;
    let oldest = release(&app, "f429", "1.0.0", 1).await;

    // The hole this closes: a plain rollout of an older counter is refused like a rollback.
    for rel in [older, oldest] {
        assert_error(
            app.post("/v1/rollouts")
                .json(&json!({"release_id": rel}))
                .send()
                .await
                .unwrap(),
            409,
            "security_counter_too_low",
        )
        .await;
    }
    assert_error(
        app.post("/v1/rollbacks")
            .json(&json!({"release_id": older}))
            .send()
            .await
            .unwrap(),
        409,
        "security_counter_too_low",
    )
    .await;
    for d in high.iter_mut() {
        assert!(d.check_in(&app).await.is_none(), "nothing offered");
    }

    // A mixed fleet: five devices on 0.9.0 (no release on the server) that report floor 1, and
    // three on 0.9.0 that report floor 4 (only their report tells).
    let mut low = fleet(&app, "LO", 5, "f429", "0.9.0").await;
    for d in low.iter_mut() {
        d.floor = Some(1);
        assert!(d.check_in(&app).await.is_none());
    }
    let mut reported = fleet(&app, "RP", 3, "f429", "0.9.0").await;
    for d in reported.iter_mut() {
        d.floor = Some(4);
        assert!(d.check_in(&app).await.is_none());
    }
    app.flush().await;
    let r = start(
        &app,
        json!({"release_id": older, "stages": [stage(100.0, 1, 0.5, 60)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["targets"], 18, "{r:#}");
    assert_eq!(r["counts"]["security_counter_blocked"], 13, "{r:#}");
    assert_eq!(r["counts"]["eligible"], 5, "{r:#}");
    for d in high.iter_mut().chain(reported.iter_mut()) {
        assert!(d.check_in(&app).await.is_none(), "{} holds more", d.id);
    }
    // The skipped devices are listed with the reason.
    let skipped: Vec<_> = app
        .server
        .state
        .store
        .rollout_devices(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, state, _, _)| state == "security_counter_blocked")
        .map(|(device, ..)| device)
        .collect();
    assert_eq!(skipped.len(), 13);
    assert!(skipped
        .iter()
        .all(|d| d.starts_with("HI-") || d.starts_with("RP-")));

    // A floor that rose since the start: LO-0000 now reports 3, before its offer.
    low[0].floor = Some(3);
    assert!(low[0].check_in(&app).await.is_none(), "floor 3 > counter 2");
    // A download in flight is withdrawn when the floor rises: LO-0001 is offered, then its
    // check-in reports a higher floor.
    let offer = low[1].check_in(&app).await.expect("offered");
    assert_eq!(offer["security_counter"], 2);
    low[1]
        .report(&app, "download_started", id, "1.1.0", None)
        .await;
    low[1].floor = Some(5);
    assert!(low[1].check_in(&app).await.is_none(), "withdrawn");
    assert!(low[2].check_in(&app).await.is_some(), "floor 1 is offered");

    // Late joiners: a device provisioned after the start joins only if it holds no more.
    let tokens = app
        .provision(&[("LATE-1", "f429", &[]), ("LATE-2", "f429", &[])])
        .await;
    let mut late_high = testkit::Device::new("LATE-1", &tokens[0], "f429", "0.9.5");
    late_high.floor = Some(3);
    assert!(late_high.check_in(&app).await.is_none());
    let mut late_low = testkit::Device::new("LATE-2", &tokens[1], "f429", "0.9.5");
    late_low.floor = Some(2);
    assert!(
        late_low.check_in(&app).await.is_some(),
        "an equal counter is fine"
    );

    let s = rollout_status(&app, id).await;
    assert_eq!(s["targets"], 20, "{s:#}");
    assert_eq!(s["counts"]["security_counter_blocked"], 16, "{s:#}");
    assert_eq!(
        s["state"], "active",
        "a skipped device is not a failure: {s:#}"
    );
    // No device was ever offered an image below what it held.
    for d in high.iter().chain(&reported) {
        assert!(d.offers.is_empty(), "{} was offered {:?}", d.id, d.offers);
    }
    assert!(late_high.offers.is_empty());
    // The start's audit entry says how many were skipped.
    let audit: Value = app
        .get(&format!("/v1/audit?rollout_id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let create = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.create")
        .expect("rollout.create");
    assert_eq!(
        create["detail"]["security_counter_blocked"], 13,
        "{create:#}"
    );
}

/// Devices that enter a cohort when a stage opens are checked at their offer: their floor may
/// have risen since the rollout started.
async fn anti_rollback_holds_when_a_stage_advances(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "ST", 40, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "1.1.0", 2).await;
    let r = start(
        &app,
        json!({"release_id": rel, "stages": [stage(25.0, 1, 0.5, 60), stage(100.0, 1, 0.5, 60)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["counts"]["security_counter_blocked"], 0);
    // 25% of 40 targets: the 10 lowest ranks.
    let first = first_stage(id, &devices, 10);
    let (canary, rest): (Vec<_>, Vec<_>) = devices
        .iter_mut()
        .partition(|d| cohort::is_in(cohort::rank(id, &d.id), first));
    assert!(!canary.is_empty() && !rest.is_empty());
    // Before the second stage opens, the devices outside the canary report floor 3.
    let mut rest = rest;
    for d in rest.iter_mut() {
        d.floor = Some(3);
        assert!(d.check_in(&app).await.is_none(), "not in the canary yet");
    }
    for d in canary {
        let offer = d.check_in(&app).await.expect("canary offered");
        assert!(d.take(&app, &offer, Behaviour::Good).await);
    }
    let s = wait_for(&app, id, Duration::from_secs(10), |s| {
        s["current_stage"] == 2
    })
    .await;
    assert_eq!(s["current_stage"], 2, "{s:#}");
    for d in rest.iter_mut() {
        assert!(d.check_in(&app).await.is_none(), "{} holds 3 > 2", d.id);
    }
    let s = rollout_status(&app, id).await;
    assert_eq!(
        s["counts"]["security_counter_blocked"],
        rest.len() as u64,
        "{s:#}"
    );
    assert_eq!(s["counts"]["failed"], 0, "{s:#}");
}

/// A reset of the new release's trial counts on neither side of the reset gate, whether it is
/// reported before the confirmation or after it (a device reports a reset at the boot after it,
/// so a trial's reset may reach the server after the confirmation, with the lower event id);
/// one after the confirmation counts on the new side, one from the old release on the
/// baseline.
async fn resets_count_on_the_new_release_only_after_confirmation(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "X", 4, "f429", "1.0.0").await;
    // Not a target (another model): its resets count nowhere.
    let mut outsider = fleet(&app, "Y", 1, "f407", "1.0.0").await;
    let rel = release(&app, "f429", "2.0.0", 1).await;
    let id = start_one_long_stage(&app, rel, 4).await;
    let reset = |version: &str| {
        json!({"kind": "reset", "version": version,
               "reset": {"cause": "independent_watchdog", "uptime_s": 60}})
    };
    let d = &mut devices[0];
    let offer = d.check_in(&app).await.expect("an offer");
    d.report(&app, "offer_accepted", id, "2.0.0", None).await;
    d.report(&app, "installed", id, "2.0.0", None).await;
    // On trial: a watchdog reset of 2.0.0 before the confirmation.
    d.report_event(&app, reset("2.0.0")).await;
    // A second trial reset, numbered before the confirmation but received after it.
    let late = d.next_event;
    d.next_event += 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    d.report(&app, "confirmed", id, "2.0.0", None).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut trial = reset("2.0.0");
    trial["id"] = json!(late);
    d.report_event(&app, trial).await;
    // Confirmed: two resets of 2.0.0 count.
    for _ in 0..2 {
        d.report_event(&app, reset("2.0.0")).await;
    }
    assert_eq!(offer["version"], "2.0.0");
    // Not updated: a reset of 1.0.0 counts on the baseline.
    devices[1].report_event(&app, reset("1.0.0")).await;
    outsider[0].report_event(&app, reset("1.0.0")).await;

    // Six resets since the start: the store reads the join from the 4 targets, and from the
    // resets when told of more targets than that (the counts do not depend on the targets).
    let store = &app.server.state.store;
    let r = store.rollout(id).await.unwrap().unwrap();
    for targets in [4, 100] {
        let f = store
            .reset_figures(
                id,
                "2.0.0",
                r.created_at,
                targets,
                fota_server::store::now_ms(),
                true,
            )
            .await
            .unwrap();
        assert_eq!(
            (f.new_resets, f.new_devices, f.base_resets),
            (2, 1, 1),
            "{targets} targets: {f:?}"
        );
        let per_stage = store
            .stage_resets(
                id,
                "2.0.0",
                r.created_at,
                targets,
                fota_server::store::now_ms(),
            )
            .await
            .unwrap();
        let total: u64 = per_stage.values().map(|s| s.resets).sum();
        assert_eq!(total, 2, "{targets} targets: {per_stage:?}");
    }
}

/// The gate's counts by stage and state are kept by the database's triggers as devices move
/// (migration 0013), not recounted: after every kind of move (offers, the moves of the state
/// machine, silence past the deadline, a late target), they and the sums of when each group
/// moved agree with a count of `rollout_devices` itself. On PostgreSQL, moves append deltas;
/// a read that finds `FOLD_AT` of them folds them into the counts, and the counts still agree.
async fn counts_kept_as_devices_move_agree_with_a_recount(db: Db) {
    let app = spawn_app(db).await;
    let n = usize::try_from(FOLD_AT).unwrap() + 200;
    let devices = provision_devices(&app, "K", n + 1, "f429").await;
    let rel = release(&app, "f429", "2.0.0", 1).await;
    let id = start_one_long_stage(&app, rel, 1).await;
    let store = &app.server.state.store;
    sqlx::any::install_default_drivers();
    let mut sql = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    agree(store, &mut sql, id, "targets inserted").await;
    let now = now_ms();
    for (i, (device, _)) in devices.iter().take(n).enumerate() {
        assert!(store
            .offer_device(id, device, now + i as i64, 3600)
            .await
            .unwrap());
    }
    agree(store, &mut sql, id, "every target but one offered").await;
    if db == Db::Postgres {
        // The read above found every offer as a delta, and folded them.
        let pending: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM rollout_state_deltas WHERE rollout_id = $1")
                .bind(id)
                .fetch_one(&mut sql)
                .await
                .unwrap()
                .get("n");
        assert!(pending < FOLD_AT as i64, "{pending} deltas left unfolded");
    }
    let moves = [
        DeviceState::Downloading,
        DeviceState::Installed,
        DeviceState::Confirmed,
    ];
    for (i, (device, _)) in devices.iter().take(n).enumerate() {
        let to = match i % 5 {
            0 => &moves[..0],
            1 => &moves[..1],
            2 => &moves[..2],
            3 => &moves[..3],
            _ => &[DeviceState::Downloading, DeviceState::Failed][..],
        };
        for (k, state) in to.iter().enumerate() {
            assert!(store
                .set_device_state(id, device, *state, None, now + 1_000 * (k as i64 + 1))
                .await
                .unwrap());
        }
    }
    agree(store, &mut sql, id, "moved through the state machine").await;
    // Silence: everyone offered, downloading or installed times out; a move that is refused
    // (confirmed -> downloading) changes nothing.
    store.time_out_devices(now + 3_601_000).await.unwrap();
    assert!(!store
        .set_device_state(id, &devices[3].0, DeviceState::Downloading, None, now)
        .await
        .unwrap());
    agree(store, &mut sql, id, "timed out").await;
    // A late target joins eligible, and is offered.
    let late = provision_devices(&app, "L", 1, "f429").await;
    assert!(store.add_late_target(id, &late[0].0, 0, now).await.unwrap());
    assert!(store.offer_device(id, &late[0].0, now, 3600).await.unwrap());
    agree(store, &mut sql, id, "a late target offered").await;
    // An update of every device that moves none (on PostgreSQL the trigger sees every row
    // before and after, and must append nothing for them).
    sqlx::query("UPDATE rollout_devices SET reason = reason WHERE rollout_id = $1")
        .bind(id)
        .execute(&mut sql)
        .await
        .unwrap();
    agree(store, &mut sql, id, "every device updated, none moved").await;
}

/// The kept counts of rollout `id` (and their sums of `updated_at`) against a count of its
/// devices in `rollout_devices`; the eligible against the targets minus everything counted.
async fn agree(
    store: &fota_server::store::Store,
    sql: &mut sqlx::AnyConnection,
    id: i64,
    when: &str,
) {
    let mut kept: Vec<(Option<i64>, String, u64, i128)> = store
        .tallies(id)
        .await
        .unwrap()
        .into_iter()
        .map(|t: Tally| (t.stage, t.state.as_str().to_string(), t.n, t.updated_at_sum))
        .collect();
    kept.sort();
    let mut counted: Vec<(Option<i64>, String, u64, i128)> = sqlx::query(
        "SELECT stage, state, COUNT(*) AS n, CAST(SUM(updated_at) AS BIGINT) AS t \
         FROM rollout_devices WHERE rollout_id = $1 AND state <> 'eligible' \
         GROUP BY stage, state",
    )
    .bind(id)
    .fetch_all(&mut *sql)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<Option<i64>, _>("stage"),
            r.get::<String, _>("state"),
            u64::try_from(r.get::<i64, _>("n")).unwrap(),
            i128::from(r.get::<i64, _>("t")),
        )
    })
    .collect();
    counted.sort();
    assert_eq!(kept, counted, "{when}");
    let eligible: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM rollout_devices WHERE rollout_id = $1 AND state = 'eligible'",
    )
    .bind(id)
    .fetch_one(&mut *sql)
    .await
    .unwrap()
    .get("n");
    let (whole, _) = store.rollout_counts(id).await.unwrap();
    assert_eq!(whole.eligible, u64::try_from(eligible).unwrap(), "{when}");
}

/// The reset gate's exposure (how many devices left the old release, and the sum of when) is
/// kept by triggers as events are stored (migration 0015), not grouped at each evaluation: after
/// rounds of reports sent at once (so that PostgreSQL's several writers store them in
/// concurrent transactions) with random `installed` and other events of three rollouts and of
/// none, repeated event ids (duplicates, within a batch and across batches), several
/// `installed` events per device and times that go back as well as forward, the kept figure of
/// every rollout equals the definition's (`installed_exposure_sql`) over the stored events.
/// Also after devices are deleted (their events go by cascade), and with many pending deltas
/// (PostgreSQL folds them on read). An update of an event's counted columns is refused.
async fn exposure_kept_as_events_arrive_agrees_with_its_definition(db: Db) {
    let app = spawn_app(db).await;
    let devices = provision_devices(&app, "X", 24, "f429").await;
    let store = &app.server.state.store;
    sqlx::any::install_default_drivers();
    let mut sql = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    let rollouts = [1i64, 2, 3, 4];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        // xorshift64*: the same sequence every run.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    };
    let base = now_ms();
    let mut installed = 0;
    for round in 0..12 {
        let mut reports = Vec::new();
        for _ in 0..16 {
            let device = devices[next(devices.len() as u64) as usize].0.clone();
            let events: Vec<Event> = (0..1 + next(4))
                .map(|_| {
                    let kind = match next(6) {
                        0..=2 => EventKind::Installed,
                        3 => EventKind::DownloadStarted,
                        4 => EventKind::Confirmed,
                        _ => EventKind::Reset,
                    };
                    // Few ids per device: many an event is a duplicate of one stored before.
                    let mut e = Event::new(next(12), kind);
                    // Rollout 4 never has an event; some events have no rollout.
                    e.rollout_id = [Some(1), Some(2), Some(3), None][next(4) as usize];
                    e
                })
                .collect();
            installed += events
                .iter()
                .filter(|e| e.kind == EventKind::Installed)
                .count();
            // The server's clock, set back now and then.
            let now = base + 1_000 * round + next(4_000) as i64 - 2_000;
            reports.push((device, events, now));
        }
        let sent: Vec<_> = reports
            .into_iter()
            .map(|(device, events, now)| {
                let store = store.clone();
                tokio::spawn(async move { store.store_report(&device, &events, now).await })
            })
            .collect();
        for report in sent {
            report.await.unwrap().unwrap();
        }
        exposure_agrees(store, &mut sql, &rollouts, &format!("round {round}")).await;
    }
    let left = store.installed_exposure(1).await.unwrap().left
        + store.installed_exposure(2).await.unwrap().left
        + store.installed_exposure(3).await.unwrap().left;
    assert!(
        left >= 20 && installed > 100,
        "the rounds must leave many devices counted: {left} of {installed} installed events"
    );

    // Devices deleted: their events go, and with them what they added.
    let gone: Vec<String> = devices[..3].iter().map(|(d, _)| d.clone()).collect();
    store.forget_devices(&gone).await.unwrap();
    exposure_agrees(store, &mut sql, &rollouts, "three devices deleted").await;

    // An event's counted columns are never updated; its reason may be.
    for update in [
        "UPDATE device_events SET received_at = received_at - 1 WHERE kind = 'installed'",
        "UPDATE device_events SET kind = 'installed' WHERE kind = 'confirmed'",
        "UPDATE device_events SET rollout_id = 4 WHERE rollout_id = 1",
    ] {
        let refused = sqlx::query(update).execute(&mut sql).await;
        assert!(refused.is_err(), "{update} was not refused");
    }
    sqlx::query("UPDATE device_events SET reason = 'r' WHERE kind = 'installed'")
        .execute(&mut sql)
        .await
        .unwrap();
    exposure_agrees(store, &mut sql, &rollouts, "updates tried").await;

    // Many deltas pending (as a long rollout on PostgreSQL leaves between reads): the read
    // sums them, and on PostgreSQL folds them into the kept row, which then reads the same.
    let before = store.installed_exposure(2).await.unwrap();
    let deltas = FOLD_AT as i64 + 10;
    for i in 0..deltas {
        let sign = if i % 2 == 0 { 1 } else { -1 };
        sqlx::query(
            "INSERT INTO rollout_exposure_deltas (rollout_id, n, at_sum) VALUES (2, $1, $2)",
        )
        .bind(sign)
        .bind(sign * (1_000 + i))
        .execute(&mut sql)
        .await
        .unwrap();
    }
    // Pairs of +1 and -1 devices, +(1,000 + i) and -(1,000 + i + 1) ms: -1 ms a pair.
    let pending = store.installed_exposure(2).await.unwrap();
    assert_eq!(
        pending,
        Exposure {
            left: before.left,
            left_at_sum: before.left_at_sum - i128::from(deltas / 2)
        }
    );
    let left_pending: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM rollout_exposure_deltas WHERE rollout_id = 2")
            .fetch_one(&mut sql)
            .await
            .unwrap()
            .get("n");
    if db == Db::Postgres {
        assert_eq!(left_pending, 0, "the read folded the deltas");
    }
    assert_eq!(store.installed_exposure(2).await.unwrap(), pending);
}

/// The kept exposure of each of `rollouts` against `installed_exposure_sql` over the events.
async fn exposure_agrees(
    store: &fota_server::store::Store,
    sql: &mut sqlx::AnyConnection,
    rollouts: &[i64],
    when: &str,
) {
    for &id in rollouts {
        let row = sqlx::query(&installed_exposure_sql())
            .bind(id)
            .fetch_one(&mut *sql)
            .await
            .unwrap();
        let defined = Exposure {
            left: u64::try_from(row.get::<i64, _>("n")).unwrap(),
            left_at_sum: i128::from(row.get::<Option<i64>, _>("at_sum").unwrap_or(0)),
        };
        let kept = store.installed_exposure(id).await.unwrap();
        assert_eq!(kept, defined, "rollout {id}, {when}");
    }
}

/// Offers ride the group commit: offers asked at once are written together (fewer
/// transactions than offers), each caller is answered whether its call made the offer, and a
/// device asked for twice at once is offered once, with its deadline after its offer.
async fn offers_asked_at_once_share_commits_and_each_device_is_offered_once(db: Db) {
    let app = spawn_app(db).await;
    let devices = provision_devices(&app, "O", 300, "f429").await;
    let rel = release(&app, "f429", "2.0.0", 1).await;
    let id = start_one_long_stage(&app, rel, 1).await;
    let store = app.server.state.store.clone();
    let (batches, offers) = (store.group_commit_stats().0, store.group_commit_offers());
    let now = now_ms();
    let mut asks = tokio::task::JoinSet::new();
    for round in 0..2 {
        for (device, _) in &devices {
            let (store, device) = (store.clone(), device.clone());
            asks.spawn(async move {
                let made = store.offer_device(id, &device, now + round, 3600).await;
                (device, made.unwrap())
            });
        }
    }
    let mut made: std::collections::HashMap<String, u32> = Default::default();
    while let Some(answer) = asks.join_next().await {
        let (device, offered) = answer.unwrap();
        *made.entry(device).or_default() += u32::from(offered);
    }
    assert_eq!(made.len(), 300);
    assert!(
        made.values().all(|n| *n == 1),
        "each device offered by exactly one of its two calls: {made:?}"
    );
    let written = store.group_commit_offers() - offers;
    let commits = store.group_commit_stats().0 - batches;
    assert_eq!(written, 600);
    assert!(
        commits < 600,
        "600 offers asked at once took {commits} transactions"
    );
    sqlx::any::install_default_drivers();
    let mut sql = sqlx::AnyConnection::connect(&app.database_url)
        .await
        .unwrap();
    let right: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM rollout_devices WHERE rollout_id = $1 AND state = $2 \
         AND offered_at >= $3 AND deadline_at = offered_at + 3600000 AND stage IS NOT NULL",
    )
    .bind(id)
    .bind(DeviceState::Offered.as_str())
    .bind(now)
    .fetch_one(&mut sql)
    .await
    .unwrap()
    .get("n");
    assert_eq!(
        right, 300,
        "every device offered once, its deadline after its offer"
    );
    // Asked again later: already offered, so not offered again.
    assert!(!store
        .offer_device(id, &devices[0].0, now + 10, 3600)
        .await
        .unwrap());
}
