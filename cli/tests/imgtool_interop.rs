//! Interoperability with MCUboot's imgtool, run when `FOTA_IMGTOOL` names an imgtool executable
//! (e.g. `FOTA_IMGTOOL=/path/to/venv/bin/imgtool cargo test -p fota-cli -- --include-ignored`;
//! scripts/test installs imgtool and sets it).
//!
//! The tests are `#[ignore]`d, so a plain `cargo test` lists them as ignored rather than passed;
//! run without `FOTA_IMGTOOL`, they fail.
//!
//! - imgtool keys and images are accepted by `fota verify` and shown by `fota inspect`;
//! - fota keys and images are accepted by `imgtool verify`;
//! - tampered images are refused by both;
//! - both tools write the same bytes for the same key, payload and options.

use fota_protocol::testing::app_for;
use fota_protocol::SlotId;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLOT_A: u32 = 0x0802_0000;

/// The imgtool to test against: `FOTA_IMGTOOL`, or a failure that says so.
fn imgtool() -> PathBuf {
    match std::env::var_os("FOTA_IMGTOOL") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "FOTA_IMGTOOL is not set: point it at an imgtool executable (scripts/setup installs \
             one in the project's venv)"
        ),
    }
}

fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(program: &Path, args: &[&str], dir: &Path) -> String {
    let out = run(program, args, dir);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fota() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fota"))
}

/// A 4000-byte slot-A application (the shared fixture: vector table with the initial SP and a
/// Thumb reset handler, then filler).
fn app_bin() -> Vec<u8> {
    app_for(SlotId::A, 4000)
}

const IMGTOOL_SIGN: [&str; 15] = [
    "sign",
    "-k",
    "k.pem",
    "--header-size",
    "0x200",
    "--pad-header",
    "--rom-fixed",
    "0x08020000",
    "-S",
    "0x40000",
    "-v",
    "1.2.3+4",
    "-s",
    "7",
    "app.bin",
];

/// Flip one bit of `name` at `at` into `tampered.bin`.
fn tamper(dir: &Path, name: &str, at: usize) {
    let mut bytes = fs::read(dir.join(name)).expect("read image");
    bytes[at] ^= 0x01;
    fs::write(dir.join("tampered.bin"), bytes).expect("write tampered image");
}

fn assert_fota_refuses(args: &[&str], dir: &Path) {
    let out = run(&fota(), args, dir);
    assert_eq!(out.status.code(), Some(1), "fota {args:?}: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
#[ignore = "needs imgtool: set FOTA_IMGTOOL (scripts/test does)"]
fn fota_verifies_and_inspects_imgtool_images() {
    let imgtool = imgtool();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("app.bin"), app_bin()).expect("write app");
    ok(&imgtool, &["keygen", "-k", "k.pem", "-t", "ed25519"], d);
    let mut sign = IMGTOOL_SIGN.to_vec();
    sign.push("signed.bin");
    ok(&imgtool, &sign, d);

    // (a) accepted with the private key, and with the public key imgtool exports.
    let stdout = ok(
        &fota(),
        &["verify", "--key", "k.pem", "--slot", "a", "signed.bin"],
        d,
    );
    assert!(
        stdout.starts_with("OK: version 1.2.3+4, security counter 7, signed by key "),
        "{stdout}"
    );
    let public = ok(&imgtool, &["getpub", "-k", "k.pem", "-e", "pem"], d);
    fs::write(d.join("k.pub.pem"), public).expect("write public key");
    ok(
        &fota(),
        &["verify", "--key", "k.pub.pem", "--slot", "a", "signed.bin"],
        d,
    );

    // A flipped payload bit, and a key that did not sign it, are refused.
    tamper(d, "signed.bin", 0x200 + 100);
    assert_fota_refuses(
        &["verify", "--key", "k.pem", "--slot", "a", "tampered.bin"],
        d,
    );
    ok(&fota(), &["keygen", "--out", "other.pem"], d);
    assert_fota_refuses(&["verify", "--key", "other.pem", "signed.bin"], d);
    // And the wrong slot.
    assert_fota_refuses(
        &["verify", "--key", "k.pem", "--slot", "b", "signed.bin"],
        d,
    );

    // (c) inspect shows imgtool's version and security counter.
    let inspect = ok(&fota(), &["inspect", "signed.bin"], d);
    assert!(inspect.contains("version:          1.2.3+4"), "{inspect}");
    assert!(inspect.contains("security counter:   7"), "{inspect}");
    assert!(
        inspect.contains("(computed over header and payload; matches the SHA256 TLV)"),
        "{inspect}"
    );
    assert!(inspect.contains("runs from:          slot A"), "{inspect}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&fota(), &["inspect", "--json", "signed.bin"], d)).expect("JSON");
    assert_eq!(json["header"]["version"], "1.2.3+4");
    assert_eq!(json["security_counter"], 7);
    assert_eq!(json["header"]["load_addr"], SLOT_A);
}

#[test]
#[ignore = "needs imgtool: set FOTA_IMGTOOL (scripts/test does)"]
fn imgtool_verifies_fota_keys_and_images() {
    let imgtool = imgtool();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("app.bin"), app_bin()).expect("write app");
    let keygen = ok(&fota(), &["keygen", "--out", "k.pem"], d);
    ok(
        &fota(),
        &[
            "sign",
            "--key",
            "k.pem",
            "--slot",
            "a",
            "--version",
            "1.2.3+4",
            "--security-counter",
            "7",
            "app.bin",
            "-o",
            "signed.bin",
        ],
        d,
    );

    // The key hash fota prints is the one imgtool computes (SHA-256 of the SPKI DER).
    let out = run(&imgtool, &["getpubhash", "-k", "k.pem", "-e", "raw"], d);
    assert!(out.status.success(), "imgtool getpubhash: {}", text(&out));
    let imgtool_hash: String = out.stdout.iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        keygen
            .trim_end()
            .ends_with(&format!("key hash {imgtool_hash}")),
        "fota keygen said {keygen:?}, imgtool getpubhash {imgtool_hash}"
    );

    // (b) imgtool loads both PEMs and validates the image with either.
    for key in ["k.pem", "k.pub.pem"] {
        let out = ok(&imgtool, &["verify", "-k", key, "signed.bin"], d);
        assert!(
            out.contains("Image was correctly validated"),
            "{key}: {out}"
        );
        assert!(out.contains("Image version: 1.2.3+4"), "{key}: {out}");
    }

    for at in [0x200 + 100, 0x10] {
        tamper(d, "signed.bin", at);
        let out = run(&imgtool, &["verify", "-k", "k.pem", "tampered.bin"], d);
        assert!(
            !out.status.success() || !text(&out).contains("correctly validated"),
            "imgtool accepted a tampered image (bit at {at:#x}): {}",
            text(&out)
        );
    }
}

#[test]
#[ignore = "needs imgtool: set FOTA_IMGTOOL (scripts/test does)"]
fn fota_and_imgtool_write_the_same_bytes() {
    let imgtool = imgtool();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("app.bin"), app_bin()).expect("write app");
    ok(&fota(), &["keygen", "--out", "k.pem"], d);
    let mut sign = IMGTOOL_SIGN.to_vec();
    sign.push("imgtool.bin");
    ok(&imgtool, &sign, d);
    ok(
        &fota(),
        &[
            "sign",
            "--key",
            "k.pem",
            "--slot",
            "a",
            "--version",
            "1.2.3+4",
            "--security-counter",
            "7",
            "app.bin",
            "-o",
            "fota.bin",
        ],
        d,
    );
    assert!(
        fs::read(d.join("imgtool.bin")).expect("read")
            == fs::read(d.join("fota.bin")).expect("read"),
        "fota sign and imgtool sign disagree"
    );
}
