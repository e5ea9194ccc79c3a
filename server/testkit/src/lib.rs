//! The test harness of `fota-server` and `fota-cli`: a real `fota serve` on 127.0.0.1:0 over a
//! fresh database, SQLite by default and PostgreSQL too when `FOTA_TEST_POSTGRES_URL` is set;
//! [`backend_tests!`] turns one async test body into a test per backend. Test devices
//! ([`Device`]) talk to it over HTTP; [`spawn_process`] runs `fota serve` as a process instead;
//! [`PrivatePostgres`] is a PostgreSQL server of the test's own, to stop and start;
//! [`browser::Browser`] a headless Chromium over WebDriver (the dashboard's test and benchmark).
//!
//! A crate rather than a `tests/common` module so that both crates' tests share one copy.
//! Test code: a failed step panics, which is the test's failure report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod browser;
mod mosquitto;
mod private_postgres;
pub use mosquitto::Mosquitto;
pub use private_postgres::{postgres_bin_dir, PrivatePostgres};

use ed25519_dalek::SigningKey;
use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::testing;
use fota_protocol::SlotId;
use fota_server::config::ServeConfig;
use fota_server::domain::auth::Role;
use fota_server::serve::{start, RunningServer};
use fota_server::store::{now_ms, Store};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Define `$name::sqlite` and `$name::postgres` from one `async fn(Db)`.
///
/// The PostgreSQL variant is `#[ignore]`d: a plain `cargo test` lists it as ignored, never as
/// passed. Run it with `--include-ignored` (cargo test) or `--run-ignored all` (nextest) and
/// `FOTA_TEST_POSTGRES_URL` set, as scripts/test does; run that way without the URL, it fails.
/// The databases it makes are dropped when it passes.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Db::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "PostgreSQL: run with FOTA_TEST_POSTGRES_URL set (scripts/test does)"]
                async fn postgres() {
                    $crate::on_postgres(super::$name($crate::Db::Postgres)).await;
                }
            }
        )*
    };
}

tokio::task_local! {
    /// The databases the running PostgreSQL test made, to drop when it passes.
    static MADE: std::cell::RefCell<Vec<String>>;
}

/// Run a PostgreSQL test: fail at once without a server to run it on, and drop the databases it
/// made once it passes (a failed test leaves them for a look; `.ci/run` drops its run's).
pub async fn on_postgres(test: impl std::future::Future<Output = ()>) {
    let base = require_postgres_url();
    let made = MADE
        .scope(std::cell::RefCell::new(Vec::new()), async move {
            test.await;
            MADE.with(|m| m.take())
        })
        .await;
    drop_databases(&base, &made).await;
}

async fn drop_databases(base: &str, names: &[String]) {
    use sqlx::Connection as _;
    if names.is_empty() {
        return;
    }
    let Ok(mut admin) = sqlx::PgConnection::connect(base).await else {
        return;
    };
    for name in names {
        // FORCE: the test's server may still hold pooled connections.
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    let _ = admin.close().await;
}

/// The PostgreSQL server a test that needs one must run on: `FOTA_TEST_POSTGRES_URL`, or a
/// failure that says so.
pub fn require_postgres_url() -> String {
    postgres_url().unwrap_or_else(|| {
        panic!(
            "FOTA_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server \
             (it is #[ignore]d by default; scripts/test runs it when the URL is set)"
        )
    })
}

/// The PostgreSQL server to test against, if `FOTA_TEST_POSTGRES_URL` names one.
pub fn postgres_url() -> Option<String> {
    std::env::var("FOTA_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// What this test run's databases are named after: `FOTA_TEST_RUN_ID` (scripts/test and
/// .ci/run set it), else this process. Two runs against one server never drop each other's.
fn run_id() -> String {
    std::env::var("FOTA_TEST_RUN_ID")
        .ok()
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| format!("p{}", std::process::id()))
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty PostgreSQL database on the test server; returns its URL.
pub async fn fresh_postgres_database() -> String {
    let base = require_postgres_url();
    let name = format!(
        "fota_t_{}_{}_{}_{}",
        run_id(),
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst),
        now_ms() % 1_000_000
    );
    // Dropped when the PostgreSQL test that made it passes (see `on_postgres`).
    let _ = MADE.try_with(|m| m.borrow_mut().push(name.clone()));
    create_database(&base, &name).await
}

/// Create the empty database `name` on the server at `base` (a URL naming any database on
/// it) and return `base` with its database replaced by `name`, its `?query` kept.
async fn create_database(base: &str, name: &str) -> String {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create database {name}: {e}"));
    let _ = admin.close().await;
    with_database(base, name)
}

/// `url` with its database (the last path segment) replaced by `name`, a `?query` kept.
fn with_database(url: &str, name: &str) -> String {
    let (prefix, rest) = url.rsplit_once('/').expect("URL with a database name");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{prefix}/{name}{query}")
}

/// A database made for one benchmark run on the PostgreSQL server at a base URL (naming any
/// database on it). The benchmarks drop it at the end ([`BenchDatabase::drop_now`]) rather
/// than leave a 100,000-device fleet behind on a shared server for each run.
#[derive(Debug)]
pub struct BenchDatabase {
    base: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    /// A fresh, empty database `fota_bench_<ms>` on `base`'s server.
    pub async fn create(base: &str) -> Self {
        let name = format!("fota_bench_{}", now_ms());
        let url = create_database(base, &name).await;
        Self {
            base: base.to_string(),
            url,
            name,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Drop it (a server still connected to it is disconnected).
    pub async fn drop_now(self) {
        drop_databases(&self.base, &[self.name]).await;
    }
}

/// The signing key tests sign releases with (trusted by every test server).
pub fn signing_key() -> SigningKey {
    testing::test_key(7)
}

/// A key the servers do not trust.
pub fn other_key() -> SigningKey {
    testing::test_key(8)
}

pub use fota_protocol::testing::app_for;

/// A signed 8 KB image for `slot` (the fixture of [`fota_protocol::testing`]).
pub fn image(slot: SlotId, version: &str, counter: u32, key: &SigningKey) -> Vec<u8> {
    testing::signed_for(
        slot,
        8192,
        version.parse::<ImageVersion>().unwrap(),
        counter,
        key,
    )
}

/// A signed 8 KB stage-1 bootloader image for stage-1 slot `slot` (marked for it).
pub fn stage1_image(slot: SlotId, version: &str, counter: u32, key: &SigningKey) -> Vec<u8> {
    testing::stage1_for(
        slot,
        8192,
        version.parse::<ImageVersion>().unwrap(),
        counter,
        key,
    )
}

/// A running server, its admin token and an HTTP client.
pub struct TestApp {
    pub server: RunningServer,
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub database_url: String,
    pub data_dir: tempfile::TempDir,
}

/// Configuration for a test server over `db`.
pub async fn test_config(db: Db, data_dir: &std::path::Path) -> ServeConfig {
    let mut config = ServeConfig::for_data_dir(data_dir);
    if db == Db::Postgres {
        config.database_url = fresh_postgres_database().await;
    }
    config.trusted_keys =
        vec![TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()];
    config.flush_interval = std::time::Duration::from_millis(50);
    config.poll_interval = std::time::Duration::from_secs(60);
    config.sweep_interval = std::time::Duration::from_millis(100);
    config
}

/// Start a server over a fresh database, with an admin token.
pub async fn spawn_app(db: Db) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let config = test_config(db, data_dir.path()).await;
    spawn_with(db, data_dir, config).await
}

/// Start a server with a given configuration.
pub async fn spawn_with(db: Db, data_dir: tempfile::TempDir, config: ServeConfig) -> TestApp {
    let database_url = config.database_url.clone();
    let server = start(config).await.expect("server starts");
    let admin = token(&server.state.store, "test-admin", Role::Admin).await;
    TestApp {
        url: server.url(),
        server,
        admin,
        client: reqwest::Client::new(),
        db,
        database_url,
        data_dir,
    }
}

/// A new admin token with `role`.
pub async fn token(store: &Store, name: &str, role: Role) -> String {
    let token = fota_server::domain::auth::new_token(fota_server::domain::auth::ADMIN_TOKEN_PREFIX)
        .unwrap();
    store
        .create_admin_token(
            name,
            role,
            &fota_server::domain::auth::token_hash(&token),
            "testkit",
            now_ms(),
        )
        .await
        .unwrap();
    token
}

impl TestApp {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.at(path)).bearer_auth(&self.admin)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.at(path)).bearer_auth(&self.admin)
    }

    /// Provision devices (id, model, tags) and return their tokens in order.
    pub async fn provision(&self, devices: &[(&str, &str, &[&str])]) -> Vec<String> {
        let body = serde_json::json!({
            "devices": devices.iter().map(|(id, model, tags)| serde_json::json!({"id": id, "model": model, "tags": tags})).collect::<Vec<_>>()
        });
        let resp = self.post("/v1/devices").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let v: serde_json::Value = resp.json().await.unwrap();
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["token"].as_str().unwrap().to_string())
            .collect()
    }

    /// A check-in body.
    pub fn check_in_body(model: &str, version: &str, slot: &str) -> serde_json::Value {
        serde_json::json!({
            "model": model,
            "firmware_version": version,
            "running_slot": slot,
            "boot_state": "confirmed",
            "bootloader_version": "1.0.0",
            "rdp_level": "level1",
            "wrp_mask": 3
        })
    }

    pub async fn check_in(
        &self,
        id: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.at(&format!("/v1/devices/{id}/check-in")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Upload a release; returns the response.
    pub async fn upload(&self, model: &str, a: Vec<u8>, b: Vec<u8>) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .text("model", model.to_string())
            .text("notes", "test release")
            .part(
                "image_a",
                reqwest::multipart::Part::bytes(a).file_name("a.bin"),
            )
            .part(
                "image_b",
                reqwest::multipart::Part::bytes(b).file_name("b.bin"),
            );
        self.post("/v1/releases")
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Write buffered check-in facts now.
    pub async fn flush(&self) {
        self.server
            .state
            .facts
            .flush(&self.server.state.store)
            .await
            .unwrap();
    }
}

/// What the rollout helpers need from a server: an in-process [`TestApp`] or a `fota serve`
/// process ([`Remote`]).
pub trait Api {
    fn client(&self) -> &reqwest::Client;
    fn base(&self) -> &str;
    fn admin_token(&self) -> &str;

    fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    fn admin_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client()
            .get(self.url_of(path))
            .bearer_auth(self.admin_token())
    }

    fn admin_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client()
            .post(self.url_of(path))
            .bearer_auth(self.admin_token())
    }

    /// Upload a release.
    fn upload_release(
        &self,
        model: &str,
        a: Vec<u8>,
        b: Vec<u8>,
    ) -> impl std::future::Future<Output = reqwest::Response> {
        let form = reqwest::multipart::Form::new()
            .text("model", model.to_string())
            .text("notes", "test release")
            .part(
                "image_a",
                reqwest::multipart::Part::bytes(a).file_name("a.bin"),
            )
            .part(
                "image_b",
                reqwest::multipart::Part::bytes(b).file_name("b.bin"),
            );
        let req = self.admin_post("/v1/releases").multipart(form);
        async move { req.send().await.unwrap() }
    }

    /// Make buffered check-in facts visible in the database.
    fn settle(&self) -> impl std::future::Future<Output = ()>;
}

impl Api for TestApp {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    fn base(&self) -> &str {
        &self.url
    }
    fn admin_token(&self) -> &str {
        &self.admin
    }
    async fn settle(&self) {
        self.flush().await;
    }
}

/// A `fota serve` process.
pub struct Remote {
    pub client: reqwest::Client,
    pub url: String,
    pub admin: String,
    pub child: std::process::Child,
}

impl Api for Remote {
    fn client(&self) -> &reqwest::Client {
        &self.client
    }
    fn base(&self) -> &str {
        &self.url
    }
    fn admin_token(&self) -> &str {
        &self.admin
    }
    async fn settle(&self) {
        // Started with --flush-interval-ms 50.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `fota serve` as a process (the `fota` binary at `fota`) on `database_url`, trusting the
/// test signing key, with short flush and sweep intervals; wait until it answers.
pub async fn spawn_process(
    fota: &std::path::Path,
    database_url: &str,
    data_dir: &std::path::Path,
    admin: &str,
) -> Remote {
    use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey as _};
    let key = data_dir.join("trusted.pub.pem");
    if !key.exists() {
        std::fs::write(
            &key,
            signing_key()
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(data_dir.join(format!("serve-{port}.log"))).unwrap();
    let child = std::process::Command::new(fota)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
        ])
        .args([
            "--flush-interval-ms",
            "50",
            "--sweep-interval-ms",
            "100",
            "--poll-interval-s",
            "60",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--trusted-key")
        .arg(&key)
        .stderr(log)
        .spawn()
        .unwrap();
    let remote = Remote {
        client: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{port}"),
        admin: admin.to_string(),
        child,
    };
    for _ in 0..200 {
        if let Ok(r) = remote.client.get(remote.url_of("/readyz")).send().await {
            if r.status() == 200 {
                return remote;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fota serve did not come up");
}

/// Assert a JSON error response with `status` and `code`.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}, body: {text}"
    );
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_eq!(v["error"], code, "body: {text}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {text}"
    );
}

/// A device as the tests drive it: checks in, takes offers, reports events, reboots into the
/// new slot. Behaviour is chosen per test.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub token: String,
    pub model: String,
    pub version: String,
    pub slot: &'static str,
    pub trial: bool,
    pub wrp_mask: u32,
    /// The anti-rollback floor it reports at check-in (`None`: it reports none).
    pub floor: Option<u32>,
    /// The stage-1 bootloader's version it reports.
    pub bootloader: String,
    /// A two-stage device's running stage-1: (slot, on trial); `None`: single-stage.
    pub stage1: Option<(&'static str, bool)>,
    /// The delta patch format it says it applies (`None`: it applies none, as before).
    pub delta_format: Option<u8>,
    pub next_event: u64,
    /// Offers this device ever received: (rollout id, version).
    pub offers: Vec<(i64, String)>,
}

/// What a device does with an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Installs, boots, confirms.
    Good,
    /// Installs, boots, never reaches the server again (the field incident).
    Silent,
    /// Installs; the bootloader reverts after 3 trials; the old firmware reports it.
    RollsBack,
}

impl Device {
    pub fn new(id: &str, token: &str, model: &str, version: &str) -> Self {
        Self {
            id: id.into(),
            token: token.into(),
            model: model.into(),
            version: version.into(),
            slot: "a",
            trial: false,
            wrp_mask: 0,
            floor: None,
            bootloader: "1.0.0".into(),
            stage1: None,
            delta_format: None,
            next_event: 1,
            offers: Vec::new(),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "model": self.model,
            "firmware_version": self.version,
            "running_slot": self.slot,
            "boot_state": if self.trial { "trial" } else { "confirmed" },
            "bootloader_version": self.bootloader,
            "rdp_level": "level1",
            "wrp_mask": self.wrp_mask,
        });
        if let Some(floor) = self.floor {
            body["security_counter"] = serde_json::json!(floor);
        }
        if let Some(format) = self.delta_format {
            body["delta_format"] = serde_json::json!(format);
        }
        if let Some((slot, trial)) = self.stage1 {
            body["stage1"] = serde_json::json!({
                "slot": slot,
                "boot_state": if trial { "trial" } else { "confirmed" },
            });
        }
        body
    }

    /// Check in; returns the offer, if any.
    pub async fn check_in(&mut self, app: &impl Api) -> Option<serde_json::Value> {
        let resp = app
            .client()
            .post(app.url_of(&format!("/v1/devices/{}/check-in", self.id)))
            .bearer_auth(&self.token)
            .json(&self.body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let v: serde_json::Value = resp.json().await.unwrap();
        let offer = v.get("offer").cloned();
        if let Some(o) = &offer {
            self.offers.push((
                o["rollout_id"].as_i64().unwrap(),
                o["version"].as_str().unwrap().to_string(),
            ));
        }
        offer
    }

    pub async fn report(
        &mut self,
        app: &impl Api,
        kind: &str,
        rollout: i64,
        version: &str,
        reason: Option<&str>,
    ) {
        let mut event =
            serde_json::json!({"kind": kind, "rollout_id": rollout, "version": version});
        if let Some(r) = reason {
            event["reason"] = serde_json::json!(r);
        }
        self.report_event(app, event).await;
    }

    /// Report one event given whole (its `kind` and fields; the device numbers it unless it
    /// has an `id`), in a report of its own, and assert that the server stored it (200).
    pub async fn report_event(&mut self, app: &impl Api, mut event: serde_json::Value) {
        if event.get("id").is_none() {
            event["id"] = serde_json::json!(self.next_event);
            self.next_event += 1;
        }
        let resp = app
            .client()
            .post(app.url_of(&format!("/v1/devices/{}/reports", self.id)))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "events": [event] }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// Take an offer the way `behaviour` says. Returns false if the device is now silent.
    pub async fn take(
        &mut self,
        app: &impl Api,
        offer: &serde_json::Value,
        behaviour: Behaviour,
    ) -> bool {
        let rollout = offer["rollout_id"].as_i64().unwrap();
        let version = offer["version"].as_str().unwrap().to_string();
        let artifact = app
            .client()
            .get(app.url_of(&format!(
                "/v1/artifacts/{}",
                offer["sha256"].as_str().unwrap()
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(artifact.status(), 200);
        assert_eq!(
            artifact.bytes().await.unwrap().len() as u64,
            offer["size"].as_u64().unwrap()
        );
        self.report(app, "offer_accepted", rollout, &version, None)
            .await;
        self.report(app, "installed", rollout, &version, None).await;
        match behaviour {
            Behaviour::Good => {
                self.version = version.clone();
                self.slot = if self.slot == "a" { "b" } else { "a" };
                self.trial = true;
                self.check_in(app).await;
                self.trial = false;
                self.report(app, "confirmed", rollout, &version, None).await;
                true
            }
            Behaviour::Silent => false,
            Behaviour::RollsBack => {
                self.report(
                    app,
                    "rolled_back",
                    rollout,
                    &version,
                    Some("3 failed trial boots"),
                )
                .await;
                true
            }
        }
    }
}

/// Provision `n` devices `P-0000..` of `model`; returns (id, token) pairs.
pub async fn provision_devices(
    app: &impl Api,
    prefix: &str,
    n: usize,
    model: &str,
) -> Vec<(String, String)> {
    let body = serde_json::json!({
        "devices": (0..n)
            .map(|i| serde_json::json!({"id": format!("{prefix}-{i:04}"), "model": model}))
            .collect::<Vec<_>>()
    });
    let resp = app
        .admin_post("/v1/devices")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["token"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Start a rollout (`POST /v1/rollouts`), expecting 201; returns its status.
pub async fn start_rollout(app: &impl Api, body: serde_json::Value) -> serde_json::Value {
    let resp = app
        .admin_post("/v1/rollouts")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// Provision `n` devices `P-000..` of `model` on `version`, check each in once and flush.
pub async fn fleet(
    app: &impl Api,
    prefix: &str,
    n: usize,
    model: &str,
    version: &str,
) -> Vec<Device> {
    let mut devices: Vec<Device> = provision_devices(app, prefix, n, model)
        .await
        .iter()
        .map(|(id, token)| Device::new(id, token, model, version))
        .collect();
    for d in &mut devices {
        assert!(d.check_in(app).await.is_none());
    }
    app.settle().await;
    devices
}

/// Upload a release of `model` signed with the trusted key; returns its id.
pub async fn release(app: &impl Api, model: &str, version: &str, counter: u32) -> i64 {
    let key = signing_key();
    let resp = app
        .upload_release(
            model,
            image(SlotId::A, version, counter, &key),
            image(SlotId::B, version, counter, &key),
        )
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// Upload a stage-1 bootloader release of `model` signed with the trusted key; returns its id.
pub async fn bootloader_release(app: &impl Api, model: &str, version: &str, counter: u32) -> i64 {
    let key = signing_key();
    let resp = app
        .upload_release(
            model,
            stage1_image(SlotId::A, version, counter, &key),
            stage1_image(SlotId::B, version, counter, &key),
        )
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let v = resp.json::<serde_json::Value>().await.unwrap();
    assert_eq!(v["component"], "bootloader", "{v}");
    v["id"].as_i64().unwrap()
}

/// GET a rollout's status.
pub async fn rollout_status(app: &impl Api, id: i64) -> serde_json::Value {
    app.admin_get(&format!("/v1/rollouts/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Poll until `done(status)` or the timeout; returns the last status.
pub async fn wait_for(
    app: &impl Api,
    id: i64,
    timeout: std::time::Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let s = rollout_status(app, id).await;
        if done(&s) || start.elapsed() > timeout {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_database_url_gets_the_new_name_and_keeps_its_query() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "fota_bench_1"),
            "postgres://postgres@127.0.0.1:5432/fota_bench_1"
        );
        assert_eq!(
            with_database(
                "postgres://u@h/test?sslmode=disable&application_name=x",
                "db2"
            ),
            "postgres://u@h/db2?sslmode=disable&application_name=x"
        );
    }
}
