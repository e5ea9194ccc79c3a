//! The server benchmark (a command, not a test):
//!
//! ```sh
//! cargo run --release -p fota-server --example bench -- \
//!     --devices 100000 --postgres-url postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! In one run it measures, with the same keep-alive HTTP/1.1 load generator:
//! 1. the ceiling: a trivial axum handler on the check-in route;
//! 2. `fota serve` on SQLite: provisioning N devices in one request, the first check-in of every
//!    device (cold credential cache), then steady check-ins over all devices;
//! 3. the same on PostgreSQL (a fresh database on the given server), when a URL is given;
//! 4. artifact serving: 4 KiB Range requests and whole-image downloads from `fota serve`, and from
//!    nginx serving the same file when `nginx` is installed.
//!
//! Server and load generator share this machine's cores, as they would in any loopback test;
//! the ceiling row shows what that costs. Figures go to docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use clap::Parser;
use ed25519_dalek::SigningKey;
use fota_protocol::image::TrustedKey;
use fota_protocol::testing::image_for;
use fota_protocol::SlotId;
use fota_server::config::ServeConfig;
use fota_server::domain::auth::Role;
use fota_server::store::now_ms;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RANGE};
use hyper::Request;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// Devices to provision and check in.
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of steady check-ins per backend.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A PostgreSQL server (any database on it); a fresh database is made for the run and dropped after it.
    #[arg(long, env = "FOTA_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Seconds per artifact measurement.
    #[arg(long, default_value_t = 5)]
    artifact_seconds: u64,
    /// Skip the artifact comparison.
    #[arg(long)]
    no_artifacts: bool,
}

/// Latencies in microseconds plus counts.
#[derive(Debug, Default)]
struct Run {
    latencies_us: Vec<u32>,
    errors: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.bytes += other.bytes;
    }

    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 * p) as usize).min(self.latencies_us.len() - 1);
        f64::from(self.latencies_us[i]) / 1000.0
    }

    fn row(&mut self, name: &str) -> String {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.errors
        )
    }
}

/// One request to send: path and headers, body shared.
#[derive(Clone)]
struct Target {
    path: String,
    auth: Option<HeaderValue>,
    range: Option<HeaderValue>,
}

/// Drive `targets` round-robin over `connections` keep-alive connections until `deadline`, or
/// (with `once`) until every target was sent once.
async fn drive(
    addr: SocketAddr,
    targets: Arc<Vec<Target>>,
    body: Bytes,
    method: hyper::Method,
    connections: usize,
    duration: Option<Duration>,
) -> Run {
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let targets = targets.clone();
        let body = body.clone();
        let method = method.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut run = Run::default();
            let mut i = worker;
            loop {
                if let Some(deadline) = deadline {
                    if Instant::now() >= deadline {
                        break;
                    }
                } else if i >= targets.len() {
                    break;
                }
                let t = &targets[i % targets.len()];
                i += connections;
                let mut req = Request::builder()
                    .method(method.clone())
                    .uri(&t.path)
                    .header("host", "bench");
                if let Some(auth) = &t.auth {
                    req = req.header(AUTHORIZATION, auth.clone());
                }
                if let Some(range) = &t.range {
                    req = req.header(RANGE, range.clone());
                }
                if !body.is_empty() {
                    req = req.header(CONTENT_TYPE, "application/json");
                }
                let req = req.body(Full::new(body.clone())).unwrap();
                let sent = Instant::now();
                if sender.ready().await.is_err() {
                    run.errors += 1;
                    break;
                }
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes().len());
                        match (ok, bytes) {
                            (true, Ok(n)) => {
                                run.bytes += n as u64;
                                run.latencies_us.push(sent.elapsed().as_micros() as u32);
                            }
                            _ => run.errors += 1,
                        }
                    }
                    Err(_) => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut total = Run::default();
    for t in tasks {
        total.merge(t.await.unwrap());
    }
    total.elapsed = started.elapsed();
    total
}

fn check_in_body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": "f429",
            "firmware_version": "1.0.0",
            "running_slot": "a",
            "boot_state": "confirmed",
            "bootloader_version": "1.0.0",
            "rdp_level": "level1",
            "wrp_mask": 3
        })
        .to_string(),
    )
}

/// The ceiling: the same route, a handler that only answers.
async fn ceiling(args: &Args, server_rt: &tokio::runtime::Runtime) -> Run {
    let app = axum::Router::new().route(
        "/v1/devices/{id}/check-in",
        axum::routing::post(|_body: Bytes| async {
            axum::Json(serde_json::json!({"poll_interval_s": 3600}))
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
    let targets: Vec<Target> = (0..args.devices)
        .map(|i| Target {
            path: format!("/v1/devices/D{i:06}/check-in"),
            auth: Some(HeaderValue::from_static("Bearer x")),
            range: None,
        })
        .collect();
    drive(
        addr,
        Arc::new(targets),
        check_in_body(),
        hyper::Method::POST,
        args.connections,
        Some(Duration::from_secs(args.seconds)),
    )
    .await
}

struct FotaRun {
    provision: Duration,
    cold: Run,
    steady: Run,
    flushed_all: bool,
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

async fn fota(
    args: &Args,
    database_url: Option<String>,
    server_rt: &tokio::runtime::Runtime,
) -> (
    FotaRun,
    fota_server::serve::RunningServer,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    if let Some(url) = database_url {
        config.database_url = url;
    }
    config.trusted_keys =
        vec![TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()];
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
        .map(|i| serde_json::json!({"id": format!("D{i:06}"), "model": "f429", "tags": ["bench"]}))
        .collect();
    let started = Instant::now();
    let resp = client
        .post(format!("{}/v1/devices", server.url()))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "devices": devices }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let registered: serde_json::Value = resp.json().await.unwrap();
    let provision = started.elapsed();
    let targets: Vec<Target> = registered["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| Target {
            path: format!("/v1/devices/{}/check-in", d["id"].as_str().unwrap()),
            auth: Some(
                HeaderValue::from_str(&format!("Bearer {}", d["token"].as_str().unwrap())).unwrap(),
            ),
            range: None,
        })
        .collect();
    let targets = Arc::new(targets);
    let cold = drive(
        server.addr,
        targets.clone(),
        check_in_body(),
        hyper::Method::POST,
        args.connections,
        None,
    )
    .await;
    let steady = drive(
        server.addr,
        targets,
        check_in_body(),
        hyper::Method::POST,
        args.connections,
        Some(Duration::from_secs(args.seconds)),
    )
    .await;
    // Every device's last check-in reaches the database within a flush interval or two.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = server.state.store.fleet_summary(0).await.unwrap();
    let flushed_all = summary.never_seen == 0 && summary.total == args.devices as i64;
    (
        FotaRun {
            provision,
            cold,
            steady,
            flushed_all,
        },
        server,
        dir,
    )
}

fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Start nginx serving `root` on a free port; returns its address and the child.
fn start_nginx(
    nginx: &std::path::Path,
    root: &std::path::Path,
    work: &std::path::Path,
) -> (SocketAddr, std::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 1; user root; pid {w}/nginx.pid; error_log {w}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000;\n\
               client_body_temp_path {w}; proxy_temp_path {w}; fastcgi_temp_path {w}; uwsgi_temp_path {w}; scgi_temp_path {w};\n\
               server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }} }}\n",
            w = work.display(),
            root = root.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(nginx)
        .args(["-c", conf.to_str().unwrap(), "-p", work.to_str().unwrap()])
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (addr, child)
}

async fn artifact_runs(
    args: &Args,
    addr: SocketAddr,
    path_prefix: &str,
    sha: &str,
    size: usize,
) -> (Run, Run) {
    let ranges: Vec<Target> = (0..1024)
        .map(|i| {
            let start = (i * 7919 * 16) % (size - 4096);
            Target {
                path: format!("{path_prefix}{sha}"),
                auth: None,
                range: Some(
                    HeaderValue::from_str(&format!("bytes={start}-{}", start + 4095)).unwrap(),
                ),
            }
        })
        .collect();
    let range_run = drive(
        addr,
        Arc::new(ranges),
        Bytes::new(),
        hyper::Method::GET,
        16,
        Some(Duration::from_secs(args.artifact_seconds)),
    )
    .await;
    let whole = vec![Target {
        path: format!("{path_prefix}{sha}"),
        auth: None,
        range: None,
    }];
    let whole_run = drive(
        addr,
        Arc::new(whole),
        Bytes::new(),
        hyper::Method::GET,
        16,
        Some(Duration::from_secs(args.artifact_seconds)),
    )
    .await;
    (range_run, whole_run)
}

fn main() {
    let args = Args::parse();
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
        "fota server benchmark: {} devices, {} keep-alive connections, {} s steady, {} cores",
        args.devices,
        args.connections,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    let mut ceiling_run = client_rt.block_on(ceiling(&args, &server_rt));
    let ceiling_rate = ceiling_run.rate();
    rows.push(ceiling_run.row("ceiling: trivial axum handler"));

    let mut backends: Vec<(&str, Option<String>)> = vec![("SQLite", None)];
    let mut made = None;
    if let Some(base) = &args.postgres_url {
        let db = client_rt.block_on(fota_testkit::BenchDatabase::create(base));
        backends.push(("PostgreSQL", Some(db.url())));
        made = Some(db);
    }
    let mut notes = Vec::new();
    let mut artifact_server = None;
    for (name, url) in backends {
        let (mut run, server, dir) = client_rt.block_on(fota(&args, url, &server_rt));
        rows.push(run.cold.row(&format!(
            "fota {name}: first check-in of each device (cold cache)"
        )));
        let steady_rate = run.steady.rate();
        rows.push(run.steady.row(&format!("fota {name}: steady check-ins")));
        notes.push(format!(
            "- {name}: provisioning {} devices in one request took {:.2} s; steady rate is {:.2} x the ceiling; every device's check-in reached the database: {}",
            args.devices,
            run.provision.as_secs_f64(),
            steady_rate / ceiling_rate,
            run.flushed_all
        ));
        if artifact_server.is_none() {
            artifact_server = Some((server, dir));
        } else {
            client_rt.block_on(server.shutdown()).unwrap();
        }
    }
    println!("\n| run | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("{n}");
    }

    if !args.no_artifacts {
        let (server, dir) = artifact_server.unwrap();
        let key = signing_key();
        let image = |slot: SlotId| {
            image_for(slot, 200 * 1024, "9.9.9".parse().unwrap())
                .sign(&key)
                .unwrap()
        };
        let (a, b) = (image(SlotId::A), image(SlotId::B));
        let size = a.len();
        let sha = client_rt.block_on(async {
            let admin =
                fota_server::domain::auth::new_token(fota_server::domain::auth::ADMIN_TOKEN_PREFIX)
                    .unwrap();
            server
                .state
                .store
                .create_admin_token(
                    "bench-art",
                    Role::Admin,
                    &fota_server::domain::auth::token_hash(&admin),
                    "bench",
                    now_ms(),
                )
                .await
                .unwrap();
            let form = reqwest::multipart::Form::new()
                .text("model", "f429")
                .part("image_a", reqwest::multipart::Part::bytes(a.clone()))
                .part("image_b", reqwest::multipart::Part::bytes(b));
            let resp = reqwest::Client::new()
                .post(format!("{}/v1/releases", server.url()))
                .bearer_auth(&admin)
                .multipart(form)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            fota_protocol::image::Digest::of(&a).to_string()
        });
        println!(
            "\nArtifact serving, one {size}-byte image, 16 connections, {} s each:\n",
            args.artifact_seconds
        );
        println!("| server | 4 KiB ranges/s | range p99 ms | whole images/s | MB/s | errors |\n|---|---|---|---|---|---|");
        let (mut r, w) = client_rt.block_on(artifact_runs(
            &args,
            server.addr,
            "/v1/artifacts/",
            &sha,
            size,
        ));
        let mbps = w.bytes as f64 / w.elapsed.as_secs_f64() / 1e6;
        println!(
            "| fota serve | {:.0} | {:.2} | {:.0} | {:.0} | {} |",
            r.rate(),
            r.percentile(0.99),
            w.rate(),
            mbps,
            r.errors + w.errors
        );
        match find_nginx() {
            Some(nginx) => {
                let work = tempfile::tempdir().unwrap();
                let (addr, mut child) =
                    start_nginx(&nginx, &dir.path().join("artifacts"), work.path());
                let (mut r, w) = client_rt.block_on(artifact_runs(&args, addr, "/", &sha, size));
                let mbps = w.bytes as f64 / w.elapsed.as_secs_f64() / 1e6;
                println!(
                    "| nginx (same file) | {:.0} | {:.2} | {:.0} | {:.0} | {} |",
                    r.rate(),
                    r.percentile(0.99),
                    w.rate(),
                    mbps,
                    r.errors + w.errors
                );
                // SIGQUIT: nginx's graceful stop, which takes its worker down too.
                let _ = std::process::Command::new("kill")
                    .args(["-QUIT", &child.id().to_string()])
                    .status();
                let _ = child.wait();
            }
            None => println!("| nginx | not installed (apt-get install -y nginx) | | | | |"),
        }
        client_rt.block_on(server.shutdown()).unwrap();
    }
    if let Some(db) = made {
        client_rt.block_on(db.drop_now());
    }
}
