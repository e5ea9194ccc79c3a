//! Delta patches in offers, over HTTP, on SQLite and (with `FOTA_TEST_POSTGRES_URL`) PostgreSQL
//! (issue 19, item 2): an offer carries a patch from the image the device runs to the offered
//! image, made once per pair and served like an image, and every fallback to the full image:
//! a device that applies no patches (or an older format), a base the server does not know, a
//! patch not smaller than the configured share, a device that gave the rollout's patch up
//! (which is not its failure), and a base release deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::image::Digest;
use fota_protocol::SlotId;
use fota_testkit::{
    self as testkit, backend_tests, fleet, image, release, rollout_status, signing_key, spawn_app,
    spawn_with, test_config, Db, Device, TestApp,
};
use serde_json::json;

backend_tests!(
    an_offer_carries_a_patch_from_the_running_image_made_once_per_pair,
    devices_that_cannot_use_a_patch_are_offered_the_full_image_alone,
    a_device_that_gave_the_patch_up_gets_the_full_image_and_has_not_failed,
    a_patch_not_smaller_than_the_share_is_not_offered,
    deleting_the_base_release_deletes_its_patches,
);

const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const FORMAT: u8 = fota_delta::header::FORMAT_VERSION;

fn img(slot: SlotId, version: &str) -> Vec<u8> {
    image(slot, version, 1, &signing_key())
}

fn digest(slot: SlotId, version: &str) -> String {
    Digest::of(&img(slot, version)).to_string()
}

/// Every device takes patches unless a test says otherwise.
async fn patch_fleet(app: &TestApp, prefix: &str, n: usize) -> Vec<Device> {
    let mut devices = fleet(app, prefix, n, "f429", "1.0.0").await;
    for d in &mut devices {
        d.delta_format = Some(FORMAT);
    }
    devices
}

/// A rollout of `release` to every device, one stage.
async fn roll_out(app: &TestApp, release: i64) -> i64 {
    let r = testkit::start_rollout(
        app,
        json!({"release_id": release, "stages": [{"percent": 100.0, "bake_s": 0, "min_sample": 1,
            "max_failure_rate": 0.0, "confirm_deadline_s": 600}]}),
    )
    .await;
    r["id"].as_i64().unwrap()
}

async fn artifact(app: &TestApp, sha256: &str) -> reqwest::Response {
    app.client
        .get(app.at(&format!("/v1/artifacts/{sha256}")))
        .send()
        .await
        .unwrap()
}

/// How many patches the database holds.
async fn patch_rows(app: &TestApp, pairs: &[(SlotId, SlotId)]) -> usize {
    let mut n = 0;
    for (base, target) in pairs {
        let found = app
            .server
            .state
            .store
            .patch(&digest(*base, "1.0.0"), &digest(*target, "1.1.0"))
            .await
            .unwrap();
        n += usize::from(found.is_some());
    }
    n
}

async fn an_offer_carries_a_patch_from_the_running_image_made_once_per_pair(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = patch_fleet(&app, "DP", 3).await;
    devices[2].slot = "b";
    for d in &mut devices[2..] {
        assert!(d.check_in(&app).await.is_none());
    }
    release(&app, "f429", "1.0.0", 1).await;
    let id = roll_out(&app, release(&app, "f429", "1.1.0", 1).await).await;

    for (d, running, target) in [(0, SlotId::A, SlotId::B), (2, SlotId::B, SlotId::A)] {
        let offer = devices[d].check_in(&app).await.expect("offered");
        assert_eq!(offer["sha256"], digest(target, "1.1.0"), "{offer}");
        let patch = &offer["patch"];
        assert_eq!(patch["base_sha256"], digest(running, "1.0.0"), "{offer}");
        // Served like an image, by its address, with Range; it rebuilds the offered image.
        let resp = artifact(&app, patch["sha256"].as_str().unwrap()).await;
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len() as u64, patch["size"].as_u64().unwrap());
        assert_eq!(Digest::of(&bytes).to_string(), patch["sha256"]);
        let rebuilt = fota_delta::apply(&img(running, "1.0.0"), &bytes).unwrap();
        assert_eq!(rebuilt, img(target, "1.1.0"));
        assert!(
            bytes.len() * 2 < rebuilt.len(),
            "{} of {}",
            bytes.len(),
            rebuilt.len()
        );
        let tail = app
            .client
            .get(app.at(&format!(
                "/v1/artifacts/{}",
                patch["sha256"].as_str().unwrap()
            )))
            .header("range", "bytes=10-")
            .send()
            .await
            .unwrap();
        assert_eq!(tail.status(), 206);
        assert_eq!(tail.bytes().await.unwrap(), bytes.slice(10..));
    }
    // The second device on slot A gets the same patch: one per (base, target) pair.
    let first = devices[0].check_in(&app).await.expect("offered again");
    let again = devices[1].check_in(&app).await.expect("offered");
    assert_eq!(again["patch"], first["patch"]);
    assert_eq!(
        patch_rows(&app, &[(SlotId::A, SlotId::B), (SlotId::B, SlotId::A)]).await,
        2
    );

    // Installed through the patch and confirmed: the rollout completes as ever.
    for d in &mut devices {
        let offer = d.check_in(&app).await.expect("offered");
        d.take(&app, &offer, testkit::Behaviour::Good).await;
    }
    let s = testkit::wait_for(&app, id, WAIT, |s| s["state"] == "completed").await;
    assert_eq!(s["counts"]["confirmed"], 3, "{s:#}");
}

async fn devices_that_cannot_use_a_patch_are_offered_the_full_image_alone(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = patch_fleet(&app, "DF", 4).await;
    // D0 applies patches (the control); D1 was built before patches (no field); D2 applies a
    // format this server does not make; D3 runs a version the server has no release of.
    devices[1].delta_format = None;
    devices[2].delta_format = Some(FORMAT + 1);
    devices[3].version = "0.9.0".into();
    release(&app, "f429", "1.0.0", 1).await;
    roll_out(&app, release(&app, "f429", "1.1.0", 1).await).await;

    let offer = devices[0].check_in(&app).await.expect("offered");
    assert!(offer.get("patch").is_some(), "{offer}");
    for d in &mut devices[1..] {
        let offer = d.check_in(&app).await.expect("offered");
        // Left out, not null: a device built before the field reads the offer as ever.
        assert!(offer.get("patch").is_none(), "{}: {offer}", d.id);
        assert_eq!(offer["sha256"], digest(SlotId::B, "1.1.0"));
    }
}

async fn a_device_that_gave_the_patch_up_gets_the_full_image_and_has_not_failed(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = patch_fleet(&app, "DG", 2).await;
    release(&app, "f429", "1.0.0", 1).await;
    let id = roll_out(&app, release(&app, "f429", "1.1.0", 1).await).await;

    let offer = devices[0].check_in(&app).await.expect("offered");
    let patch_id = &offer["patch"]["sha256"].as_str().unwrap()[..8];
    let d0 = &mut devices[0];
    d0.report(&app, "offer_accepted", id, "1.1.0", None).await;
    d0.report(&app, "download_started", id, "1.1.0", None).await;
    // The client's words (ota-client): the patch could not be used, the full image follows.
    let reason =
        format!("delta patch {patch_id} (full image instead): rebuilt image: bad signature");
    d0.report(&app, "verify_failed", id, "1.1.0", Some(&reason))
        .await;
    // Not a failure: the gate (no failure tolerated) does not halt, the device is downloading.
    let s = rollout_status(&app, id).await;
    assert_eq!(s["state"], "active", "{s:#}");
    assert_eq!(s["counts"]["failed"], 0, "{s:#}");
    assert_eq!(s["counts"]["downloading"], 1, "{s:#}");
    // Asked again (it lost the answer, or reset), it is offered the full image alone.
    let again = d0.check_in(&app).await.expect("offered again");
    assert!(again.get("patch").is_none(), "{again}");
    assert_eq!(again["sha256"], offer["sha256"]);
    // The other device still gets the patch.
    let other = devices[1].check_in(&app).await.expect("offered");
    assert!(other.get("patch").is_some(), "{other}");
    // D0 installs the full image; D1 fails for real: that one counts, and halts.
    devices[0]
        .report(&app, "installed", id, "1.1.0", None)
        .await;
    devices[1]
        .report(
            &app,
            "verify_failed",
            id,
            "1.1.0",
            Some("image signature does not verify"),
        )
        .await;
    let s = testkit::wait_for(&app, id, WAIT, |s| s["state"] == "halted").await;
    assert_eq!(s["counts"]["failed"], 1, "{s:#}");
    assert_eq!(s["counts"]["installed"], 1, "{s:#}");
}

async fn a_patch_not_smaller_than_the_share_is_not_offered(db: Db) {
    for (percent, patched) in [(0, false), (1, false), (100, true)] {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(db, data_dir.path()).await;
        config.delta_max_percent = percent;
        let app = spawn_with(db, data_dir, config).await;
        let mut devices = patch_fleet(&app, "DS", 1).await;
        release(&app, "f429", "1.0.0", 1).await;
        roll_out(&app, release(&app, "f429", "1.1.0", 1).await).await;
        let offer = devices[0].check_in(&app).await.expect("offered");
        // 1% of an 8 KB image is less than a patch's header alone.
        assert_eq!(offer.get("patch").is_some(), patched, "{percent}%: {offer}");
    }
}

async fn deleting_the_base_release_deletes_its_patches(db: Db) {
    let app = spawn_app(db).await;
    let mut devices = patch_fleet(&app, "DD", 1).await;
    let base = release(&app, "f429", "1.0.0", 1).await;
    roll_out(&app, release(&app, "f429", "1.1.0", 1).await).await;
    let offer = devices[0].check_in(&app).await.expect("offered");
    let patch = offer["patch"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(artifact(&app, &patch).await.status(), 200);

    // No rollout used 1.0.0: it may go, and its patches with it.
    let resp = app
        .client
        .delete(app.at(&format!("/v1/releases/{base}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());
    assert_eq!(artifact(&app, &patch).await.status(), 404);
    assert_eq!(patch_rows(&app, &[(SlotId::A, SlotId::B)]).await, 0);
    // Its base unknown now, the offer is the full image alone (once the active rollouts are
    // read again, within a second).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let offer = devices[0].check_in(&app).await.expect("offered");
        if offer.get("patch").is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{offer}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
