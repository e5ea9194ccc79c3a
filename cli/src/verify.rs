//! `fota verify --key <pem> [--key <pem> ...] [--slot a|b] <image>`: is this image genuine?
//!
//! Checks the image's structure, its SHA-256 and its Ed25519 signature (`verify_strict`) against
//! the given keys (private or public PEMs), exactly as the bootloader does, and with `--slot`
//! that it can execute in place from that slot. Prints one `OK: ...` line, or fails with one
//! `error: ...` line and exit status 1.

use super::{image_error_name, read_image};
use crate::keys;
use anyhow::bail;
use fota_protocol::image::check_verified_for_slot;
use fota_protocol::image::ImageError;
use fota_protocol::SlotId;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `fota verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A trusted key: private (PKCS#8) or public (SubjectPublicKeyInfo) PEM. Repeatable.
    #[arg(long = "key", value_name = "PEM", required = true)]
    pub keys: Vec<PathBuf>,
    /// Also require the image to run from this slot (a or b).
    #[arg(long, value_name = "a|b")]
    pub slot: Option<SlotId>,
    /// The signed image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

/// Verify and print the verdict.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let trusted = args
        .keys
        .iter()
        .map(|path| keys::load_trusted_key(path))
        .collect::<Result<Vec<_>, _>>()?;
    let shown = args.image.display();
    let file = read_image(&args.image)?;
    let verified = match file.image.verify(&trusted) {
        Ok(v) => v,
        Err(ImageError::UntrustedKey) => {
            let signer = file
                .image
                .fields()
                .key_hash
                .map(|h| format!(" {h}"))
                .unwrap_or_default();
            bail!(
                "{shown}: image is signed by key{signer}, which is not among the {} trusted key(s) (UntrustedKey)",
                trusted.len()
            )
        }
        Err(e) => bail!("{shown}: {e} ({})", image_error_name(&e)),
    };
    if let Some(slot) = args.slot {
        if let Err(e) = check_verified_for_slot(&verified, slot) {
            bail!("{shown}: signature is valid but the image cannot run from slot {slot}: {e}");
        }
    }
    let signer = trusted
        .get(verified.key_index)
        .map(|k| k.key_hash().to_string())
        .unwrap_or_default();
    writeln!(
        out,
        "OK: version {}, security counter {}, signed by key {signer}",
        verified.header.version, verified.security_counter
    )?;
    Ok(())
}
