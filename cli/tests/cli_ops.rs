//! The operator commands (`fota release|rollout|rollback|devices|audit`) end to end: the real
//! binary against a real server started in this test's runtime (SQLite). The binary runs as a
//! child process awaited with tokio, so the server keeps serving meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_protocol::SlotId;
use fota_testkit::{
    self as testkit, backend_tests, fleet, image, release, signing_key, spawn_app, wait_for,
    Behaviour, Db, TestApp,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// What a run of `fota` left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `fota` pointed at a server, with or without a token.
struct Fota {
    server: String,
    token: Option<String>,
    dir: tempfile::TempDir,
}

impl Fota {
    fn new(app: &TestApp) -> Self {
        Self {
            server: app.url.clone(),
            token: Some(app.admin.clone()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// The command, with `FOTA_SERVER` (and `FOTA_TOKEN`) set and nothing inherited.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fota"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("FOTA_TOKEN")
            .env("FOTA_SERVER", &self.server)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            cmd.env("FOTA_TOKEN", token);
        }
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("fota {args:?} did not finish"))
            .unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Run; expect exit 0 and a quiet stderr; return stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(0), "fota {args:?}: {run:?}");
        assert!(run.stderr.is_empty(), "fota {args:?}: {run:?}");
        run.stdout
    }

    /// Run with `--json`; the parsed stdout.
    async fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Run; expect exit `code` and exactly one stderr line starting with `error: `; return it.
    async fn fails(&self, code: i32, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(run.code, Some(code), "fota {args:?}: {run:?}");
        one_error_line(&run, args)
    }
}

fn one_error_line(run: &Run, args: &[&str]) -> String {
    assert!(
        !run.stderr.contains("panicked"),
        "fota {args:?} panicked: {run:?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "fota {args:?}: one stderr line: {run:?}");
    assert!(lines[0].starts_with("error: "), "fota {args:?}: {run:?}");
    without_request_id(lines[0])
}

/// An error line without the ` [request <uuid>]` a server's refusal carries (each call's id is
/// new), after checking that it is one.
fn without_request_id(line: &str) -> String {
    match line.find(" [request ") {
        Some(at) => {
            let id = &line[at + " [request ".len()..];
            let end = id.find(']').expect("a closing bracket");
            assert_eq!(end, 36, "a UUID: {line}");
            format!("{}{}", &line[..at], &id[end + 1..])
        }
        None => line.to_string(),
    }
}

/// Whether a line of `text` starts with these whitespace-separated fields.
fn has_row(text: &str, fields: &[&str]) -> bool {
    text.lines().any(|line| {
        let got: Vec<&str> = line.split_whitespace().collect();
        got.len() >= fields.len() && got[..fields.len()] == *fields
    })
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Write a signed A/B pair; returns the two paths.
fn write_images(fota: &Fota, version: &str, counter: u32) -> (String, String) {
    let key = signing_key();
    (
        fota.write(
            &format!("{version}-a.bin"),
            &image(SlotId::A, version, counter, &key),
        ),
        fota.write(
            &format!("{version}-b.bin"),
            &image(SlotId::B, version, counter, &key),
        ),
    )
}

fn id_of(v: &Value) -> String {
    v["id"].as_i64().expect("an id").to_string()
}

backend_tests!(audit_shows_every_operator_action, devices_revoke);

/// `fota devices revoke`: the device's token stops working; a second time is a one-line refusal.
async fn devices_revoke(db: Db) {
    let app = spawn_app(db).await;
    let fota = Fota::new(&app);
    let tokens = app.provision(&[("RV-1", "f429", &[])]).await;
    assert_eq!(
        fota.ok(&["devices", "revoke", "RV-1"]).await,
        "device RV-1 revoked\n"
    );
    let e = fota.fails(1, &["devices", "revoke", "RV-1"]).await;
    assert!(e.ends_with("(device_revoked)"), "{e}");
    let e = fota.fails(1, &["devices", "revoke", "NOPE"]).await;
    assert!(e.ends_with("(device_not_found)"), "{e}");
    let body = fota_testkit::TestApp::check_in_body("f429", "1.0.0", "a");
    assert_eq!(app.check_in("RV-1", &tokens[0], &body).await.status(), 401);
}

/// `fota audit` shows each operator action with who did it and what: an admin token created and
/// revoked with `fota token` (on the server's database, by the local user), devices registered
/// one and many at a time, a release uploaded and deleted.
async fn audit_shows_every_operator_action(db: Db) {
    let app = spawn_app(db).await;
    let mut fota = Fota::new(&app);
    let token_cmd = |fota: &Fota, args: &[&str]| {
        let mut cmd = fota.command(args);
        cmd.args(["--database-url", &app.database_url])
            .env("USER", "ops-alice");
        cmd
    };
    let out = token_cmd(
        &fota,
        &["token", "create", "--name", "ci-bot", "--role", "operator"],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("fota_adm_"), "{token}");
    // Everything below is done as ci-bot, but the delete (an admin's).
    fota.token = Some(token.clone());

    let csv = fota.write("devices.csv", b"D-001,f429\nD-002,f407,pole\nD-003,f429\n");
    fota.ok(&["devices", "register", "--csv", &csv, "--out", "tokens.json"])
        .await;
    let one = fota.write(
        "one.json",
        br#"{"devices": [{"id": "D-004", "model": "f429", "tags": ["pole"]}]}"#,
    );
    let registered = fota.json(&["devices", "register", "--json", &one]).await;
    let device_token = registered["devices"][0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (a, b) = write_images(&fota, "1.4.2", 3);
    let (sha_a, sha_b) = (sha256_hex(Path::new(&a)), sha256_hex(Path::new(&b)));
    let uploaded = fota
        .json(&[
            "release",
            "upload",
            "--model",
            "f429",
            "--image-a",
            &a,
            "--image-b",
            &b,
            "--json",
        ])
        .await;
    let release_id = id_of(&uploaded);
    // Deleting is an admin's: ci-bot is refused, and that records nothing.
    let e = fota.fails(1, &["release", "delete", &release_id]).await;
    assert!(e.ends_with("(forbidden)"), "{e}");
    let log = fota.json(&["audit", "--json"]).await;
    let ci_bot = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token.create" && e["detail"]["name"] == "ci-bot")
        .expect("token.create of ci-bot")["detail"]["token_id"]
        .to_string();
    fota.token = Some(app.admin.clone());
    assert_eq!(
        fota.ok(&["release", "delete", &release_id]).await,
        format!("deleted release {release_id}\n")
    );
    let e = fota.fails(1, &["release", "delete", &release_id]).await;
    assert_eq!(
        e,
        format!("error: no release {release_id} (release_not_found)")
    );
    let out = token_cmd(&fota, &["token", "revoke", "--id", &ci_bot])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let audit = fota.ok(&["audit"]).await;
    let rows: Vec<(String, String, String, String)> = audit
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f[0].ends_with('Z') && f[0].len() == 20, "{l}");
            assert_eq!(f[3], "-", "no rollout: {l}");
            (f[1].into(), f[2].into(), f[4..].join(" "), l.to_string())
        })
        .collect();
    let who_what: Vec<(&str, &str)> = rows
        .iter()
        .map(|(actor, action, ..)| (actor.as_str(), action.as_str()))
        .collect();
    assert_eq!(
        who_what,
        [
            ("local:ops-alice", "token.revoke"),
            ("test-admin", "release.delete"),
            ("ci-bot", "release.upload"),
            ("ci-bot", "devices.register"),
            ("ci-bot", "devices.register"),
            ("local:ops-alice", "token.create"),
            ("testkit", "token.create"),
        ],
        "{audit}"
    );
    let detail = |i: usize| rows[i].2.as_str();
    let words = |i: usize| -> Vec<&str> { detail(i).split(' ').collect() };
    for (i, expected) in [
        (
            0,
            vec![
                format!("token_id={ci_bot}"),
                "name=ci-bot".into(),
                "role=operator".into(),
            ],
        ),
        (
            1,
            vec![
                "model=f429".into(),
                "version=1.4.2".into(),
                format!("artifact_sha256_a={sha_a}"),
                format!("artifact_sha256_b={sha_b}"),
            ],
        ),
        (
            2,
            vec![
                "model=f429".into(),
                "version=1.4.2".into(),
                "security_counter=3".into(),
                format!("artifact_sha256_a={sha_a}"),
                format!("artifact_sha256_b={sha_b}"),
            ],
        ),
        (
            3,
            vec![
                "count=1".into(),
                "device=D-004".into(),
                "tags=[pole]".into(),
            ],
        ),
        (
            4,
            vec![
                "count=3".into(),
                "models=[f407,f429]".into(),
                "first_device=D-001".into(),
                "last_device=D-003".into(),
            ],
        ),
        (
            5,
            vec![
                format!("token_id={ci_bot}"),
                "name=ci-bot".into(),
                "role=operator".into(),
            ],
        ),
        (6, vec!["name=test-admin".into(), "role=admin".into()]),
    ] {
        for word in expected {
            assert!(words(i).contains(&word.as_str()), "{word} in {}", rows[i].3);
        }
    }
    // No secret is in the log.
    let json = fota.ok(&["audit", "--json"]).await;
    for secret in [&token, &app.admin, &device_token] {
        assert!(!audit.contains(secret.as_str()) && !json.contains(secret.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_upload_and_list() {
    let app = spawn_app(Db::Sqlite).await;
    let fota = Fota::new(&app);
    let (a, b) = write_images(&fota, "1.4.2", 3);
    let line = fota
        .ok(&[
            "release",
            "upload",
            "--model",
            "f429",
            "--image-a",
            &a,
            "--image-b",
            &b,
            "--notes",
            "dimming fix",
            "--version",
            "1.4.2",
        ])
        .await;
    let sha_a = sha256_hex(Path::new(&a));
    let sha_b = sha256_hex(Path::new(&b));
    let size = std::fs::metadata(&a).unwrap().len();
    assert_eq!(
        line,
        format!(
            "release 1: f429 1.4.2, security counter 3\n  slot a: artifact sha256 {sha_a}, {size} bytes\n  slot b: artifact sha256 {sha_b}, {size} bytes\n",
        )
    );
    // `show`: the same labels, with the signing key, who uploaded it and the notes.
    let key_hash = fota_protocol::image::key_hash(&signing_key().verifying_key().to_bytes());
    let shown = fota.ok(&["release", "show", "1"]).await;
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines[0], "release 1: f429 1.4.2, security counter 3",
        "{shown}"
    );
    assert_eq!(
        lines[1],
        format!("  slot a: artifact sha256 {sha_a}, {size} bytes, signed by key {key_hash}")
    );
    assert_eq!(
        lines[2],
        format!("  slot b: artifact sha256 {sha_b}, {size} bytes, signed by key {key_hash}")
    );
    assert!(
        lines[3].starts_with("  uploaded ") && lines[3].ends_with("Z by test-admin"),
        "{shown}"
    );
    assert_eq!(lines[4], "  notes: dimming fix");
    assert_eq!(lines.len(), 5, "{shown}");
    let json = fota.json(&["release", "show", "1", "--json"]).await;
    assert_eq!(json["images"][1]["sha256"], sha_b);
    let e = fota.fails(1, &["release", "show", "9"]).await;
    assert_eq!(e, "error: no release 9 (release_not_found)");

    // The server's refusals, one line each with their code.
    let e = fota
        .fails(
            1,
            &[
                "release",
                "upload",
                "--model",
                "f429",
                "--image-a",
                &a,
                "--image-b",
                &b,
            ],
        )
        .await;
    assert!(e.ends_with("(duplicate_version)"), "{e}");
    let (a2, b2) = write_images(&fota, "1.5.0", 3);
    let e = fota
        .fails(
            1,
            &[
                "release",
                "upload",
                "--model",
                "f429",
                "--image-a",
                &a2,
                "--image-b",
                &b2,
                "--version",
                "9.9.9",
            ],
        )
        .await;
    assert!(e.ends_with("(version_mismatch)"), "{e}");
    // Slot B's image offered for slot A.
    let e = fota
        .fails(
            1,
            &[
                "release",
                "upload",
                "--model",
                "f429",
                "--image-a",
                &b2,
                "--image-b",
                &b2,
            ],
        )
        .await;
    assert!(e.ends_with("(wrong_slot)"), "{e}");
    let e = fota
        .fails(
            1,
            &[
                "release",
                "upload",
                "--model",
                "f429",
                "--image-a",
                "nope.bin",
                "--image-b",
                &b2,
            ],
        )
        .await;
    assert!(e.starts_with("error: cannot read nope.bin"), "{e}");

    let table = fota.ok(&["release", "list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "MODEL",
            "COMPONENT",
            "VERSION",
            "COUNTER",
            "CREATED",
            "BY"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..5], ["1", "f429", "application", "1.4.2", "3"]);
    assert!(row[5].ends_with('Z') && row[5].len() == 20, "{table}");
    assert_eq!(row[6], "test-admin");

    let list = fota.json(&["release", "list", "--json"]).await;
    assert_eq!(list["releases"][0]["version"], "1.4.2");
    assert_eq!(list["releases"][0]["notes"], "dimming fix");
    assert_eq!(list["releases"][0]["images"][0]["sha256"], sha_a);
    assert_eq!(
        fota.ok(&["release", "list", "--model", "other"]).await,
        "no releases\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_start_with_a_plan_and_are_steered() {
    let app = spawn_app(Db::Sqlite).await;
    let fota = Fota::new(&app);
    fleet(&app, "S", 40, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "2.0.0", 1).await.to_string();

    let started = fota
        .json(&[
            "rollout",
            "start",
            "--release",
            &rel,
            "--stages",
            "5,50,100",
            "--bake",
            "90s",
            "--min-sample",
            "3",
            "--max-failure-rate",
            "12.5%",
            "--deadline",
            "2h",
            "--manual",
            "--version-max",
            "1.9.0",
            "--json",
        ])
        .await;
    let id = id_of(&started);
    let status = fota.json(&["rollout", "status", &id, "--json"]).await;
    assert_eq!(status["state"], "active");
    assert_eq!(status["targets"], 40);
    let stages = status["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3, "{status:#}");
    for (stage, percent) in stages.iter().zip([5.0, 50.0, 100.0]) {
        assert_eq!(stage["percent"], percent, "{stage}");
        assert_eq!(stage["bake_s"], 90);
        assert_eq!(stage["min_sample"], 3);
        assert_eq!(stage["max_failure_rate"], 0.125);
        assert_eq!(stage["confirm_deadline_s"], 7200);
        assert_eq!(stage["auto_advance"], false);
    }

    // The human status: header, a row per stage and a total, the plan, the failure line.
    let text = fota.ok(&["rollout", "status", &id]).await;
    assert!(
        text.starts_with(&format!(
            "rollout {id}: rollout of f429 2.0.0 (release {rel}) to 40 targets, active, stage 1/3\n"
        )),
        "{text}"
    );
    for row in [
        &[
            "STAGE",
            "SIZE",
            "STATUS",
            "OFFERED",
            "DOWNLOADING",
            "INSTALLED",
            "CONFIRMED",
            "FAILED",
            "ROLLED_BACK",
            "TIMED_OUT",
        ][..],
        // 5% of 40 targets is 2 devices; 50% is 20.
        &[
            "1", "5%", "=", "2", "devices", "current", "0", "0", "0", "0", "0", "0", "0",
        ],
        &["2", "50%", "=", "20", "devices", "pending", "0"],
        &["all", "40", "devices", "0"],
        &[
            "STAGE",
            "BAKE",
            "MIN_SAMPLE",
            "MAX_FAILURES",
            "DEADLINE",
            "MAX_RESETS",
            "ADVANCE",
        ],
        // The plan's minimum sample of 3 is capped at the first stage's 2 devices.
        &[
            "1", "1m30s", "2", "(plan", "3,", "capped", "at", "the", "stage's", "2", "devices)",
            "12.5%", "2h", "2", "x", "after", "10", "h", "manual",
        ],
        &[
            "2", "1m30s", "3", "12.5%", "2h", "2", "x", "after", "10", "h", "manual",
        ],
    ] {
        assert!(has_row(&text, row), "{row:?} not in:\n{text}");
    }
    // What the gate waits for, in words: the sample against its minimum, the bake time left,
    // the approval it needs and the command that gives it.
    for needle in [
        "\nfailures 0/0 decided = 0.0% (limit 12.5%",
        "\ngate: 0/2 decided (the plan asks 3, capped at the stage's devices), 0 updating, 2 not offered yet; bake ",
        " left of 1m30s;",
        &format!("; advances when approved: fota rollout approve {id}\n"),
        "\nnext: minimum sample: 0 of 2 devices decided in this stage (the plan asks 3; capped at the 2 devices of the stage); 0 updating, 2 not offered yet (they have not checked in)\n",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    // A snapshot, one line (stdout is a pipe), no terminal codes.
    let snapshot = fota.ok(&["rollout", "watch", &id, "--once"]).await;
    assert_eq!(snapshot.lines().count(), 1, "{snapshot}");
    assert!(!snapshot.contains('\x1b'));
    for needle in [
        format!("rollout {id} active, stage 1/3 (5% = 2 devices): offered 0"),
        "; gate: 0/2 decided (the plan asks 3, capped at the stage's devices)".to_string(),
        format!(
            "; advances when approved: fota rollout approve {id}; next: minimum sample: 0 of 2"
        ),
    ] {
        assert!(snapshot.contains(&needle), "{needle:?} not in {snapshot}");
    }

    // Steering: each action prints the state; a refused one prints one line and exits 1.
    assert_eq!(
        fota.ok(&["rollout", "pause", &id]).await,
        format!("rollout {id}: paused\n")
    );
    let e = fota.fails(1, &["rollout", "pause", &id]).await;
    assert_eq!(
        e,
        format!("error: rollout {id} is paused; rollout.pause needs it active (invalid_state)")
    );
    assert_eq!(
        fota.ok(&["rollout", "resume", &id]).await,
        format!("rollout {id}: active\n")
    );
    assert_eq!(
        fota.ok(&["rollout", "approve", &id]).await,
        format!("rollout {id}: active\n")
    );
    assert_eq!(
        fota.ok(&["rollout", "abort", &id]).await,
        format!("rollout {id}: aborted\n")
    );
    let e = fota.fails(1, &["rollout", "abort", &id]).await;
    assert!(
        e.contains("is aborted") && e.ends_with("(invalid_state)"),
        "{e}"
    );
    // Watching an aborted rollout: one line on stderr, exit 1.
    let run = fota.run(&["rollout", "watch", &id]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let e = one_error_line(&run, &["rollout", "watch"]);
    assert!(
        e.starts_with(&format!("error: rollout {id} was aborted")),
        "{e}"
    );

    // Device-count stages, the server's default gates.
    let second = fota
        .json(&[
            "rollout",
            "start",
            "--release",
            &rel,
            "--devices-stages",
            "2,10,40",
            "--json",
        ])
        .await;
    let second_id = id_of(&second);
    let devices: Vec<Value> = second["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["devices"].clone())
        .collect();
    assert_eq!(devices, [2, 10, 40]);
    let first = &second["stages"][0];
    assert!(first["percent"].is_null());
    assert_eq!(first["bake_s"], 1800);
    assert_eq!(first["min_sample"], 20);
    assert_eq!(first["max_failure_rate"], 0.05);
    assert_eq!(first["confirm_deadline_s"], 7200);
    assert_eq!(first["auto_advance"], true);
    let text = fota.ok(&["rollout", "status", &second_id]).await;
    assert!(has_row(&text, &["1", "2", "devices", "current"]), "{text}");
    // One unfinished rollout per model.
    let e = fota
        .fails(1, &["rollout", "start", "--release", &rel])
        .await;
    assert!(e.ends_with("(rollout_in_progress)"), "{e}");

    // Listings.
    let list = fota.ok(&["rollout", "list"]).await;
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ID",
            "KIND",
            "STATE",
            "MODEL",
            "COMPONENT",
            "VERSION",
            "TARGETS",
            "STAGE",
            "FAILURES",
            "CREATED",
            "BY"
        ]
    );
    assert_eq!(
        rows[1][..8],
        [
            second_id.as_str(),
            "rollout",
            "active",
            "f429",
            "application",
            "2.0.0",
            "40",
            "1/3"
        ]
    );
    assert_eq!(rows[2][..3], [id.as_str(), "rollout", "aborted"]);
    let aborted = fota
        .json(&["rollout", "list", "--state", "aborted", "--json"])
        .await;
    let ids: Vec<String> = aborted["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let e = fota
        .fails(2, &["rollout", "list", "--state", "sleepy"])
        .await;
    assert!(e.contains("sleepy"), "{e}");

    // The audit log has every action, newest first.
    let audit = fota.ok(&["audit", "--rollout", &id]).await;
    let actions: Vec<(String, String, String)> = audit
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f[0].ends_with('Z') && f[0].len() == 20, "{l}");
            (f[1].to_string(), f[2].to_string(), f[3].to_string())
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        "rollout.abort",
        "rollout.approve",
        "rollout.resume",
        "rollout.pause",
        "rollout.create",
    ]
    .iter()
    .map(|a| ("test-admin".to_string(), a.to_string(), id.clone()))
    .collect();
    assert_eq!(actions, expected, "{audit}");
    assert!(
        audit
            .lines()
            .nth(1)
            .unwrap()
            .contains("from_state=active stage=1"),
        "{audit}"
    );
    assert!(audit.lines().next().unwrap().starts_with("TIME"), "{audit}");
    let json = fota.json(&["audit", "--limit", "2", "--json"]).await;
    let entries = json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "rollout.create");
    assert_eq!(entries[0]["rollout_id"].to_string(), second_id);
}

/// `watch` follows a rollout while devices fail, and exits 1 with the halt reason in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_rollout_until_it_halts() {
    let app = spawn_app(Db::Sqlite).await;
    let fota = Fota::new(&app);
    let mut devices = fleet(&app, "H", 100, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "3.0.0", 1).await.to_string();
    let started = fota
        .json(&[
            "rollout",
            "start",
            "--release",
            &rel,
            "--stages",
            "20,100",
            "--bake",
            "0",
            "--min-sample",
            "5",
            "--max-failure-rate",
            "0.2",
            "--json",
        ])
        .await;
    let id = id_of(&started);

    let mut watch = fota
        .command(&["rollout", "watch", &id, "--interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
        .await
        .expect("a first line from watch")
        .unwrap()
        .expect("a line");
    assert!(
        first.contains(&format!("rollout {id} active, stage 1/2")),
        "{first}"
    );

    // Devices take the release and their bootloaders revert it: the gate halts the rollout.
    let mut halted = false;
    for d in devices.iter_mut() {
        if let Some(offer) = d.check_in(&app).await {
            d.take(&app, &offer, Behaviour::RollsBack).await;
            if testkit::rollout_status(&app, id.parse().unwrap()).await["state"] == "halted" {
                halted = true;
                break;
            }
        }
    }
    assert!(halted, "never halted");

    let mut lines = vec![first];
    let rest = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            lines.push(line);
        }
        watch.wait_with_output().await.unwrap()
    };
    let output = tokio::time::timeout(Duration::from_secs(20), rest)
        .await
        .expect("watch ends when the rollout halts");
    let run = Run {
        code: output.status.code(),
        stdout: lines.join("\n"),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    assert_eq!(run.code, Some(1), "{run:?}");
    let e = one_error_line(&run, &["rollout", "watch"]);
    assert!(
        e.starts_with(&format!("error: rollout {id} halted: stage 1: 2 failures")),
        "{e}"
    );
    assert!(!run.stdout.contains('\x1b'), "{run:?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("halted, stage 1/2") && last.contains("failed 2"),
        "{last}"
    );
    assert!(
        last.contains(&format!(
            "; next: halted: fota rollout resume {id} after a fix"
        )),
        "{last}"
    );
    // The status says why, in words and with the limit, and what the operator can do.
    let text = fota.ok(&["rollout", "status", &id]).await;
    assert!(text.contains("\nhalted: stage 1: 2 failures"), "{text}");
    assert!(text.contains("(limit 20.0%"), "{text}");
    assert!(
        text.contains(&format!("\nnext: halted: fota rollout resume {id} after a fix (the gate is checked again at once), fota rollout abort {id}, or fota rollback\n")),
        "{text}"
    );
    // On a terminal, watch draws the same view in place, halt reason and next step included,
    // and exits 1 with the reason. `script` gives it a pseudo-terminal.
    let fota_bin = env!("CARGO_BIN_EXE_fota");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("script")
            .args([
                "-qec",
                &format!("{fota_bin} rollout watch {id}"),
                "/dev/null",
            ])
            .env("FOTA_SERVER", &fota.server)
            .env("FOTA_TOKEN", fota.token.as_deref().unwrap())
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("watch on a terminal ends")
    .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert_eq!(out.status.code(), Some(1), "{screen}");
    for needle in [
        "\x1b[H\x1b[2J".to_string(),
        format!("rollout {id}: rollout of f429 3.0.0"),
        "\nhalted: stage 1: 2 failures".to_string(),
        "\ngate: ".to_string(),
        format!("\nnext: halted: fota rollout resume {id}"),
        format!("error: rollout {id} halted: stage 1: 2 failures"),
    ] {
        assert!(screen.contains(&needle), "{needle:?} not in:\n{screen}");
    }
    // A halted rollout can be resumed or aborted.
    assert_eq!(
        fota.ok(&["rollout", "abort", &id]).await,
        format!("rollout {id}: aborted\n")
    );
    let audit = fota.ok(&["audit", "--rollout", &id]).await;
    assert!(
        audit.contains(" fota ") && audit.contains("rollout.halt"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_refused_below_the_security_counter() {
    let app = spawn_app(Db::Sqlite).await;
    let fota = Fota::new(&app);
    let mut devices = fleet(&app, "B", 20, "f429", "1.0.0").await;
    let old = release(&app, "f429", "1.0.0", 1).await.to_string();
    let bad = release(&app, "f429", "1.1.0", 2).await.to_string();
    let started = fota
        .json(&[
            "rollout",
            "start",
            "--release",
            &bad,
            "--stages",
            "100",
            "--bake",
            "0",
            "--min-sample",
            "1",
            "--json",
        ])
        .await;
    let id = id_of(&started);
    for d in devices.iter_mut() {
        if let Some(o) = d.check_in(&app).await {
            d.take(&app, &o, Behaviour::Good).await;
        }
    }
    let s = wait_for(&app, id.parse().unwrap(), Duration::from_secs(10), |s| {
        s["state"] == "completed"
    })
    .await;
    assert_eq!(s["state"], "completed", "{s:#}");
    app.flush().await;
    // Watching a completed rollout: its last state, exit 0.
    let done = fota.ok(&["rollout", "watch", &id]).await;
    assert!(
        done.contains("completed") && done.contains("confirmed 20"),
        "{done}"
    );

    let e = fota
        .fails(1, &["rollback", "--release", &old, "--from-release", &bad])
        .await;
    assert!(e.ends_with("(security_counter_too_low)"), "{e}");
    assert!(e.contains("hold 2"), "{e}");
    // A plain rollout of the older release is refused the same way (anti-rollback)...
    let plan = ["--stages", "100", "--bake", "0", "--min-sample", "1"];
    let start_old = [
        &["rollout", "start", "--release", old.as_str()][..],
        &plan[..],
    ]
    .concat();
    let e = fota.fails(1, &start_old).await;
    assert!(e.ends_with("(security_counter_too_low)"), "{e}");
    assert!(e.contains("all 20 targeted devices hold 2"), "{e}");
    // ... and where only some targets hold more, it starts and says whom it skips.
    fleet(&app, "C", 5, "f429", "0.9.0").await;
    let text = fota.ok(&start_old).await;
    assert!(
        text.contains(
            "skipped, they hold a security counter above the release's (anti-rollback): 20"
        ),
        "{text}"
    );

    let fixed = release(&app, "f429", "1.0.1", 2).await.to_string();
    let e = fota
        .fails(
            1,
            &[
                "rollback",
                "--release",
                &fixed,
                "--from-release",
                &bad,
                "--bake",
                "1m",
            ],
        )
        .await;
    assert!(e.contains("need --staged"), "{e}");
    let rb = fota
        .json(&[
            "rollback",
            "--release",
            &fixed,
            "--from-release",
            &bad,
            "--staged",
            "--stages",
            "50,100",
            "--bake",
            "0",
            "--min-sample",
            "1",
            "--json",
        ])
        .await;
    assert_eq!(rb["kind"], "rollback");
    assert_eq!(rb["targets"], 20);
    assert_eq!(rb["from_release_id"].to_string(), bad);
    assert_eq!(rb["stages"][0]["percent"], 50.0);
    assert_eq!(rb["stages"][1]["percent"], 100.0);
    let text = fota.ok(&["rollout", "status", &id_of(&rb)]).await;
    assert!(
        text.starts_with(&format!(
            "rollout {}: rollback of f429 1.0.1 (release {fixed}) to 20 targets running release {bad}, active, stage 1/2",
            id_of(&rb)
        )),
        "{text}"
    );
    let audit = fota.ok(&["audit"]).await;
    assert!(audit.contains("rollback.create"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_list_and_show() {
    let app = spawn_app(Db::Sqlite).await;
    let fota = Fota::new(&app);
    let csv = fota.write(
        "devices.csv",
        b"id,model,tags\nD-001,f429,city:a;pole\nD-002,f429\nD-003,f429,pole\n",
    );
    let said = fota
        .ok(&["devices", "register", "--csv", &csv, "--out", "tokens.json"])
        .await;
    assert_eq!(
        said,
        "registered 3 devices; their tokens are in tokens.json (shown only once)\n"
    );
    let tokens_path = fota.path("tokens.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&tokens_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let tokens: Value = serde_json::from_slice(&std::fs::read(&tokens_path).unwrap()).unwrap();
    let provisioned = tokens["devices"].as_array().unwrap();
    assert_eq!(provisioned.len(), 3);
    assert_eq!(provisioned[0]["id"], "D-001");
    let token_1 = provisioned[0]["token"].as_str().unwrap().to_string();
    // Tokens are shown once: an existing file is never replaced (and nothing is registered).
    let json_file = fota.write(
        "more.json",
        br#"{"devices": [{"id": "D-004", "model": "f429", "tags": ["pole"]}]}"#,
    );
    let e = fota
        .fails(
            1,
            &[
                "devices",
                "register",
                "--json",
                &json_file,
                "--out",
                "tokens.json",
            ],
        )
        .await;
    assert!(e.contains("tokens.json exists"), "{e}");
    // To stdout: the server's JSON.
    let more = fota
        .json(&["devices", "register", "--json", &json_file])
        .await;
    assert_eq!(more["devices"][0]["id"], "D-004");
    assert!(more["devices"][0]["token"]
        .as_str()
        .unwrap()
        .starts_with("fota_"));
    let e = fota
        .fails(1, &["devices", "register", "--json", &json_file])
        .await;
    assert!(e.ends_with("(device_exists)"), "{e}");
    let e = fota.fails(2, &["devices", "register"]).await;
    assert!(e.contains("--csv") && e.contains("--json"), "{e}");

    // One device checks in.
    let resp = app
        .check_in(
            "D-001",
            &token_1,
            &TestApp::check_in_body("f429", "1.0.0", "a"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    app.flush().await;

    let list = fota.ok(&["devices"]).await;
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["ID", "MODEL", "VERSION", "SLOT", "BOOT", "STATUS", "LAST", "SEEN"]
    );
    assert_eq!(rows.len(), 5, "{list}");
    assert_eq!(
        rows[1][..6],
        ["D-001", "f429", "1.0.0", "a", "confirmed", "online"]
    );
    assert!(rows[1][7] == "ago" && rows[1][6].ends_with('s'), "{list}");
    assert_eq!(
        rows[2],
        ["D-002", "f429", "-", "-", "-", "never_seen", "never"]
    );

    let online = fota
        .json(&["devices", "--status", "online", "--json"])
        .await;
    let ids: Vec<&str> = online["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["D-001"]);
    let tagged = fota.json(&["devices", "--tag", "pole", "--json"]).await;
    assert_eq!(tagged["devices"].as_array().unwrap().len(), 3);
    assert_eq!(
        fota.ok(&["devices", "--version", "9.9.9"]).await,
        "no devices\n"
    );
    // Paging.
    let page = fota.ok(&["devices", "--limit", "2"]).await;
    assert!(page.ends_with("more: add --after D-002\n"), "{page}");
    let next = fota
        .json(&["devices", "--limit", "2", "--after", "D-002", "--json"])
        .await;
    let ids: Vec<&str> = next["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["D-003", "D-004"]);

    let shown = fota.ok(&["devices", "show", "D-001"]).await;
    assert!(
        shown.starts_with("device D-001: f429, online, last seen "),
        "{shown}"
    );
    assert!(shown.contains("  tags         city:a, pole\n"), "{shown}");
    assert!(
        shown.contains("  firmware     1.0.0 in slot a, confirmed\n"),
        "{shown}"
    );
    let detail = fota.json(&["devices", "show", "D-002", "--json"]).await;
    assert_eq!(detail["id"], "D-002");
    assert_eq!(detail["status"], "never_seen");
    let e = fota.fails(1, &["devices", "show", "D-999"]).await;
    assert_eq!(e, "error: no device D-999 (device_not_found)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_in_one_line() {
    let app = spawn_app(Db::Sqlite).await;
    let mut fota = Fota::new(&app);
    fleet(&app, "E", 5, "f429", "1.0.0").await;
    let rel = release(&app, "f429", "2.0.0", 1).await.to_string();

    // Usage errors: exit 2.
    let e = fota
        .fails(2, &["rollout", "start", "--release", &rel, "--bake", "5x"])
        .await;
    assert!(e.contains("'5x' is not a duration"), "{e}");
    let e = fota
        .fails(
            2,
            &[
                "rollout",
                "start",
                "--release",
                &rel,
                "--max-failure-rate",
                "200%",
            ],
        )
        .await;
    assert!(e.contains("200%"), "{e}");
    let e = fota
        .fails(
            2,
            &[
                "rollout",
                "start",
                "--release",
                &rel,
                "--stages",
                "1,10",
                "--devices-stages",
                "5",
            ],
        )
        .await;
    assert!(e.contains("cannot be used with"), "{e}");
    let e = fota
        .fails(
            2,
            &["rollout", "status", "1", "--server", "ftp://fota.example"],
        )
        .await;
    assert!(e.contains("expected an http:// or https:// URL"), "{e}");
    let e = fota.fails(2, &[]).await;
    assert!(e.contains("rollout") && e.contains("devices"), "{e}");

    // The server's refusals: exit 1, message and code, and the request's id to find the
    // server's log of it.
    let run = fota.run(&["rollout", "status", "424242"]).await;
    assert!(
        run.stderr.contains(" [request ") && run.stderr.trim_end().ends_with("(rollout_not_found)"),
        "{run:?}"
    );
    let e = fota.fails(1, &["rollout", "status", "424242"]).await;
    assert_eq!(e, "error: no rollout 424242 (rollout_not_found)");
    let e = fota
        .fails(
            1,
            &["rollout", "start", "--release", &rel, "--stages", "50,10"],
        )
        .await;
    assert!(e.ends_with("(invalid_plan)"), "{e}");
    let e = fota
        .fails(
            1,
            &["rollout", "start", "--release", &rel, "--tag", "nobody"],
        )
        .await;
    assert!(e.ends_with("(no_targets)"), "{e}");
    let e = fota
        .fails(1, &["release", "list", "--token", "fota_admin_wrong"])
        .await;
    assert_eq!(e, "error: missing or invalid credentials (unauthorized)");

    // No server there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    for args in [
        vec!["release", "list"],
        vec!["rollout", "watch", "1", "--once"],
        vec!["devices"],
    ] {
        let mut args = args.clone();
        args.extend(["--server", &url]);
        let e = fota.fails(1, &args).await;
        assert!(
            e.starts_with(&format!("error: cannot reach {url}: ")),
            "{e}"
        );
    }

    // No token: a usage error.
    fota.token = None;
    let e = fota.fails(2, &["rollout", "list"]).await;
    assert!(e.contains("--token"), "{e}");
    let e = fota.fails(2, &["devices", "show", "E-0000"]).await;
    assert!(e.contains("--token"), "{e}");
}
