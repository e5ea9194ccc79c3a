// Shared by the build scripts of the bootloader and the demo app (`include!`d, not a crate: the
// workspace builds for the device, and build scripts run on the host).
//
// The key comes from the file named by `FOTA_TRUSTED_KEY`: the SubjectPublicKeyInfo PEM that
// `fota keygen --out key.pem` writes next to the private key (`key.pub.pem`), or 32 raw bytes.
// It is written to OUT_DIR/trusted_key.rs as `TRUSTED_KEY: Option<[u8; 32]>`, `None` when the
// variable is not set.

/// Write `out/trusted_key.rs` from `FOTA_TRUSTED_KEY`; `without` is the warning printed when it
/// is not set.
fn write_trusted_key(out: &std::path::Path, without: &str) {
    println!("cargo:rerun-if-env-changed=FOTA_TRUSTED_KEY");
    let key = match std::env::var_os("FOTA_TRUSTED_KEY").filter(|p| !p.is_empty()) {
        Some(path) => {
            println!(
                "cargo:rerun-if-changed={}",
                std::path::PathBuf::from(&path).display()
            );
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("FOTA_TRUSTED_KEY={path:?}: {e}"));
            Some(parse_key(&bytes).unwrap_or_else(|| {
                panic!("FOTA_TRUSTED_KEY={path:?}: not an Ed25519 SPKI PEM or 32 raw bytes")
            }))
        }
        None => {
            println!("cargo:warning=FOTA_TRUSTED_KEY not set: {without}");
            None
        }
    };
    let code = match key {
        Some(k) => format!("Some({k:?})"),
        None => "None".to_string(),
    };
    std::fs::write(
        out.join("trusted_key.rs"),
        format!("/// The Ed25519 public key images must be signed with.\npub const TRUSTED_KEY: Option<[u8; 32]> = {code};\n"),
    )
    .expect("write trusted_key.rs");
}

/// The 12-byte DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

fn parse_key(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.len() == 32 {
        return bytes.try_into().ok();
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64(&body)?;
    if der.len() != 44 || der[..12] != SPKI_PREFIX {
        return None;
    }
    der[12..].try_into().ok()
}

fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
