//! `fota keygen --out <path> [--force]`: a new Ed25519 signing key pair.
//!
//! Writes the private key as a PKCS#8 PEM to `<path>` (mode 0600) and the public key as a
//! SubjectPublicKeyInfo PEM next to it (`key.pem` -> `key.pub.pem`), both loadable by imgtool,
//! and prints the key hash images signed with it will carry.

use crate::keys;
use anyhow::Context as _;
use fota_protocol::image::key_hash;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `fota keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the private key; the public key goes to the same name with `.pub.pem`.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

/// Generate and save the key pair.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let key = keys::generate()?;
    let public_path = keys::write_key_pair(&key, &args.out, args.force)?;
    let hash = key_hash(&key.verifying_key().to_bytes());
    writeln!(
        out,
        "wrote private key {} and public key {}; key hash {hash}",
        args.out.display(),
        public_path.display()
    )
    .context("cannot write to stdout")?;
    Ok(())
}
