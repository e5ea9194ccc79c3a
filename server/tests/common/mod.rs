//! Test harness: a real `fota serve` on 127.0.0.1:0 over a fresh database, SQLite by default and
//! PostgreSQL too when `FOTA_TEST_POSTGRES_URL` is set. [`backend_tests!`] turns one async test
//! body into a test per backend.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use fota_protocol::image::{ImageBuilder, TrustedKey};
use fota_protocol::{ImageVersion, SlotId};
use fota_server::config::ServeConfig;
use fota_server::serve::{start, RunningServer};
use fota_server::store::{now_ms, Role, Store};
use std::sync::atomic::{AtomicU32, Ordering};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Define `$name::sqlite` and `$name::postgres` from one `async fn(Db)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Db::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::common::postgres_url().is_none() {
                        return;
                    }
                    super::$name($crate::common::Db::Postgres).await;
                }
            }
        )*
    };
}

/// The PostgreSQL server to test against. With `FOTA_REQUIRE_POSTGRES=1` a missing URL fails.
pub fn postgres_url() -> Option<String> {
    match std::env::var("FOTA_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("FOTA_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "FOTA_REQUIRE_POSTGRES=1 but FOTA_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipped: FOTA_TEST_POSTGRES_URL not set");
            None
        }
    }
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty PostgreSQL database on the test server; returns its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection as _;
    let base = postgres_url().expect("postgres URL");
    let name = format!(
        "fota_t_{}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst),
        now_ms() % 1_000_000
    );
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let _ = admin.close().await;
    // Replace the database name (the last path segment) in the URL.
    let (prefix, rest) = base.rsplit_once('/').expect("URL with a database name");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{prefix}/{name}{query}")
}

/// The signing key tests sign releases with (trusted by every test server).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// A key the servers do not trust.
pub fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[8; 32])
}

/// An application payload whose vector table is right for `slot`.
pub fn app_for(slot: SlotId, len: usize) -> Vec<u8> {
    let entry = slot.partition().start + 0x200 + 0x100;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    p.extend_from_slice(&(entry | 1).to_le_bytes());
    p.extend((8..len).map(|i| (i * 131 % 251) as u8));
    p
}

/// A signed image for `slot`.
pub fn image(slot: SlotId, version: &str, counter: u32, key: &SigningKey) -> Vec<u8> {
    ImageBuilder::new(
        app_for(slot, 8192),
        version.parse::<ImageVersion>().unwrap(),
    )
    .security_counter(counter)
    .rom_fixed(slot.partition().start)
    .sign(key)
    .unwrap()
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
    let token = fota_server::auth::new_token(fota_server::auth::ADMIN_TOKEN_PREFIX).unwrap();
    store
        .create_admin_token(name, role, &fota_server::auth::token_hash(&token), now_ms())
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

/// Assert a JSON error response with `status` and `code`.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) {
    let got = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_eq!(v["error"], code, "body: {text}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {text}"
    );
}
