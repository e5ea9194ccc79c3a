//! The HTTP API against a real server, on SQLite and (with `FOTA_TEST_POSTGRES_URL`) PostgreSQL.
//! Every bad input gets a JSON error with a stable code; nothing answers 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::testing::image_for;
use fota_protocol::SlotId;
use fota_server::domain::auth::Role;
use fota_testkit::{
    self as testkit, assert_error, backend_tests, image, other_key, signing_key, spawn_app, Db,
    TestApp,
};
use serde_json::{json, Value};

backend_tests!(
    provisioning_json_and_csv,
    provisioning_refusals,
    admin_auth_and_roles,
    check_in_is_buffered_and_visible,
    device_auth_refusals,
    check_in_body_refusals,
    reports_are_idempotent,
    release_upload_and_listing,
    release_upload_refusals,
    artifacts_serve_ranges,
    artifact_refusals_and_cdn,
    device_listing_filters_and_summary,
    shutdown_flushes_buffered_facts,
    facts_flushes_keep_the_newest_news,
    ops_endpoints,
    every_operator_action_is_audited,
    a_revoked_device_is_refused,
    a_device_revoked_through_another_replica_is_refused_within_seconds,
);

/// Another replica revokes a device (here: the store, behind this server's back): this server
/// learns it from the revocation feed and refuses the device's cached credentials within a few
/// seconds, not after the 30 s the credentials were once cached for.
async fn a_device_revoked_through_another_replica_is_refused_within_seconds(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app.provision(&[("RX-1", "f429", &[])]).await;
    let body = TestApp::check_in_body("f429", "1.0.0", "a");
    assert_eq!(app.check_in("RX-1", &tokens[0], &body).await.status(), 200);
    let store = &app.server.state.store;
    assert!(store
        .revoke_device("RX-1", "another-replica", fota_server::store::now_ms())
        .await
        .unwrap());
    // Still cached here: nothing told this server.
    assert!(app.server.state.credentials.contains("RX-1"));
    let revoked = std::time::Instant::now();
    loop {
        let status = app.check_in("RX-1", &tokens[0], &body).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(10),
            "still accepted {:?} after another replica revoked it",
            revoked.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Revoking a device: its token stops working at once, its reports are refused, a second
/// revocation and an unknown device are clear refusals, viewers may not, and it is audited.
async fn a_revoked_device_is_refused(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app
        .provision(&[("RV-1", "f429", &[]), ("RV-2", "f429", &[])])
        .await;
    let body = TestApp::check_in_body("f429", "1.0.0", "a");
    assert_eq!(app.check_in("RV-1", &tokens[0], &body).await.status(), 200);
    let viewer = testkit::token(&app.server.state.store, "v", Role::Viewer).await;
    let refused = app
        .client
        .post(app.at("/v1/devices/RV-1/revoke"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "forbidden").await;
    let resp = app.post("/v1/devices/RV-1/revoke").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "RV-1");
    assert!(v["broker_account_deleted"].is_null(), "{v}");
    // Refused at once, though its credentials were cached by the check-in before.
    assert_error(
        app.check_in("RV-1", &tokens[0], &body).await,
        401,
        "unauthorized",
    )
    .await;
    let report = app
        .client
        .post(app.at("/v1/devices/RV-1/reports"))
        .bearer_auth(&tokens[0])
        .json(&json!({"events": [{"id": 1, "kind": "offer_accepted"}]}))
        .send()
        .await
        .unwrap();
    assert_error(report, 401, "unauthorized").await;
    // The other device is untouched.
    assert_eq!(app.check_in("RV-2", &tokens[1], &body).await.status(), 200);
    assert_error(
        app.post("/v1/devices/RV-1/revoke").send().await.unwrap(),
        409,
        "device_revoked",
    )
    .await;
    assert_error(
        app.post("/v1/devices/NOPE/revoke").send().await.unwrap(),
        404,
        "device_not_found",
    )
    .await;
    let audit: Value = app
        .get("/v1/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revokes: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "device.revoke")
        .collect();
    assert_eq!(revokes.len(), 1, "{audit:#}");
    assert_eq!(revokes[0]["detail"]["device"], "RV-1");
    assert_eq!(revokes[0]["actor"], "test-admin");
}

async fn provisioning_json_and_csv(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app
        .provision(&[("SL-1", "f429", &["city:a", "pole"]), ("SL-2", "f429", &[])])
        .await;
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    assert!(tokens[0].starts_with("fota_dev_"));

    let resp = app
        .post("/v1/devices")
        .header("content-type", "text/csv")
        .body("id,model,tags\nSL-3,f429,city:b\nSL-4,f429\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["devices"][0]["id"], "SL-3");

    let d: Value = app
        .get("/v1/devices/SL-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["model"], "f429");
    assert_eq!(d["tags"], json!(["city:a", "pole"]));
    assert_eq!(d["status"], "never_seen");
    // The token is never shown again, nor its hash.
    assert!(!d.to_string().contains(&tokens[0]));
    assert!(d.get("token_hash").is_none());
}

async fn provisioning_refusals(db: Db) {
    let app = spawn_app(db).await;
    app.provision(&[("SL-1", "f429", &[])]).await;
    // All or none: SL-2 must not exist after the conflict on SL-1.
    let resp = app
        .post("/v1/devices")
        .json(
            &json!({"devices": [{"id": "SL-2", "model": "f429"}, {"id": "SL-1", "model": "f429"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 409, "device_exists").await;
    assert_error(
        app.get("/v1/devices/SL-2").send().await.unwrap(),
        404,
        "device_not_found",
    )
    .await;

    let cases = [
        (json!({"devices": []}), "no_devices"),
        (
            json!({"devices": [{"id": "../../etc", "model": "f429"}]}),
            "invalid_device_id",
        ),
        (
            json!({"devices": [{"id": "ok", "model": "bad model"}]}),
            "invalid_model",
        ),
        (
            json!({"devices": [{"id": "ok", "model": "m", "tags": ["a/b"]}]}),
            "invalid_tag",
        ),
        (
            json!({"devices": [{"id": "x", "model": "m"}, {"id": "x", "model": "m"}]}),
            "duplicate_device_id",
        ),
        (
            json!({"devices": [{"id": "x", "model": "m", "extra": 1}]}),
            "invalid_body",
        ),
        (json!({"nope": []}), "invalid_body"),
    ];
    for (body, code) in cases {
        assert_error(
            app.post("/v1/devices").json(&body).send().await.unwrap(),
            400,
            code,
        )
        .await;
    }
    let resp = app
        .post("/v1/devices")
        .header("content-type", "application/json")
        .body("{\"devices\": [")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "malformed_json").await;
    let resp = app
        .post("/v1/devices")
        .header("content-type", "text/csv")
        .body("just-one-field\n")
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_csv").await;
    let resp = app
        .post("/v1/devices")
        .header("content-type", "application/xml")
        .body("<devices/>")
        .send()
        .await
        .unwrap();
    assert_error(resp, 415, "unsupported_media_type").await;
    // Over the 32 MiB provisioning limit.
    let huge = format!(
        "{{\"devices\": [{}]}}",
        "{\"id\":\"a\",\"model\":\"m\"},".repeat(1_500_000)
    );
    let resp = app
        .post("/v1/devices")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "payload_too_large").await;
}

async fn admin_auth_and_roles(db: Db) {
    let app = spawn_app(db).await;
    let viewer = testkit::token(&app.server.state.store, "viewer", Role::Viewer).await;
    let operator = testkit::token(&app.server.state.store, "op", Role::Operator).await;
    let body = json!({"devices": [{"id": "SL-1", "model": "f429"}]});

    let resp = app.client.get(app.at("/v1/devices")).send().await.unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .client
        .get(app.at("/v1/devices"))
        .bearer_auth("fota_adm_wrong")
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = app
        .client
        .get(app.at("/v1/devices"))
        .header("authorization", "Basic eDp5")
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;

    let resp = app
        .client
        .get(app.at("/v1/devices"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .post(app.at("/v1/devices"))
        .bearer_auth(&viewer)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;
    let resp = app
        .client
        .post(app.at("/v1/devices"))
        .bearer_auth(&operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Deleting a release needs admin.
    let resp = app
        .client
        .delete(app.at("/v1/releases/1"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "forbidden").await;

    // A device token is not an admin token.
    let tokens = app.provision(&[("SL-2", "f429", &[])]).await;
    let resp = app
        .client
        .get(app.at("/v1/devices"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    // A revoked token stops working.
    app.server
        .state
        .store
        .revoke_admin_token(2, "test", fota_server::store::now_ms())
        .await
        .unwrap();
    let resp = app
        .client
        .get(app.at("/v1/devices"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
}

async fn check_in_is_buffered_and_visible(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    let resp = app
        .check_in(
            "SL-1",
            &tokens[0],
            &TestApp::check_in_body("f429", "1.4.2+7", "b"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["poll_interval_s"], 60);
    assert!(v.get("offer").is_none());
    app.flush().await;
    let d: Value = app
        .get("/v1/devices/SL-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["firmware_version"], "1.4.2+7");
    assert_eq!(d["running_slot"], "b");
    assert_eq!(d["boot_state"], "confirmed");
    assert_eq!(d["rdp_level"], "level1");
    assert_eq!(d["wrp_mask"], 3);
    assert_eq!(d["status"], "online");
    assert!(d["last_seen_at"].as_i64().unwrap() > 0);
}

async fn device_auth_refusals(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app
        .provision(&[("SL-1", "f429", &[]), ("SL-2", "f429", &[])])
        .await;
    let body = TestApp::check_in_body("f429", "1.0.0", "a");
    // Another device's token: a device can only act as itself.
    assert_error(
        app.check_in("SL-1", &tokens[1], &body).await,
        401,
        "unauthorized",
    )
    .await;
    assert_error(
        app.check_in("SL-1", "fota_dev_nonsense", &body).await,
        401,
        "unauthorized",
    )
    .await;
    // Unknown device: the same answer, so ids cannot be probed.
    assert_error(
        app.check_in("SL-404", &tokens[0], &body).await,
        401,
        "unauthorized",
    )
    .await;
    // An admin token is not a device token.
    assert_error(
        app.check_in("SL-1", &app.admin, &body).await,
        401,
        "unauthorized",
    )
    .await;
    let resp = app
        .client
        .post(app.at("/v1/devices/SL-1/check-in"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    // Path traversal in the id.
    let resp = app
        .client
        .post(app.at("/v1/devices/..%2F..%2Fetc/check-in"))
        .bearer_auth(&tokens[0])
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_device_id").await;
    let resp = app
        .client
        .post(app.at("/v1/devices/SL-1/reports"))
        .bearer_auth(&tokens[1])
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
}

async fn check_in_body_refusals(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    let url = app.at("/v1/devices/SL-1/check-in");
    let send = |body: String, content_type: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(&tokens[0])
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_error(
        send("{\"model\":".into(), "application/json")
            .await
            .unwrap(),
        400,
        "malformed_json",
    )
    .await;
    assert_error(
        send("{}".into(), "application/json").await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    let mut bad_version = TestApp::check_in_body("f429", "1.0.0", "a");
    bad_version["firmware_version"] = json!("one");
    assert_error(
        send(bad_version.to_string(), "application/json")
            .await
            .unwrap(),
        400,
        "invalid_body",
    )
    .await;
    let ok = TestApp::check_in_body("f429", "1.0.0", "a").to_string();
    assert_error(
        send(ok, "text/plain").await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    // Bigger than the JSON body limit.
    let huge = format!("{{\"model\": \"{}\"}}", "x".repeat(300 * 1024));
    assert_error(
        send(huge, "application/json").await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    // The same for a report: every refusal is JSON, the framework's own body limit included.
    let huge_report = format!("{{\"events\": \"{}\"}}", "x".repeat(300 * 1024));
    assert_error(
        app.client
            .post(app.at("/v1/devices/SL-1/reports"))
            .bearer_auth(&tokens[0])
            .header("content-type", "application/json")
            .body(huge_report)
            .send()
            .await
            .unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    // The model it reports is not the one it was provisioned as.
    let other_model = TestApp::check_in_body("f407", "1.0.0", "a");
    assert_error(
        app.check_in("SL-1", &tokens[0], &other_model).await,
        409,
        "model_mismatch",
    )
    .await;
    // Huge headers: a JSON 431.
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&tokens[0])
        .header("x-junk", "y".repeat(64 * 1024))
        .json(&TestApp::check_in_body("f429", "1.0.0", "a"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 431, "headers_too_large").await;
    // Past what hyper buffers at all, the connection is cut (or answered 431), never a crash.
    let resp = app
        .client
        .post(&url)
        .header("x-junk", "y".repeat(1024 * 1024))
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status(), 431);
    }
    // The server still answers.
    let resp = app
        .check_in(
            "SL-1",
            &tokens[0],
            &TestApp::check_in_body("f429", "1.0.0", "a"),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

/// A reason with what an array literal or SQL quoting would have to escape.
const HOSTILE_REASON: &str = r#"link "down", {NULL} \ it's ü\"#;

async fn reports_are_idempotent(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    let report = json!({"events": [
        {"id": 1, "kind": "offer_accepted", "rollout_id": 3, "version": "1.5.0"},
        {"id": 2, "kind": "rolled_back", "rollout_id": 3, "version": "1.5.0", "reason": "3 failed trial boots"},
        // PostgreSQL receives a batch's events as array literals: quotes, backslashes, braces,
        // commas and the word NULL come back as sent.
        {"id": 3, "kind": "download_failed", "rollout_id": 3, "reason": HOSTILE_REASON},
        // Ids past i64::MAX are stored wrapped, still one per id.
        {"id": u64::MAX, "kind": "offer_accepted", "rollout_id": 3},
    ]});
    let post = || {
        app.client
            .post(app.at("/v1/devices/SL-1/reports"))
            .bearer_auth(&tokens[0])
            .json(&report)
            .send()
    };
    let first: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(first, json!({"stored": 4, "duplicates": 0}));
    let again: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(again, json!({"stored": 0, "duplicates": 4}));
    let d: Value = app
        .get("/v1/devices/SL-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = d["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    let rollback = events.iter().find(|e| e["event_id"] == 2).unwrap();
    assert_eq!(rollback["kind"], "rolled_back");
    assert_eq!(rollback["reason"], "3 failed trial boots");
    assert_eq!(rollback["rollout_id"], 3);
    let failed = events.iter().find(|e| e["event_id"] == 3).unwrap();
    assert_eq!(failed["reason"], HOSTILE_REASON);
    assert_eq!(failed["version"], Value::Null);

    let bad = [
        json!({"events": [{"id": 1, "kind": "exploded"}]}),
        json!({"events": (0..17).map(|i| json!({"id": i, "kind": "confirmed"})).collect::<Vec<_>>()}),
        json!({"events": [{"id": -1, "kind": "confirmed"}]}),
    ];
    for body in bad {
        let resp = app
            .client
            .post(app.at("/v1/devices/SL-1/reports"))
            .bearer_auth(&tokens[0])
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_body").await;
    }
}

async fn release_upload_and_listing(db: Db) {
    let app = spawn_app(db).await;
    let key = signing_key();
    let (a, b) = (
        image(SlotId::A, "1.4.2", 3, &key),
        image(SlotId::B, "1.4.2", 3, &key),
    );
    let resp = app.upload("f429", a.clone(), b.clone()).await;
    assert_eq!(resp.status(), 201);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["version"], "1.4.2");
    assert_eq!(r["security_counter"], 3);
    assert_eq!(r["model"], "f429");
    assert_eq!(r["created_by"], "test-admin");
    let images = r["images"].as_array().unwrap();
    assert_eq!(images[0]["slot"], "a");
    assert_eq!(images[1]["slot"], "b");
    assert_eq!(
        images[0]["sha256"],
        fota_protocol::image::Digest::of(&a).to_string()
    );
    assert_eq!(images[0]["size"], a.len());

    let id = r["id"].as_i64().unwrap();
    let got: Value = app
        .get(&format!("/v1/releases/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, r);
    app.upload(
        "f429",
        image(SlotId::A, "1.5.0", 3, &key),
        image(SlotId::B, "1.5.0", 3, &key),
    )
    .await;
    app.upload(
        "f407",
        image(SlotId::A, "1.5.0", 3, &key),
        image(SlotId::B, "1.5.0", 3, &key),
    )
    .await;
    let list: Value = app
        .get("/v1/releases?model=f429")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let versions: Vec<&str> = list["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.5.0", "1.4.2"]);

    // Delete: the artifact goes with it.
    let sha = images[0]["sha256"].as_str().unwrap().to_string();
    let resp = app
        .client
        .delete(app.at(&format!("/v1/releases/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_error(
        app.get(&format!("/v1/releases/{id}")).send().await.unwrap(),
        404,
        "release_not_found",
    )
    .await;
    let resp = app
        .client
        .get(app.at(&format!("/v1/artifacts/{sha}")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "artifact_not_found").await;
    let resp = app
        .client
        .delete(app.at(&format!("/v1/releases/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "release_not_found").await;
}

async fn release_upload_refusals(db: Db) {
    let app = spawn_app(db).await;
    let key = signing_key();
    let good_a = image(SlotId::A, "2.0.0", 1, &key);
    let good_b = image(SlotId::B, "2.0.0", 1, &key);
    assert_eq!(
        app.upload("f429", good_a.clone(), good_b.clone())
            .await
            .status(),
        201
    );
    assert_error(
        app.upload("f429", good_a.clone(), good_b.clone()).await,
        409,
        "duplicate_version",
    )
    .await;

    let unsigned = image_for(SlotId::A, 4096, "2.1.0".parse().unwrap())
        .build_unsigned()
        .unwrap();
    let b21 = image(SlotId::B, "2.1.0", 1, &key);
    assert_error(
        app.upload("f429", unsigned, b21.clone()).await,
        422,
        "unsigned_image",
    )
    .await;
    assert_error(
        app.upload(
            "f429",
            image(SlotId::A, "2.1.0", 1, &other_key()),
            b21.clone(),
        )
        .await,
        422,
        "untrusted_key",
    )
    .await;
    let mut bad_sig = image(SlotId::A, "2.1.0", 1, &key);
    let n = bad_sig.len();
    bad_sig[n - 10] ^= 1;
    assert_error(
        app.upload("f429", bad_sig, b21.clone()).await,
        422,
        "bad_signature",
    )
    .await;
    let mut flipped = image(SlotId::A, "2.1.0", 1, &key);
    flipped[0x200 + 100] ^= 1;
    assert_error(
        app.upload("f429", flipped, b21.clone()).await,
        422,
        "hash_mismatch",
    )
    .await;
    // The slot B build uploaded as slot A.
    assert_error(
        app.upload("f429", b21.clone(), b21.clone()).await,
        422,
        "wrong_slot",
    )
    .await;
    assert_error(
        app.upload("f429", image(SlotId::A, "2.1.1", 1, &key), b21.clone())
            .await,
        422,
        "version_mismatch",
    )
    .await;
    assert_error(
        app.upload("f429", image(SlotId::A, "2.1.0", 2, &key), b21.clone())
            .await,
        422,
        "security_counter_mismatch",
    )
    .await;
    assert_error(
        app.upload("f429", b"not an image".to_vec(), b21.clone())
            .await,
        422,
        "malformed_image",
    )
    .await;
    assert_error(
        app.upload("bad model", good_a.clone(), b21.clone()).await,
        400,
        "invalid_model",
    )
    .await;
    // Larger than a slot.
    let big = image_for(SlotId::A, 300 * 1024, "2.1.0".parse().unwrap())
        .sign(&key)
        .unwrap();
    assert_error(
        app.upload("f429", big, b21.clone()).await,
        413,
        "payload_too_large",
    )
    .await;
    // Missing and unknown fields.
    let form = reqwest::multipart::Form::new().text("model", "f429");
    assert_error(
        app.post("/v1/releases")
            .multipart(form)
            .send()
            .await
            .unwrap(),
        400,
        "missing_field",
    )
    .await;
    let form = reqwest::multipart::Form::new().text("color", "red");
    assert_error(
        app.post("/v1/releases")
            .multipart(form)
            .send()
            .await
            .unwrap(),
        400,
        "invalid_field",
    )
    .await;
    let resp = app
        .post("/v1/releases")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_multipart").await;
    // Nothing of the refused uploads was stored.
    let list: Value = app
        .get("/v1/releases")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["releases"].as_array().unwrap().len(), 1);
}

async fn upload_one(app: &TestApp) -> (Vec<u8>, String) {
    let key = signing_key();
    let a = image(SlotId::A, "1.0.0", 0, &key);
    let resp = app
        .upload("f429", a.clone(), image(SlotId::B, "1.0.0", 0, &key))
        .await;
    assert_eq!(resp.status(), 201);
    let sha = fota_protocol::image::Digest::of(&a).to_string();
    (a, sha)
}

async fn artifacts_serve_ranges(db: Db) {
    let app = spawn_app(db).await;
    let (a, sha) = upload_one(&app).await;
    let url = app.at(&format!("/v1/artifacts/{sha}"));
    let size = a.len();

    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], size.to_string().as_str());
    assert_eq!(resp.bytes().await.unwrap().as_ref(), a.as_slice());

    let resp = app
        .client
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 100-199/{size}").as_str()
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &a[100..200]);

    // Resume after a dropped link: from the last written offset to the end.
    let resp = app
        .client
        .get(&url)
        .header("range", "bytes=4096-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &a[4096..]);

    let resp = app
        .client
        .get(&url)
        .header("range", "bytes=-16")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &a[size - 16..]);

    let resp = app
        .client
        .get(&url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    assert_error(resp, 416, "range_not_satisfiable").await;

    // Multi-range is answered with the whole file.
    let resp = app
        .client
        .get(&url)
        .header("range", "bytes=0-1,4-5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), size);

    let resp = app.client.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], size.to_string().as_str());
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = app
        .client
        .get(&url)
        .header("if-none-match", format!("\"{sha}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
}

async fn artifact_refusals_and_cdn(db: Db) {
    let app = spawn_app(db).await;
    let (_, sha) = upload_one(&app).await;
    for bad in [
        "abc",
        "..%2F..%2Fetc%2Fpasswd",
        &"A".repeat(64),
        &format!("{}x", &sha[..63]),
    ] {
        let resp = app
            .client
            .get(app.at(&format!("/v1/artifacts/{bad}")))
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "invalid_sha256").await;
    }
    let resp = app
        .client
        .get(app.at(&format!("/v1/artifacts/{}", "0".repeat(64))))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "artifact_not_found").await;

    // With a CDN configured, downloads are redirected there.
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(db, data_dir.path()).await;
    config.cdn_base_url = Some("https://cdn.example.invalid/fota/".into());
    let cdn_app = testkit::spawn_with(db, data_dir, config).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(cdn_app.at(&format!("/v1/artifacts/{sha}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        format!("https://cdn.example.invalid/fota/{sha}").as_str()
    );
}

async fn device_listing_filters_and_summary(db: Db) {
    let app = spawn_app(db).await;
    let tokens = app
        .provision(&[
            ("A-1", "f429", &["city:a"]),
            ("A-2", "f429", &["city:a"]),
            ("B-1", "f429", &["city:b"]),
            ("C-1", "f407", &[]),
        ])
        .await;
    for (id, token, version) in [
        ("A-1", &tokens[0], "1.0.0"),
        ("A-2", &tokens[1], "1.1.0"),
        ("B-1", &tokens[2], "1.1.0"),
    ] {
        let resp = app
            .check_in(id, token, &TestApp::check_in_body("f429", version, "a"))
            .await;
        assert_eq!(resp.status(), 200);
    }
    app.flush().await;
    let ids = |v: Value| -> Vec<String> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    let app = &app;
    let list = |q: &'static str| async move {
        app.get(&format!("/v1/devices{q}"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(ids(list("?model=f429").await), ["A-1", "A-2", "B-1"]);
    assert_eq!(ids(list("?tag=city:a").await), ["A-1", "A-2"]);
    assert_eq!(ids(list("?version=1.1.0").await), ["A-2", "B-1"]);
    assert_eq!(ids(list("?status=never_seen").await), ["C-1"]);
    assert_eq!(ids(list("?status=online").await), ["A-1", "A-2", "B-1"]);
    assert_eq!(ids(list("?status=silent").await), Vec::<String>::new());
    let page1 = list("?limit=2").await;
    assert_eq!(ids(page1.clone()), ["A-1", "A-2"]);
    assert_eq!(page1["next_after"], "A-2");
    let page2 = list("?limit=2&after=A-2").await;
    assert_eq!(ids(page2.clone()), ["B-1", "C-1"]);
    let page3 = list("?limit=2&after=C-1").await;
    assert_eq!(ids(page3.clone()), Vec::<String>::new());
    assert!(page3["next_after"].is_null());

    for (q, code) in [
        ("?limit=0", "invalid_query"),
        ("?limit=5000", "invalid_query"),
        ("?status=sleepy", "invalid_query"),
        ("?color=red", "invalid_query"),
        ("?version=x.y", "invalid_query"),
        ("?tag=a/b", "invalid_tag"),
    ] {
        assert_error(
            app.get(&format!("/v1/devices{q}")).send().await.unwrap(),
            400,
            code,
        )
        .await;
    }

    let s: Value = app
        .get("/v1/fleet/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["total"], 4);
    assert_eq!(s["never_seen"], 1);
    assert_eq!(s["online"], 3);
    assert_eq!(s["silent"], 0);
    assert_eq!(
        s["by_version"][0],
        json!({"version": "1.1.0", "devices": 2})
    );
}

async fn shutdown_flushes_buffered_facts(db: Db) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = testkit::test_config(db, data_dir.path()).await;
    // Long enough that only the shutdown flush can write it.
    config.flush_interval = std::time::Duration::from_secs(3600);
    let app = testkit::spawn_with(db, data_dir, config.clone()).await;
    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    let resp = app
        .check_in(
            "SL-1",
            &tokens[0],
            &TestApp::check_in_body("f429", "3.0.0", "a"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let TestApp {
        server, data_dir, ..
    } = app;
    server.shutdown().await.unwrap();

    let store = fota_server::store::Store::connect(&config.database_url)
        .await
        .unwrap();
    let d = store.device("SL-1", 0).await.unwrap().unwrap();
    assert_eq!(d.firmware_version.as_deref(), Some("3.0.0"));
    store.close().await;
    drop(data_dir);
}

/// The facts flush, straight on the store: a repeated check-in moves only the last-seen time, a
/// changed one moves the facts it changed and keeps what it did not say, older news (another
/// replica's flush came later) changes nothing, and a report moves only the time.
async fn facts_flushes_keep_the_newest_news(db: Db) {
    use fota_server::store::{DeviceCheckInFacts, DeviceFacts};
    let app = spawn_app(db).await;
    app.provision(&[("FX-1", "f429", &[]), ("FX-2", "f429", &[])])
        .await;
    let store = &app.server.state.store;
    let facts = |version: &str, slot, counter| {
        Some(DeviceCheckInFacts {
            firmware_version: version.parse().unwrap(),
            running_slot: slot,
            boot_state: fota_protocol::messages::BootState::Confirmed,
            bootloader_version: "1.0.0".parse().unwrap(),
            rdp_level: fota_protocol::messages::RdpLevel::Level1,
            wrp_mask: 3,
            security_counter: counter,
        })
    };
    let flush = |rows: Vec<(&'static str, i64, Option<DeviceCheckInFacts>)>| async move {
        let rows: Vec<(String, DeviceFacts)> = rows
            .into_iter()
            .map(|(id, at, check_in)| {
                (
                    id.to_string(),
                    DeviceFacts {
                        last_seen_at: at,
                        check_in,
                    },
                )
            })
            .collect();
        store.flush_device_facts(&rows).await.unwrap();
    };
    let read = |id: &'static str| async move {
        let d = store.device(id, 0).await.unwrap().unwrap();
        (
            d.last_seen_at,
            d.firmware_version,
            d.running_slot,
            d.security_counter,
        )
    };
    let v1 = facts("1.0.0", SlotId::A, Some(4));
    flush(vec![("FX-1", 100, v1), ("FX-2", 100, v1)]).await;
    let first = (
        Some(100),
        Some("1.0.0".to_string()),
        Some("a".to_string()),
        Some(4),
    );
    assert_eq!(read("FX-1").await, first);
    // The same facts again: only the time moves.
    flush(vec![("FX-1", 200, v1), ("FX-2", 200, None)]).await;
    let repeated = (
        Some(200),
        Some("1.0.0".to_string()),
        Some("a".to_string()),
        Some(4),
    );
    assert_eq!(read("FX-1").await, repeated);
    assert_eq!(read("FX-2").await, repeated, "a report moves only the time");
    // New facts; a counter not reported keeps the stored one.
    flush(vec![("FX-1", 300, facts("1.1.0", SlotId::B, None))]).await;
    let updated = (
        Some(300),
        Some("1.1.0".to_string()),
        Some("b".to_string()),
        Some(4),
    );
    assert_eq!(read("FX-1").await, updated);
    // Older news than what is stored changes nothing, facts or time.
    flush(vec![("FX-1", 250, facts("0.9.0", SlotId::A, Some(1)))]).await;
    assert_eq!(read("FX-1").await, updated);
    // The version filter reads the new version (the flush moved the column it selects by).
    let listed = store
        .list_devices(
            &fota_server::store::DeviceFilter {
                version: Some("1.1.0".into()),
                limit: 10,
                ..Default::default()
            },
            0,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = listed.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["FX-1"]);
}

async fn ops_endpoints(db: Db) {
    let app = spawn_app(db).await;
    let health: Value = app
        .client
        .get(app.at("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(app.at("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let tokens = app.provision(&[("SL-1", "f429", &[])]).await;
    app.check_in(
        "SL-1",
        &tokens[0],
        &TestApp::check_in_body("f429", "1.0.0", "a"),
    )
    .await;
    let metrics = app
        .client
        .get(app.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("fota_check_ins_total 1"), "{metrics}");
    assert!(
        metrics.contains("route=\"/v1/devices/{id}/check-in\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("SL-1"),
        "device ids must not become metric labels"
    );

    assert_error(
        app.client.get(app.at("/v1/nothing")).send().await.unwrap(),
        404,
        "no_route",
    )
    .await;
    // Every answer carries a request id; an error body names it too. A client's id is kept
    // when it is a UUID, replaced otherwise.
    for (sent, kept) in [
        (Some("9b2f8a4e-3c1d-4e5f-8a6b-7c8d9e0f1a2b"), true),
        (Some("not-a-uuid"), false),
        (None, false),
    ] {
        let mut req = app.client.get(app.at("/v1/nothing"));
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.unwrap();
        let header = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["request_id"], header.as_str(), "{body}");
        assert_eq!(Some(header.as_str()) == sent, kept, "{sent:?} -> {header}");
        assert_eq!(header.len(), 36, "a UUID: {header}");
    }
    assert_error(
        app.client.put(app.at("/healthz")).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
}

/// The OpenAPI document lists exactly the routes the server has: every documented operation is
/// routed (never `no_route` or 405), and known routes are documented.
#[tokio::test]
async fn openapi_matches_the_routes() {
    let app = spawn_app(Db::Sqlite).await;
    let doc: Value = app
        .client
        .get(app.at("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "head", "patch"] {
            if item.get(method).is_some() {
                operations.push((method.to_string(), path.clone()));
            }
        }
    }
    for expected in [
        ("post", "/v1/devices/{id}/check-in"),
        ("post", "/v1/devices/{id}/reports"),
        ("post", "/v1/devices"),
        ("get", "/v1/devices"),
        ("get", "/v1/devices/{id}"),
        ("get", "/v1/fleet/summary"),
        ("post", "/v1/releases"),
        ("get", "/v1/releases"),
        ("get", "/v1/releases/{id}"),
        ("delete", "/v1/releases/{id}"),
        ("get", "/v1/artifacts/{sha256}"),
        ("head", "/v1/artifacts/{sha256}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ] {
        assert!(
            operations.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} is not documented"
        );
    }
    for (method, path) in &operations {
        let concrete = path
            .replace("{id}", "1")
            .replace("{sha256}", &"0".repeat(64));
        let req = app
            .client
            .request(method.to_uppercase().parse().unwrap(), app.at(&concrete))
            .send()
            .await
            .unwrap();
        let status = req.status();
        let body = req.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert!(
            !body.contains("no_route"),
            "{method} {path} is documented but not routed"
        );
    }
}

/// The audit log, newest first.
async fn audit_entries(app: &TestApp) -> Vec<Value> {
    let log: Value = app
        .get("/v1/audit?limit=1000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["entries"].as_array().unwrap().clone()
}

/// The newest entry of `action`, and how many there are.
fn newest<'a>(entries: &'a [Value], action: &str) -> (&'a Value, usize) {
    let of: Vec<&Value> = entries.iter().filter(|e| e["action"] == action).collect();
    let first = of
        .first()
        .unwrap_or_else(|| panic!("no {action} entry in {entries:#?}"));
    (first, of.len())
}

/// Every operator action outside rollouts is in the audit log with its actor and what it did:
/// token creation and revocation, provisioning one device and many, release upload and delete.
/// A refused action leaves no entry, and no entry holds a secret.
async fn every_operator_action_is_audited(db: Db) {
    let app = spawn_app(db).await;
    let store = &app.server.state.store;
    // The harness made its admin token through the store, as `fota token create` does.
    let entries = audit_entries(&app).await;
    let (created, 1) = newest(&entries, "token.create") else {
        panic!("one token.create: {entries:#?}")
    };
    assert_eq!(created["actor"], "testkit");
    assert_eq!(created["detail"]["name"], "test-admin");
    assert_eq!(created["detail"]["role"], "admin");
    let admin_id = created["detail"]["token_id"].as_i64().unwrap();

    // A second token, made and revoked.
    let viewer = testkit::token(store, "night-shift", Role::Viewer).await;
    let entries = audit_entries(&app).await;
    let (created, 2) = newest(&entries, "token.create") else {
        panic!("two token.create: {entries:#?}")
    };
    assert_eq!(created["detail"]["name"], "night-shift");
    assert_eq!(created["detail"]["role"], "viewer");
    let viewer_id = created["detail"]["token_id"].as_i64().unwrap();
    assert_ne!(viewer_id, admin_id);
    let revoked = store
        .revoke_admin_token(viewer_id, "local:ops", fota_server::store::now_ms())
        .await
        .unwrap();
    assert_eq!(revoked.name, "night-shift");
    let entries = audit_entries(&app).await;
    let (revoke, 1) = newest(&entries, "token.revoke") else {
        panic!("one token.revoke: {entries:#?}")
    };
    assert_eq!(revoke["actor"], "local:ops");
    assert_eq!(
        revoke["detail"],
        json!({"token_id": viewer_id, "name": "night-shift", "role": "viewer"})
    );
    // Revoking it again is refused and recorded nothing.
    assert!(store
        .revoke_admin_token(viewer_id, "local:ops", fota_server::store::now_ms())
        .await
        .is_err());
    assert_eq!(newest(&audit_entries(&app).await, "token.revoke").1, 1);

    // One device, then a CSV batch of three.
    let device_tokens = app.provision(&[("SL-1", "f429", &["pole"])]).await;
    let entries = audit_entries(&app).await;
    let (one, 1) = newest(&entries, "devices.register") else {
        panic!("one devices.register: {entries:#?}")
    };
    assert_eq!(one["actor"], "test-admin");
    assert_eq!(
        one["detail"],
        json!({"count": 1, "device": "SL-1", "model": "f429", "tags": ["pole"]})
    );
    let resp = app
        .post("/v1/devices")
        .header("content-type", "text/csv")
        .body("SL-2,f429\nSL-3,f407\nSL-4,f429\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let batch: Value = resp.json().await.unwrap();
    let entries = audit_entries(&app).await;
    let (bulk, 2) = newest(&entries, "devices.register") else {
        panic!("two devices.register: {entries:#?}")
    };
    assert_eq!(bulk["actor"], "test-admin");
    assert_eq!(
        bulk["detail"],
        json!({"count": 3, "models": ["f407", "f429"], "first_device": "SL-2", "last_device": "SL-4"})
    );
    // A refused batch (SL-1 exists) records nothing.
    let resp = app
        .post("/v1/devices")
        .json(
            &json!({"devices": [{"id": "SL-5", "model": "f429"}, {"id": "SL-1", "model": "f429"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_error(resp, 409, "device_exists").await;
    assert_eq!(newest(&audit_entries(&app).await, "devices.register").1, 2);

    // A release, uploaded and deleted.
    let key = signing_key();
    let (a, b) = (
        image(SlotId::A, "1.4.2", 3, &key),
        image(SlotId::B, "1.4.2", 3, &key),
    );
    let sha = |bytes: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    let (sha_a, sha_b) = (sha(&a), sha(&b));
    let resp = app.upload("f429", a.clone(), b.clone()).await;
    assert_eq!(resp.status(), 201);
    let release_id = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let expected = json!({
        "model": "f429", "version": "1.4.2", "security_counter": 3,
        "artifact_sha256_a": sha_a, "artifact_sha256_b": sha_b,
    });
    let entries = audit_entries(&app).await;
    let (upload, 1) = newest(&entries, "release.upload") else {
        panic!("one release.upload: {entries:#?}")
    };
    assert_eq!(upload["actor"], "test-admin");
    assert_eq!(upload["release_id"], release_id);
    assert_eq!(upload["rollout_id"], Value::Null);
    assert_eq!(upload["detail"], expected);
    // The same version again is refused and recorded nothing.
    assert_error(app.upload("f429", a, b).await, 409, "duplicate_version").await;
    assert_eq!(newest(&audit_entries(&app).await, "release.upload").1, 1);
    let resp = app
        .client
        .delete(app.at(&format!("/v1/releases/{release_id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let entries = audit_entries(&app).await;
    let (delete, 1) = newest(&entries, "release.delete") else {
        panic!("one release.delete: {entries:#?}")
    };
    assert_eq!(delete["actor"], "test-admin");
    assert_eq!(delete["release_id"], release_id);
    assert_eq!(delete["detail"], expected);
    // Deleting it again is a 404 and records nothing.
    let resp = app
        .client
        .delete(app.at(&format!("/v1/releases/{release_id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "release_not_found").await;
    assert_eq!(newest(&audit_entries(&app).await, "release.delete").1, 1);

    // Newest first, and not one secret in the whole log.
    let entries = audit_entries(&app).await;
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "release.delete",
            "release.upload",
            "devices.register",
            "devices.register",
            "token.revoke",
            "token.create",
            "token.create",
        ]
    );
    let log = Value::Array(entries).to_string();
    let mut secrets = vec![app.admin.clone(), viewer];
    secrets.extend(device_tokens);
    secrets.extend(
        batch["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["token"].as_str().unwrap().to_string()),
    );
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret in the audit log");
    }
    assert!(
        !log.contains("fota_adm_") && !log.contains("fota_dev_"),
        "{log}"
    );
    // Entries of no rollout stay out of a rollout's log.
    let none: Value = app
        .get("/v1/audit?rollout_id=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["entries"], json!([]));
}
