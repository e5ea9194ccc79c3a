//! The rollout benchmark (a command, not a test):
//!
//! ```sh
//! cargo run --release -p fota-server --example bench_rollout -- \
//!     --devices 100000 --trials 10 --postgres-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! Over a fleet of N provisioned, checked-in devices, per backend and per trial:
//! - **create**: the time to start a rollout over every device (`POST /v1/rollouts`: selecting
//!   the targets, ranking each, writing a row per target, the audit entry);
//! - **halt on report**: canary devices report bootloader rollbacks; from sending the report that
//!   crosses the gate to its acknowledgement (the server halts the rollout before it answers),
//!   and to a read of the rollout (`GET /v1/rollouts/{id}`, its status) showing `halted`;
//! - **halt on silence**: canary devices take the offer and go silent; from their confirmation
//!   deadline passing to the rollout reading `halted` (bounded by the sweep interval).
//!
//! Prints p50 / p99 / max over the trials. Figures go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use ed25519_dalek::SigningKey;
use fota_protocol::image::TrustedKey;
use fota_protocol::testing::image_for;
use fota_protocol::SlotId;
use fota_server::config::ServeConfig;
use fota_server::domain::auth::Role;
use fota_server::store::now_ms;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Trials per measurement.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// A PostgreSQL server; a fresh database is made for the run and dropped after it.
    #[arg(long, env = "FOTA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The server's sweep interval in ms (silence is noticed within one sweep).
    #[arg(long, default_value_t = 500)]
    sweep_ms: u64,
}

struct Fleet {
    client: reqwest::Client,
    url: String,
    admin: String,
    devices: Vec<(String, String)>,
}

fn check_in_body(version: &str) -> Value {
    json!({"model": "f429", "firmware_version": version, "running_slot": "a", "boot_state": "confirmed",
           "bootloader_version": "1.0.0", "rdp_level": "level1", "wrp_mask": 0})
}

impl Fleet {
    async fn check_in(&self, i: usize) -> Option<Value> {
        let (id, token) = &self.devices[i];
        let v: Value = self
            .client
            .post(format!("{}/v1/devices/{id}/check-in", self.url))
            .bearer_auth(token)
            .json(&check_in_body("1.0.0"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.get("offer").cloned()
    }

    async fn report(&self, i: usize, event_id: u64, kind: &str, rollout: i64) -> Duration {
        let (id, token) = &self.devices[i];
        let sent = Instant::now();
        let resp = self
            .client
            .post(format!("{}/v1/devices/{id}/reports", self.url))
            .bearer_auth(token)
            .json(&json!({"events": [{"id": event_id, "kind": kind, "rollout_id": rollout, "reason": "bench"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        sent.elapsed()
    }

    async fn state(&self, rollout: i64) -> String {
        let v: Value = self
            .client
            .get(format!("{}/v1/rollouts/{rollout}", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["state"].as_str().unwrap().to_string()
    }

    async fn start(&self, release: i64, deadline_s: i64) -> (i64, Duration) {
        let started = Instant::now();
        let resp = self
            .client
            .post(format!("{}/v1/rollouts", self.url))
            .bearer_auth(&self.admin)
            .json(&json!({"release_id": release, "stages": [
                {"percent": 1, "min_sample": 20, "max_failure_rate": 0.05, "confirm_deadline_s": deadline_s, "bake_s": 0},
                {"percent": 100, "min_sample": 20, "max_failure_rate": 0.05, "confirm_deadline_s": deadline_s}
            ]}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["targets"].as_u64().unwrap() as usize, self.devices.len());
        (v["id"].as_i64().unwrap(), took)
    }

    async fn abort(&self, rollout: i64) {
        let resp = self
            .client
            .post(format!("{}/v1/rollouts/{rollout}/abort", self.url))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success() || resp.status() == 409);
    }

    /// Indices of `n` devices that get an offer from the current stage.
    async fn canaries(&self, n: usize) -> Vec<(usize, Value)> {
        let mut out = Vec::new();
        for i in 0..self.devices.len() {
            if let Some(offer) = self.check_in(i).await {
                out.push((i, offer));
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }
}

fn stats(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| ms(v[((v.len() as f64 * q) as usize).min(v.len() - 1)]);
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        p(0.5),
        p(0.99),
        ms(*v.last().unwrap())
    )
}

async fn run(args: &Args, label: &str, database_url: Option<String>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let key = SigningKey::from_bytes(&[42; 32]);
    config.trusted_keys = vec![TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()];
    config.sweep_interval = Duration::from_millis(args.sweep_ms);
    config.flush_interval = Duration::from_millis(200);
    let server = fota_server::serve::start(config).await.unwrap();
    let admin = fota_server::domain::auth::new_token(fota_server::domain::auth::ADMIN_TOKEN_PREFIX)
        .unwrap();
    server
        .state
        .store
        .create_admin_token(
            "bench",
            Role::Admin,
            &fota_server::domain::auth::token_hash(&admin),
            "bench",
            now_ms(),
        )
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let specs: Vec<Value> = (0..args.devices)
        .map(|i| json!({"id": format!("D{i:06}"), "model": "f429"}))
        .collect();
    let v: Value = client
        .post(format!("{}/v1/devices", server.url()))
        .bearer_auth(&admin)
        .json(&json!({ "devices": specs }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let devices: Vec<(String, String)> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["token"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let fleet = Fleet {
        client,
        url: server.url(),
        admin,
        devices,
    };
    // Everyone checks in once, so the server knows what they run.
    let mut handles = Vec::new();
    let fleet = std::sync::Arc::new(fleet);
    for w in 0..32 {
        let f = fleet.clone();
        handles.push(tokio::spawn(async move {
            let mut i = w;
            while i < f.devices.len() {
                f.check_in(i).await;
                i += 32;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;

    let image = |slot: SlotId| {
        image_for(slot, 64 * 1024, "2.0.0".parse().unwrap())
            .sign(&key)
            .unwrap()
    };
    let form = reqwest::multipart::Form::new()
        .text("model", "f429")
        .part("image_a", reqwest::multipart::Part::bytes(image(SlotId::A)))
        .part("image_b", reqwest::multipart::Part::bytes(image(SlotId::B)));
    let release: Value = fleet
        .client
        .post(format!("{}/v1/releases", fleet.url))
        .bearer_auth(&fleet.admin)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let release = release["id"].as_i64().unwrap();

    let (mut create, mut on_ack, mut on_report, mut on_silence) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut event_id = 1u64;
    for _ in 0..args.trials {
        // Halt on report: min sample 20, 5% -> the second rollback crosses the gate.
        let (id, took) = fleet.start(release, 3600).await;
        create.push(took);
        let canaries = fleet.canaries(2).await;
        fleet
            .report(canaries[0].0, event_id, "rolled_back", id)
            .await;
        event_id += 1;
        assert_eq!(fleet.state(id).await, "active");
        let sent = Instant::now();
        fleet
            .report(canaries[1].0, event_id, "rolled_back", id)
            .await;
        on_ack.push(sent.elapsed());
        event_id += 1;
        // The gate was evaluated inside the report's request: the first read shows the halt.
        let state = fleet.state(id).await;
        on_report.push(sent.elapsed());
        assert_eq!(
            state, "halted",
            "not halted when the crossing report was answered"
        );
        fleet.abort(id).await;

        // Halt on silence: two canaries take the offer and say nothing more.
        let (id, took) = fleet.start(release, 1).await;
        create.push(took);
        let offered_at = Instant::now();
        let canaries = fleet.canaries(2).await;
        assert_eq!(canaries.len(), 2);
        let deadline = offered_at + Duration::from_secs(1);
        while fleet.state(id).await != "halted" {
            assert!(
                offered_at.elapsed() < Duration::from_secs(20),
                "never halted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        on_silence.push(Instant::now().saturating_duration_since(deadline));
        fleet.abort(id).await;
    }
    server.shutdown().await.unwrap();
    vec![
        stats(
            &format!("{label}: create a rollout over {} targets", args.devices),
            create,
        ),
        stats(
            &format!("{label}: crossing report -> acknowledged (halted before it)"),
            on_ack,
        ),
        stats(
            &format!("{label}: crossing report -> a status read shows halted"),
            on_report,
        ),
        stats(
            &format!(
                "{label}: deadline passed (silence) -> halted, sweep {} ms",
                args.sweep_ms
            ),
            on_silence,
        ),
    ]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    fota_server::serve::init_tracing();
    println!(
        "fota rollout benchmark: {} devices, {} trials",
        args.devices, args.trials
    );
    let mut rows = run(&args, "SQLite", None).await;
    if let Some(base) = &args.postgres_url {
        let db = fota_testkit::BenchDatabase::create(base).await;
        rows.extend(run(&args, "PostgreSQL", Some(db.url())).await);
        db.drop_now().await;
    }
    println!("\n| measurement | samples | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
