//! `fota`, the one binary of fota: `fota serve` (the server, from the `fota-server` library), the
//! operator's signing tools (`keygen`, `sign`, `inspect`, `verify`), admin tokens (`token`), the
//! operator commands over the admin API (`release`, `rollout`, `rollback`, `devices`, `audit`,
//! in [`ops`]) and, with the default feature `demo`, `fota demo` (a server and a virtual fleet of
//! `fota-sim` devices).
//!
//! One module per command, each with its clap `Args` and a `run`. Commands write their results
//! to the `out` they are given (stdout in the binary) and return failures as `anyhow` errors,
//! which [`report_error`] prints as one `error: ...` line. A new command is a new [`Command`]
//! variant and module.
//!
//! This crate sits on top: it may use the server library, the device-firmware crates and the
//! protocol; nothing below uses it.

pub mod atomic;
#[cfg(feature = "demo")]
pub mod demo;
pub mod firmware;
pub mod inspect;
pub mod keygen;
pub mod keys;
pub mod ops;
pub mod sign;
pub mod token;
pub mod verify;

use anyhow::Context as _;
use fota_protocol::image::{ImageError, ParsedImage, StreamVerifier};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// Exit status for failures of a command.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for command-line usage errors (clap's convention).
pub const EXIT_USAGE: u8 = 2;

/// `fota`: fleet firmware over the air: the server, the operator's signing tools, and the
/// operator commands over the server's admin API.
#[derive(Debug, clap::Parser)]
#[command(name = "fota", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `fota` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate an Ed25519 signing key pair (PKCS#8 private PEM + SubjectPublicKeyInfo PEM).
    Keygen(keygen::Args),
    /// Sign an application build (raw .bin or ELF) for slot A or B.
    Sign(sign::Args),
    /// Show the header, TLVs, hash, vector table and slot fit of a signed image.
    Inspect(inspect::Args),
    /// Check an image's hash and signature against trusted keys (and optionally a slot).
    Verify(verify::Args),
    /// Run the server: device API, admin API, artifacts, metrics.
    Serve(fota_server::config::ServeArgs),
    /// Create or revoke admin tokens (on the server's machine).
    Token(token::Args),
    /// Upload, list, show and delete releases (admin API; --server, --token).
    Release(ops::release::Args),
    /// Start, follow and steer staged rollouts (admin API).
    Rollout(ops::rollout::Args),
    /// Fleet rollback: roll devices forward to an earlier, good release (admin API).
    Rollback(ops::rollout::RollbackArgs),
    /// List devices (filters); `devices show ID` for one; `devices register` to provision
    /// (admin API).
    ///
    /// `fota devices [--model M] [--version V] [--tag T] [--status S] [--limit N] [--after ID]`
    /// lists; `fota devices show ID` shows one device with its latest events; `fota devices
    /// register --csv FILE` (or `--json FILE`) provisions devices and prints their tokens.
    /// Flags of `show` and `register`, --server and --token included, go after the subcommand.
    Devices(ops::devices::Args),
    /// The audit log: operator actions and automatic rollout decisions (admin API).
    Audit(ops::audit::Args),
    /// The whole story on a virtual fleet: a server on SQLite, 10,000 simulated devices, a good
    /// release rolled out to all, a bad one halted in its canary; then the figures.
    #[cfg(feature = "demo")]
    Demo(demo::Args),
    /// Internal to `fota demo --mqtt` at fleet sizes past the open-files limit: holds MQTT
    /// sessions' sockets for the virtual fleet, speaking frames over stdin and stdout
    /// (`fota_sim::relay`).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    MqttRelay,
}

/// Run a parsed command line, writing results to stdout.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    #[cfg(feature = "demo")]
    if matches!(cli.command, Command::MqttRelay) {
        // Its frames go to stdout, which nothing else may hold (as `out` below would).
        return fota_sim::relay::serve_stdio().context("the MQTT relay failed");
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    run_with(cli.command, &mut out)?;
    out.flush().context("cannot write to stdout")?;
    Ok(())
}

/// Run one command, writing its results to `out`.
pub fn run_with(command: Command, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Keygen(args) => keygen::run(&args, out),
        Command::Sign(args) => sign::run(&args, out),
        Command::Inspect(args) => inspect::run(&args, out),
        Command::Verify(args) => verify::run(&args, out),
        Command::Serve(args) => fota_server::serve::run(&args),
        Command::Token(args) => token::run(&args, out),
        Command::Release(args) => ops::release::run(&args, out),
        Command::Rollout(args) => ops::rollout::run(&args, out),
        Command::Rollback(args) => ops::rollout::run_rollback(&args, out),
        Command::Devices(args) => ops::devices::run(&args, out),
        Command::Audit(args) => ops::audit::run(&args, out),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&args, out),
        #[cfg(feature = "demo")]
        Command::MqttRelay => {
            anyhow::bail!("fota mqtt-relay speaks frames on stdout: run it through fota::run")
        }
    }
}

/// `message` on one line: line breaks become spaces.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Print a command's failure as one `error: ...` line on stderr and return exit status 1.
/// A closed stdout (`fota inspect x | head -1`) ends the command quietly.
pub fn report_error(error: &anyhow::Error) -> ExitCode {
    let broken_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    });
    if !broken_pipe {
        // Nothing sensible is left to do if stderr is gone too.
        let _ = writeln!(io::stderr(), "error: {}", one_line(&format!("{error:#}")));
    }
    ExitCode::from(EXIT_FAILURE)
}

/// Handle a clap parse failure: `--help` and `--version` print and exit 0; a usage error is
/// printed as one `error: ...` line and exits 2.
pub fn report_usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = writeln!(
                io::stderr(),
                "{}",
                missing_command_line(&error.render().to_string())
            );
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let _ = writeln!(
                io::stderr(),
                "{}",
                usage_error_line(&error.render().to_string())
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `fota` (or `fota release`, ...) without its command: one line naming every command it takes,
/// read from the command definition itself (so none is left out, `demo` included when built),
/// e.g. `error: no command given (keygen, sign, ...); see 'fota --help'`. `rendered` is clap's
/// help text, whose usage line says which command was called.
pub fn missing_command_line(rendered: &str) -> String {
    use clap::CommandFactory as _;
    // `Usage: fota release <COMMAND>`: the words before the first placeholder.
    let path: Vec<&str> = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage:"))
        .map(|usage| {
            usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['<', '[', '-']))
                .collect()
        })
        .unwrap_or_default();
    let mut command = Cli::command();
    for name in path.iter().skip(1) {
        match command.find_subcommand(name) {
            Some(sub) => command = sub.clone(),
            None => break,
        }
    }
    let names: Vec<&str> = command
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(clap::Command::get_name)
        .collect();
    let called = if path.is_empty() {
        "fota".to_string()
    } else {
        path.join(" ")
    };
    if names.is_empty() {
        format!("error: missing arguments; see '{called} --help'")
    } else {
        format!(
            "error: no command given ({}); see '{called} --help'",
            names.join(", ")
        )
    }
}

/// Fold clap's multi-line error text into one line: keep the message and its details, drop the
/// usage synopsis and the "For more information" hint.
pub fn usage_error_line(rendered: &str) -> String {
    let mut line = String::new();
    // A usage synopsis may span lines (`fota devices [OPTIONS]` / `fota devices <COMMAND>`)
    // until the next blank line.
    let mut in_usage = false;
    for part in rendered.lines().map(str::trim) {
        if part.starts_with("Usage:") {
            in_usage = true;
            continue;
        }
        if part.is_empty() {
            in_usage = false;
            continue;
        }
        if in_usage || part.starts_with("For more information") {
            continue;
        }
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    if !line.starts_with("error:") {
        line.insert_str(0, "error: ");
    }
    line
}

/// The two SHA-256 of a signed image, which are not the same and are easily mixed up:
///
/// - the **image hash**, the image's SHA256 TLV: over its header, payload and protected TLVs,
///   what the bootloader checks (and `imgtool` prints);
/// - the **artifact sha256**, over the whole file: the name the server stores and offers it by
///   (`GET /v1/artifacts/{sha256}`, `fota release show`, the audit log).
///
/// Every command that prints one of them labels it so.
pub const IMAGE_HASH_LABEL: &str = "image hash";
/// See [`IMAGE_HASH_LABEL`].
pub const ARTIFACT_SHA256_LABEL: &str = "artifact sha256";

/// The artifact sha256 of a file's bytes (see [`IMAGE_HASH_LABEL`]), in hex.
pub fn artifact_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    fota_protocol::image::Digest(sha2::Sha256::digest(bytes).into()).to_string()
}

/// The two hashes of a signed image, one labelled line each, as `fota sign` prints them.
pub fn write_hashes(
    out: &mut dyn Write,
    image_hash: &fota_protocol::image::Digest,
    artifact_sha256: &str,
) -> io::Result<()> {
    writeln!(
        out,
        "  {IMAGE_HASH_LABEL}:      {image_hash}  (SHA256 TLV over header and payload; the bootloader checks it)"
    )?;
    writeln!(
        out,
        "  {ARTIFACT_SHA256_LABEL}: {artifact_sha256}  (the whole file; the server stores and offers it by this name)"
    )
}

/// Parse an integer given in decimal or as `0x` hex (`--header-size 0x200`).
pub fn parse_int<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let s = s.trim();
    let value = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse::<u64>(),
    }
    .map_err(|_| format!("'{s}' is not a number (decimal or 0x hex)"))?;
    T::try_from(value).map_err(|_| format!("{s} is out of range"))
}

/// The name of an [`ImageError`] variant (`BadMagic`, `HashMismatch`, ...), for messages that
/// must name the error precisely.
pub fn image_error_name(error: &ImageError) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// An image file, parsed (structure checked and digest computed, nothing trusted yet).
#[derive(Debug)]
pub struct ImageFile {
    /// The parsed image.
    pub image: ParsedImage,
    /// Length of the file, which may exceed the image (slot padding, a flash dump).
    pub file_len: u64,
}

/// Read and parse an image file, streaming it so a flash dump is not read into memory whole.
/// Errors name the file and the [`ImageError`].
pub fn read_image(path: &Path) -> anyhow::Result<ImageFile> {
    let shown = path.display();
    let mut file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    let mut verifier = StreamVerifier::new(u32::MAX);
    let mut buf = vec![0u8; 64 * 1024];
    let malformed =
        |e: ImageError| anyhow::anyhow!("{shown}: malformed image ({}): {e}", image_error_name(&e));
    loop {
        if verifier.total_len() == Some(verifier.position()) {
            break;
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {shown}")),
        };
        verifier.update(&buf[..n]).map_err(malformed)?;
    }
    let image = verifier.finish().map_err(malformed)?;
    Ok(ImageFile { image, file_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_in_decimal_and_hex() {
        assert_eq!(parse_int::<u16>("0x200"), Ok(0x200));
        assert_eq!(parse_int::<u16>("512"), Ok(512));
        assert_eq!(parse_int::<u32>("0X1_0000"), Ok(0x10000));
        assert!(parse_int::<u16>("0x10000").is_err());
        assert!(parse_int::<u16>("-1").is_err());
        assert!(parse_int::<u16>("0x").is_err());
        assert!(parse_int::<u16>("twelve").is_err());
    }

    #[test]
    fn usage_errors_fold_to_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --key <KEY>\n\nUsage: fota verify --key <KEY> <IMAGE>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "error: the following required arguments were not provided: --key <KEY>"
        );
        assert_eq!(
            usage_error_line("error: unexpected argument '--slt' found\n\n  tip: a similar argument exists: '--slot'\n"),
            "error: unexpected argument '--slt' found; tip: a similar argument exists: '--slot'"
        );
        assert_eq!(
            usage_error_line("error: the subcommand 'show' cannot be used with '--model <MODEL>'\n\nUsage: fota devices [OPTIONS] --token <TOKEN>\n       fota devices <COMMAND>\n\nFor more information, try '--help'.\n"),
            "error: the subcommand 'show' cannot be used with '--model <MODEL>'"
        );
    }

    #[test]
    fn image_errors_are_named() {
        assert_eq!(image_error_name(&ImageError::BadMagic(1)), "BadMagic");
        assert_eq!(image_error_name(&ImageError::HashMismatch), "HashMismatch");
        assert_eq!(
            image_error_name(&ImageError::TooLarge { len: 1, max: 0 }),
            "TooLarge"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
