//! `fota sign`: turn an application build into a signed MCUboot image for one slot.
//!
//! ```text
//! fota sign --key release.pem --slot a --version 1.2.3+4 [--security-counter N]
//!           [--header-size 0x200] app.elf -o app-a.signed.bin
//! ```
//!
//! The input is a raw binary (vector table first) or an ELF (flattened like `objcopy -O binary`;
//! it must be linked at the slot's payload address). The output equals what `imgtool sign
//! --header-size 0x200 --pad-header --rom-fixed <slot> -s N -k key.pem` writes for the same
//! payload, and is only written after it verifies with the key and checks out for the slot.

use super::parse_int;
use crate::{atomic, firmware, keys};
use anyhow::{bail, Context as _};
use fota_protocol::image::{ImageBuilder, ParsedImage, TrustedKey};
use fota_protocol::layout::{self, SlotError};
use fota_protocol::{ImageVersion, SlotId};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of `fota sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Private key (PKCS#8 PEM) to sign with.
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    /// Slot the build is linked for: a (0x08020000) or b (0x08060000).
    #[arg(long, value_name = "a|b")]
    pub slot: SlotId,
    /// Image version, major.minor.revision[+build], e.g. 1.2.3+4.
    #[arg(long, value_name = "VERSION")]
    pub version: ImageVersion,
    /// Security counter (anti-rollback) for the protected SEC_CNT TLV.
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_int::<u32>)]
    pub security_counter: u32,
    /// Header size (payload offset), decimal or 0x hex; must keep the vector table 512-byte aligned.
    #[arg(long, value_name = "BYTES", default_value = "0x200", value_parser = parse_int::<u16>)]
    pub header_size: u16,
    /// Application build: a raw .bin (vector table first) or an ELF.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Where to write the signed image.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    pub output: PathBuf,
}

/// Sign, check and write the image.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let key = keys::load_signing_key(&args.key)?;
    let payload = read_payload(&args.input, args.slot, args.header_size)?;
    let image = ImageBuilder::new(payload, args.version)
        .header_size(args.header_size)
        .security_counter(args.security_counter)
        .rom_fixed(args.slot.partition().start)
        .sign(&key)
        .with_context(|| format!("cannot sign {}", args.input.display()))?;

    // Check the result the way a device will before writing it anywhere.
    let trusted = TrustedKey::from_bytes(&key.verifying_key().to_bytes())
        .with_context(|| format!("{} cannot be used to sign", args.key.display()))?;
    let verified = ParsedImage::parse(&image)
        .and_then(|parsed| parsed.verify(&[trusted]))
        .context("the signed image does not verify (internal error)")?;
    if let Err(e) = layout::check_verified_for_slot(&verified, args.slot) {
        bail!(
            "refusing to sign {} for slot {}: {e}{}",
            args.input.display(),
            args.slot,
            linked_for_hint(&e, args.slot, verified.vector_table)
        );
    }

    atomic::write_atomic(&args.output, &image, 0o644, true)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    writeln!(
        out,
        "signed {} -> {}: version {}, slot {}, security counter {}, {} bytes",
        args.input.display(),
        args.output.display(),
        args.version,
        args.slot,
        args.security_counter,
        image.len(),
    )
    .and_then(|()| crate::write_hashes(out, &verified.digest, &crate::artifact_sha256(&image)))
    .context("cannot write to stdout")?;
    Ok(())
}

/// " (the build looks linked for slot A; ...)" when the reset vector lies in the other slot.
fn linked_for_hint(error: &SlotError, slot: SlotId, vector_table: Option<[u32; 2]>) -> String {
    match (error, vector_table) {
        (SlotError::ResetOutsideSlot { .. }, Some([_, reset])) => {
            match SlotId::containing(reset & !1) {
                Some(other) if other != slot => {
                    format!(
                        " (the build looks linked for slot {other}; sign it with --slot {})",
                        other.to_string().to_lowercase()
                    )
                }
                _ => String::new(),
            }
        }
        _ => String::new(),
    }
}

/// Read the input and return the payload to sign, checked against the slot.
fn read_payload(input: &Path, slot: SlotId, header_size: u16) -> anyhow::Result<Vec<u8>> {
    let shown = input.display();
    if u32::from(header_size) % layout::VTOR_ALIGN != 0 {
        bail!(
            "header size {header_size:#x} would put the vector table off VTOR's {}-byte alignment",
            layout::VTOR_ALIGN
        );
    }
    let part = slot.partition();
    let payload_start = part.start + u32::from(header_size);
    // Room for the payload; the TLVs after it are checked on the finished image.
    let room = u64::from(part.size.saturating_sub(u32::from(header_size)));
    let bytes = fs::read(input).with_context(|| format!("cannot read {shown}"))?;
    let fw = firmware::load(&bytes, room).map_err(|e| anyhow::anyhow!("{shown} {e}"))?;
    if let Some(addr) = fw.load_address.filter(|addr| *addr != payload_start) {
        let hint = match SlotId::containing(addr) {
            Some(other) if addr == other.partition().start + u32::from(header_size) => {
                format!(" (it is a slot {other} build)")
            }
            _ => String::new(),
        };
        bail!(
            "{shown} is linked at {addr:#010x} but slot {slot}'s payload starts at \
             {payload_start:#010x}{hint}"
        );
    }
    let len = fw.payload.len() as u64;
    if len < 8 {
        bail!("{shown} is {len} bytes, too short to hold a vector table (initial SP and reset vector)");
    }
    if len > room {
        bail!(
            "{shown} is {len} bytes; slot {slot} holds at most {room} bytes of payload after a {header_size:#x}-byte header"
        );
    }
    Ok(fw.payload)
}
