//! `fota release upload|list|show|delete`: releases on the server (`/v1/releases`). Each image is
//! shown with its *artifact sha256* (the file's SHA-256, its name under `/v1/artifacts/`), not
//! to be mixed up with the *image hash* `fota sign` also prints (see
//! [`crate::IMAGE_HASH_LABEL`]).

use super::client::Client;
use super::format::{utc, Table};
use super::ServerArgs;
use anyhow::Context as _;
use fota_protocol::messages::Component;
use fota_server::api::admin::releases::ReleaseList;
use fota_server::store::ReleaseRecord;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `fota release`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Release actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Upload a release: one signed image per slot (`fota sign --slot a` and `--slot b`). The
    /// server refuses images that do not verify under its trusted keys, are linked for the wrong
    /// slot, or disagree on version or security counter.
    Upload(UploadArgs),
    /// List releases, by model, newest version first.
    List(ListArgs),
    /// One release: its notes, and each slot's image by artifact sha256 (the file's SHA-256,
    /// its name on the server), size and signing key.
    Show(ShowArgs),
    /// Delete a release no rollout has used (admin role). Its artifacts go too, unless another
    /// release shares them; a release a rollout used stays, for the audit trail.
    Delete(DeleteArgs),
}

/// `fota release delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Release id.
    #[arg(value_name = "ID")]
    pub id: i64,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota release show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Release id.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `fota release upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// Hardware model the release is for.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// The signed image for slot A.
    #[arg(long, value_name = "FILE")]
    pub image_a: PathBuf,
    /// The signed image for slot B.
    #[arg(long, value_name = "FILE")]
    pub image_b: PathBuf,
    /// Release notes.
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
    /// Cross-check: refuse unless the images carry this version.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Cross-check: refuse unless the images are this component (their COMPONENT TLV decides:
    /// two stage-1 images, marked for stage-1 slots A and B, make a bootloader release).
    #[arg(long, value_enum, value_name = "COMPONENT")]
    pub component: Option<ComponentArg>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// What a release is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComponentArg {
    /// The application (application slots A and B).
    Application,
    /// The stage-1 bootloader (stage-1 slots A and B).
    Bootloader,
}

impl From<ComponentArg> for Component {
    fn from(c: ComponentArg) -> Self {
        match c {
            ComponentArg::Application => Component::Application,
            ComponentArg::Bootloader => Component::Bootloader,
        }
    }
}

/// `""` for an application, `"bootloader "` before a bootloader release's version.
pub(super) fn component_prefix(c: Component) -> &'static str {
    match c {
        Component::Application => "",
        Component::Bootloader => "bootloader ",
    }
}

/// `fota release list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this hardware model.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Run `fota release`.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    match &args.action {
        Action::Upload(a) => upload(a, out),
        Action::List(a) => list(a, out),
        Action::Show(a) => show(a, out),
        Action::Delete(a) => delete(a, out),
    }
}

fn delete(args: &DeleteArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    client.delete(&["v1", "releases", &args.id.to_string()])?;
    writeln!(out, "deleted release {}", args.id)?;
    Ok(())
}

/// `release 7: f429 1.4.2, security counter 3` (`f429 bootloader 1.1.0` for a stage-1
/// release), then one line per slot with its artifact sha256 and size (and, with `keys`, the
/// hash of the key that signed it).
fn write_release(out: &mut dyn Write, release: &ReleaseRecord, keys: bool) -> anyhow::Result<()> {
    writeln!(
        out,
        "release {}: {} {}{}, security counter {}",
        release.id,
        release.model,
        component_prefix(release.component),
        release.version,
        release.security_counter,
    )?;
    let slot = match release.component {
        Component::Application => "slot",
        Component::Bootloader => "stage-1 slot",
    };
    for image in &release.images {
        let key = if keys {
            format!(", signed by key {}", image.key_hash)
        } else {
            String::new()
        };
        writeln!(
            out,
            "  {slot} {}: {} {}, {} bytes{key}",
            image.slot,
            crate::ARTIFACT_SHA256_LABEL,
            image.sha256,
            image.size
        )?;
    }
    Ok(())
}

fn show(args: &ShowArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let value = client.get(&["v1", "releases", &args.id.to_string()], &[])?;
    if args.json {
        return super::print_json(out, &value);
    }
    let release: ReleaseRecord = client.decode(value)?;
    write_release(out, &release, true)?;
    writeln!(
        out,
        "  uploaded {} by {}",
        utc(release.created_at),
        release.created_by
    )?;
    if !release.notes.is_empty() {
        writeln!(out, "  notes: {}", crate::one_line(&release.notes))?;
    }
    Ok(())
}

fn image_part(path: &Path) -> anyhow::Result<reqwest::multipart::Part> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let name = path
        .file_name()
        .map_or_else(|| "image.bin".into(), |n| n.to_string_lossy().into_owned());
    Ok(reqwest::multipart::Part::bytes(bytes)
        .file_name(name)
        .mime_str("application/octet-stream")?)
}

fn upload(args: &UploadArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let mut form = reqwest::multipart::Form::new().text("model", args.model.clone());
    if let Some(notes) = &args.notes {
        form = form.text("notes", notes.clone());
    }
    if let Some(version) = &args.version {
        form = form.text("version", version.clone());
    }
    if let Some(component) = args.component {
        form = form.text("component", Component::from(component).name());
    }
    let form = form
        .part("image_a", image_part(&args.image_a)?)
        .part("image_b", image_part(&args.image_b)?);
    let value = client.post_form(&["v1", "releases"], form)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let release: ReleaseRecord = client.decode(value)?;
    write_release(out, &release, false)
}

fn list(args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let mut query = Vec::new();
    if let Some(model) = &args.model {
        query.push(("model", model.clone()));
    }
    let value = client.get(&["v1", "releases"], &query)?;
    if args.json {
        return super::print_json(out, &value);
    }
    let list: ReleaseList = client.decode(value)?;
    if list.releases.is_empty() {
        writeln!(out, "no releases")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "MODEL",
        "COMPONENT",
        "VERSION",
        "COUNTER",
        "CREATED",
        "BY",
    ]);
    for r in &list.releases {
        table.row(vec![
            r.id.to_string(),
            r.model.clone(),
            r.component.name().to_string(),
            r.version.clone(),
            r.security_counter.to_string(),
            utc(r.created_at),
            r.created_by.clone(),
        ]);
    }
    table.write(out)?;
    Ok(())
}
