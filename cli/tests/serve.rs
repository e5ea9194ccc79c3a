//! `fota serve` and `fota token` as processes: a server starts on a fresh data directory and
//! stops cleanly on SIGTERM, bad command lines fail in one line, and two `fota serve` replicas on
//! one PostgreSQL database take every rollout decision once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_server::domain::cohort;
use fota_testkit::{self as testkit, fleet, release, wait_for, Behaviour};
use serde_json::{json, Value};
use std::time::Duration;

/// The `fota` binary under test.
const FOTA: &str = env!("CARGO_BIN_EXE_fota");

/// A stage that advances once `min_sample` devices decided and at most `max_rate` failed.
fn stage(percent: f64, min_sample: u64, max_rate: f64, deadline_s: i64) -> Value {
    json!({"percent": percent, "bake_s": 0, "min_sample": min_sample, "max_failure_rate": max_rate, "confirm_deadline_s": deadline_s})
}

/// A request id a client chose.
const REQUEST_ID: &str = "9b2f8a4e-3c1d-4e5f-8a6b-7c8d9e0f1a2b";

/// `fota serve` as a process: starts on a fresh data directory, answers, and exits 0 on SIGTERM
/// after flushing; its log lines carry request ids and no colour codes.
#[test]
fn serve_process_starts_and_stops_on_sigterm() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let token = Command::new(FOTA)
        .args([
            "token",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
            "--create",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("fota_adm_"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(FOTA)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("FOTA_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before serving"
        );
        if line.contains("fota serving") {
            break;
        }
    }
    assert!(
        dir.path().join("fota.db").exists(),
        "SQLite file created on first run"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("http://127.0.0.1:{port}/v1/fleet/summary"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-request-id"));
        // A refused call: its id (the client's own, a UUID) comes back in the header and the
        // error body, and the server's log line of it carries the same id.
        let resp = client
            .get(format!("http://127.0.0.1:{port}/v1/rollouts/999"))
            .bearer_auth(&token)
            .header("x-request-id", REQUEST_ID)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-request-id"], REQUEST_ID);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["request_id"], REQUEST_ID, "{body}");
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("stopped"), "{rest}");
    assert!(!rest.contains(&token), "a secret reached the log");
    assert!(
        rest.lines()
            .any(|l| l.contains("request refused") && l.contains(REQUEST_ID)),
        "the refused call's log line carries its id: {rest}"
    );
    assert!(
        !rest.contains('\u{1b}'),
        "no colour codes in a log that is not a terminal: {rest:?}"
    );
}

fota_testkit::backend_tests!(token_create_needs_the_servers_database);

/// `fota token create` where there is no server's database refuses in one line that says how,
/// and makes nothing (no SQLite file, no schema in an empty PostgreSQL database); `--create`
/// makes one, `--json` prints the token with its id, name and role; then `create` and `revoke`
/// work on it without `--create`.
async fn token_create_needs_the_servers_database(db: testkit::Db) {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let db_args: Vec<String> = match db {
        testkit::Db::Sqlite => vec!["--data-dir".into(), dir.path().to_str().unwrap().into()],
        testkit::Db::Postgres => vec![
            "--database-url".into(),
            testkit::fresh_postgres_database().await,
        ],
    };
    let fota = |args: &[&str]| {
        Command::new(FOTA)
            .args(args)
            .args(&db_args)
            .current_dir(dir.path())
            .env_remove("FOTA_DATA_DIR")
            .env_remove("FOTA_DATABASE_URL")
            .env_remove("FOTA_CONFIG")
            .output()
            .unwrap()
    };
    for args in [
        &["token", "create", "--name", "ops", "--role", "admin"][..],
        &["token", "revoke", "--id", "1"][..],
    ] {
        let out = fota(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: no fota database at ")
                && err.contains("point --data-dir, --database-url or --config at the server's")
                && err.contains("--create"),
            "{err}"
        );
    }
    match db {
        testkit::Db::Sqlite => assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing made"
        ),
        testkit::Db::Postgres => {
            assert!(!fota_server::store::Store::has_schema(&db_args[1])
                .await
                .unwrap())
        }
    }

    let out = fota(&[
        "token", "create", "--name", "ops", "--role", "admin", "--create", "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["id"], 1);
    assert_eq!(made["name"], "ops");
    assert_eq!(made["role"], "admin");
    assert!(
        made["token"].as_str().unwrap().starts_with("fota_adm_"),
        "{made}"
    );
    if db == testkit::Db::Sqlite {
        assert!(dir.path().join("fota.db").is_file());
    }

    // Now there is a database: no --create needed.
    let out = fota(&["token", "create", "--name", "ci", "--role", "viewer"]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.trim().starts_with("fota_adm_"), "{token}");
    let note = String::from_utf8(out.stderr).unwrap();
    assert!(
        note.starts_with("token 2 for \"ci\" with role viewer"),
        "{note}"
    );
    let out = fota(&["token", "revoke", "--id", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "revoked token 2\n");
}

/// The operator CLI over HTTPS: `fota serve --tls-cert --tls-key` with a self-signed
/// certificate made here, and `fota audit` / `fota release list` against it over https://,
/// trusting it with `--ca-cert` or `FOTA_CA_CERT`. Without that trust, and over plain http to
/// the TLS port, each call fails in one line that says why.
#[test]
fn the_cli_speaks_https_to_a_tls_fota_serve() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Output, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let token = Command::new(FOTA)
        .args([
            "token", "create", "--name", "ops", "--role", "admin", "--create",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(FOTA)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("FOTA_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("fota serving") {
        line.clear();
        if log.read_line(&mut line).unwrap() == 0 {
            let _ = server.kill();
            panic!("fota serve exited before serving");
        }
    }
    // Keep reading its log, so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));

    let fota = |server_url: &str, args: &[&str], ca_env: Option<&std::path::Path>| -> Output {
        let mut cmd = Command::new(FOTA);
        cmd.args(args)
            .env("FOTA_SERVER", server_url)
            .env("FOTA_TOKEN", &token)
            .env_remove("FOTA_CA_CERT");
        if let Some(ca) = ca_env {
            cmd.env("FOTA_CA_CERT", ca);
        }
        cmd.output().unwrap()
    };
    let one_error = |out: &Output| -> String {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8(out.stderr.clone()).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        err
    };
    let cert_arg = cert.to_str().unwrap();
    let mut failures = Vec::new();
    for host in ["127.0.0.1", "localhost"] {
        let https = format!("https://{host}:{port}");
        // Trusted with the flag: the audit log over TLS (the token's creation is in it).
        let out = fota(&https, &["audit", "--ca-cert", cert_arg], None);
        let audit = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !audit.contains("token.create") {
            failures.push(format!("{https} with --ca-cert: {out:?}"));
        }
        // Trusted through the environment.
        let out = fota(&https, &["release", "list"], Some(&cert));
        if !(out.status.success() && out.stdout == b"no releases\n") {
            failures.push(format!("{https} with FOTA_CA_CERT: {out:?}"));
        }
    }
    // Not trusted: one line that says so and how to trust it.
    let https = format!("https://127.0.0.1:{port}");
    let err = one_error(&fota(&https, &["audit"], None));
    assert!(
        err.starts_with(&format!("error: cannot reach {https}: "))
            && err.contains("certificate")
            && err.contains("--ca-cert FILE or FOTA_CA_CERT"),
        "{err}"
    );
    // A CA file that is not one.
    let err = one_error(&fota(&https, &["audit", "--ca-cert", "nope.pem"], None));
    assert!(
        err.starts_with("error: cannot read --ca-cert nope.pem"),
        "{err}"
    );
    let err = one_error(&fota(
        &https,
        &["audit", "--ca-cert", key.to_str().unwrap()],
        None,
    ));
    assert!(err.contains("holds no PEM certificate"), "{err}");
    // Plain http to the TLS port gets no answer it can read.
    let err = one_error(&fota(&format!("http://127.0.0.1:{port}"), &["audit"], None));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    let _ = server.kill();
    let _ = server.wait();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Bad command lines of the server commands: one line, non-zero exit.
#[test]
fn serve_and_token_usage_errors_are_one_line() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["serve", "--listen", "nonsense"],
        vec![
            "serve",
            "--database-url",
            "mysql://x/y",
            "--listen",
            "127.0.0.1:0",
        ],
        vec!["token", "create", "--name", "x", "--role", "emperor"],
        vec!["serve", "--config", "/nonexistent/fota.toml"],
    ] {
        let out = Command::new(FOTA)
            .args(&args)
            .env("FOTA_DATA_DIR", dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
    }
}

/// Two `fota serve` processes on one PostgreSQL database, devices talking to either under
/// concurrent reports: no stage advances twice, and no device is offered beyond the stage it was
/// offered in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "PostgreSQL: run with FOTA_TEST_POSTGRES_URL set (scripts/test does)"]
async fn two_replicas_on_one_postgres_decide_once() {
    testkit::on_postgres(two_replicas_decide_once()).await;
}

/// An image uploaded through `a` is served by `b`, whose data directory never saw it: whole, and
/// a Range of it, byte for byte the same.
async fn artifact_served_by_the_other_replica(
    a: &testkit::Remote,
    b: &testkit::Remote,
    release: i64,
    b_dir: &std::path::Path,
) {
    use testkit::Api as _;
    let record: Value = b
        .admin_get(&format!("/v1/releases/{release}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = record["images"][1]["sha256"].as_str().unwrap().to_string();
    assert!(
        !b_dir.join("artifacts").join(&sha).exists(),
        "replica b's data directory already holds the upload"
    );
    let whole = a
        .client()
        .get(a.url_of(&format!("/v1/artifacts/{sha}")))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().await.unwrap();
    let part = b
        .client()
        .get(b.url_of(&format!("/v1/artifacts/{sha}")))
        .header("range", "bytes=1000-4999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), whole.slice(1000..5000));
    let again = b
        .client()
        .get(b.url_of(&format!("/v1/artifacts/{sha}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.bytes().await.unwrap(), whole);
}

async fn two_replicas_decide_once() {
    use std::sync::Arc;
    use testkit::Api as _;
    let database_url = testkit::fresh_postgres_database().await;
    let store = fota_server::store::Store::connect(&database_url)
        .await
        .unwrap();
    let admin = testkit::token(&store, "ops", fota_server::domain::auth::Role::Admin).await;
    // Replicas on separate hosts share the database and nothing else: separate data
    // directories, so an image uploaded through one is served by the other from the database.
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a =
        Arc::new(testkit::spawn_process(FOTA.as_ref(), &database_url, dir_a.path(), &admin).await);
    let b =
        Arc::new(testkit::spawn_process(FOTA.as_ref(), &database_url, dir_b.path(), &admin).await);
    let devices = fleet(a.as_ref(), "RP", 300, "f429", "1.0.0").await;
    let rel = release(a.as_ref(), "f429", "5.0.0", 1).await;
    artifact_served_by_the_other_replica(a.as_ref(), b.as_ref(), rel, dir_b.path()).await;
    let stages = [
        stage(10.0, 5, 0.5, 60),
        stage(40.0, 5, 0.5, 60),
        stage(100.0, 5, 0.5, 60),
    ];
    let id = testkit::start_rollout(b.as_ref(), json!({"release_id": rel, "stages": stages})).await
        ["id"]
        .as_i64()
        .unwrap();

    let mut tasks = Vec::new();
    for (n, mut d) in devices.into_iter().enumerate() {
        let (a, b) = (a.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            let mut round = n;
            while d.version != "5.0.0" && std::time::Instant::now() < deadline {
                // Alternate replicas per round, so check-ins and reports interleave.
                let app = if round % 2 == 0 {
                    a.as_ref()
                } else {
                    b.as_ref()
                };
                round += 1;
                if let Some(offer) = d.check_in(app).await {
                    let other = if round % 2 == 0 {
                        a.as_ref()
                    } else {
                        b.as_ref()
                    };
                    d.take(other, &offer, Behaviour::Good).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            d
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    let s = wait_for(a.as_ref(), id, Duration::from_secs(10), |s| {
        s["state"] == "completed"
    })
    .await;
    assert_eq!(s["state"], "completed", "{s:#}");
    assert!(done.iter().all(|d| d.version == "5.0.0"));

    let audit: Value = a
        .admin_get(&format!("/v1/audit?rollout_id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let count = |action: &str| {
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    assert_eq!(count("rollout.advance"), 2, "{audit:#}");
    assert_eq!(count("rollout.complete"), 1);
    // Each stage takes the lowest ranks it reaches: 10%, 40%, 100% of the 300 targets.
    let rows = store.rollout_devices(id).await.unwrap();
    let ranks: Vec<u32> = rows.iter().map(|(_, _, rank, _)| *rank as u32).collect();
    let thresholds =
        [30, 120, 300].map(|reach| cohort::threshold_for_count(&mut ranks.clone(), reach));
    for (device, state, rank, stage) in rows {
        assert_eq!(state, "confirmed", "{device}");
        let stage = stage.expect("offered in a stage") as usize;
        assert!(
            cohort::is_in(rank as u32, thresholds[stage]),
            "{device} offered in stage {} beyond its cohort",
            stage + 1
        );
    }
    // Every offer a device received was for this rollout and this release.
    for d in &done {
        assert!(
            d.offers.iter().all(|(r, v)| *r == id && v == "5.0.0"),
            "{:?}",
            d.offers
        );
    }
    store.close().await;
}
