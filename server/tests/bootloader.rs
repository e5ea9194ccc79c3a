//! Bootloader releases end to end over HTTP, on SQLite and (with `FOTA_TEST_POSTGRES_URL`)
//! PostgreSQL (issue 18, item 5): two stage-1 images make a bootloader release, checked as
//! strictly as an application's; it rolls out through the same cohorts and gates, offered into
//! the stage-1 slot a device does not run, only to two-stage devices whose application and
//! stage-1 are both confirmed; confirmations and rollbacks count as for an application; a bad
//! bootloader halts in its canary; and a model rolls out one component at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::image::Digest;
use fota_protocol::SlotId;
use fota_testkit::Api as _;
use fota_testkit::{
    self as testkit, assert_error, backend_tests, bootloader_release, fleet, image, release,
    rollout_status, signing_key, spawn_app, stage1_image, Db, TestApp,
};
use serde_json::{json, Value};

backend_tests!(
    a_bootloader_release_is_two_stage1_images_checked_like_an_application,
    a_bootloader_rolls_out_into_the_other_stage1_slot_of_confirmed_two_stage_devices,
    a_bad_bootloader_halts_in_its_canary,
    a_model_rolls_out_one_component_at_a_time,
);

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn stage(percent: f64, min_sample: u64, max_rate: f64) -> Value {
    json!({"percent": percent, "bake_s": 0, "min_sample": min_sample, "max_failure_rate": max_rate, "confirm_deadline_s": 600})
}

/// POST /v1/releases with `component` declared (or not).
async fn upload(
    app: &TestApp,
    a: Vec<u8>,
    b: Vec<u8>,
    component: Option<&str>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new().text("model", "f429");
    if let Some(c) = component {
        form = form.text("component", c.to_string());
    }
    let form = form
        .part(
            "image_a",
            reqwest::multipart::Part::bytes(a).file_name("a.bin"),
        )
        .part(
            "image_b",
            reqwest::multipart::Part::bytes(b).file_name("b.bin"),
        );
    app.post("/v1/releases")
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn a_bootloader_release_is_two_stage1_images_checked_like_an_application(db: Db) {
    let app = spawn_app(db).await;
    let key = signing_key();
    let s1 = |slot, v: &str| stage1_image(slot, v, 2, &key);
    let app_image = |slot, v: &str| image(slot, v, 2, &key);

    // Two stage-1 images, each marked and linked for its stage-1 slot: a bootloader release.
    let resp = upload(
        &app,
        s1(SlotId::A, "1.1.0"),
        s1(SlotId::B, "1.1.0"),
        Some("bootloader"),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let rel: Value = resp.json().await.unwrap();
    assert_eq!(rel["component"], "bootloader");
    assert_eq!(rel["version"], "1.1.0");
    assert_eq!(rel["security_counter"], 2);
    assert_eq!(
        rel["images"][0]["sha256"],
        Digest::of(&s1(SlotId::A, "1.1.0")).to_string()
    );

    // A bootloader's versions are a series of their own: application 1.1.0 may exist too,
    // and says it is an application; the same bootloader version twice may not.
    let resp = upload(
        &app,
        app_image(SlotId::A, "1.1.0"),
        app_image(SlotId::B, "1.1.0"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["component"],
        "application"
    );
    let resp = upload(&app, s1(SlotId::A, "1.1.0"), s1(SlotId::B, "1.1.0"), None).await;
    assert_error(resp, 409, "duplicate_version").await;

    // One application and one stage-1: not one release.
    let resp = upload(
        &app,
        app_image(SlotId::A, "1.2.0"),
        s1(SlotId::B, "1.2.0"),
        None,
    )
    .await;
    assert_error(resp, 422, "component_mismatch").await;
    // Declared otherwise than the images say.
    let resp = upload(
        &app,
        app_image(SlotId::A, "1.2.0"),
        app_image(SlotId::B, "1.2.0"),
        Some("bootloader"),
    )
    .await;
    assert_error(resp, 422, "component_mismatch").await;
    let resp = upload(
        &app,
        s1(SlotId::A, "1.2.0"),
        s1(SlotId::B, "1.2.0"),
        Some("stage0"),
    )
    .await;
    assert_error(resp, 400, "invalid_component").await;
    // Stage-1 B's image given as A: refused for its slot, as an application's would be.
    let resp = upload(&app, s1(SlotId::B, "1.2.0"), s1(SlotId::A, "1.2.0"), None).await;
    assert_error(resp, 422, "wrong_slot").await;
    // A stage-1 signed by a key the server does not trust.
    let other = testkit::other_key();
    let resp = upload(
        &app,
        stage1_image(SlotId::A, "1.2.0", 2, &other),
        stage1_image(SlotId::B, "1.2.0", 2, &other),
        None,
    )
    .await;
    assert_error(resp, 422, "untrusted_key").await;

    let list: Value = app
        .admin_get("/v1/releases")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut seen: Vec<(String, String)> = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["component"].as_str().unwrap().to_string(),
                r["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("application".to_string(), "1.1.0".to_string()),
            ("bootloader".to_string(), "1.1.0".to_string())
        ]
    );
}

async fn a_bootloader_rolls_out_into_the_other_stage1_slot_of_confirmed_two_stage_devices(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "BL", 6, "f429", "1.0.0").await;
    // D0, D1: stage-1 A; D2: stage-1 B; D3: single-stage; D4: application on trial; D5:
    // write protection over stage-1 slot B (sector 9).
    for (i, d) in devices.iter_mut().enumerate() {
        d.stage1 = match i {
            2 => Some(("b", false)),
            3 => None,
            _ => Some(("a", false)),
        };
    }
    devices[4].trial = true;
    devices[5].wrp_mask = 1 << 9;
    let rel = bootloader_release(&app, "f429", "1.1.0", 1).await;
    let key = signing_key();
    let digest = |slot| Digest::of(&stage1_image(slot, "1.1.0", 1, &key)).to_string();

    let r = testkit::start_rollout(
        &app,
        json!({"release_id": rel, "stages": [stage(100.0, 1, 0.5)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["component"], "bootloader", "{r:#}");
    assert_eq!(r["targets"], 6);

    for (i, slot) in [(0, SlotId::B), (1, SlotId::B), (2, SlotId::A)] {
        let offer = devices[i].check_in(&app).await.expect("offered");
        assert_eq!(offer["component"], "bootloader", "{offer}");
        assert_eq!(offer["slot"], slot.to_string().to_lowercase(), "{offer}");
        assert_eq!(offer["sha256"], digest(slot));
        assert_eq!(offer["version"], "1.1.0");
    }
    // Single-stage, or protected: skipped with the reason, never a failure.
    assert!(devices[3].check_in(&app).await.is_none());
    assert!(devices[5].check_in(&app).await.is_none());
    // An application on trial: not now (never a bootloader and an application at once)...
    assert!(devices[4].check_in(&app).await.is_none());
    let s = rollout_status(&app, id).await;
    assert_eq!(s["counts"]["protection_blocked"], 2, "{s:#}");
    assert_eq!(s["counts"]["offered"], 3, "{s:#}");
    assert_eq!(s["counts"]["eligible"], 1, "{s:#}");
    // ...but once it confirmed it is offered.
    devices[4].trial = false;
    assert!(devices[4].check_in(&app).await.is_some());

    // D0 boots the new stage-1 on trial: installed, not yet confirmed.
    let d0 = &mut devices[0];
    d0.report(&app, "installed", id, "1.1.0", None).await;
    d0.bootloader = "1.1.0".into();
    d0.stage1 = Some(("b", true));
    assert!(d0.check_in(&app).await.is_none());
    let s = rollout_status(&app, id).await;
    assert_eq!(s["counts"]["installed"], 1, "{s:#}");
    assert_eq!(s["counts"]["confirmed"], 0, "{s:#}");
    // It proves itself (an application booted through it reached the server): confirmed.
    d0.stage1 = Some(("b", false));
    assert!(d0.check_in(&app).await.is_none());
    d0.report(&app, "confirmed", id, "1.1.0", None).await;
    // D1's stage-0 went back to the old stage-1; the others confirm.
    devices[1]
        .report(
            &app,
            "rolled_back",
            id,
            "1.1.0",
            Some("stage-1 trial: 3 attempts"),
        )
        .await;
    for i in [2, 4] {
        devices[i]
            .report(&app, "confirmed", id, "1.1.0", None)
            .await;
    }
    let s = testkit::wait_for(&app, id, WAIT, |s| s["state"] == "completed").await;
    assert_eq!(s["counts"]["confirmed"], 3, "{s:#}");
    assert_eq!(s["counts"]["rolled_back"], 1, "{s:#}");
    assert_eq!(s["counts"]["protection_blocked"], 2, "{s:#}");

    // The device's page says which stage-1 it runs.
    app.flush().await;
    let dev: Value = app
        .admin_get(&format!("/v1/devices/{}", devices[0].id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dev["bootloader_version"], "1.1.0", "{dev:#}");
}

/// The bad bootloader: every canary device's stage-0 falls back to the old stage-1. The rollout
/// halts in its canary, and no device outside it is offered the bootloader.
async fn a_bad_bootloader_halts_in_its_canary(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "BB", 40, "f429", "1.0.0").await;
    for d in &mut devices {
        d.stage1 = Some(("a", false));
    }
    let rel = bootloader_release(&app, "f429", "1.2.0", 1).await;
    let r = testkit::start_rollout(
        &app,
        json!({"release_id": rel, "stages": [stage(10.0, 2, 0.25), stage(100.0, 2, 0.25)]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    let mut canary = Vec::new();
    for (i, d) in devices.iter_mut().enumerate() {
        if let Some(offer) = d.check_in(&app).await {
            assert_eq!(offer["component"], "bootloader");
            canary.push(i);
        }
    }
    assert_eq!(canary.len(), 4, "10% of 40");
    // Each installs it; stage-0 gives the new stage-1 up and boots the old one, whose
    // application reports the rollback.
    for &i in &canary {
        let d = &mut devices[i];
        d.report(&app, "installed", id, "1.2.0", None).await;
        d.report(
            &app,
            "rolled_back",
            id,
            "1.2.0",
            Some("stage-0 reverted stage-1 slot B to stage-1 slot A"),
        )
        .await;
    }
    let s = testkit::wait_for(&app, id, WAIT, |s| s["state"] == "halted").await;
    assert_eq!(s["current_stage"], 1, "{s:#}");
    assert_eq!(s["counts"]["rolled_back"], 4, "{s:#}");
    assert!(
        s["halt_message"].as_str().unwrap().contains("rolled back")
            || s["halt_message"].as_str().unwrap().contains("failure"),
        "{s:#}"
    );
    // Halted: nobody else is offered it.
    for d in &mut devices {
        assert!(d.check_in(&app).await.is_none());
    }
    assert_eq!(devices.iter().filter(|d| !d.offers.is_empty()).count(), 4);
}

/// One unfinished rollout per model, whatever its component: a bootloader rollout refuses an
/// application rollout (and the other way round); a rollback is of one component.
async fn a_model_rolls_out_one_component_at_a_time(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = fleet(&app, "OC", 4, "f429", "1.0.0").await;
    for d in &mut devices {
        d.stage1 = Some(("a", false));
    }
    let boot = bootloader_release(&app, "f429", "1.1.0", 1).await;
    let appl = release(&app, "f429", "2.0.0", 1).await;
    let r = testkit::start_rollout(
        &app,
        json!({"release_id": boot, "stages": [stage(100.0, 1, 0.5)]}),
    )
    .await;
    let resp = app
        .post("/v1/rollouts")
        .json(&json!({"release_id": appl}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 409, "rollout_in_progress").await;
    // A rollback from the bootloader release to an application release: refused.
    let resp = app
        .post("/v1/rollbacks")
        .json(&json!({"release_id": appl, "from_release_id": boot}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "component_mismatch").await;
    // The bootloader rollout is untouched, and offers bootloaders only.
    let s = rollout_status(&app, r["id"].as_i64().unwrap()).await;
    assert_eq!(s["state"], "active", "{s:#}");
    let offer = devices[0].check_in(&app).await.unwrap();
    assert_eq!(offer["component"], "bootloader");
}
