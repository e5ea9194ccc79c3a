//! `fota inspect <image> [--json]`: everything in a signed image, without trusting any of it.
//!
//! Shows the header fields (flags by name), every protected and unprotected TLV (type with its
//! MCUboot name, length, value; SEC_CNT decoded), the key hash, both SHA-256 of the image (the
//! *image hash* computed over header and payload, and whether the SHA256 TLV matches it; the
//! *artifact sha256* of the whole file, the server's name for it: see
//! [`crate::IMAGE_HASH_LABEL`]), the first two vector table words, and which slot the image
//! checks out for. The signature is not checked: that needs a key (`fota verify`).

use super::{read_image, ImageFile};
use anyhow::Context as _;
use fota_protocol::image::check_image_for_slot;
use fota_protocol::image::{key_hash, tlv_type, Digest, ImageFlags, TlvEntry, IMAGE_MAGIC};
use fota_protocol::SlotId;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `fota inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The signed image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// MCUboot's name for a TLV type (imgtool's `TLV_VALUES`), if it has one.
pub fn tlv_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        tlv_type::KEYHASH => "KEYHASH",
        tlv_type::PUBKEY => "PUBKEY",
        tlv_type::SHA256 => "SHA256",
        tlv_type::SHA384 => "SHA384",
        tlv_type::SHA512 => "SHA512",
        0x20 => "RSA2048",
        0x21 => "ECDSA224",
        0x22 => "ECDSASIG",
        0x23 => "RSA3072",
        tlv_type::ED25519 => "ED25519",
        tlv_type::SIG_PURE => "SIG_PURE",
        0x30 => "ENCRSA2048",
        0x31 => "ENCKW",
        0x32 => "ENCEC256",
        0x33 => "ENCX25519",
        0x34 => "ENCX25519_SHA512",
        0x40 => "DEPENDENCY",
        tlv_type::SEC_CNT => "SEC_CNT",
        0x60 => "BOOT_RECORD",
        0x70 => "DECOMP_SIZE",
        0x71 => "DECOMP_SHA",
        0x72 => "DECOMP_SIGNATURE",
        0x73 => "COMP_DEC_SIZE",
        0x74 => "UUID_VID",
        0x75 => "UUID_CID",
        0xa0..=0xfffe => "vendor",
        _ => return None,
    })
}

/// The names of the set `ih_flags` bits, and any bits MCUboot does not define.
pub fn flag_names(flags: ImageFlags) -> (Vec<&'static str>, u32) {
    const NAMES: [(u32, &str); 9] = [
        (ImageFlags::PIC, "PIC"),
        (ImageFlags::ENCRYPTED_AES128, "ENCRYPTED_AES128"),
        (ImageFlags::ENCRYPTED_AES256, "ENCRYPTED_AES256"),
        (ImageFlags::NON_BOOTABLE, "NON_BOOTABLE"),
        (ImageFlags::RAM_LOAD, "RAM_LOAD"),
        (ImageFlags::ROM_FIXED, "ROM_FIXED"),
        (ImageFlags::COMPRESSED_LZMA1, "COMPRESSED_LZMA1"),
        (ImageFlags::COMPRESSED_LZMA2, "COMPRESSED_LZMA2"),
        (ImageFlags::COMPRESSED_ARM_THUMB, "COMPRESSED_ARM_THUMB"),
    ];
    let names = NAMES
        .iter()
        .filter(|(bit, _)| flags.0 & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    let known = NAMES.iter().fold(0, |acc, (bit, _)| acc | bit);
    (names, flags.0 & !known)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One TLV as shown.
struct TlvView {
    kind: u16,
    name: Option<&'static str>,
    value: Vec<u8>,
    /// A decoded value (SEC_CNT).
    decoded: Option<u32>,
}

fn tlv_views<'a>(
    entries: impl Iterator<Item = Result<TlvEntry<'a>, fota_protocol::ImageError>>,
) -> anyhow::Result<Vec<TlvView>> {
    entries
        .map(|entry| {
            let e = entry?;
            let decoded = match (e.tlv_type, <[u8; 4]>::try_from(e.value)) {
                (tlv_type::SEC_CNT, Ok(b)) => Some(u32::from_le_bytes(b)),
                _ => None,
            };
            Ok(TlvView {
                kind: e.tlv_type,
                name: tlv_name(e.tlv_type),
                value: e.value.to_vec(),
                decoded,
            })
        })
        .collect()
}

/// Everything `inspect` shows, gathered once and rendered as text or JSON.
struct Report {
    path: String,
    file_len: u64,
    total_len: u32,
    header: fota_protocol::ImageHeader,
    flag_names: Vec<&'static str>,
    unknown_flags: u32,
    protected: Vec<TlvView>,
    tlvs: Vec<TlvView>,
    security_counter: Option<u32>,
    key_hash: Option<Digest>,
    computed: Digest,
    sha256_tlv: Option<Digest>,
    /// SHA-256 of the whole file.
    artifact_sha256: String,
    has_signature: bool,
    vector_table: Option<[u32; 2]>,
    slots: Vec<(SlotId, Result<(), String>)>,
}

impl Report {
    fn new(path: String, file: &ImageFile, artifact_sha256: String) -> anyhow::Result<Self> {
        let image = &file.image;
        let header = *image.header();
        let fields = image.fields();
        let (flag_names, unknown_flags) = flag_names(header.flags);
        let key_hash = fields.key_hash.or_else(|| {
            let der = fields.public_key?;
            let raw: [u8; 32] = der[12..].try_into().ok()?;
            Some(key_hash(&raw))
        });
        let slots = SlotId::ALL
            .into_iter()
            .map(|slot| {
                let verdict =
                    check_image_for_slot(&header, image.total_len(), image.vector_table(), slot)
                        .map_err(|e| e.to_string());
                (slot, verdict)
            })
            .collect();
        Ok(Self {
            path,
            file_len: file.file_len,
            total_len: image.total_len(),
            header,
            flag_names,
            unknown_flags,
            protected: tlv_views(image.protected_tlvs())?,
            tlvs: tlv_views(image.tlvs())?,
            security_counter: fields.security_counter,
            key_hash,
            computed: image.computed_digest(),
            sha256_tlv: fields.sha256,
            artifact_sha256,
            has_signature: fields.signature.is_some(),
            vector_table: image.vector_table(),
            slots,
        })
    }

    fn hash_matches(&self) -> bool {
        self.sha256_tlv == Some(self.computed)
    }

    /// Bytes of the file past the image (slot padding, a flash dump): the server refuses an
    /// upload with any.
    fn trailing_bytes(&self) -> u64 {
        self.file_len.saturating_sub(u64::from(self.total_len))
    }

    fn valid_slots(&self) -> Vec<SlotId> {
        self.slots
            .iter()
            .filter(|(_, verdict)| verdict.is_ok())
            .map(|(slot, _)| *slot)
            .collect()
    }

    fn flags_text(&self) -> String {
        let mut names: Vec<String> = self.flag_names.iter().map(|n| (*n).to_owned()).collect();
        if self.unknown_flags != 0 {
            names.push(format!("unknown {:#x}", self.unknown_flags));
        }
        if names.is_empty() {
            names.push("none".to_owned());
        }
        format!("{:#010x} ({})", self.header.flags.0, names.join(", "))
    }

    fn text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let h = &self.header;
        writeln!(out, "image:              {}", self.path)?;
        writeln!(
            out,
            "length:             {} bytes ({} bytes in the file)",
            self.total_len, self.file_len
        )?;
        writeln!(out, "header:")?;
        writeln!(out, "  magic:            {IMAGE_MAGIC:#010x}")?;
        writeln!(out, "  load_addr:        {:#010x}", h.load_addr)?;
        writeln!(
            out,
            "  hdr_size:         {:#x} ({})",
            h.hdr_size, h.hdr_size
        )?;
        writeln!(out, "  protect_tlv_size: {}", h.protect_tlv_size)?;
        writeln!(
            out,
            "  img_size:         {} ({:#x})",
            h.img_size, h.img_size
        )?;
        writeln!(out, "  flags:            {}", self.flags_text())?;
        writeln!(out, "  version:          {}", h.version)?;
        for (title, tlvs) in [("protected TLVs", &self.protected), ("TLVs", &self.tlvs)] {
            if tlvs.is_empty() {
                writeln!(out, "{title}: none")?;
                continue;
            }
            writeln!(out, "{title}:")?;
            for t in tlvs {
                let name = t.name.unwrap_or("unknown");
                let decoded = t
                    .decoded
                    .map(|v| format!(" (security counter {v})"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {:#06x} {name:<9} len {:<3} {}{decoded}",
                    t.kind,
                    t.value.len(),
                    hex(&t.value)
                )?;
            }
        }
        match self.security_counter {
            Some(n) => writeln!(out, "security counter:   {n}")?,
            None => writeln!(out, "security counter:   none (reads as 0)")?,
        }
        match &self.key_hash {
            Some(hash) => writeln!(out, "key hash:           {hash}")?,
            None => writeln!(out, "key hash:           none")?,
        }
        let verdict = match self.sha256_tlv {
            None => "no SHA256 TLV",
            Some(_) if self.hash_matches() => "matches the SHA256 TLV",
            Some(_) => "DOES NOT MATCH the SHA256 TLV",
        };
        writeln!(
            out,
            "{:<20}{} (computed over header and payload; {verdict})",
            format!("{}:", crate::IMAGE_HASH_LABEL),
            self.computed
        )?;
        let whole_file = match self.trailing_bytes() {
            0 => "of the whole file: the server's name for it".to_string(),
            n => format!(
                "of the whole file, {n} bytes past the image: the server refuses it as it is"
            ),
        };
        writeln!(
            out,
            "{:<20}{} ({whole_file})",
            format!("{}:", crate::ARTIFACT_SHA256_LABEL),
            self.artifact_sha256
        )?;
        writeln!(
            out,
            "signature:          {} (not checked; use fota verify)",
            if self.has_signature {
                "ED25519"
            } else {
                "none"
            }
        )?;
        match self.vector_table {
            Some([sp, reset]) => writeln!(
                out,
                "vector table:       initial SP {sp:#010x}, reset {reset:#010x}"
            )?,
            None => writeln!(
                out,
                "vector table:       none (payload shorter than 8 bytes)"
            )?,
        }
        for (slot, verdict) in &self.slots {
            match verdict {
                Ok(()) => writeln!(out, "slot {slot}:             ok")?,
                Err(why) => writeln!(out, "slot {slot}:             no: {why}")?,
            }
        }
        let valid: Vec<String> = self.valid_slots().iter().map(|s| s.to_string()).collect();
        if valid.is_empty() {
            writeln!(out, "runs from:          no slot")?;
        } else {
            writeln!(out, "runs from:          slot {}", valid.join(", "))?;
        }
        Ok(())
    }

    fn json(&self) -> Value {
        let h = &self.header;
        let tlvs = |list: &[TlvView]| -> Value {
            list.iter()
                .map(|t| {
                    let mut v = json!({
                        "type": t.kind,
                        "name": t.name,
                        "len": t.value.len(),
                        "value": hex(&t.value),
                    });
                    if let (Some(n), Some(obj)) = (t.decoded, v.as_object_mut()) {
                        obj.insert("decoded".to_owned(), json!(n));
                    }
                    v
                })
                .collect()
        };
        let slots: serde_json::Map<String, Value> = self
            .slots
            .iter()
            .map(|(slot, verdict)| {
                let v = match verdict {
                    Ok(()) => json!({ "ok": true }),
                    Err(why) => json!({ "ok": false, "error": why }),
                };
                (slot.to_string().to_lowercase(), v)
            })
            .collect();
        json!({
            "file": self.path,
            "file_len": self.file_len,
            "total_len": self.total_len,
            "header": {
                "magic": IMAGE_MAGIC,
                "load_addr": h.load_addr,
                "hdr_size": h.hdr_size,
                "protect_tlv_size": h.protect_tlv_size,
                "img_size": h.img_size,
                "flags": h.flags.0,
                "flag_names": self.flag_names,
                "unknown_flags": self.unknown_flags,
                "version": h.version.to_string(),
                "version_parts": {
                    "major": h.version.major,
                    "minor": h.version.minor,
                    "revision": h.version.revision,
                    "build": h.version.build,
                },
            },
            "protected_tlvs": tlvs(&self.protected),
            "tlvs": tlvs(&self.tlvs),
            "security_counter": self.security_counter,
            "key_hash": self.key_hash.map(|d| d.to_string()),
            "image_hash": {
                "computed": self.computed.to_string(),
                "tlv": self.sha256_tlv.map(|d| d.to_string()),
                "matches": self.hash_matches(),
            },
            "artifact_sha256": self.artifact_sha256,
            "trailing_bytes": self.trailing_bytes(),
            "signature": self.has_signature,
            "vector_table": self.vector_table.map(|[sp, reset]| json!({
                "initial_sp": sp,
                "reset": reset,
            })),
            "slots": slots,
            "valid_for_slots": self
                .valid_slots()
                .iter()
                .map(|s| s.to_string().to_lowercase())
                .collect::<Vec<_>>(),
        })
    }
}

/// Parse the image and print the report.
pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let file = read_image(&args.image)?;
    let artifact_sha256 = file_sha256(&args.image)?;
    let report = Report::new(args.image.display().to_string(), &file, artifact_sha256)
        .with_context(|| format!("{}: malformed TLV area", args.image.display()))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report.json()).context("cannot render JSON")?;
        writeln!(out, "{text}").context("cannot write to stdout")?;
    } else {
        report.text(out).context("cannot write to stdout")?;
    }
    Ok(())
}

/// The artifact sha256 of a file: SHA-256 over all of it, read in pieces.
fn file_sha256(path: &std::path::Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Digest(hasher.finalize().into()).to_string())
}
