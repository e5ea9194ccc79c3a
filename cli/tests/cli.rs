//! End-to-end tests of the `fota` binary: keygen, sign (raw and ELF), inspect, verify, and the
//! one-line `error: ...` contract for bad input.

use fota_protocol::testing::app_for;
use fota_protocol::SlotId;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

const SLOT_A: u32 = 0x0802_0000;
const SLOT_B: u32 = 0x0806_0000;

/// An EC P-256 PKCS#8 key (from `imgtool keygen -t ecdsa-p256`): the wrong key type.
const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgG32DTMrqav9baIy2
dawXq07XABpwzsriywiPN1pHI7ehRANCAASFwa2RmdSEZKQvnD82ey9scEE2/BwN
Iq5ZBzcrvAswbnXZ7jzEc7qXAj89X6eZKIU6y/AqiGYiZTI9JT0cWtax
-----END PRIVATE KEY-----
";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).expect("write");
        path
    }

    /// Run `fota` in the temp dir.
    fn fota(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fota"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run fota")
    }

    /// Run `fota`, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.fota(args);
        assert!(
            out.status.success(),
            "fota {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run `fota`, expect failure with exactly one `error: ` line; return that line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.fota(args);
        one_line_error(&out, args)
    }

    /// `fota keygen --out <name>`; returns the key hash it printed.
    fn keygen(&self, name: &str) -> String {
        let stdout = self.ok(&["keygen", "--out", name]);
        key_hash_from(&stdout)
    }
}

fn one_line_error(out: &Output, what: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what:?} should have failed");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what:?} panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what:?}: expected one stderr line, got {stderr:?}"
    );
    assert!(
        lines[0].starts_with("error: "),
        "{what:?}: stderr does not start with 'error: ': {stderr:?}"
    );
    lines[0].to_owned()
}

fn key_hash_from(keygen_stdout: &str) -> String {
    let hash = keygen_stdout
        .trim()
        .rsplit(' ')
        .next()
        .expect("key hash")
        .to_owned();
    assert_eq!(hash.len(), 64, "no key hash in {keygen_stdout:?}");
    hash
}

/// A 3000-byte application linked for the slot at address `slot` (the shared fixture: vector
/// table with the initial SP and a Thumb reset handler 0x100 into the payload, then filler).
fn app_bin(slot: u32) -> Vec<u8> {
    app_for(SlotId::containing(slot).expect("a slot address"), 3000)
}

/// A minimal ELF32 little-endian ARM executable with one PT_LOAD per `(p_paddr, bytes)`.
fn elf32(segments: &[(u32, &[u8])]) -> Vec<u8> {
    let phoff = 52u32;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&40u16.to_le_bytes()); // EM_ARM
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&segments.first().map_or(0, |s| s.0 | 1).to_le_bytes()); // e_entry
    out.extend_from_slice(&phoff.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0x0500_0400u32.to_le_bytes()); // EABI5, hard float
    out.extend_from_slice(&52u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(&(segments.len() as u16).to_le_bytes());
    out.extend_from_slice(&40u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let mut offset = phoff + 32 * segments.len() as u32;
    for (paddr, bytes) in segments {
        let len = bytes.len() as u32;
        for word in [1, offset, *paddr, *paddr, len, len, 5, 4] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        offset += len;
    }
    for (_, bytes) in segments {
        out.extend_from_slice(bytes);
    }
    out
}

/// An ELF whose single PT_LOAD starts at the slot base from file offset 0, so the ELF and
/// program headers are mapped below the vector table; `.text` (the app) sits at slot + 0x200,
/// described by section headers along with a `.bss` in RAM.
fn elf32_with_mapped_headers(base: u32, text: &[u8]) -> Vec<u8> {
    let text_off = 0x200u32;
    let filesz = text_off + text.len() as u32;
    let shoff = (filesz + 3) & !3;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    for half in [2u16, 40] {
        out.extend_from_slice(&half.to_le_bytes());
    }
    for word in [1, base + text_off + 1, 52, shoff, 0x0500_0400u32] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for half in [52u16, 32, 1, 40, 3, 0] {
        out.extend_from_slice(&half.to_le_bytes());
    }
    for word in [1, 0, base, base, filesz, filesz, 5, 0x1000u32] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.resize(text_off as usize, 0);
    out.extend_from_slice(text);
    out.resize(shoff as usize, 0);
    let sections: [[u32; 10]; 3] = [
        [0; 10],
        [
            0,
            1,
            6,
            base + text_off,
            text_off,
            text.len() as u32,
            0,
            0,
            4,
            0,
        ], // .text
        [0, 8, 3, 0x2000_0000, filesz, 0x400, 0, 0, 4, 0], // .bss
    ];
    for word in sections.iter().flatten() {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sign(env: &Env, key: &str, slot: &str, input: &str, output: &str) -> Output {
    env.fota(&[
        "sign",
        "--key",
        key,
        "--slot",
        slot,
        "--version",
        "1.2.3+4",
        "--security-counter",
        "5",
        input,
        "-o",
        output,
    ])
}

#[test]
fn keygen_writes_both_files_and_refuses_overwrite() {
    let env = Env::new();
    let hash = env.keygen("release.pem");
    let private = fs::read_to_string(env.path("release.pem")).expect("private key");
    let public = fs::read_to_string(env.path("release.pub.pem")).expect("public key");
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(env.path("release.pem"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private key mode {mode:o}");
    }

    let line = env.fails(&["keygen", "--out", "release.pem"]);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(
        fs::read_to_string(env.path("release.pem")).expect("read"),
        private
    );
    assert_eq!(
        fs::read_to_string(env.path("release.pub.pem")).expect("read"),
        public
    );

    // Only the public half in the way is enough to refuse.
    env.write("other.pub.pem", b"keep me");
    env.fails(&["keygen", "--out", "other.pem"]);
    assert!(!env.path("other.pem").exists());
    assert_eq!(
        fs::read(env.path("other.pub.pem")).expect("read"),
        b"keep me"
    );

    let stdout = env.ok(&["keygen", "--out", "release.pem", "--force"]);
    assert_ne!(key_hash_from(&stdout), hash);
    assert_ne!(
        fs::read_to_string(env.path("release.pem")).expect("read"),
        private
    );

    // A name without .pem gets .pub.pem appended.
    env.keygen("bare");
    assert!(env.path("bare.pub.pem").exists());
}

#[test]
fn sign_inspect_verify_round_trip() {
    let env = Env::new();
    let hash = env.keygen("k.pem");
    let app = app_bin(SLOT_A);
    env.write("app.bin", &app);
    let out = sign(&env, "k.pem", "a", "app.bin", "app.signed.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 3, "{summary}");
    assert!(lines[0].contains("version 1.2.3+4"), "{summary}");
    assert!(lines[0].contains("slot A"), "{summary}");
    let image = fs::read(env.path("app.signed.bin")).expect("signed image");
    assert_eq!(&image[0x200..0x200 + app.len()], &app[..]);
    // Two different SHA-256, each labelled: the image hash (the SHA256 TLV, over header and
    // payload) and the artifact sha256 (the whole file: the server's name for it).
    let image_hash = hex(&sha256(&image[..0x200 + app.len() + 12]));
    let artifact_sha256 = hex(&sha256(&image));
    assert_ne!(image_hash, artifact_sha256);
    assert!(
        lines[1].starts_with(&format!("  image hash:      {image_hash}  (SHA256 TLV")),
        "{summary}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "  artifact sha256: {artifact_sha256}  (the whole file"
        )),
        "{summary}"
    );

    let text = env.ok(&["inspect", "app.signed.bin"]);
    for needle in [
        "magic:            0x96f3b83d",
        "load_addr:        0x08020000",
        "hdr_size:         0x200",
        &format!("img_size:         {}", app.len()),
        "flags:            0x00000100 (ROM_FIXED)",
        "version:          1.2.3+4",
        "0x0050 SEC_CNT   len 4   05000000 (security counter 5)",
        "0x0010 SHA256    len 32",
        "0x0001 KEYHASH   len 32",
        "0x0024 ED25519   len 64",
        &format!("key hash:           {hash}"),
        &format!("image hash:         {image_hash} (computed over header and payload; matches the SHA256 TLV)"),
        &format!("artifact sha256:    {artifact_sha256} (of the whole file: the server's name for it)"),
        "initial SP 0x20020000, reset 0x08020301",
        "slot A:             ok",
        "slot B:             no:",
        "runs from:          slot A",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--json", "app.signed.bin"])).expect("JSON");
    assert_eq!(json["header"]["magic"], 0x96f3_b83du32);
    assert_eq!(json["header"]["load_addr"], SLOT_A);
    assert_eq!(json["header"]["hdr_size"], 0x200);
    assert_eq!(json["header"]["img_size"], app.len());
    assert_eq!(json["header"]["protect_tlv_size"], 12);
    assert_eq!(
        json["header"]["flag_names"],
        serde_json::json!(["ROM_FIXED"])
    );
    assert_eq!(json["header"]["version"], "1.2.3+4");
    assert_eq!(json["total_len"], image.len());
    assert_eq!(json["security_counter"], 5);
    assert_eq!(json["protected_tlvs"][0]["name"], "SEC_CNT");
    assert_eq!(json["protected_tlvs"][0]["decoded"], 5);
    let names: Vec<&str> = json["tlvs"]
        .as_array()
        .expect("tlvs")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["SHA256", "KEYHASH", "ED25519"]);
    assert_eq!(json["key_hash"], hash);
    assert_eq!(json["image_hash"]["matches"], true);
    assert_eq!(json["image_hash"]["computed"], image_hash);
    assert_eq!(json["image_hash"]["tlv"], image_hash);
    assert_eq!(json["artifact_sha256"], artifact_sha256);
    assert_eq!(json["trailing_bytes"], 0);
    // A padded copy (a flash dump): the same image hash, another artifact sha256, and why.
    let mut padded = image.clone();
    padded.extend_from_slice(&[0xff; 100]);
    env.write("padded.bin", &padded);
    let text = env.ok(&["inspect", "padded.bin"]);
    for needle in [
        format!("image hash:         {image_hash} (computed"),
        format!(
            "artifact sha256:    {} (of the whole file, 100 bytes past the image: the server refuses it as it is)",
            hex(&sha256(&padded))
        ),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(json["vector_table"]["initial_sp"], 0x2002_0000u32);
    assert_eq!(json["vector_table"]["reset"], SLOT_A + 0x301);
    assert_eq!(json["slots"]["a"]["ok"], true);
    assert_eq!(json["slots"]["b"]["ok"], false);
    assert_eq!(json["valid_for_slots"], serde_json::json!(["a"]));

    for args in [
        &["verify", "--key", "k.pem", "app.signed.bin"][..],
        &[
            "verify",
            "--key",
            "k.pub.pem",
            "--slot",
            "a",
            "app.signed.bin",
        ],
    ] {
        let stdout = env.ok(args);
        assert_eq!(
            stdout,
            format!("OK: version 1.2.3+4, security counter 5, signed by key {hash}\n")
        );
    }
    let line = env.fails(&["verify", "--key", "k.pem", "--slot", "b", "app.signed.bin"]);
    assert!(line.contains("slot B"), "{line}");
}

#[test]
fn verify_refuses_other_keys_and_tampering() {
    let env = Env::new();
    env.keygen("k.pem");
    let other = env.keygen("other.pem");
    env.write("app.bin", &app_bin(SLOT_A));
    assert!(sign(&env, "k.pem", "a", "app.bin", "signed.bin")
        .status
        .success());

    let line = env.fails(&["verify", "--key", "other.pem", "signed.bin"]);
    assert!(line.contains("UntrustedKey"), "{line}");
    assert_eq!(
        env.fota(&["verify", "--key", "other.pub.pem", "signed.bin"])
            .status
            .code(),
        Some(1)
    );
    // One matching key among several is enough.
    let stdout = env.ok(&[
        "verify",
        "--key",
        "other.pem",
        "--key",
        "k.pub.pem",
        "signed.bin",
    ]);
    assert!(!stdout.contains(&other));

    let image = fs::read(env.path("signed.bin")).expect("read");
    // A bit in the payload, in the protected TLVs (security counter), in the signature.
    let sig_at = image.len() - 1;
    let sec_cnt_at = image.len() - (4 + 36 + 36 + 68) - 4;
    for (at, expect) in [
        (0x400, "HashMismatch"),
        (sec_cnt_at, "HashMismatch"),
        (sig_at, "BadSignature"),
    ] {
        let mut flipped = image.clone();
        flipped[at] ^= 0x10;
        env.write("flipped.bin", &flipped);
        let out = env.fota(&["verify", "--key", "k.pem", "flipped.bin"]);
        assert_eq!(out.status.code(), Some(1));
        let line = one_line_error(&out, &["verify flipped"]);
        assert!(line.contains(expect), "flip at {at:#x}: {line}");
    }
}

#[test]
fn signing_a_slot_a_build_for_slot_b_is_refused() {
    let env = Env::new();
    env.keygen("k.pem");
    env.write("app.bin", &app_bin(SLOT_A));
    let out = sign(&env, "k.pem", "b", "app.bin", "signed-b.bin");
    let line = one_line_error(&out, &["sign slot b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(line.contains("slot B"), "{line}");
    assert!(line.contains("0x08020301"), "{line}");
    assert!(!env.path("signed-b.bin").exists());

    // The matching build for B signs.
    env.write("app-b.bin", &app_bin(SLOT_B));
    assert!(sign(&env, "k.pem", "b", "app-b.bin", "signed-b.bin")
        .status
        .success());
    env.ok(&["verify", "--key", "k.pem", "--slot", "b", "signed-b.bin"]);
}

/// `fota sign --component bootloader --stage1-slot a|b`: the image carries the stage-1 mark for
/// its slot and verifies as stage-0 will check it; a build linked for the other stage-1 slot,
/// or an application slot, is refused, and so is `--slot` with a bootloader.
#[test]
fn a_stage1_bootloader_is_signed_for_its_stage1_slot() {
    use fota_protocol::image::{Component, ParsedImage};
    use fota_protocol::layout::{STAGE1_A, STAGE1_B};
    let env = Env::new();
    env.keygen("k.pem");
    let stage1 = |base: u32| {
        let mut bin = vec![0x5a; 4096];
        bin[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
        bin[4..8].copy_from_slice(&((base + 0x301) | 1).to_le_bytes());
        bin
    };
    let sign_stage1 = |slot: &str, input: &str, output: &str| {
        env.fota(&[
            "sign",
            "--key",
            "k.pem",
            "--component",
            "bootloader",
            "--stage1-slot",
            slot,
            "--version",
            "2.0.0",
            "--security-counter",
            "3",
            input,
            "-o",
            output,
        ])
    };
    env.write("s1-b.bin", &stage1(STAGE1_B.start));
    let out = sign_stage1("b", "s1-b.bin", "signed-s1-b.bin");
    assert!(out.status.success(), "{out:?}");
    env.ok(&["verify", "--key", "k.pem", "signed-s1-b.bin"]);
    let image = fs::read(env.path("signed-s1-b.bin")).unwrap();
    let parsed = ParsedImage::parse(&image).unwrap();
    assert_eq!(
        parsed.fields().component,
        Some(Component::Stage1 { slot: SlotId::B })
    );
    assert_eq!(parsed.fields().security_counter, Some(3));
    assert_eq!(parsed.header().load_addr, STAGE1_B.start);

    // Linked for stage-1 A, signed for B: refused, nothing written.
    env.write("s1-a.bin", &stage1(STAGE1_A.start));
    let out = sign_stage1("b", "s1-a.bin", "wrong.bin");
    assert_eq!(out.status.code(), Some(1));
    let line = one_line_error(&out, &["sign stage-1 a for b"]);
    assert!(line.contains("stage-1 slot B"), "{line}");
    assert!(!env.path("wrong.bin").exists());
    // An application build is not a stage-1 build.
    env.write("app.bin", &app_bin(SLOT_A));
    assert_eq!(
        sign_stage1("a", "app.bin", "wrong.bin").status.code(),
        Some(1)
    );
    // A bootloader is signed for a stage-1 slot, not an application slot.
    let out = env.fota(&[
        "sign",
        "--key",
        "k.pem",
        "--component",
        "bootloader",
        "--slot",
        "a",
        "--version",
        "1.0.0",
        "s1-a.bin",
        "-o",
        "wrong.bin",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!env.path("wrong.bin").exists());
}

#[test]
fn an_elf_signs_like_its_raw_binary() {
    let env = Env::new();
    env.keygen("k.pem");
    let app = app_bin(SLOT_A);
    env.write("app.bin", &app);
    env.write("app.elf", &elf32(&[(SLOT_A + 0x200, &app)]));
    assert!(sign(&env, "k.pem", "a", "app.bin", "from-bin.bin")
        .status
        .success());
    let out = sign(&env, "k.pem", "a", "app.elf", "from-elf.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(env.path("from-elf.bin")).expect("read"),
        fs::read(env.path("from-bin.bin")).expect("read")
    );

    // Two segments (.text, then .data at its load address) with a gap: filled with 0xFF.
    let (text, data) = app.split_at(1000);
    env.write(
        "split.elf",
        &elf32(&[(SLOT_A + 0x200 + 1024, data), (SLOT_A + 0x200, text)]),
    );
    let mut flat = text.to_vec();
    flat.resize(1024, 0xFF);
    flat.extend_from_slice(data);
    env.write("split.bin", &flat);
    assert!(sign(&env, "k.pem", "a", "split.elf", "split-elf.bin")
        .status
        .success());
    assert!(sign(&env, "k.pem", "a", "split.bin", "split-bin.bin")
        .status
        .success());
    assert_eq!(
        fs::read(env.path("split-elf.bin")).expect("read"),
        fs::read(env.path("split-bin.bin")).expect("read")
    );

    // Headers mapped at the slot base are not payload (objcopy -O binary drops them too).
    env.write("mapped.elf", &elf32_with_mapped_headers(SLOT_A, &app));
    let out = sign(&env, "k.pem", "a", "mapped.elf", "from-mapped.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read(env.path("from-mapped.bin")).expect("read"),
        fs::read(env.path("from-bin.bin")).expect("read")
    );

    let line = one_line_error(
        &sign(&env, "k.pem", "b", "app.elf", "x.bin"),
        &["elf for b"],
    );
    assert!(
        line.contains("app.elf is linked at 0x08020200 but slot B's payload starts at 0x08060200"),
        "{line}"
    );
}

#[test]
fn bad_input_gives_one_error_line() {
    let env = Env::new();
    env.keygen("k.pem");
    env.write("app.bin", &app_bin(SLOT_A));
    env.write("ec.pem", EC_KEY.as_bytes());
    env.write("garbage.pem", b"not a key at all\n");
    env.write("short.bin", b"\x01\x02\x03");
    env.write("empty.bin", b"");
    env.write("big.bin", &vec![0u8; 300 * 1024]);
    env.write("noload.elf", &elf32(&[]));
    env.write(
        "cut.elf",
        &elf32(&[(SLOT_A + 0x200, &app_bin(SLOT_A))])[..60],
    );
    env.write(
        "huge.elf",
        &elf32(&[(SLOT_A + 0x200, &app_bin(SLOT_A)), (0x2000_0000, b"data")]),
    );
    assert!(sign(&env, "k.pem", "a", "app.bin", "good.bin")
        .status
        .success());
    let good = fs::read(env.path("good.bin")).expect("read");
    env.write("truncated.img", &good[..good.len() - 10]);
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    env.write("badmagic.img", &bad_magic);

    let sign_args = |key: &'static str, input: &'static str| -> Vec<&'static str> {
        vec![
            "sign",
            "--key",
            key,
            "--slot",
            "a",
            "--version",
            "1.0.0",
            input,
            "-o",
            "out.bin",
        ]
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (sign_args("missing.pem", "app.bin"), "missing.pem"),
        (sign_args("garbage.pem", "app.bin"), "not a PEM"),
        (sign_args("ec.pem", "app.bin"), "not an Ed25519 key"),
        (sign_args("k.pub.pem", "app.bin"), "public key"),
        (sign_args("k.pem", "missing.bin"), "missing.bin"),
        (sign_args("k.pem", "short.bin"), "too short"),
        (sign_args("k.pem", "empty.bin"), "too short"),
        (sign_args("k.pem", "big.bin"), "big.bin"),
        (sign_args("k.pem", "noload.elf"), "no loadable segments"),
        (sign_args("k.pem", "cut.elf"), "cut.elf"),
        (sign_args("k.pem", "huge.elf"), "too large"),
        (
            vec![
                "sign",
                "--key",
                "k.pem",
                "--slot",
                "a",
                "--version",
                "1.two",
                "app.bin",
                "-o",
                "o.bin",
            ],
            "--version",
        ),
        (
            vec![
                "sign",
                "--key",
                "k.pem",
                "--slot",
                "c",
                "--version",
                "1.0.0",
                "app.bin",
                "-o",
                "o.bin",
            ],
            "--slot",
        ),
        (
            vec![
                "sign",
                "--key",
                "k.pem",
                "--slot",
                "a",
                "--version",
                "1.0.0",
                "--header-size",
                "0x100",
                "app.bin",
                "-o",
                "o.bin",
            ],
            "alignment",
        ),
        (
            vec![
                "sign",
                "--key",
                "k.pem",
                "--slot",
                "a",
                "--version",
                "1.0.0",
                "--header-size",
                "lots",
                "app.bin",
                "-o",
                "o.bin",
            ],
            "--header-size",
        ),
        (
            vec!["sign", "--key", "k.pem", "--slot", "a", "app.bin"],
            "required",
        ),
        (vec!["verify", "good.bin"], "--key"),
        (
            vec!["verify", "--key", "k.pem", "--slot", "z", "good.bin"],
            "--slot",
        ),
        (
            vec!["verify", "--key", "ec.pem", "good.bin"],
            "not an Ed25519 key",
        ),
        (
            vec!["verify", "--key", "k.pem", "missing.img"],
            "missing.img",
        ),
        (vec!["verify", "--key", "k.pem", "app.bin"], "BadMagic"),
        (
            vec!["verify", "--key", "k.pem", "truncated.img"],
            "Truncated",
        ),
        (vec!["inspect", "badmagic.img"], "BadMagic"),
        (vec!["inspect", "truncated.img"], "Truncated"),
        (vec!["inspect", "empty.bin"], "Truncated"),
        (vec!["inspect", "missing.img"], "missing.img"),
        (vec!["frobnicate"], "frobnicate"),
        (vec![], "no command"),
    ];
    for (args, needle) in cases {
        let line = env.fails(&args);
        assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
    }
    assert!(!env.path("out.bin").exists());
    assert!(!env.path("o.bin").exists());
    // No temporary files left behind by the refusals.
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".fota-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let env = Env::new();
    assert_eq!(env.fota(&["verify"]).status.code(), Some(2));
    assert_eq!(env.fota(&["inspect", "missing.img"]).status.code(), Some(1));
    assert_eq!(env.fota(&["--help"]).status.code(), Some(0));
    let help = env.ok(&["sign", "--help"]);
    assert!(help.contains("--security-counter"), "{help}");
    let version = env.ok(&["--version"]);
    assert!(version.starts_with("fota "), "{version}");
}

/// The commands `--help` lists (its `Commands:` section, without `help`).
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// `fota` without a command names every command `fota --help` lists, `demo` included; a command
/// without its subcommand names that command's own.
#[test]
fn a_missing_command_names_every_command() {
    let env = Env::new();
    for (args, called) in [
        (&[][..], "fota"),
        (&["release"][..], "fota release"),
        (&["token"][..], "fota token"),
        (&["rollout"][..], "fota rollout"),
    ] {
        let mut help_args = args.to_vec();
        help_args.push("--help");
        let listed = listed_commands(&env.ok(&help_args));
        assert!(listed.len() >= 2, "{listed:?}");
        let out = env.fota(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let line = one_line_error(&out, args);
        assert_eq!(
            line,
            format!(
                "error: no command given ({}); see '{called} --help'",
                listed.join(", ")
            )
        );
    }
    let top = listed_commands(&env.ok(&["--help"]));
    let mut expected = vec!["serve", "token", "release", "rollout", "devices", "audit"];
    if cfg!(feature = "demo") {
        expected.push("demo");
    }
    for command in expected {
        assert!(top.iter().any(|c| c == command), "{command} in {top:?}");
    }
}
