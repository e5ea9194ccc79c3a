//! `fota devices [filters]`, `fota devices show ID`, `fota devices register`: the fleet
//! (`/v1/devices`).

use super::client::Client;
use super::format::{ago, now_ms, or_dash, utc, Table};
use super::ServerArgs;
use anyhow::Context as _;
use fota_server::api::admin::devices::{DeviceDetail, DevicePage, Registered};
use fota_server::store::{DeviceRecord, DeviceStatus};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};

/// `fota devices`: a listing by default; `show` and `register` as subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    /// `show ID` or `register`; without one, list devices.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Listing filters.
    #[command(flatten)]
    pub list: ListArgs,
}

/// Device actions besides listing.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// One device: what it runs, when it was last heard from, its 50 latest events.
    Show(ShowArgs),
    /// Provision devices from a CSV or JSON file; prints their tokens (shown only once).
    ///
    /// All or none: one id that exists already refuses the whole file. Each device's token is
    /// in the answer and never shown again: it is written to stdout, or to a new --out file.
    Register(RegisterArgs),
}

/// `fota devices` (the listing).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this hardware model.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Only devices running this firmware version.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Only devices with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// Only devices never seen, online (checked in within two poll intervals), or silent.
    #[arg(long, value_name = "STATUS", value_parser = ["never_seen", "online", "silent"])]
    pub status: Option<String>,
    /// Page size, 1-1000 [server default 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Page start: devices whose id sorts after this one (printed after a full page).
    #[arg(long, value_name = "ID")]
    pub after: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota devices show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Device id.
    pub id: String,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota devices register`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["csv", "json"])))]
pub struct RegisterArgs {
    /// CSV lines `id,model,tag;tag` (a first line starting with `id,` is a header); `-` reads
    /// stdin.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// JSON `{"devices": [{"id": ..., "model": ..., "tags": [...]}]}`; `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the tokens to this new file (mode 0600; an existing file is never replaced)
    /// instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Run `fota devices`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    match &args.action {
        None => list(&args.list, out),
        Some(Action::Show(a)) => show(a, out),
        Some(Action::Register(a)) => register(a, out),
    }
}

fn status_name(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::NeverSeen => "never_seen",
        DeviceStatus::Online => "online",
        DeviceStatus::Silent => "silent",
    }
}

fn last_seen(d: &DeviceRecord, now: i64) -> String {
    d.last_seen_at
        .map_or_else(|| "never".into(), |t| ago(t, now))
}

fn list(args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let mut query = Vec::new();
    for (key, value) in [
        ("model", &args.model),
        ("version", &args.version),
        ("tag", &args.tag),
        ("status", &args.status),
        ("after", &args.after),
    ] {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    let value = client.get(&["v1", "devices"], &query)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let page: DevicePage = client.decode(value)?;
    if page.devices.is_empty() {
        writeln!(out, "no devices")?;
        return Ok(());
    }
    let now = now_ms();
    let mut table = Table::new(&[
        "ID",
        "MODEL",
        "VERSION",
        "SLOT",
        "BOOT",
        "STATUS",
        "LAST SEEN",
    ]);
    for d in &page.devices {
        table.row(vec![
            d.id.clone(),
            d.model.clone(),
            or_dash(d.firmware_version.as_deref()),
            or_dash(d.running_slot.as_deref()),
            or_dash(d.boot_state.as_deref()),
            status_name(d.status).into(),
            last_seen(d, now),
        ]);
    }
    table.write(out)?;
    if let Some(next) = &page.next_after {
        writeln!(out, "more: add --after {next}")?;
    }
    Ok(())
}

fn show(args: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let value = client.get(&["v1", "devices", &args.id], &[])?;
    if args.json {
        return super::print_json(out, &value);
    }
    let detail: DeviceDetail = client.decode(value)?;
    let d = &detail.device;
    let now = now_ms();
    let seen = match d.last_seen_at {
        Some(t) => format!(
            "{}, last seen {} ({})",
            status_name(d.status),
            ago(t, now),
            utc(t)
        ),
        None => "never seen".into(),
    };
    writeln!(out, "device {}: {}, {seen}", d.id, d.model)?;
    let firmware = match (&d.firmware_version, &d.running_slot) {
        (Some(v), Some(slot)) => format!(
            "{v} in slot {slot}{}",
            d.boot_state
                .as_deref()
                .map(|b| format!(", {b}"))
                .unwrap_or_default()
        ),
        (Some(v), None) => v.clone(),
        _ => "unknown (no check-in yet)".into(),
    };
    let mut facts = vec![
        (
            "tags",
            if d.tags.is_empty() {
                "-".into()
            } else {
                d.tags.join(", ")
            },
        ),
        ("firmware", firmware),
    ];
    if d.bootloader_version.is_some() || d.rdp_level.is_some() || d.wrp_mask.is_some() {
        facts.push((
            "bootloader",
            format!(
                "{}, RDP {}, write protection mask {}",
                or_dash(d.bootloader_version.as_deref()),
                or_dash(d.rdp_level.as_deref()),
                d.wrp_mask.map_or_else(|| "-".into(), |m| format!("{m:#x}"))
            ),
        ));
    }
    facts.push(("provisioned", utc(d.created_at)));
    for (key, value) in facts {
        writeln!(out, "  {key:<12} {value}")?;
    }
    if detail.events.is_empty() {
        writeln!(out, "no events")?;
        return Ok(());
    }
    writeln!(out, "events, newest first:")?;
    let mut table = Table::new(&["RECEIVED", "KIND", "ROLLOUT", "VERSION", "REASON"]);
    for e in &detail.events {
        table.row(vec![
            utc(e.received_at),
            e.kind.clone(),
            e.rollout_id.map_or_else(|| "-".into(), |r| r.to_string()),
            or_dash(e.version.as_deref()),
            or_dash(e.reason.as_deref()),
        ]);
    }
    table.write(out)?;
    Ok(())
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read stdin")?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn register(args: &RegisterArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let (path, content_type) = match (&args.csv, &args.json) {
        (Some(csv), _) => (csv, "text/csv"),
        (None, Some(json)) => (json, "application/json"),
        (None, None) => anyhow::bail!("give --csv FILE or --json FILE"),
    };
    // The tokens are shown only once: make sure they have somewhere to go before asking.
    if let Some(file) = &args.out {
        if file.exists() {
            anyhow::bail!(
                "{} exists; device tokens are shown only once, so fota never overwrites a file with them",
                file.display()
            );
        }
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "cannot write {}: no directory {}",
                file.display(),
                dir.display()
            );
        }
    }
    let body = read_input(path)?;
    let client = Client::new(&args.server)?;
    let value = client.post_bytes(&["v1", "devices"], content_type, body)?;
    let registered: Registered = client.decode(value.clone())?;
    let text = format!("{}\n", serde_json::to_string_pretty(&value)?);
    match &args.out {
        None => out.write_all(text.as_bytes())?,
        Some(file) => {
            if let Err(e) = crate::atomic::write_atomic(file, text.as_bytes(), 0o600, false) {
                // The server has them now and will never show them again: do not lose them.
                out.write_all(text.as_bytes())?;
                anyhow::bail!(
                    "cannot write {}: {e}; the tokens were printed to stdout instead",
                    file.display()
                );
            }
            writeln!(
                out,
                "registered {} devices; their tokens are in {} (shown only once)",
                registered.devices.len(),
                file.display()
            )?;
        }
    }
    Ok(())
}
