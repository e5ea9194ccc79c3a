//! `fota demo`: the whole story in one command, on a virtual fleet.
//!
//! 1. Start `fota serve` (this binary, as a child process, on SQLite in a scratch directory) with
//!    a fresh signing key trusted, and make an operator token.
//! 2. Provision N devices and start them as a virtual fleet (`fota-sim`): each runs the real
//!    bootloader logic and OTA client on simulated flash, from the factory image v1.0.0.
//! 3. Upload a good release (2.0.0) and roll it out 1% → 10% → 50% → 100%: every device ends
//!    confirmed on it.
//! 4. Upload a bad one (2.1.0, the field incident: it boots but never reaches the server) and
//!    roll it out the same way: the rollout halts in its 1% canary, and the bootloaders of the
//!    devices that took it revert them to 2.0.0 on their own.
//! 5. Print the figures: wall times, peak check-ins and reports per second, halt latency, blast
//!    radius, bricked devices (every device's flash is booted once more at the end), and the
//!    peak memory of the server and of the simulator.
//!
//! The same command at `--devices 100000` is the fleet benchmark of docs/BENCHMARKS.md.
//!
//! With `--mqtt` the demo also starts its own Mosquitto ([`broker`]) with an account per
//! device, `fota serve` pushes through it (nudges when a stage opens, stops when a rollout
//! halts), and every virtual device holds an MQTT session of its own, through which it also
//! publishes its reports: with a long `--check-in-interval`, the rollouts move at the pace of
//! pushes, not polls. A fleet larger than one broker (or one process) may hold connections for
//! runs on a core broker with edge brokers bridged to it, the sessions' sockets held by relay
//! processes (`--mqtt-devices-per-broker`; [`broker`], `fota_sim::relay`).

mod broker;

use super::ops::client::Client;
use super::ops::ServerArgs;
use anyhow::{bail, Context as _};
use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::SlotId;
use fota_sim::device::Timing;
use fota_sim::{
    app, factory_flash, AppBehaviour, DeviceSpec, Faults, Fleet, FleetConfig, MqttConfig,
    RelayCommand,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MODEL: &str = "streetlight-f429";

/// `fota demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Virtual devices in the fleet.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(10..=200_000))]
    pub devices: u32,
    /// Where the server listens (a free port is picked if this one is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Keep the server's data here instead of a scratch directory that is removed at the end.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run the server on this database instead of SQLite in the data directory, e.g. an empty
    /// PostgreSQL database (`postgres://user@host/db`).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Seconds between a device's check-ins [default: one per 2,000 devices, at least 2].
    #[arg(long, value_name = "SECONDS")]
    pub check_in_interval: Option<f64>,
    /// Simulator threads (requests in flight) [default: 8 per 1,000 devices, 8 to 96].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Size of the demo application images, in KiB.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub image_kib: u32,
    /// Leave the server running at the end (until Ctrl-C) so its API can be explored.
    #[arg(long)]
    pub serve_after: bool,
    /// Give up if a phase takes longer than this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Push through MQTT: start a Mosquitto (with an account per device), have the server
    /// nudge and stop devices through it, and give every device an MQTT session.
    #[arg(long)]
    pub mqtt: bool,
    /// With `--mqtt`: nudges per second at most (`fota serve --mqtt-nudge-rate`).
    #[arg(long, default_value_t = 2000, requires = "mqtt")]
    pub nudge_rate: u32,
    /// With `--mqtt`: the longest random wait of a nudged device, in seconds
    /// (`fota serve --mqtt-jitter-s`).
    #[arg(long, default_value_t = 10, requires = "mqtt")]
    pub nudge_jitter: u32,
    /// With `--mqtt`: how the devices send their reports: `mqtt` (published through their
    /// sessions, settled by the server's `report_ack`) or `http` (posted, as without `--mqtt`),
    /// to compare the two.
    #[arg(long, value_enum, default_value_t = ReportsOver::Mqtt, requires = "mqtt")]
    pub reports_over: ReportsOver,
    /// With `--mqtt`: the most devices one broker holds. A larger fleet runs on a core broker
    /// (the server's) and edge brokers bridged to it, each with up to this many devices, whose
    /// sessions' sockets are held by relay processes, one per edge [default: what the
    /// open-files limit allows a process, at most 16,000].
    #[arg(long, value_name = "N", requires = "mqtt", value_parser = clap::value_parser!(u32).range(10..))]
    pub mqtt_devices_per_broker: Option<u32>,
    /// Offer delta patches only when smaller than this share of the full image, in percent
    /// (`fota serve --delta-max-percent`); 0 sends full images only, to compare the bytes on
    /// the link.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub delta_max_percent: u8,
}

/// How the virtual devices send their reports under `--mqtt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportsOver {
    /// Published through each device's MQTT session.
    Mqtt,
    /// Posted over HTTP.
    Http,
}

/// The child `fota serve`, killed when dropped.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo's brokers: one, or a core (the server's) and its edges (the devices').
struct Brokers {
    core: broker::Broker,
    edges: Vec<broker::Broker>,
}

impl Brokers {
    fn pids(&self) -> Vec<u32> {
        std::iter::once(&self.core)
            .chain(&self.edges)
            .filter_map(broker::Broker::pid)
            .collect()
    }
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The peaks of `pids` ([`peak_rss`]), summed.
fn peak_rss_sum(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|p| peak_rss(&p.to_string()).unwrap_or(0))
        .sum()
}

/// `addr`, or a free port on its IP if it is taken (or port 0).
fn free_port_or(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 && TcpListener::bind(addr).is_ok() {
        return Ok(addr);
    }
    let listener = TcpListener::bind(SocketAddr::new(addr.ip(), 0))
        .with_context(|| format!("cannot listen on {}", addr.ip()))?;
    Ok(listener.local_addr()?)
}

/// `fota` with `args`, its database chosen by `database_url` (or its data directory).
fn fota_command(exe: &Path, database_url: Option<&str>) -> Command {
    let mut command = Command::new(exe);
    command.env_remove("FOTA_DATABASE_URL");
    if let Some(url) = database_url {
        command.env("FOTA_DATABASE_URL", url);
    }
    command
}

fn run_fota(exe: &Path, database_url: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let out = fota_command(exe, database_url)
        .args(args)
        .env("FOTA_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "fota {} failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn start_server(
    exe: &Path,
    database_url: Option<&str>,
    data_dir: &Path,
    listen: SocketAddr,
    key_pub: &Path,
    extra: &[String],
) -> anyhow::Result<ServerProcess> {
    let log = std::fs::File::create(data_dir.join("server.log"))
        .context("cannot create the server log")?;
    let data = data_dir.to_string_lossy().to_string();
    let child = fota_command(exe, database_url)
        .args([
            "serve",
            "--data-dir",
            &data,
            "--listen",
            &listen.to_string(),
            "--trusted-key",
            &key_pub.to_string_lossy(),
            "--sweep-interval-ms",
            "250",
            "--flush-interval-ms",
            "200",
        ])
        .args(extra)
        // Warnings only, unless the demo's caller asked for more (FOTA_LOG, e.g.
        // `warn,sqlx::query=debug` for every statement the server runs).
        .env(
            "FOTA_LOG",
            std::env::var("FOTA_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start fota serve")?;
    let server = ServerProcess { child };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if std::net::TcpStream::connect(listen).is_ok() {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "fota serve did not start listening on {listen} (see {})",
        data_dir.join("server.log").display()
    )
}

/// A progress bar on a terminal; otherwise (CI logs, pipes) a plain text line at the first
/// update and then every 5 seconds.
struct Progress {
    bar: ProgressBar,
    /// Not a terminal: when the last plain line was written, if one was.
    plain: Option<Option<Instant>>,
    what: String,
}

impl Progress {
    fn new(len: u64, what: &str) -> Self {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = if tty {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_length(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos:>7}/{len:7} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(what.to_string());
        Self {
            bar,
            plain: (!tty).then_some(None),
            what: what.to_string(),
        }
    }

    fn update(&mut self, pos: u64, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(last) = self.plain {
            if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                eprintln!(
                    "{}: {pos}/{} {msg}",
                    self.what,
                    self.bar.length().unwrap_or(0)
                );
                self.plain = Some(Some(Instant::now()));
            }
        }
        self.bar.set_position(pos);
        self.bar.set_message(msg);
    }

    /// Stop drawing, leaving the bar where it is (`finish` would fill it).
    fn finish(&self) {
        self.bar.abandon();
    }
}

/// Figures sampled once a second while the fleet runs.
#[derive(Debug, Default)]
struct Sampler {
    last: Option<(Instant, u64, u64)>,
    peak_check_ins: f64,
    peak_reports: f64,
    peak_server_rss: u64,
    /// MQTT commands received by the devices: the last count, and the peak per second.
    last_commands: u64,
    peak_commands: f64,
    /// Every broker's peak, summed.
    peak_broker_rss: u64,
    /// Every relay process's peak, summed.
    peak_relay_rss: u64,
}

/// A rollout's devices by state as words, the states that have any: `95 confirmed, 3 offered`.
/// `unexpected resets 12 in 0.4 device-hours (27.0/h) vs baseline 1.02/h`.
fn reset_text(resets: &Value) -> String {
    if !resets.is_object() {
        return "no reset figures yet".into();
    }
    format!(
        "unexpected resets {} in {:.1} device-hours ({:.1}/h) vs baseline {:.2}/h",
        resets["new_resets"].as_u64().unwrap_or(0),
        resets["new_device_hours"].as_f64().unwrap_or(0.0),
        resets["new_rate"].as_f64().unwrap_or(0.0),
        resets["baseline_rate"].as_f64().unwrap_or(0.0),
    )
}

fn counts_text(counts: &Value) -> String {
    let parts: Vec<String> = counts
        .as_object()
        .map(|states| {
            states
                .iter()
                .filter_map(|(state, n)| {
                    let n = n.as_u64().filter(|n| *n > 0)?;
                    Some(format!("{n} {}", state.replace('_', " ")))
                })
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "no device offered yet".to_string()
    } else {
        parts.join(", ")
    }
}

/// How to run this very binary from a shell: `fota` when that is what `fota` on the PATH finds,
/// else its full path (right after `cargo run`, nothing is installed yet).
fn command_name(exe: &Path) -> String {
    let same = |candidate: &Path| {
        candidate.is_file()
            && std::fs::canonicalize(candidate).ok() == std::fs::canonicalize(exe).ok()
    };
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| same(&dir.join("fota"))))
        .unwrap_or(false);
    if on_path {
        "fota".to_string()
    } else {
        exe.display().to_string()
    }
}

fn stage(percent: f64, min_sample: u64, deadline_s: u64, bake_s: u64) -> Value {
    json!({"percent": percent, "bake_s": bake_s, "min_sample": min_sample,
           "max_failure_rate": 0.05, "confirm_deadline_s": deadline_s,
           "max_reset_ratio": 2.0, "min_device_hours": DEMO_MIN_DEVICE_HOURS})
}

/// The demo's minutes stand for a real fleet's days: a stage's reset limit may judge once the
/// new release has run 36 device-seconds (a real plan asks 10 device-hours by default).
const DEMO_MIN_DEVICE_HOURS: f64 = 0.01;

/// The stages of the third release bake this long (a real plan: 30 minutes by default), so that
/// its first stage runs long enough for a crash after confirming to show.
const CRASH_BAKE_S: u64 = 30;

/// A healthy virtual device's watchdog fires about once an hour (real devices: far less often),
/// so the reset limit has a baseline to compare with.
const BACKGROUND_RESET_MEAN: Duration = Duration::from_secs(3600);

/// The third release's devices crash this long after each boot, once confirmed.
const CRASH_AFTER_MS: u32 = 10_000;

fn upload(
    client: &Client,
    key: &ed25519_dalek::SigningKey,
    version: ImageVersion,
    behaviour: AppBehaviour,
    len: usize,
    notes: &str,
) -> anyhow::Result<i64> {
    let part = |slot| {
        reqwest::multipart::Part::bytes(app::image(key, slot, version, 1, behaviour, len))
            .file_name(format!("{slot}.bin"))
    };
    let form = reqwest::multipart::Form::new()
        .text("model", MODEL)
        .text("notes", notes.to_string())
        .part("image_a", part(SlotId::A))
        .part("image_b", part(SlotId::B));
    let value = client.post_form(&["v1", "releases"], form)?;
    value["id"]
        .as_i64()
        .context("the server's answer to an upload has no release id")
}

/// Run `fota demo`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let n = args.devices as usize;
    let exe = std::env::current_exe().context("cannot find the fota binary")?;
    let scratch;
    let data_dir = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            scratch = tempfile::Builder::new()
                .prefix("fota-demo-")
                .tempdir()
                .context("cannot create a scratch directory")?;
            scratch.path().to_path_buf()
        }
    };
    let interval = args
        .check_in_interval
        .unwrap_or_else(|| (n as f64 / 2000.0).max(2.0));
    if !(interval.is_finite() && interval > 0.0) {
        bail!("--check-in-interval must be a positive number of seconds");
    }
    let interval = Duration::from_secs_f64(interval);
    let threads = args.threads.unwrap_or((n / 125).clamp(8, 96));
    let image_len = args.image_kib as usize * 1024;
    // A device confirms within two check-ins of its offer, plus a download and three boots; under
    // load it takes longer, and a good device counted silent is a false failure.
    let deadline_s = (interval.as_secs() * 10).max(60);
    let timeout = Duration::from_secs(args.timeout);
    // With --mqtt: the devices each broker holds, and how many edge brokers (none: one broker
    // for all, the sessions in this process).
    let mut edges = 0;
    if args.mqtt {
        // A socket per device in the broker that holds it and in the process that holds its
        // session, a few hundred more in each.
        let limit = broker::raise_open_files();
        let fits = usize::try_from(limit.saturating_sub(512)).unwrap_or(usize::MAX);
        // Past 16,000 connections from one address to one port the ephemeral ports run short.
        let per_broker = match args.mqtt_devices_per_broker {
            Some(per) => per as usize,
            None => fits.min(16_000),
        };
        if per_broker > fits {
            bail!(
                "--mqtt-devices-per-broker {per_broker} needs {} open files in each broker and \
                 relay, but the limit (RLIMIT_NOFILE) is {limit} and cannot be raised here: use \
                 at most {fits}, or raise the hard limit (ulimit -Hn)",
                per_broker + 512
            );
        }
        if n > per_broker {
            edges = n.div_ceil(per_broker);
        }
    }

    // 1. Key, server, token.
    let key = crate::keys::generate()?;
    let key_path = data_dir.join("demo-signing.pem");
    let key_pub = crate::keys::write_key_pair(&key, &key_path, true)?;
    let listen = free_port_or(args.listen)?;
    let data = data_dir.to_string_lossy().to_string();
    let database_url = args.database_url.as_deref();
    let token = run_fota(
        &exe,
        database_url,
        &[
            "token",
            "create",
            "--name",
            "demo",
            "--role",
            "operator",
            // Before the server's first start: the database is new.
            "--create",
            "--data-dir",
            &data,
        ],
    )?;
    let mut mqtt_broker = if args.mqtt {
        let core = if edges > 0 {
            broker::Broker::start_core(&data_dir.join("mosquitto"))?
        } else {
            broker::Broker::start(&data_dir.join("mosquitto"))?
        };
        Some(Brokers {
            core,
            edges: Vec::new(),
        })
    } else {
        None
    };
    let mut server_args: Vec<String> = match &mqtt_broker {
        Some(b) => vec![
            "--mqtt-url".into(),
            b.core.url(),
            // The demo writes the devices' broker accounts itself (see `broker`).
            "--mqtt-provision".into(),
            "false".into(),
            "--mqtt-nudge-rate".into(),
            args.nudge_rate.to_string(),
            "--mqtt-jitter-s".into(),
            args.nudge_jitter.to_string(),
        ],
        None => Vec::new(),
    };
    server_args.extend([
        "--delta-max-percent".into(),
        args.delta_max_percent.to_string(),
    ]);
    let server = start_server(
        &exe,
        database_url,
        &data_dir,
        listen,
        &key_pub,
        &server_args,
    )?;
    let database = match database_url {
        Some(url) => fota_server::serve::redact(url),
        None => format!("SQLite in {data}"),
    };
    let server_pid = server.child.id().to_string();
    let url = format!("http://{listen}");
    writeln!(
        out,
        "fota demo: {n} virtual devices against {url} ({database}){}",
        match &mqtt_broker {
            Some(b) if edges > 0 => format!(
                ", pushing through Mosquitto at {} and {edges} edge brokers bridged to it",
                b.core.address()
            ),
            Some(b) => format!(", pushing through Mosquitto at {}", b.core.address()),
            None => String::new(),
        }
    )?;
    writeln!(
        out,
        "  API:      {url}/openapi.json   {url}/v1/rollouts   {url}/metrics"
    )?;
    writeln!(
        out,
        "  operator: export FOTA_SERVER={url} FOTA_TOKEN={token}"
    )?;
    let fota = command_name(&exe);
    writeln!(
        out,
        "  then:     {fota} rollout status 1   {fota} devices --status silent"
    )?;
    out.flush()?;
    let client = Client::new(&ServerArgs {
        server: url.parse().context("server URL")?,
        token: Some(token.clone()),
        ca_cert: None,
    })?;

    // 2. Devices and the factory image.
    let started = Instant::now();
    let mut specs = Vec::with_capacity(n);
    for first in (0..n).step_by(20_000) {
        let devices: Vec<Value> = (first..n.min(first + 20_000))
            .map(|i| json!({"id": format!("light-{i:06}"), "model": MODEL}))
            .collect();
        let answer = client.post_json(&["v1", "devices"], Some(&json!({ "devices": devices })))?;
        for d in answer["devices"]
            .as_array()
            .context("provisioning answer")?
        {
            specs.push(DeviceSpec {
                id: d["id"].as_str().unwrap_or_default().to_string(),
                token: d["token"].as_str().unwrap_or_default().to_string(),
                model: MODEL.to_string(),
                // A few devices with a bad link or a bad power supply, as in any real fleet.
                faults: Faults {
                    link_drop: specs.len() % 50 == 7,
                    power_cut: specs.len() % 100 == 13,
                    slow_link: specs.len() % 20 == 3,
                    background_reset_mean: Some(BACKGROUND_RESET_MEAN),
                    seed: 0,
                },
            });
        }
    }
    if let Some(b) = mqtt_broker.as_mut() {
        let accounts: Vec<(String, String)> = specs
            .iter()
            .map(|d| (d.id.clone(), d.token.clone()))
            .collect();
        if edges == 0 {
            b.core.reload(&accounts)?;
        }
        // The i-th device's session goes to edge i mod edges (`MqttConfig::brokers`).
        for edge in 0..edges {
            let mine: Vec<(String, String)> =
                accounts.iter().skip(edge).step_by(edges).cloned().collect();
            let dir = data_dir.join(format!("mosquitto-edge-{edge}"));
            b.edges
                .push(broker::Broker::start_edge(&dir, &b.core, &mine)?);
        }
        let up = Instant::now();
        loop {
            let health = client.get(&["readyz"], &[])?;
            if health["mqtt"] == "up" {
                break;
            }
            if up.elapsed() > Duration::from_secs(60) {
                bail!("fota serve did not connect to the broker within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let provision_time = started.elapsed();
    let v1 = ImageVersion::new(1, 0, 0, 0);
    let v2 = ImageVersion::new(2, 0, 0, 0);
    let v21 = ImageVersion::new(2, 1, 0, 0);
    upload(
        &client,
        &key,
        v1,
        AppBehaviour::Good,
        image_len,
        "factory image",
    )?;
    let factory = factory_flash(
        &app::image(&key, SlotId::A, v1, 1, AppBehaviour::Good, image_len),
        1,
    );
    let keys = vec![TrustedKey::from_bytes(&key.verifying_key().to_bytes())?];
    let config = FleetConfig {
        server: url.clone(),
        keys,
        timing: Timing {
            check_in_interval: interval,
            // The fleet powers on at once; its first check-ins come within a second per 2,000
            // devices (at least 2 s), or one interval if that is shorter.
            first_check_in_spread: interval
                .min(Duration::from_secs_f64((n as f64 / 2000.0).max(2.0))),
            reboot: Duration::from_millis(50),
            watchdog: Duration::from_secs(2),
            retry: Duration::from_millis(500),
            steps_per_turn: 16,
            slow_link_pause: Duration::from_millis(200),
            recovery_retry: Duration::from_secs(5),
            // A report over MQTT waits for the server's acknowledgement this long (under a
            // rollout's peak load it can take seconds) before it is published again.
            report_ack_timeout: Duration::from_secs(10),
        },
        client: fota_ota_client::Config {
            max_fetch_failures: 5,
            // The most a 1 KB buffer took before it grew to hold a patch checkpoint.
            chunk_len: 1020,
            ..fota_ota_client::Config::default()
        },
        threads,
        mqtt: mqtt_broker.as_ref().map(|b| MqttConfig {
            threads: if n > 20_000 { 2 } else { 1 },
            reports: args.reports_over == ReportsOver::Mqtt,
            brokers: if b.edges.is_empty() {
                vec![b.core.address()]
            } else {
                b.edges.iter().map(broker::Broker::address).collect()
            },
            // Each edge's sessions held by a relay process of their own.
            relay: (!b.edges.is_empty()).then(|| RelayCommand {
                program: exe.clone(),
                args: vec!["mqtt-relay".into()],
            }),
            ..MqttConfig::new(b.core.address())
        }),
    };
    let fleet = Fleet::start(config, &factory, specs);

    // Sample rates and the server's memory once a second.
    let sampler = Arc::new(Mutex::new(Sampler::default()));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let fleet = Arc::new(fleet);
    let sampling = {
        let (sampler, stop, fleet, pid) = (
            Arc::clone(&sampler),
            Arc::clone(&stop_sampling),
            Arc::clone(&fleet),
            server_pid.clone(),
        );
        let broker_pids = mqtt_broker.as_ref().map(Brokers::pids).unwrap_or_default();
        let relays = fleet.mqtt_relay_pids();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let s = fleet.summary();
                let now = Instant::now();
                let mut sm = sampler.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((at, check_ins, reports)) = sm.last {
                    let secs = now.duration_since(at).as_secs_f64().max(0.001);
                    sm.peak_check_ins = sm
                        .peak_check_ins
                        .max(s.check_ins.saturating_sub(check_ins) as f64 / secs);
                    sm.peak_reports = sm
                        .peak_reports
                        .max(s.reports.saturating_sub(reports) as f64 / secs);
                }
                if let Some(m) = fleet.mqtt_stats() {
                    if let Some((at, ..)) = sm.last {
                        let secs = now.duration_since(at).as_secs_f64().max(0.001);
                        sm.peak_commands = sm
                            .peak_commands
                            .max(m.commands.saturating_sub(sm.last_commands) as f64 / secs);
                    }
                    sm.last_commands = m.commands;
                }
                sm.last = Some((now, s.check_ins, s.reports));
                sm.peak_server_rss = sm.peak_server_rss.max(peak_rss(&pid).unwrap_or(0));
                sm.peak_broker_rss = sm.peak_broker_rss.max(peak_rss_sum(&broker_pids));
                sm.peak_relay_rss = sm.peak_relay_rss.max(peak_rss_sum(&relays));
            }
        })
    };

    let mut boot = Progress::new(n as u64, "boot");
    let mut connected_in = None;
    let (_, ok) = fleet.wait_until(timeout, |s| {
        // Settled: a device a background watchdog reset since is still up on 1.0.0.
        let up = s.settled_on(v1).min(s.check_ins as usize);
        let mqtt = fleet.mqtt_stats().map(|m| m.connected);
        if mqtt.is_some_and(|c| c >= n) && connected_in.is_none() {
            connected_in = Some(started.elapsed() - provision_time);
        }
        match mqtt {
            Some(c) => boot.update(
                up.min(c) as u64,
                format!("devices up on 1.0.0: {up}, on MQTT: {c}"),
            ),
            None => boot.update(up as u64, "devices up on 1.0.0"),
        }
        up >= n && mqtt.is_none_or(|c| c >= n)
    });
    boot.finish();
    if !ok {
        bail!("the fleet did not come up within {}s", timeout.as_secs());
    }
    let boot_time = started.elapsed() - provision_time;

    // 3. A good release, to everyone.
    let min_sample = |percent: f64| ((n as f64 * percent / 100.0 / 2.0) as u64).clamp(1, 500);
    let baked_stages = |deadline, bake| {
        json!([
            stage(1.0, min_sample(1.0), deadline, bake),
            stage(10.0, min_sample(10.0), deadline, bake),
            stage(50.0, min_sample(50.0), deadline, bake),
            stage(100.0, min_sample(100.0), deadline, bake)
        ])
    };
    let stages = |deadline| baked_stages(deadline, 0);
    let good = upload(
        &client,
        &key,
        v2,
        AppBehaviour::Good,
        image_len,
        "good release",
    )?;
    let rollout_started = Instant::now();
    let good_rollout = client.post_json(
        &["v1", "rollouts"],
        Some(&json!({"release_id": good, "stages": stages(deadline_s)})),
    )?;
    let good_id = good_rollout["id"].as_i64().context("rollout id")?;
    let mut progress = Progress::new(n as u64, "2.0.0 (good)");
    let mut state = String::new();
    let mut done = false;
    let mut good_confirmed = 0;
    let mut good_silent = 0;
    let mut completed_in_ms = None;
    while rollout_started.elapsed() < timeout {
        let s = fleet.summary();
        let status = client.get(&["v1", "rollouts", &good_id.to_string()], &[])?;
        // Settled, not running: at 100,000 devices some are always rebooting after a
        // background watchdog reset, and a count of the running ones reaches the fleet only
        // at a moment when none is (seen to take 40 s after the rollout completed).
        good_confirmed = s.settled_on(v2);
        good_silent = status["counts"]["timed_out"].as_u64().unwrap_or(0);
        state = status["state"].as_str().unwrap_or("?").to_string();
        progress.update(
            good_confirmed as u64,
            format!(
                "confirmed; rollout {good_id}: {state}, stage {}, {}",
                status["current_stage"].as_u64().unwrap_or(0),
                counts_text(&status["counts"])
            ),
        );
        // Completed: every target decided. A device that was too slow for its deadline was
        // counted silent (a failure the gate tolerated) and is no longer offered the release.
        if state == "completed" && good_confirmed as u64 + good_silent >= n as u64 {
            done = true;
            completed_in_ms = status["updated_at"]
                .as_u64()
                .zip(status["created_at"].as_u64())
                .and_then(|(updated, created)| updated.checked_sub(created));
            break;
        }
        if state == "halted" || state == "aborted" {
            break;
        }
        std::thread::sleep(Duration::from_millis(2000));
    }
    progress.finish();
    if !done {
        bail!("the good rollout ended {state} before every device confirmed 2.0.0");
    }
    // From the rollout's creation to its completion (the time of its last confirmation), both
    // by the server's clock, not when the poll every 2 s saw it: the fleet's own count has
    // agreed by then.
    let good_time =
        completed_in_ms.map_or_else(|| rollout_started.elapsed(), Duration::from_millis);

    // 4. The field incident, halted in its canary.
    let bad = upload(
        &client,
        &key,
        v21,
        AppBehaviour::NeverReachesServer,
        image_len,
        "zeroes RAM, never reaches the server",
    )?;
    let before = fleet.summary();
    let bad_started = Instant::now();
    let bad_rollout = client.post_json(
        &["v1", "rollouts"],
        Some(&json!({"release_id": bad, "stages": stages(deadline_s)})),
    )?;
    let bad_id = bad_rollout["id"].as_i64().context("rollout id")?;
    let mut progress = Progress::new(n as u64, "2.1.0 (bad)");
    let mut first_failure: Option<Instant> = None;
    let mut halted_at: Option<Instant> = None;
    // When the server halted it (its clock, ms since the Unix epoch).
    let mut halted_at_ms: Option<u64> = None;
    let mut halt_message = String::new();
    while bad_started.elapsed() < timeout {
        let s = fleet.summary();
        if first_failure.is_none() && s.rollbacks > before.rollbacks {
            first_failure = Some(Instant::now());
        }
        let exposed = s.ever_installed.get(&v21).copied().unwrap_or(0);
        let status = client.get(&["v1", "rollouts", &bad_id.to_string()], &[])?;
        let state = status["state"].as_str().unwrap_or("?");
        if state == "halted" && halted_at.is_none() {
            halted_at = Some(Instant::now());
            halted_at_ms = status["updated_at"].as_u64();
            halt_message = status["halt_message"].as_str().unwrap_or("").to_string();
        }
        // Everyone who took it is back: nobody runs it, and each reported its rollback.
        let reverted = s.trial.get(&v21).copied().unwrap_or(0) == 0
            && s.confirmed_on(v21) == 0
            && s.rollbacks - before.rollbacks >= exposed as u64;
        progress.update(
            exposed as u64,
            format!(
                "installed it; rollout {bad_id}: {state}, {} reverted by their bootloader",
                s.rollbacks - before.rollbacks
            ),
        );
        if state == "completed" {
            bail!("the bad release was not halted");
        }
        if halted_at.is_some() && reverted {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    progress.finish();
    let Some(halted_at) = halted_at else {
        bail!(
            "the bad rollout was not halted within {}s",
            timeout.as_secs()
        );
    };
    let recovered = bad_started.elapsed();

    // 5. A release that boots, confirms, and then crashes every few seconds: nothing fails
    // before confirmation, so only its resets can stop it. Then `fota rollback` brings the
    // devices that took it back to the good release.
    // The halted field incident is done with: abort it, as an operator would, so the model has
    // no unfinished rollout.
    client.post_json(&["v1", "rollouts", &bad_id.to_string(), "abort"], None)?;
    let v22 = ImageVersion::new(2, 2, 0, 0);
    let crashing = upload(
        &client,
        &key,
        v22,
        AppBehaviour::CrashesAfter {
            after_ms: CRASH_AFTER_MS,
        },
        image_len,
        "confirms, then crashes every 10 s",
    )?;
    let crash_started = Instant::now();
    // Downloads dropped from here on belong to the crashing release, not to the halt above.
    let crash_started_ms = fota_sim::device::unix_ms();
    let at_start = fleet.summary();
    let faults = |s: &fota_sim::FleetSummary| s.crashes - s.background_resets;
    let crash_rollout = client.post_json(
        &["v1", "rollouts"],
        Some(&json!({"release_id": crashing, "stages": baked_stages(deadline_s, CRASH_BAKE_S)})),
    )?;
    let crash_id = crash_rollout["id"].as_i64().context("rollout id")?;
    let mut progress = Progress::new(n as u64, "2.2.0 (crashes)");
    let mut crash_halted: Option<(Instant, u64, String)> = None;
    let mut first_crash: Option<Instant> = None;
    while crash_started.elapsed() < timeout {
        let s = fleet.summary();
        let exposed = s.ever_installed.get(&v22).copied().unwrap_or(0);
        if first_crash.is_none() && faults(&s) > faults(&at_start) {
            first_crash = Some(Instant::now());
        }
        let status = client.get(&["v1", "rollouts", &crash_id.to_string()], &[])?;
        let state = status["state"].as_str().unwrap_or("?");
        progress.update(
            exposed as u64,
            format!(
                "installed it; rollout {crash_id}: {state}, stage {}, {}",
                status["current_stage"].as_u64().unwrap_or(0),
                reset_text(&status["resets"])
            ),
        );
        if state == "completed" {
            bail!("the release that crashes after confirming was not halted");
        }
        if state == "halted" {
            crash_halted = Some((
                Instant::now(),
                status["current_stage"].as_u64().unwrap_or(0),
                status["halt_message"].as_str().unwrap_or("").to_string(),
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    progress.finish();
    let Some((crash_halted_at, crash_stage, crash_message)) = crash_halted else {
        bail!(
            "the crashing rollout was not halted within {}s",
            timeout.as_secs()
        );
    };
    let rollback = client.post_json(
        &["v1", "rollbacks"],
        Some(&json!({"release_id": good, "from_release_id": crashing})),
    )?;
    let rollback_id = rollback["id"].as_i64().context("rollback id")?;
    let rollback_started = Instant::now();
    let mut progress = Progress::new(n as u64, "rollback to 2.0.0");
    let mut rolled_back = false;
    while rollback_started.elapsed() < timeout {
        let s = fleet.summary();
        let status = client.get(&["v1", "rollouts", &rollback_id.to_string()], &[])?;
        let state = status["state"].as_str().unwrap_or("?");
        progress.update(
            s.settled_on(v2) as u64,
            format!(
                "on 2.0.0; rollback {rollback_id}: {state}, {} still run 2.2.0",
                s.settled_on(v22) + s.trial.get(&v22).copied().unwrap_or(0)
            ),
        );
        // Settled counts a device that crashed on 2.2.0 and is rebooting into it as on 2.2.0,
        // and one a background reset caught on 2.0.0 as on 2.0.0.
        if s.settled_on(v22) == 0
            && s.trial.get(&v22).copied().unwrap_or(0) == 0
            && s.settled_on(v2) == n
        {
            rolled_back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    progress.finish();
    if !rolled_back {
        bail!("fota rollback did not bring every device back to 2.0.0");
    }
    let rollback_time = rollback_started.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let _ = sampling.join();
    // Downloads of 2.1.0 dropped since the halt (and before the crashing release started,
    // whose own halt stops downloads too): by a pushed stop or by a check-in that no longer
    // offered it; and the last of them. A device's last drop may be a later one: such a device
    // is not counted here, but in the summaries' differences below.
    let statuses = fleet.statuses();
    let after_halt =
        |at: &u64| halted_at_ms.is_some_and(|h| *at + 1000 >= h) && *at < crash_started_ms;
    let stopped_after_halt: Vec<u64> = statuses
        .iter()
        .filter_map(|d| d.stopped_at_ms)
        .filter(after_halt)
        .collect();
    // The last of them: when its pushed stop reached the device, if that is how it stopped
    // (the rest of the wait was for the device's next turn in the simulator).
    let last_stop_received: Option<u64> = statuses
        .iter()
        .filter(|d| d.stopped_at_ms.as_ref().is_some_and(after_halt))
        .max_by_key(|d| d.stopped_at_ms)
        .and_then(|d| {
            let received = d.stop_received_at_ms?;
            (halted_at_ms.is_some_and(|h| received + 1000 >= h)
                && d.stopped_at_ms.is_some_and(|at| received <= at))
            .then_some(received)
        });
    let summary = fleet.summary();
    let mqtt_stats = fleet.mqtt_stats();
    let server_rss = peak_rss(&server_pid).unwrap_or(0);
    let sim_rss = peak_rss("self").unwrap_or(0);

    // 5. Boot every device once more: none may be without a verified image.
    let fleet = Arc::try_unwrap(fleet).map_err(|_| anyhow::anyhow!("fleet still shared"))?;
    let (mut devices, keys) = fleet.stop();
    let bricked = devices
        .iter_mut()
        .map(|d| d.next_boot(keys))
        .filter(Option::is_none)
        .count();
    let exposed = summary.ever_installed.get(&v21).copied().unwrap_or(0);
    let crash_exposed = summary.ever_installed.get(&v22).copied().unwrap_or(0);
    // The cohort of the stage the crashing release halted in.
    let crash_reach = usize::try_from(
        fota_server::domain::cohort::plan_reach(
            [
                (Some(100), None),
                (Some(1000), None),
                (Some(5000), None),
                (Some(10000), None),
            ],
            devices.len() as u64,
        )
        .get(usize::try_from(crash_stage).unwrap_or(1).saturating_sub(1))
        .copied()
        .unwrap_or(u64::MAX),
    )
    .unwrap_or(usize::MAX);
    // The first stage's cohort: the devices the bad release could ever have been offered.
    let canary = usize::try_from(fota_server::domain::cohort::stage_reach(
        Some(100),
        None,
        devices.len() as u64,
        0,
    ))
    .unwrap_or(usize::MAX);
    let sampler = sampler.lock().unwrap_or_else(|e| e.into_inner());

    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut rows: Vec<(String, String)> = vec![
        ("devices".into(), n.to_string()),
        (
            "provision + boot the fleet".into(),
            format!(
                "{:.1} s + {:.1} s",
                provision_time.as_secs_f64(),
                boot_time.as_secs_f64()
            ),
        ),
        (
            "good release 1% → 100%, rollout completed".into(),
            format!("{:.1} s", good_time.as_secs_f64()),
        ),
        (
            "good release: devices confirmed on it".into(),
            format!("{good_confirmed} / {n} ({good_silent} counted silent past their deadline)"),
        ),
        (
            "peak check-ins/s (1 s windows)".into(),
            format!("{:.0}", sampler.peak_check_ins),
        ),
        (
            "peak reports/s (1 s windows)".into(),
            format!("{:.0}", sampler.peak_reports),
        ),
        (
            "bad release: start → halted".into(),
            format!(
                "{:.2} s",
                halted_at.duration_since(bad_started).as_secs_f64()
            ),
        ),
        (
            "bad release: first rollback seen → halted".into(),
            match first_failure {
                Some(f) if f <= halted_at => {
                    format!("{:.2} s", halted_at.duration_since(f).as_secs_f64())
                }
                Some(_) => "halted before a rollback was reported (silence or report)".into(),
                None => "no rollback reported".into(),
            },
        ),
        (
            "bad release: start → every exposed device reverted".into(),
            format!("{:.1} s", recovered.as_secs_f64()),
        ),
        (
            "blast radius (installed 2.1.0 / fleet)".into(),
            format!(
                "{exposed} / {n} = {:.2}% (first stage: {canary} devices)",
                exposed as f64 * 100.0 / n as f64
            ),
        ),
        (
            "crashing release: start → halted (stage)".into(),
            format!(
                "{:.2} s (stage {crash_stage})",
                crash_halted_at.duration_since(crash_started).as_secs_f64()
            ),
        ),
        (
            "crashing release: first crash seen → halted".into(),
            match first_crash {
                Some(f) if f <= crash_halted_at => {
                    format!("{:.2} s", crash_halted_at.duration_since(f).as_secs_f64())
                }
                _ => "halted before a crash was seen".into(),
            },
        ),
        (
            "crashing release: blast radius (installed 2.2.0 / fleet)".into(),
            format!(
                "{crash_exposed} / {n} = {:.2}% (stage {crash_stage} reaches {crash_reach} devices)",
                crash_exposed as f64 * 100.0 / n as f64
            ),
        ),
        (
            "crashing release: fota rollback → all on 2.0.0".into(),
            format!("{:.1} s", rollback_time.as_secs_f64()),
        ),
        (
            "unexpected resets: crashes, background".into(),
            format!("{}, {}", summary.crashes, summary.background_resets),
        ),
        ("bricked devices".into(), bricked.to_string()),
        (
            "downloads: bytes on the link (of it delta patches), power cuts, link drops".into(),
            format!(
                "{:.1} MB ({:.1} MB), {}, {}",
                mb(summary.bytes_fetched),
                mb(summary.patch_bytes_fetched),
                summary.power_cuts,
                devices
                    .iter()
                    .map(|d| u64::from(d.status().link.drops))
                    .sum::<u64>()
            ),
        ),
        (
            "bad release: downloads stopped after the halt".into(),
            match (halted_at_ms, stopped_after_halt.iter().max()) {
                (Some(h), Some(last)) => format!(
                    "{} ({} by push, {} at a check-in), the last {:.2} s after the halt{}",
                    stopped_after_halt.len(),
                    at_start.pushed_stops - before.pushed_stops,
                    at_start.withdrawn - before.withdrawn,
                    last.saturating_sub(h) as f64 / 1000.0,
                    last_stop_received.map_or(String::new(), |r| format!(
                        " (its stop reached the device {:.2} s after the halt)",
                        r.saturating_sub(h) as f64 / 1000.0
                    ))
                ),
                _ => "none in flight".into(),
            },
        ),
        (
            "server peak RSS".into(),
            format!("{:.0} MB", mb(server_rss.max(sampler.peak_server_rss))),
        ),
        (
            "simulator peak RSS".into(),
            format!("{:.0} MB", mb(sim_rss)),
        ),
    ];
    if let Some(m) = mqtt_stats {
        let broker_rss = mqtt_broker
            .as_ref()
            .map_or(0, |b| peak_rss_sum(&b.pids()))
            .max(sampler.peak_broker_rss);
        rows.extend([
            (
                "MQTT: brokers".into(),
                if edges > 0 {
                    format!(
                        "a core and {edges} edges bridged to it (up to {} devices each), the \
                         sessions through {edges} relay processes ({:.0} MB peak RSS in all)",
                        n.div_ceil(edges),
                        mb(sampler.peak_relay_rss)
                    )
                } else {
                    "one".into()
                },
            ),
            (
                "MQTT: devices connected, in".into(),
                format!(
                    "{} / {n}, {}",
                    m.connected,
                    connected_in.map_or("-".into(), |t| format!(
                        "{:.1} s after provisioning",
                        t.as_secs_f64()
                    ))
                ),
            ),
            (
                "MQTT: reports published, acknowledged by the server".into(),
                format!(
                    "{}, {} (of {} reports in all)",
                    m.reports_published, summary.mqtt_reports, summary.reports
                ),
            ),
            (
                "MQTT: commands received (nudges, stops, report acks)".into(),
                format!(
                    "{} ({} nudges applied, {} downloads stopped, {} while off), peak {:.0}/s",
                    m.commands,
                    summary.nudges,
                    summary.pushed_stops,
                    summary.commands_lost,
                    sampler.peak_commands
                ),
            ),
            (
                "MQTT: reconnects, refused".into(),
                format!("{}, {}", m.connects.saturating_sub(n as u64), m.refused),
            ),
            (
                "Mosquitto peak RSS (every broker, summed)".into(),
                format!("{:.0} MB", mb(broker_rss)),
            ),
        ]);
    }
    writeln!(out)?;
    writeln!(out, "halt: {halt_message}")?;
    writeln!(out, "halt: {crash_message}")?;
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    writeln!(out, "| {:width$} | figure |", "measurement")?;
    writeln!(out, "|{}|---|", "-".repeat(width + 2))?;
    for (k, v) in &rows {
        writeln!(out, "| {k:width$} | {v} |")?;
    }
    out.flush()?;
    if bricked > 0 {
        bail!("{bricked} devices have no verified image to boot");
    }
    if exposed > canary {
        bail!("the bad release reached {exposed} devices, more than its {canary}-device canary");
    }
    if crash_exposed > crash_reach {
        bail!(
            "the crashing release reached {crash_exposed} devices, more than its stage {crash_stage}'s {crash_reach}"
        );
    }
    if args.serve_after {
        writeln!(out, "\nserving {url} until Ctrl-C (token above)")?;
        out.flush()?;
        let mut server = server;
        let _ = server.child.wait();
    }
    Ok(())
}
