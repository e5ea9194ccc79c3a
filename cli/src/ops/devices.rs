//! `fota devices [filters]`, `fota devices show ID`, `fota devices register`: the fleet
//! (`/v1/devices`); `fota devices identity`: a registered device's identity record, to
//! flash at 0x0800_7E00 (no server needed).

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
    /// Write the identity sector image of a registered device (id, token, server URL, model,
    /// CRC), to flash at 0x0801_0000; see docs/FIRMWARE.md.
    ///
    /// The token comes from what `fota devices register` printed: --tokens FILE (its JSON) with
    /// --id, or --token. The file holds the token: it is written with mode 0600 and an
    /// existing file is never replaced.
    Identity(IdentityArgs),
    /// Revoke a device (stolen, scrapped): its token stops working, its broker account goes.
    /// Its history stays. Audited.
    Revoke(RevokeArgs),
}

/// `fota devices revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Device id.
    pub id: String,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota devices identity`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("secret").required(true).args(["tokens", "token"])))]
pub struct IdentityArgs {
    /// Device id.
    #[arg(long)]
    pub id: String,
    /// The JSON `fota devices register` printed (or wrote with --out); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// The device's token itself.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The server URL the device will use (as it reaches the server, e.g. through its APN).
    #[arg(long, value_name = "URL")]
    pub server_url: String,
    /// The device's hardware model, as registered.
    #[arg(long)]
    pub model: String,
    /// Where to write the image (binary, for `probe-rs download --binary-format bin
    /// --base-address 0x08007E00`, the identity's 512 bytes at the end of sector 1).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
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
    /// Only devices never seen, online (checked in within two poll intervals), silent, or
    /// protection-blocked (write protection covers the slot an update would write).
    #[arg(long, value_name = "STATUS", value_parser = ["never_seen", "online", "silent", "protection_blocked"])]
    pub status: Option<String>,
    /// Only devices running a confirmed image, one on trial, or reverted by their bootloader
    /// (and no update confirmed since).
    #[arg(long, value_name = "STATE", value_parser = ["confirmed", "trial", "reverted"])]
    pub boot_state: Option<String>,
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
        Some(Action::Identity(a)) => identity(a, out),
        Some(Action::Revoke(a)) => revoke(a, out),
    }
}

fn revoke(args: &RevokeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let value = client.post_json(&["v1", "devices", &args.id, "revoke"], None)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let broker = match value["broker_account_deleted"].as_bool() {
        Some(true) => ", broker account deleted",
        Some(false) => ", but its broker account could not be deleted (see the server log)",
        None => "",
    };
    writeln!(out, "device {} revoked{broker}", args.id)?;
    Ok(())
}

fn identity(args: &IdentityArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use fota_protocol::identity::{Identity, MAX_RECORD_LEN};
    let token = match (&args.token, &args.tokens) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => {
            let registered: Registered =
                serde_json::from_slice(&read_input(path)?).with_context(|| {
                    format!(
                        "{}: not what `fota devices register` prints",
                        path.display()
                    )
                })?;
            registered
                .devices
                .into_iter()
                .find(|d| d.id == args.id)
                .map(|d| d.token)
                .with_context(|| format!("{}: no device {:?} in it", path.display(), args.id))?
        }
        (None, None) => anyhow::bail!("give --tokens FILE or --token TOKEN"),
    };
    let identity = Identity {
        device_id: &args.id,
        token: token.trim(),
        server_url: &args.server_url,
        model: &args.model,
    };
    // Padded with the erased value to whole 16-byte flash lines.
    let mut image = vec![0xFF; MAX_RECORD_LEN.next_multiple_of(16)];
    let len = identity
        .encode(&mut image)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    image.truncate(len.next_multiple_of(16));
    crate::atomic::write_atomic(&args.out, &image, 0o600, false).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists; fota never replaces a file holding a token",
                args.out.display()
            )
        } else {
            anyhow::anyhow!("cannot write {}: {e}", args.out.display())
        }
    })?;
    writeln!(
        out,
        "identity of {} ({} bytes) in {}: flash it at {:#010x}",
        args.id,
        image.len(),
        args.out.display(),
        fota_protocol::layout::IDENTITY.start
    )?;
    Ok(())
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
        ("boot_state", &args.boot_state),
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

#[cfg(test)]
mod identity_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fota_protocol::identity::Identity;

    fn args(dir: &Path, tokens: Option<PathBuf>, token: Option<&str>) -> IdentityArgs {
        IdentityArgs {
            id: "lamp-2".into(),
            tokens,
            token: token.map(Into::into),
            server_url: "http://fota.example.com:8080".into(),
            model: "streetlight-f429".into(),
            out: dir.join("identity.bin"),
        }
    }

    #[test]
    fn writes_the_record_the_device_reads_from_the_register_answer() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.json");
        std::fs::write(
            &tokens,
            r#"{"devices":[{"id":"lamp-1","token":"fota_dev_1"},{"id":"lamp-2","token":"fota_dev_2"}]}"#,
        )
        .unwrap();
        let a = args(dir.path(), Some(tokens), None);
        let mut out = Vec::new();
        identity(&a, &mut out).unwrap();
        let bytes = std::fs::read(&a.out).unwrap();
        assert_eq!(bytes.len() % 16, 0);
        let decoded = Identity::decode(&bytes).unwrap();
        assert_eq!(decoded.device_id, "lamp-2");
        assert_eq!(decoded.token, "fota_dev_2");
        assert_eq!(decoded.model, "streetlight-f429");
        assert_eq!(decoded.base_url(), "http://fota.example.com:8080");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&a.out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never replaced.
        let err = identity(&a, &mut out).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
    }

    #[test]
    fn refuses_an_unknown_device_and_invalid_fields() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.json");
        std::fs::write(&tokens, r#"{"devices":[{"id":"lamp-1","token":"t"}]}"#).unwrap();
        let err = identity(&args(dir.path(), Some(tokens), None), &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no device \"lamp-2\""), "{err}");
        let mut bad = args(dir.path(), None, Some("fota_dev_x"));
        bad.server_url = "fota.example.com".into();
        let err = identity(&bad, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("server URL"), "{err}");
        assert!(!bad.out.exists());
    }
}
