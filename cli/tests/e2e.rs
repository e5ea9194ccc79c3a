//! End to end: virtual devices running the real `fota-boot` and `fota-ota-client` on simulated
//! flash (the `fota-sim` crate) against a real `fota serve` over HTTP, on SQLite and PostgreSQL.
//!
//! Each scenario is what an operator lives through: a good release reaching the whole fleet, a bad
//! one halted in its canary while the bootloaders revert it, a confirmed-but-faulty one undone by
//! `fota rollback`, and downloads that survive dropped links and power cuts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::SlotId;
use fota_server::domain::cohort;
use fota_sim::device::Timing;
use fota_sim::{
    app, factory_flash, factory_flash_two_stage, AppBehaviour, DeviceSpec, Faults, Fleet,
    FleetConfig, Stage1Behaviour,
};
use fota_testkit::{
    self as testkit, backend_tests, rollout_status, signing_key, wait_for, Api, Db, TestApp,
};
use serde_json::{json, Value};
use std::time::Duration;

const MODEL: &str = "f429";
const IMAGE_LEN: usize = 8 * 1024;

fn version(major: u8) -> ImageVersion {
    ImageVersion::new(major, 0, 0, 0)
}

fn build(slot: SlotId, v: ImageVersion, behaviour: AppBehaviour) -> Vec<u8> {
    app::image(&signing_key(), slot, v, 1, behaviour, IMAGE_LEN)
}

fn keys() -> Vec<TrustedKey> {
    vec![TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()]
}

/// Upload a release of simulated builds; returns its id.
async fn upload(app: &TestApp, v: ImageVersion, behaviour: AppBehaviour) -> i64 {
    let resp = app
        .upload_release(
            MODEL,
            build(SlotId::A, v, behaviour),
            build(SlotId::B, v, behaviour),
        )
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// Provision `n` devices and start them, each on `faults(i)`, from the factory image v1.
async fn start_fleet(app: &TestApp, n: usize, faults: impl Fn(usize) -> Faults) -> Fleet {
    let factory = factory_flash(&build(SlotId::A, version(1), AppBehaviour::Good), 1);
    start_fleet_from(app, n, faults, factory).await
}

/// [`start_fleet`] from the flash `factory`.
async fn start_fleet_from(
    app: &TestApp,
    n: usize,
    faults: impl Fn(usize) -> Faults,
    factory: fota_sim::fleet_flash::FleetFlash,
) -> Fleet {
    let timing = Timing {
        check_in_interval: Duration::from_millis(300),
        ..Timing::default()
    };
    let specs = provision(app, n, faults).await;
    let fleet = launch_fleet(app, specs, factory, timing).await;
    // Every device boots v1 confirmed and checks in.
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(20), |s| {
        s.confirmed_on(version(1)) == n && s.check_ins >= n as u64
    })
    .await;
    assert!(ok, "the fleet did not come up: {summary:?}");
    fleet
}

/// Provision `n` devices, each with `faults(i)`.
async fn provision(app: &TestApp, n: usize, faults: impl Fn(usize) -> Faults) -> Vec<DeviceSpec> {
    testkit::provision_devices(app, "sim", n, MODEL)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (id, token))| DeviceSpec {
            id,
            token,
            model: MODEL.to_string(),
            faults: faults(i),
        })
        .collect()
}

/// Start the devices `specs` from the flash `factory` with `timing`, without waiting for them.
async fn launch_fleet(
    app: &TestApp,
    specs: Vec<DeviceSpec>,
    factory: fota_sim::fleet_flash::FleetFlash,
    timing: Timing,
) -> Fleet {
    let config = FleetConfig {
        server: app.url.clone(),
        keys: keys(),
        timing,
        client: fota_ota_client::Config::default(),
        threads: 8,
        mqtt: None,
    };
    tokio::task::spawn_blocking(move || Fleet::start(config, &factory, specs))
        .await
        .unwrap()
}

async fn wait_fleet(
    fleet: &Fleet,
    timeout: Duration,
    done: impl Fn(&fota_sim::FleetSummary) -> bool,
) -> (fota_sim::FleetSummary, bool) {
    let start = std::time::Instant::now();
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

async fn start_rollout(app: &TestApp, body: Value) -> i64 {
    let resp = app
        .admin_post("/v1/rollouts")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

fn stage(percent: f64, min_sample: u64, deadline_s: i64) -> Value {
    json!({"percent": percent, "bake_s": 0, "min_sample": min_sample,
           "max_failure_rate": 0.2, "confirm_deadline_s": deadline_s})
}

/// Stop the fleet and boot every device once more: each must run a verified image, and this
/// returns what they run.
async fn final_boots(fleet: Fleet) -> Vec<(String, SlotId, ImageVersion, fota_boot::BootMode)> {
    tokio::task::spawn_blocking(move || {
        let (mut devices, keys) = fleet.stop();
        devices
            .iter_mut()
            .map(|d| {
                let id = d.status().id.clone();
                let (slot, v, mode) = d
                    .next_boot(keys)
                    .unwrap_or_else(|| panic!("{id} has no verified image to boot"));
                (id, slot, v, mode)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// A good release goes from the first stage to 100%; every device ends confirmed on it, the ones
/// whose link dropped, whose power was cut mid-flash and whose link is slow included.
async fn good_release_reaches_every_device(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 40;
    let fleet = start_fleet(&app, n, |i| Faults {
        link_drop: i % 5 == 1,
        power_cut: i % 5 == 2,
        slow_link: i % 5 == 3,
        ..Faults::default()
    })
    .await;
    let v2 = upload(&app, version(2), AppBehaviour::Good).await;
    let id = start_rollout(
        &app,
        json!({"release_id": v2, "stages": [stage(10.0, 2, 10), stage(50.0, 5, 10), stage(100.0, 5, 10)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(90), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(20), |s| {
        s.confirmed_on(version(2)) == n
    })
    .await;
    assert!(ok, "not every device confirmed v2: {summary:?}");
    assert!(summary.power_cuts >= (n / 5) as u64, "{summary:?}");
    assert_eq!(summary.in_recovery, 0);
    assert_eq!(summary.rollbacks, 0, "{summary:?}");

    for (id, slot, v, mode) in final_boots(fleet).await {
        assert_eq!(
            (slot, v, mode),
            (SlotId::B, version(2), fota_boot::BootMode::Confirmed),
            "{id}"
        );
    }
}

/// The field incident: a release that boots but never reaches the server. The rollout halts in
/// its first stage; every device that took it is reverted by its bootloader and reports the
/// rollback; no device outside the first stage is offered it; every device still boots a
/// verified image.
async fn bad_release_halts_in_the_canary_and_reverts(db: Db) {
    bad_release_scenario(db, AppBehaviour::NeverReachesServer).await;
}

/// The same with a release that faults before `main` on every boot: no trial ever runs long
/// enough to do anything, and the bootloader alone brings every exposed device back.
async fn a_release_that_faults_at_boot_is_halted_and_reverted(db: Db) {
    bad_release_scenario(db, AppBehaviour::FailsBoot).await;
}

/// The devices that took `bad` (rollout `id`), none of them outside its first stage of 10%
/// (the lowest ranks of a tenth of the fleet), and at least one.
fn exposed_in_the_canary(
    statuses: &[fota_sim::DeviceStatus],
    id: i64,
    bad: ImageVersion,
) -> Vec<String> {
    let mut ranks: Vec<u32> = statuses.iter().map(|s| cohort::rank(id, &s.id)).collect();
    let first_stage = cohort::threshold_for_count(&mut ranks, (statuses.len() as u64).div_ceil(10));
    let exposed: Vec<String> = statuses
        .iter()
        .filter(|s| s.accepted.contains(&bad))
        .map(|s| s.id.clone())
        .collect();
    assert!(!exposed.is_empty(), "nobody took the canary");
    for device in &exposed {
        assert!(
            cohort::is_in(cohort::rank(id, device), first_stage),
            "{device} was offered {bad} outside the first stage"
        );
    }
    exposed
}

async fn bad_release_scenario(db: Db, behaviour: AppBehaviour) {
    let app = testkit::spawn_app(db).await;
    let n = 100;
    let fleet = start_fleet(&app, n, |_| Faults::default()).await;
    let bad = upload(&app, version(2), behaviour).await;
    let id = start_rollout(
        &app,
        json!({"release_id": bad, "stages": [stage(10.0, 3, 3), stage(50.0, 3, 3), stage(100.0, 3, 3)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(60), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "halted", "{status:#}");
    assert_eq!(status["current_stage"], 1, "{status:#}");

    // Every device that installed it is reverted by its bootloader (three watchdog resets)
    // and, back on v1, reports the rollback. A device whose download was still running at the
    // halt either finishes it (and is reverted the same way) or drops it at its next check-in,
    // which no longer offers the release: wait until no download is left either way.
    let start = std::time::Instant::now();
    let (summary, statuses) = loop {
        let summary = fleet.summary();
        let statuses = fleet.statuses();
        let settled = summary.confirmed_on(version(1)) == n
            && statuses.iter().all(|s| {
                s.downloading.is_none() && (!s.installed.contains(&version(2)) || s.rollbacks >= 1)
            });
        if settled {
            break (summary, statuses);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "exposed devices were not all reverted: {summary:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Offered in the first stage only.
    exposed_in_the_canary(&statuses, id, version(2));
    let exposed: Vec<String> = statuses
        .iter()
        .filter(|s| s.installed.contains(&version(2)))
        .map(|s| s.id.clone())
        .collect();
    let exposed_n = exposed.len();
    assert!(exposed_n > 0, "nobody installed the canary: {summary:?}");
    assert!(
        summary.trial_boots as usize >= 3 * exposed_n,
        "three trial boots each before the revert: {summary:?}"
    );
    for s in &statuses {
        if exposed.contains(&s.id) {
            assert_eq!(s.rollbacks, 1, "{} did not report its rollback once", s.id);
        } else if s.accepted.is_empty() {
            assert_eq!(s.rollbacks, 0, "{} reported a rollback", s.id);
        } else {
            // Took the offer, never installed it: its download was dropped after the halt.
            assert!(
                s.withdrawn + s.pushed_stops >= 1,
                "{} took the offer and neither installed it nor dropped it: {s:?}",
                s.id
            );
        }
    }
    // The server heard the rollbacks.
    app.settle().await;
    let status = rollout_status(&app, id).await;
    assert_eq!(
        status["counts"]["rolled_back"].as_u64(),
        Some(exposed_n as u64),
        "{status:#}"
    );

    for (id, _, v, mode) in final_boots(fleet).await {
        assert_eq!(
            (v, mode),
            (version(1), fota_boot::BootMode::Confirmed),
            "{id}"
        );
    }
}

/// A release that confirms and then crashes after a while passes its rollout; `fota rollback`
/// rolls the devices forward to the previous release.
async fn fota_rollback_restores_the_previous_release(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 20;
    let fleet = start_fleet(&app, n, |_| Faults::default()).await;
    let good = upload(&app, version(1), AppBehaviour::Good).await;
    let faulty = upload(
        &app,
        version(2),
        AppBehaviour::CrashesAfter { after_ms: 2000 },
    )
    .await;
    let id = start_rollout(
        &app,
        json!({"release_id": faulty, "stages": [stage(100.0, 1, 10)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(60), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(20), |s| {
        s.confirmed_on(version(2)) == n && s.crashes > 0
    })
    .await;
    assert!(ok, "the faulty release did not take: {summary:?}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fota"))
        .args([
            "rollback",
            "--release",
            &good.to_string(),
            "--from-release",
            &faulty.to_string(),
            "--json",
        ])
        .env("FOTA_SERVER", &app.url)
        .env("FOTA_TOKEN", &app.admin)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "fota rollback failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(60), |s| {
        s.confirmed_on(version(1)) == n
    })
    .await;
    assert!(ok, "not every device is back on v1: {summary:?}");
    for (id, slot, v, mode) in final_boots(fleet).await {
        assert_eq!(
            (slot, v, mode),
            (SlotId::A, version(1), fota_boot::BootMode::Confirmed),
            "{id}"
        );
    }
}

/// A download whose link drops resumes from the first byte it does not have.
async fn interrupted_download_resumes(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 6;
    let fleet = start_fleet(&app, n, |_| Faults {
        link_drop: true,
        ..Faults::default()
    })
    .await;
    let v2 = upload(&app, version(2), AppBehaviour::Good).await;
    let id = start_rollout(
        &app,
        json!({"release_id": v2, "stages": [stage(100.0, 1, 10)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(60), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    let image_len = build(SlotId::B, version(2), AppBehaviour::Good).len() as u64;
    for s in fleet.statuses() {
        assert_eq!(s.link.drops, 1, "{}: {:?}", s.id, s.link);
        let resumed = s.link.resumed_at.expect("fetched after the drop");
        assert!(resumed > 0, "{} started over after the drop", s.id);
        assert_eq!(
            s.link.bytes_fetched, image_len,
            "{} downloaded more than the image",
            s.id
        );
        assert_eq!(s.installs, 1);
    }
    drop(fleet);
}

/// With the factory release on the server, the fleet takes the next one as delta patches
/// (issue 19): each device fetches a patch from the image it runs, well under the image, a
/// dropped link resumes inside the patch, and every device installs and confirms the image the
/// patch rebuilds (the bootloader verified it: the devices run it).
async fn a_fleet_takes_a_release_as_delta_patches(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 6;
    let fleet = start_fleet(&app, n, |i| Faults {
        link_drop: i % 2 == 0,
        ..Faults::default()
    })
    .await;
    upload(&app, version(1), AppBehaviour::Good).await;
    let v2 = upload(&app, version(2), AppBehaviour::Good).await;
    let id = start_rollout(
        &app,
        json!({"release_id": v2, "stages": [stage(100.0, 1, 10)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(60), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    assert_eq!(status["counts"]["confirmed"], n, "{status:#}");
    let image_len = build(SlotId::B, version(2), AppBehaviour::Good).len() as u64;
    for (i, s) in fleet.statuses().iter().enumerate() {
        assert!(s.link.patch_offers >= 1, "{}: {:?}", s.id, s.link);
        assert_eq!(
            s.link.patch_bytes_fetched, s.link.bytes_fetched,
            "{}: fetched the image, not the patch: {:?}",
            s.id, s.link
        );
        assert!(
            s.link.bytes_fetched * 2 < image_len,
            "{}: {} bytes for a {image_len}-byte image",
            s.id,
            s.link.bytes_fetched
        );
        if i % 2 == 0 {
            assert_eq!(s.link.drops, 1, "{}: {:?}", s.id, s.link);
            assert!(s.link.resumed_at.is_some_and(|at| at > 0), "{}", s.id);
        }
        assert_eq!(s.installs, 1, "{}", s.id);
    }
    for (id, slot, v, mode) in final_boots(fleet).await {
        assert_eq!(
            (slot, v, mode),
            (SlotId::B, version(2), fota_boot::BootMode::Confirmed),
            "{id}"
        );
    }
}

/// A healthy fleet's background: each device's watchdog fires at random now and then (every
/// `mean` on average), whatever it runs; `seed` picks which random history.
fn background(mean: Duration, seed: u64) -> Faults {
    Faults {
        background_reset_mean: Some(mean),
        seed,
        ..Faults::default()
    }
}

/// A stage whose reset limit can judge within seconds: 2 x the baseline once the new release
/// has run 36 device-seconds.
fn reset_stage(percent: f64, bake_s: i64) -> Value {
    json!({"percent": percent, "bake_s": bake_s, "min_sample": 3, "max_failure_rate": 0.2,
           "confirm_deadline_s": 30, "max_reset_ratio": 2.0, "min_device_hours": 0.01})
}

/// Issue 16: a release that boots, confirms, and then crashes every two seconds. Nothing fails
/// before confirmation, so only its resets can stop it: the gate compares their rate with the
/// old release's among the same targets and halts it in its first or second stage, by itself;
/// no device outside those stages is ever offered it, and the halt says which figures crossed
/// which limit.
async fn a_release_that_crashes_after_confirming_halts_on_its_resets(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 100;
    let fleet = start_fleet(&app, n, |_| background(Duration::from_secs(60), 0)).await;
    let bad = upload(
        &app,
        version(2),
        AppBehaviour::CrashesAfter { after_ms: 2000 },
    )
    .await;
    let id = start_rollout(
        &app,
        json!({"release_id": bad, "stages": [reset_stage(10.0, 15), reset_stage(50.0, 15), reset_stage(100.0, 0)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(90), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "halted", "{status:#}");
    let stage = status["current_stage"].as_u64().unwrap();
    assert!(stage <= 2, "halted only in stage {stage}: {status:#}");
    let crossing = &status["halt_reason"]["resets"];
    assert!(crossing.is_object(), "not a halt on resets: {status:#}");
    assert!(
        crossing["figures"]["new_resets"].as_u64().unwrap() >= 2,
        "{status:#}"
    );
    assert!(crossing["chance"].as_f64().unwrap() < 0.001, "{status:#}");
    let message = status["halt_message"].as_str().unwrap();
    assert!(
        message.contains("unexpected resets") && message.contains("above the 2.0 x limit"),
        "{message}"
    );
    // Nothing failed before confirming: the failure figures are within their limit.
    assert_eq!(status["counts"]["rolled_back"], 0, "{status:#}");
    // Status shows the crashes against the stage that took the release.
    assert!(
        status["stages"][0]["resets"]["resets"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{status:#}"
    );

    // Only the stages it reached were offered it.
    let statuses = fleet.statuses();
    let mut ranks: Vec<u32> = statuses.iter().map(|s| cohort::rank(id, &s.id)).collect();
    let share = if stage == 1 { 10 } else { 2 };
    let reached = cohort::threshold_for_count(&mut ranks, (n as u64).div_ceil(share));
    let exposed: Vec<&str> = statuses
        .iter()
        .filter(|s| s.accepted.contains(&version(2)))
        .map(|s| s.id.as_str())
        .collect();
    assert!(!exposed.is_empty(), "nobody took the canary");
    for device in &exposed {
        assert!(
            cohort::is_in(cohort::rank(id, device), reached),
            "{device} was offered the crashing release outside stage {stage}"
        );
    }

    // The audit entry carries the figures that crossed the limit.
    let audit = app
        .admin_get(&format!("/v1/audit?rollout_id={id}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let halt = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.halt")
        .unwrap_or_else(|| panic!("no halt in the audit log: {audit:#}"));
    assert!(
        halt["detail"]["numbers"]["resets"]["figures"]["new_resets"]
            .as_u64()
            .is_some(),
        "{halt:#}"
    );
    drop(fleet);
}

/// The same fleet and background with a healthy release: the background resets give both sides
/// a rate, the gate watches them (status shows the figures), and the release walks to 100%.
/// `FOTA_E2E_REPEAT=N` runs the scenario N times, each run with its own random history (a
/// different seed), and counts false halts (docs/BENCHMARKS.md).
async fn a_healthy_release_with_background_resets_walks_to_100_percent(db: Db) {
    let repeat: usize = std::env::var("FOTA_E2E_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut halts = Vec::new();
    for run in 0..repeat {
        let app = testkit::spawn_app(db).await;
        let n = 60;
        let seed = run as u64 + 1;
        let fleet = start_fleet(&app, n, |_| background(Duration::from_secs(20), seed)).await;
        let good = upload(&app, version(2), AppBehaviour::Good).await;
        let id = start_rollout(
            &app,
            json!({"release_id": good, "stages": [reset_stage(10.0, 8), reset_stage(50.0, 8), reset_stage(100.0, 8)]}),
        )
        .await;
        let seen = std::sync::Mutex::new((0u64, 0u64));
        let status = wait_for(&app, id, Duration::from_secs(120), |s| {
            if let Some(r) = s.get("resets").filter(|r| r.is_object()) {
                let mut seen = seen.lock().unwrap();
                seen.0 = seen.0.max(r["new_resets"].as_u64().unwrap_or(0));
                seen.1 = seen.1.max(r["baseline_resets"].as_u64().unwrap_or(0));
            }
            s["state"] != "active"
        })
        .await;
        let (new_seen, base_seen) = *seen.lock().unwrap();
        eprintln!(
            "run {run}: {} in stage {}; resets seen: {new_seen} on the new release, {base_seen} on the baseline",
            status["state"], status["current_stage"]
        );
        if status["state"] != "completed" {
            halts.push(format!("run {run}: {status:#}"));
            continue;
        }
        // Every device confirmed the release: settled on it, even one that a background reset
        // caught on its way back into it (running nothing). A device publishes its status at
        // the end of its turn, after the report that completed the rollout: wait for that.
        let mut summary = fleet.summary();
        for _ in 0..100 {
            if summary.settled_on(version(2)) == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            summary = fleet.summary();
        }
        assert_eq!(summary.settled_on(version(2)), n, "{summary:?}");
        assert_eq!(summary.settled_on(version(1)), 0, "{summary:?}");
        assert!(summary.background_resets > 0, "{summary:?}");
        assert!(
            new_seen + base_seen > 0,
            "the gate never saw a reset: {summary:?}"
        );
    }
    eprintln!("false halts: {} of {repeat} runs", halts.len());
    assert!(halts.is_empty(), "false halts:\n{}", halts.join("\n"));
}

/// A simulated stage-1 build for stage-1 slot `slot`.
fn stage1_build(slot: SlotId, v: ImageVersion, behaviour: Stage1Behaviour) -> Vec<u8> {
    app::stage1_image(&signing_key(), slot, v, 1, behaviour, 4 * 1024)
}

/// Upload a bootloader release of simulated stage-1 builds; returns its id.
async fn upload_bootloader(app: &TestApp, v: ImageVersion, behaviour: Stage1Behaviour) -> i64 {
    let resp = app
        .upload_release(
            MODEL,
            stage1_build(SlotId::A, v, behaviour),
            stage1_build(SlotId::B, v, behaviour),
        )
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let release = resp.json::<Value>().await.unwrap();
    assert_eq!(release["component"], "bootloader", "{release}");
    release["id"].as_i64().unwrap()
}

/// Issue 18 on the virtual fleet: two-stage devices (stage-0, two stage-1 slots, the real
/// `fota-boot` stage-0 and bootloader, the real OTA client) take a good bootloader release
/// through a staged rollout into stage-1 slot B, boot it on trial and confirm it; then a bad
/// bootloader release (its stage-1 never boots an application) halts in its canary, stage-0
/// falls back on every exposed device, which reports the rollback from its previous stage-1,
/// and no device outside the canary is offered it. Every device ends booting its confirmed
/// stage-1 2 and its confirmed application 1.
async fn a_bootloader_rolls_out_and_a_bad_one_halts_in_its_canary(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 20;
    let factory = factory_flash_two_stage(
        &build(SlotId::A, version(1), AppBehaviour::Good),
        1,
        &stage1_build(SlotId::A, version(1), Stage1Behaviour::Good),
        1,
    );
    let fleet = start_fleet_from(&app, n, |_| Faults::default(), factory).await;

    let good = upload_bootloader(&app, version(2), Stage1Behaviour::Good).await;
    let id = start_rollout(
        &app,
        json!({"release_id": good, "stages": [stage(20.0, 2, 10), stage(100.0, 2, 10)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(60), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    assert_eq!(status["component"], "bootloader", "{status:#}");
    assert_eq!(
        status["counts"]["confirmed"].as_u64(),
        Some(n as u64),
        "{status:#}"
    );
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(20), |s| {
        s.stage1_confirmed_on(version(2)) == n && s.confirmed_on(version(1)) == n
    })
    .await;
    assert!(ok, "not every device confirmed stage-1 2: {summary:?}");
    assert_eq!(summary.stage1_confirmations, n as u64, "{summary:?}");
    assert!(summary.stage1_trial_boots >= n as u64, "{summary:?}");
    assert_eq!(summary.rollbacks, 0, "{summary:?}");

    let bad = upload_bootloader(&app, version(3), Stage1Behaviour::Hangs).await;
    let id = start_rollout(
        &app,
        json!({"release_id": bad, "stages": [stage(10.0, 2, 10), stage(100.0, 2, 10)]}),
    )
    .await;
    let status = wait_for(&app, id, Duration::from_secs(60), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "halted", "{status:#}");
    assert_eq!(status["current_stage"], 1, "{status:#}");

    let exposed = exposed_in_the_canary(&fleet.statuses(), id, version(3));
    // Stage-0 gives the hanging stage-1 three attempts, then boots stage-1 2 again, whose
    // application reports the rollback.
    let exposed_n = exposed.len();
    let (summary, ok) = wait_fleet(&fleet, Duration::from_secs(30), |s| {
        s.stage1_confirmed_on(version(2)) == n
            && s.confirmed_on(version(1)) == n
            && s.rollbacks as usize >= exposed_n
    })
    .await;
    assert!(ok, "exposed devices were not all reverted: {summary:?}");
    assert!(
        summary.stage1_hangs as usize >= 3 * exposed_n,
        "three hung attempts each before stage-0 reverts: {summary:?}"
    );
    app.settle().await;
    let status = rollout_status(&app, id).await;
    assert_eq!(
        status["counts"]["rolled_back"].as_u64(),
        Some(exposed_n as u64),
        "{status:#}"
    );

    let (mut devices, keys) = tokio::task::spawn_blocking(move || fleet.stop())
        .await
        .unwrap();
    for d in &mut devices {
        let id = d.status().id.clone();
        assert_eq!(
            d.next_stage1(keys),
            Some((SlotId::B, version(2), fota_boot::BootMode::Confirmed)),
            "{id}: the stage-1 stage-0 boots next"
        );
        assert_eq!(
            d.next_boot(keys),
            Some((SlotId::A, version(1), fota_boot::BootMode::Confirmed)),
            "{id}: the application"
        );
    }
}

/// An update costs a device two check-ins, as on the board: the one that brings the offer and
/// the trial's, before it confirms, which counts as the new boot's first. With an interval far
/// longer than the update, no device checks in a third time.
async fn a_confirmed_trial_checks_in_once_per_boot(db: Db) {
    let app = testkit::spawn_app(db).await;
    let n = 10;
    let specs = provision(&app, n, |_| Faults::default()).await;
    let good = upload(&app, version(2), AppBehaviour::Good).await;
    let id = start_rollout(
        &app,
        json!({"release_id": good, "stages": [stage(100.0, 1, 600)]}),
    )
    .await;
    let factory = factory_flash(&build(SlotId::A, version(1), AppBehaviour::Good), 1);
    let timing = Timing {
        check_in_interval: Duration::from_secs(600),
        first_check_in_spread: Duration::from_millis(200),
        ..Timing::default()
    };
    let fleet = launch_fleet(&app, specs, factory, timing).await;
    let status = wait_for(&app, id, Duration::from_secs(30), |s| {
        s["state"] != "active"
    })
    .await;
    assert_eq!(status["state"], "completed", "{status:#}");
    // Each device's last turn (its reports) and anything it would do next.
    let (summary, settled) = wait_fleet(&fleet, Duration::from_secs(10), |s| {
        s.settled_on(version(2)) == n
    })
    .await;
    assert!(settled, "{summary:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let summary = fleet.summary();
    assert_eq!(summary.confirmations, n as u64, "{summary:?}");
    assert_eq!(summary.check_ins, 2 * n as u64, "{summary:?}");
}

backend_tests!(
    a_confirmed_trial_checks_in_once_per_boot,
    a_bootloader_rolls_out_and_a_bad_one_halts_in_its_canary,
    a_release_that_crashes_after_confirming_halts_on_its_resets,
    a_healthy_release_with_background_resets_walks_to_100_percent,
    good_release_reaches_every_device,
    bad_release_halts_in_the_canary_and_reverts,
    a_release_that_faults_at_boot_is_halted_and_reverted,
    fota_rollback_restores_the_previous_release,
    interrupted_download_resumes,
    a_fleet_takes_a_release_as_delta_patches,
);
