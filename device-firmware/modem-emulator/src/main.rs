//! `fota-modem-emulator --listen 127.0.0.1:PORT`: a SIM7600-class module on a TCP port, for
//! QEMU (`-chardev socket,id=modem,host=127.0.0.1,port=PORT -serial chardev:modem`). One
//! session per connection; after each it prints one line of figures to stderr:
//! `session N: rx R tx T commands C requests Q artifact A drops D pdp P errors E silences S
//! mqtt connects M publishes U lost L`.

use anyhow::Context as _;
use clap::Parser;
use fota_modem_emulator::{session, Config, FaultPlan, Faults, Pacing};
use std::net::TcpListener;
use std::time::Duration;

/// Emulate a SIM7600 4G module over TCP.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where to listen (QEMU connects here).
    #[arg(long, default_value = "127.0.0.1:5760")]
    listen: String,
    /// Line rate as a UART baud rate (8N1: baud / 10 bytes per second).
    #[arg(long, conflicts_with = "bytes_per_sec")]
    baud: Option<u32>,
    /// Line rate in bytes per second (e.g. 5000 for a slow 4G link).
    #[arg(long)]
    bytes_per_sec: Option<u32>,
    /// Extra latency per HTTP request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Drop the link once when a download reaches this offset.
    #[arg(long)]
    drop_link_at: Option<u32>,
    /// Requests that fail when the link drops.
    #[arg(long, default_value_t = 1)]
    drop_requests: u32,
    /// Deactivate the PDP context once when a download reaches this offset.
    #[arg(long)]
    pdp_drop_at: Option<u32>,
    /// Go silent once when a download reaches this offset, for --silent-ms.
    #[arg(long)]
    silent_at: Option<u32>,
    /// How long a silence lasts.
    #[arg(long, default_value_t = 3000)]
    silent_ms: u64,
    /// Answer ERROR to the first N commands.
    #[arg(long, default_value_t = 0)]
    error_first: u32,
    /// Sprinkle URCs before every answer.
    #[arg(long)]
    urc_noise: bool,
    /// Print every HTTP request and injected fault.
    #[arg(long)]
    verbose: bool,
    /// Stop after this many sessions (default: serve forever).
    #[arg(long)]
    sessions: Option<u32>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pacing = match (args.baud, args.bytes_per_sec) {
        (Some(baud), _) => Pacing::baud(baud),
        (None, Some(rate)) => Pacing::BytesPerSecond(rate),
        (None, None) => Pacing::Unlimited,
    };
    let config = Config {
        pacing,
        latency: Duration::from_millis(args.latency_ms),
        verbose: args.verbose,
        ..Config::default()
    };
    let faults = Faults::with(FaultPlan {
        drop_link_at: args.drop_link_at,
        drop_requests: args.drop_requests,
        pdp_drop_at: args.pdp_drop_at,
        silent_at: args.silent_at,
        silent_for: Duration::from_millis(args.silent_ms),
        error_next: args.error_first,
        urc_noise: args.urc_noise,
        ..FaultPlan::default()
    });
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "fota-modem-emulator: SIM7600 on {} ({pacing:?})",
        listener.local_addr()?
    );
    for (served, stream) in listener.incoming().enumerate() {
        let stream = stream.context("accepting a connection")?;
        stream.set_nodelay(true).ok();
        let reader = stream.try_clone().context("cloning the stream")?;
        let before = faults.stats();
        if let Err(e) = session::serve(reader, stream, &config, &faults) {
            eprintln!("fota-modem-emulator: session ended: {e}");
        }
        let s = faults.stats();
        eprintln!(
            "session {}: rx {} tx {} commands {} requests {} artifact {} drops {} pdp {} errors {} silences {} mqtt connects {} publishes {} lost {}",
            s.sessions,
            s.rx_bytes - before.rx_bytes,
            s.tx_bytes - before.tx_bytes,
            s.commands - before.commands,
            s.http_requests - before.http_requests,
            s.artifact_bytes - before.artifact_bytes,
            s.link_drops - before.link_drops,
            s.pdp_drops - before.pdp_drops,
            s.errors - before.errors,
            s.silences - before.silences,
            s.mqtt_connects - before.mqtt_connects,
            s.mqtt_publishes - before.mqtt_publishes,
            s.mqtt_lost - before.mqtt_lost,
        );
        if args.sessions.is_some_and(|n| served + 1 >= n as usize) {
            break;
        }
    }
    Ok(())
}
