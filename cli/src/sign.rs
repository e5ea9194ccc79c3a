//! `fota sign`: turn an application build into a signed MCUboot image for one slot, or a
//! stage-1 bootloader build into one for one stage-1 slot.
//!
//! ```text
//! fota sign --key release.pem --slot a --version 1.2.3+4 [--security-counter N]
//!           [--header-size 0x200] app.elf -o app-a.signed.bin
//! fota sign --key release.pem --component bootloader --stage1-slot b --version 2.0.0 \
//!           --security-counter 2 fota-bootloader.elf -o stage1-b.signed.bin
//! ```
//!
//! A stage-1 image carries the protected COMPONENT TLV (0x00a0: bootloader, its stage-1 slot;
//! imgtool's `--custom-tlv 0xa0 0x01<slot>`), which stage-0 checks before every jump.
//!
//! The input is a raw binary (vector table first) or an ELF (flattened like `objcopy -O binary`;
//! it must be linked at the slot's payload address). The output equals what `imgtool sign
//! --header-size 0x200 --pad-header --rom-fixed <slot> -s N -k key.pem` writes for the same
//! payload, and is only written after it verifies with the key and checks out for the slot.

use super::parse_int;
use crate::{atomic, firmware, keys};
use anyhow::{bail, Context as _};
use fota_protocol::image::{self, Component, ImageBuilder, ParsedImage, SlotError, TrustedKey};
use fota_protocol::layout;
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
    /// Application slot the build is linked for: a (0x08020000) or b (0x08060000).
    #[arg(long, value_name = "a|b", required_unless_present = "stage1_slot")]
    pub slot: Option<SlotId>,
    /// What the build is: an application (for --slot) or a stage-1 bootloader (for
    /// --stage1-slot).
    #[arg(long, value_enum, default_value = "application")]
    pub component: ComponentArg,
    /// Stage-1 slot a bootloader build is linked for: a (0x08010000) or b (0x080A0000).
    #[arg(long, value_name = "a|b", conflicts_with = "slot")]
    pub stage1_slot: Option<SlotId>,
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

/// `--component`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComponentArg {
    /// An application for slot A or B.
    Application,
    /// A stage-1 bootloader for stage-1 slot A or B.
    Bootloader,
}

/// Where a build goes: an application slot or a stage-1 slot.
#[derive(Debug, Clone, Copy)]
struct Target {
    slot: SlotId,
    component: Component,
}

impl Target {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        match (args.component, args.slot, args.stage1_slot) {
            (ComponentArg::Application, Some(slot), None) => Ok(Self {
                slot,
                component: Component::Application,
            }),
            (ComponentArg::Bootloader, None, Some(slot)) => Ok(Self {
                slot,
                component: Component::Stage1 { slot },
            }),
            (ComponentArg::Application, _, _) => {
                bail!("an application is signed for --slot a|b (--stage1-slot is for a bootloader)")
            }
            (ComponentArg::Bootloader, _, _) => {
                bail!("a bootloader is signed for --stage1-slot a|b, not --slot")
            }
        }
    }

    fn partition(self) -> layout::Partition {
        match self.component {
            Component::Application => self.slot.partition(),
            Component::Stage1 { .. } => self.slot.stage1_partition(),
        }
    }

    /// The largest image it takes.
    fn max_len(self) -> u32 {
        match self.component {
            Component::Application => self.slot.partition().size,
            Component::Stage1 { .. } => layout::STAGE1_IMAGE_MAX,
        }
    }

    fn name(self) -> String {
        match self.component {
            Component::Application => format!("slot {}", self.slot),
            Component::Stage1 { .. } => format!("stage-1 slot {}", self.slot),
        }
    }
}

/// Sign, check and write the image.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let target = Target::from_args(args)?;
    let key = keys::load_signing_key(&args.key)?;
    let payload = read_payload(&args.input, target, args.header_size)?;
    let image = ImageBuilder::new(payload, args.version)
        .header_size(args.header_size)
        .security_counter(args.security_counter)
        .rom_fixed(target.partition().start)
        .component(target.component)
        .sign(&key)
        .with_context(|| format!("cannot sign {}", args.input.display()))?;

    // Check the result the way a device will before writing it anywhere.
    let trusted = TrustedKey::from_bytes(&key.verifying_key().to_bytes())
        .with_context(|| format!("{} cannot be used to sign", args.key.display()))?;
    let verified = ParsedImage::parse(&image)
        .and_then(|parsed| parsed.verify(&[trusted]))
        .context("the signed image does not verify (internal error)")?;
    let checked = match target.component {
        Component::Application => image::check_verified_for_slot(&verified, target.slot),
        Component::Stage1 { .. } => image::check_verified_for_stage1(&verified, target.slot),
    };
    if let Err(e) = checked {
        let hint = match target.component {
            Component::Application => linked_for_hint(&e, target.slot, verified.vector_table),
            Component::Stage1 { .. } => String::new(),
        };
        bail!(
            "refusing to sign {} for {}: {e}{hint}",
            args.input.display(),
            target.name(),
        );
    }

    atomic::write_atomic(&args.output, &image, 0o644, true)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    writeln!(
        out,
        "signed {} -> {}: version {}, {}, security counter {}, {} bytes",
        args.input.display(),
        args.output.display(),
        args.version,
        match target.component {
            Component::Application => format!("slot {}", target.slot),
            Component::Stage1 { .. } => format!("bootloader for stage-1 slot {}", target.slot),
        },
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
fn read_payload(input: &Path, target: Target, header_size: u16) -> anyhow::Result<Vec<u8>> {
    let slot = target.name();
    let shown = input.display();
    if u32::from(header_size) % image::VTOR_ALIGN != 0 {
        bail!(
            "header size {header_size:#x} would put the vector table off VTOR's {}-byte alignment",
            image::VTOR_ALIGN
        );
    }
    let part = target.partition();
    let payload_start = part.start + u32::from(header_size);
    // Room for the payload; the TLVs after it are checked on the finished image.
    let room = u64::from(target.max_len().saturating_sub(u32::from(header_size)));
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
            "{shown} is linked at {addr:#010x} but {slot}'s payload starts at \
             {payload_start:#010x}{hint}"
        );
    }
    let len = fw.payload.len() as u64;
    if len < 8 {
        bail!("{shown} is {len} bytes, too short to hold a vector table (initial SP and reset vector)");
    }
    if len > room {
        bail!(
            "{shown} is {len} bytes; {slot} holds at most {room} bytes of payload after a {header_size:#x}-byte header"
        );
    }
    Ok(fw.payload)
}
