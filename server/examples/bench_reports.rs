//! The report-ingest benchmark (a command, not a test):
//!
//! ```sh
//! cargo run --release -p fota-server --example bench_reports -- \
//!     --devices 20000 --seconds 10 --postgres-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! N devices, provisioned and all targets of one active rollout, post reports over keep-alive
//! HTTP/1.1 connections (each connection speaks for its share of the devices, one request at a
//! time): every report a batch of `--events` new events about the rollout, a device's events
//! walking `download_started`, `installed`, `trial_boot`, `confirmed` and round again (the
//! moves after the first round find the device confirmed and change nothing, but every event is
//! still stored). A report counts once it is acknowledged with every event stored. Printed:
//! reports/s, events/s and the p50/p99 acknowledgement latency of:
//! 1. the ceiling: the same load against a handler that parses the report and discards it;
//! 2. `fota serve` on SQLite;
//! 3. `fota serve` on PostgreSQL (a fresh database on `--postgres-url`), when given;
//! 4. `fota serve` on a private PostgreSQL with default settings, started with Debian's
//!    `initdb`/`pg_ctl` in a temporary directory (`--private-postgres`);
//! 5. after each backend's HTTP run, the store alone on the same database: the same load handed
//!    straight to the group commit (`Store::store_report`), without HTTP, authentication or the
//!    rollout engine, which tells how much of a report's cost is the database's path.
//!
//! Server and load generator share this machine's cores; the ceiling row shows what that
//! costs. A second table says where each run's CPU went, read from `/proc`: µs a report in this
//! process (server and load generator) and in PostgreSQL's processes, how busy the machine was,
//! and how many cores that cost per report would take at issue 14's target (20,000 reports/s on
//! SQLite, 50,000/s on PostgreSQL). Figures go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use clap::Parser;
use fota_protocol::image::TrustedKey;
use fota_protocol::messages::{Report, ReportAck};
use fota_protocol::SlotId;
use fota_server::config::ServeConfig;
use fota_server::domain::auth::Role;
use fota_server::store::now_ms;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Devices posting reports.
    #[arg(long, default_value_t = 20_000)]
    devices: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events per report (a device's batch; at most 16).
    #[arg(long, default_value_t = 2)]
    events: usize,
    /// Seconds of reports per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A PostgreSQL server (any database on it); a fresh database is made for the run and dropped after it.
    #[arg(long, env = "FOTA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Also run on a private PostgreSQL with default settings (initdb + pg_ctl).
    #[arg(long)]
    private_postgres: bool,
    /// Skip SQLite.
    #[arg(long)]
    no_sqlite: bool,
}

const KINDS: [&str; 4] = ["download_started", "installed", "trial_boot", "confirmed"];

/// Latencies in microseconds plus counts.
#[derive(Debug, Default)]
struct Run {
    latencies_us: Vec<u32>,
    errors: u64,
    events: u64,
    elapsed: Duration,
    /// Group commits during the run (0 for the ceiling).
    batches: u64,
    /// CPU spent during the run.
    cpu: Cpu,
}

impl Run {
    fn row(&mut self, name: &str) -> String {
        let n = self.latencies_us.len();
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            if n == 0 {
                return 0.0;
            }
            f64::from(self.latencies_us[((n as f64 * p) as usize).min(n - 1)]) / 1000.0
        };
        let secs = self.elapsed.as_secs_f64();
        let per_batch = if self.batches == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", n as f64 / self.batches as f64)
        };
        format!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {per_batch} |",
            n as f64 / secs,
            self.events as f64 / secs,
            pct(0.50),
            pct(0.99),
            self.errors
        )
    }

    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// CPU time in ticks of `/proc` (USER_HZ, 100 a second on Linux): this process's (server and
/// load generator), every readable process named `postgres` (the database's backends), and the
/// machine's busy and total. Zero where `/proc` cannot be read.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    me: u64,
    postgres: u64,
    busy: u64,
    total: u64,
}

const TICKS_A_SECOND: f64 = 100.0;

impl Cpu {
    fn now() -> Cpu {
        /// (command name, user + system ticks) of a `/proc/<pid>/stat` line.
        fn ticks(stat: &str) -> Option<(&str, u64)> {
            let comm = &stat[stat.find('(')? + 1..stat.rfind(')')?];
            let mut f = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
            let utime: u64 = f.next()?.parse().ok()?;
            let stime: u64 = f.next()?.parse().ok()?;
            Some((comm, utime + stime))
        }
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        let mut cpu = Cpu {
            me: ticks(&read("/proc/self/stat".as_ref())).map_or(0, |t| t.1),
            ..Cpu::default()
        };
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = read(&entry.path().join("stat"));
            if let Some(("postgres", t)) = ticks(&stat) {
                cpu.postgres += t;
            }
        }
        // "cpu  user nice system idle iowait irq softirq steal ...": idle and iowait are not busy.
        let stat = read("/proc/stat".as_ref());
        let all: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        cpu.total = all.iter().take(8).sum();
        cpu.busy = cpu.total - all.get(3).copied().unwrap_or(0) - all.get(4).copied().unwrap_or(0);
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            me: self.me.saturating_sub(before.me),
            postgres: self.postgres.saturating_sub(before.postgres),
            busy: self.busy.saturating_sub(before.busy),
            total: self.total.saturating_sub(before.total),
        }
    }
}

impl Run {
    /// A report acknowledged with its `events` all stored, sent at `sent`.
    fn acked(&mut self, sent: Instant, events: usize) {
        self.latencies_us.push(sent.elapsed().as_micros() as u32);
        self.events += events as u64;
    }

    /// The connections' runs as one, timed from `started`, its CPU counted from `before`.
    async fn gather(
        tasks: Vec<tokio::task::JoinHandle<Run>>,
        started: Instant,
        before: Cpu,
    ) -> Run {
        let mut total = Run::default();
        for t in tasks {
            let r = t.await.unwrap();
            total.latencies_us.extend(r.latencies_us);
            total.errors += r.errors;
            total.events += r.events;
        }
        total.elapsed = started.elapsed();
        total.cpu = Cpu::now().since(before);
        total
    }

    /// Where the run's CPU went: µs a report in this process and in PostgreSQL, the machine's
    /// busy share, and the cores that cost would take at `target` reports/s.
    fn cpu_row(&self, name: &str, target: f64) -> String {
        let n = self.latencies_us.len().max(1) as f64;
        let us = |ticks: u64| ticks as f64 / TICKS_A_SECOND * 1e6 / n;
        let (me, pg) = (us(self.cpu.me), us(self.cpu.postgres));
        format!(
            "| {name} | {me:.0} | {pg:.0} | {:.0}% | {:.1} |",
            100.0 * self.cpu.busy as f64 / self.cpu.total.max(1) as f64,
            (me + pg) * target / 1e6
        )
    }
}

/// The store alone, no HTTP: the same load as [`drive`] (one task per connection, its devices
/// round-robin, one report at a time), each report handed to the group commit
/// (`Store::store_report`) on the server's runtime. Event ids start at `first_event`, past
/// those the HTTP run used, so every event is new.
async fn drive_store(
    store: fota_server::store::Store,
    fleet: Arc<Fleet>,
    args: &Args,
    first_event: u64,
    server_rt: &tokio::runtime::Runtime,
) -> Run {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let before = Cpu::now();
    let (batches_before, _) = store.group_commit_stats();
    let (per_report, connections) = (args.events, args.connections);
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let (fleet, store) = (fleet.clone(), store.clone());
        tasks.push(server_rt.spawn(async move {
            let mine: Vec<usize> = (worker..fleet.devices.len()).step_by(connections).collect();
            let mut next_event = vec![first_event; mine.len()];
            let mut run = Run::default();
            let mut k = 0;
            while Instant::now() < deadline && !mine.is_empty() {
                let slot = k % mine.len();
                k += 1;
                let (id, _) = &fleet.devices[mine[slot]];
                let report: Report =
                    serde_json::from_slice(&body(fleet.rollout, next_event[slot], per_report))
                        .unwrap();
                let sent = Instant::now();
                match store.store_report(id, &report.events, now_ms()).await {
                    Ok(o) if o.stored as usize == per_report => {
                        run.acked(sent, per_report);
                        next_event[slot] += per_report as u64;
                    }
                    _ => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut total = Run::gather(tasks, started, before).await;
    total.batches = store.group_commit_stats().0 - batches_before;
    total
}

struct Fleet {
    /// (id, "Bearer token") per device.
    devices: Vec<(String, HeaderValue)>,
    rollout: i64,
}

fn body(rollout: i64, first_id: u64, events: usize) -> Bytes {
    let events: Vec<serde_json::Value> = (0..events as u64)
        .map(|k| {
            let id = first_id + k;
            serde_json::json!({"id": id, "kind": KINDS[(id as usize - 1) % KINDS.len()], "rollout_id": rollout})
        })
        .collect();
    Bytes::from(serde_json::json!({ "events": events }).to_string())
}

/// Every connection walks its devices round-robin, one report at a time, until the deadline.
async fn drive(addr: SocketAddr, fleet: Arc<Fleet>, args: &Args) -> Run {
    let started = Instant::now();
    let before = Cpu::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let connections = args.connections;
    let per_report = args.events;
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let fleet = fleet.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mine: Vec<usize> = (worker..fleet.devices.len()).step_by(connections).collect();
            let mut next_event = vec![1u64; mine.len()];
            let mut run = Run::default();
            let mut k = 0;
            while Instant::now() < deadline && !mine.is_empty() {
                let slot = k % mine.len();
                k += 1;
                let (id, auth) = &fleet.devices[mine[slot]];
                let req = Request::post(format!("/v1/devices/{id}/reports"))
                    .header("host", "bench")
                    .header(AUTHORIZATION, auth.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(body(fleet.rollout, next_event[slot], per_report)))
                    .unwrap();
                let sent = Instant::now();
                if sender.ready().await.is_err() {
                    run.errors += 1;
                    break;
                }
                let acked = match sender.send_request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        match resp.into_body().collect().await {
                            Ok(b) => serde_json::from_slice::<ReportAck>(&b.to_bytes())
                                .ok()
                                .filter(|a| a.stored as usize == per_report),
                            Err(_) => None,
                        }
                    }
                    Ok(resp) => {
                        let _ = resp.into_body().collect().await;
                        None
                    }
                    Err(_) => None,
                };
                match acked {
                    Some(_) => {
                        run.acked(sent, per_report);
                        next_event[slot] += per_report as u64;
                    }
                    None => run.errors += 1,
                }
            }
            run
        }));
    }
    Run::gather(tasks, started, before).await
}

/// The ceiling: the report route, a handler that parses the report and discards it.
async fn ceiling(args: &Args, server_rt: &tokio::runtime::Runtime) -> Run {
    let app = axum::Router::new().route(
        "/v1/devices/{id}/reports",
        axum::routing::post(|body: Bytes| async move {
            let report: Report = serde_json::from_slice(&body).unwrap();
            axum::Json(ReportAck {
                stored: report.events.len() as u32,
                duplicates: 0,
            })
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    server_rt.spawn(async move {
        use axum::serve::ListenerExt as _;
        let listener = tokio::net::TcpListener::from_std(listener)
            .unwrap()
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        axum::serve(listener, app).await
    });
    let fleet = Fleet {
        devices: (0..args.devices)
            .map(|i| (format!("R{i:06}"), HeaderValue::from_static("Bearer x")))
            .collect(),
        rollout: 1,
    };
    drive(addr, Arc::new(fleet), args).await
}

/// `fota serve` over `database_url` (None: SQLite in a temporary directory), its fleet
/// provisioned and all targets of an active rollout, then the load over HTTP, then the same
/// load on the store alone ([`drive_store`]).
async fn fota(
    args: &Args,
    database_url: Option<String>,
    server_rt: &tokio::runtime::Runtime,
) -> (Run, Run) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    if let Some(url) = database_url {
        config.database_url = url;
    }
    let key = fota_testkit::signing_key();
    config.trusted_keys = vec![TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()];
    let server = server_rt
        .spawn(fota_server::serve::start(config))
        .await
        .unwrap()
        .unwrap();
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
    let devices: Vec<serde_json::Value> = (0..args.devices)
        .map(|i| serde_json::json!({"id": format!("R{i:06}"), "model": "f429"}))
        .collect();
    let resp = client
        .post(format!("{}/v1/devices", server.url()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "devices": devices }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let registered: serde_json::Value = resp.json().await.unwrap();
    let devices: Vec<(String, HeaderValue)> = registered["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                HeaderValue::from_str(&format!("Bearer {}", d["token"].as_str().unwrap())).unwrap(),
            )
        })
        .collect();
    let form = reqwest::multipart::Form::new()
        .text("model", "f429")
        .part(
            "image_a",
            reqwest::multipart::Part::bytes(fota_testkit::image(SlotId::A, "2.0.0", 1, &key)),
        )
        .part(
            "image_b",
            reqwest::multipart::Part::bytes(fota_testkit::image(SlotId::B, "2.0.0", 1, &key)),
        );
    let resp = client
        .post(format!("{}/v1/releases", server.url()))
        .bearer_auth(&admin)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let release = resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let resp = client
        .post(format!("{}/v1/rollouts", server.url()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"release_id": release, "stages": [
            {"percent": 100, "min_sample": 1, "max_failure_rate": 0.05, "confirm_deadline_s": 3600}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let rollout: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(rollout["targets"].as_u64().unwrap() as usize, args.devices);
    let fleet = Fleet {
        devices,
        rollout: rollout["id"].as_i64().unwrap(),
    };
    let fleet = Arc::new(fleet);
    let before = server.state.store.group_commit_stats();
    let mut run = drive(server.addr, fleet.clone(), args).await;
    let after = server.state.store.group_commit_stats();
    run.batches = after.0 - before.0;
    let store_only = drive_store(
        server.state.store.clone(),
        fleet,
        args,
        STORE_ONLY_FIRST_EVENT,
        server_rt,
    )
    .await;
    server.shutdown().await.unwrap();
    (run, store_only)
}

/// The store-only run's first event id: past any id the HTTP run reaches, and the first of a
/// round of the walk ((id - 1) % 4 == 0: `download_started`).
const STORE_ONLY_FIRST_EVENT: u64 = 1_000_000_001;

fn main() {
    let args = Args::parse();
    assert!((1..=16).contains(&args.events), "--events is 1 to 16");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "fota report-ingest benchmark: {} devices, {} keep-alive connections, {} events a report, {} s a run, {} cores",
        args.devices,
        args.connections,
        args.events,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut ceiling_run = client_rt.block_on(ceiling(&args, &server_rt));
    let ceiling_rate = ceiling_run.rate();
    rows.push(ceiling_run.row("ceiling: parse the report, discard it"));

    let mut private = None;
    let mut backends: Vec<(String, Option<String>)> = Vec::new();
    if !args.no_sqlite {
        backends.push(("SQLite".into(), None));
    }
    let mut made = None;
    if let Some(base) = &args.postgres_url {
        let db = client_rt.block_on(fota_testkit::BenchDatabase::create(base));
        backends.push(("PostgreSQL (--postgres-url)".into(), Some(db.url())));
        made = Some(db);
    }
    if args.private_postgres {
        let pg = fota_testkit::PrivatePostgres::start();
        backends.push((
            "PostgreSQL (private, default settings)".into(),
            Some(pg.url()),
        ));
        private = Some(pg);
    }
    let mut cpu_rows = vec![ceiling_run.cpu_row("ceiling", TARGET_POSTGRES)];
    for (name, url) in backends {
        let (mut run, mut store_only) = client_rt.block_on(fota(&args, url, &server_rt));
        let target = if name == "SQLite" {
            TARGET_SQLITE
        } else {
            TARGET_POSTGRES
        };
        notes.push(format!(
            "- {name}: {:.2} x the ceiling, {:.2} x the target of {target:.0}/s; the store alone {:.2} x the target",
            run.rate() / ceiling_rate,
            run.rate() / target,
            store_only.rate() / target
        ));
        cpu_rows.push(run.cpu_row(&format!("fota {name}"), target));
        cpu_rows.push(store_only.cpu_row(&format!("fota {name}, the store alone"), target));
        rows.push(run.row(&format!("fota {name}")));
        rows.push(store_only.row(&format!("fota {name}, the store alone (no HTTP)")));
    }
    drop(private);
    if let Some(db) = made {
        client_rt.block_on(db.drop_now());
    }
    println!(
        "\n| run | reports/s | events/s | p50 ms | p99 ms | errors | reports a group commit |\n|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        println!("{r}");
    }
    println!(
        "\nWhere the CPU went (from /proc; this process is the server and the load generator):\n\n\
         | run | this process, µs a report | PostgreSQL, µs a report | machine busy | cores that takes at the target |\n|---|---|---|---|---|"
    );
    for r in &cpu_rows {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
}

/// Issue 14's targets, reports/s.
const TARGET_SQLITE: f64 = 20_000.0;
const TARGET_POSTGRES: f64 = 50_000.0;
