//! The API document holds the server to its word: schemathesis generates requests from
//! `/openapi.json` (valid ones and ones that break the schema) against a real server on SQLite,
//! and fails on any 5xx, any status the document does not list, any response that does not
//! match its documented schema or content type, and any schema-violating request the server
//! accepts.
//!
//! Needs `FOTA_SCHEMATHESIS`, a schemathesis executable (scripts/setup installs one in the
//! project's venv and scripts/test sets it). The test is `#[ignore]`d, so a plain `cargo test`
//! lists it as ignored rather than passed; run without `FOTA_SCHEMATHESIS`, it fails.
//!
//! Three bounded runs: every operation with an operator token and random ids (refusals,
//! negative data); the same with the ids of real devices, releases, rollouts and artifacts, so
//! generated requests reach the handlers' logic; and the device routes with a device's own
//! token and id. `positive_data_acceptance` is left out: some rules cannot be written as a JSON
//! schema (a signature that verifies, ids unique within a batch, exactly one of a stage's
//! `percent` and `devices`), so a schema-valid request may rightly be refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_testkit::{provision_devices, release, spawn_app, start_rollout, Db, TestApp};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

fn schemathesis() -> PathBuf {
    match std::env::var_os("FOTA_SCHEMATHESIS") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "FOTA_SCHEMATHESIS is not set: point it at a schemathesis executable (scripts/setup \
             installs one in the project's venv)"
        ),
    }
}

/// Run schemathesis with `config` (TOML) against the app; panics with its report on failure.
fn run(st: &Path, app: &TestApp, dir: &Path, name: &str, config: &str, extra: &[&str]) {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let out = Command::new(st)
        // Its cache of found crashes goes to the scratch directory, not the source tree.
        .current_dir(dir)
        .arg("--config-file")
        .arg(&config_path)
        .args(["run", &format!("{}/openapi.json", app.url)])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "25",
            "--seed",
            "20261130",
            // One worker: CPython 3.11's ast.parse is not thread-safe ("AST constructor
            // recursion depth mismatch"), and hypothesis calls it while generating.
            "--workers",
            "1",
            "--no-color",
        ])
        .args(extra)
        .output()
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis ({name}) failed:\n{report}"
    );
    // It must really have tested something.
    assert!(report.contains("Tested:"), "{report}");
    eprintln!("schemathesis ({name}):\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis: set FOTA_SCHEMATHESIS (scripts/test does)"]
async fn the_server_keeps_to_its_api_document() {
    let st = schemathesis();
    let app = spawn_app(Db::Sqlite).await;
    let devices = provision_devices(&app, "ST", 3, "f429").await;
    let (device_id, device_token) = devices[0].clone();
    let rel = release(&app, "f429", "1.1.0", 1).await;
    let rollout = start_rollout(
        &app,
        json!({"release_id": rel, "stages": [{"percent": 100, "min_sample": 1}]}),
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let release: serde_json::Value = app
        .get(&format!("/v1/releases/{rel}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let artifact = release["images"][0]["sha256"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let admin = app.admin.clone();
    let device_routes = r"^/v1/devices/\{id\}/(check-in|reports)$";

    // The schemathesis process is synchronous; the server keeps serving on the runtime.
    let st2 = st.clone();
    let app_ref = &app;
    tokio::task::block_in_place(|| {
        run(
            &st2,
            app_ref,
            dir.path(),
            "random-ids",
            &format!("headers = {{ Authorization = \"Bearer {admin}\" }}\n"),
            &[],
        );
        run(
            &st2,
            app_ref,
            dir.path(),
            "real-ids",
            &format!(
                r#"headers = {{ Authorization = "Bearer {admin}" }}

[[operations]]
include-path-regex = "^/v1/rollouts/"
parameters = {{ "path.id" = {rollout} }}

[[operations]]
include-path-regex = "^/v1/releases/"
parameters = {{ "path.id" = {rel} }}

[[operations]]
include-path-regex = '^/v1/devices/\{{id\}}$'
parameters = {{ "path.id" = "{device_id}" }}

[[operations]]
include-path-regex = "^/v1/artifacts/"
parameters = {{ "path.sha256" = "{artifact}" }}
"#
            ),
            &["--exclude-path-regex", device_routes],
        );
        run(
            &st2,
            app_ref,
            dir.path(),
            "device",
            &format!(
                r#"headers = {{ Authorization = "Bearer {device_token}" }}
parameters = {{ "path.id" = "{device_id}" }}
"#
            ),
            &["--include-path-regex", device_routes],
        );
    });
}
