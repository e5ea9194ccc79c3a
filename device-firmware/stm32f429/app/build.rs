//! Links the application for slot A or slot B (memory-slot-{a,b}.x), compiles in the trusted
//! public key from `FOTA_TRUSTED_KEY` (as the bootloader does: the client verifies downloads
//! and its own image with it), and the build-time settings:
//! - `FOTA_TRIAL_DEADLINE_MS`: how long a trial image may run without confirming (default
//!   600000, 10 minutes; the QEMU tests use a few seconds);
//! - `FOTA_APN`: the cellular access point name (default `internet`);
//! - `FOTA_MQTT_URL`: the broker the device holds an MQTT session with for pushed commands,
//!   `mqtt://host:port` (default: none, the device only polls). Its account there is its id
//!   and token from the identity record.
use std::{env, fs, path::PathBuf};

include!("../build-support/trusted_key.rs");

fn main() {
    let a = env::var_os("CARGO_FEATURE_SLOT_A").is_some();
    let b = env::var_os("CARGO_FEATURE_SLOT_B").is_some();
    let file = match (a, b) {
        (true, true) => panic!("features slot-a and slot-b are exclusive"),
        (_, true) => "memory-slot-b.x",
        (true, false) => "memory-slot-a.x",
        (false, false) => {
            println!("cargo:warning=neither slot-a nor slot-b: linking for slot A");
            "memory-slot-a.x"
        }
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy(file, out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-slot-a.x");
    println!("cargo:rerun-if-changed=memory-slot-b.x");
    println!("cargo:rerun-if-changed=../build-support/trusted_key.rs");
    write_trusted_key(
        &out,
        "the application cannot verify updates, so it takes none",
    );

    println!("cargo:rerun-if-env-changed=FOTA_TRIAL_DEADLINE_MS");
    println!("cargo:rerun-if-env-changed=FOTA_APN");
    println!("cargo:rerun-if-env-changed=FOTA_MQTT_URL");
    let mqtt = env::var("FOTA_MQTT_URL").unwrap_or_default();
    assert!(
        mqtt.is_empty()
            || ((mqtt.starts_with("mqtt://") || mqtt.starts_with("tcp://"))
                && mqtt.bytes().all(|b| b.is_ascii_graphic() && b != b'"')),
        "FOTA_MQTT_URL: mqtt://host:port"
    );
    let deadline: u64 = env::var("FOTA_TRIAL_DEADLINE_MS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().expect("FOTA_TRIAL_DEADLINE_MS: milliseconds"))
        .unwrap_or(600_000);
    let apn = env::var("FOTA_APN").unwrap_or_else(|_| "internet".to_string());
    assert!(
        apn.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
        "FOTA_APN: printable ASCII without quotes"
    );
    fs::write(
        out.join("settings.rs"),
        format!(
            "/// How long a trial image may run without confirming.\npub const TRIAL_DEADLINE_MS: u64 = {deadline};\n/// The cellular access point name.\npub const APN: &str = {apn:?};\n/// The MQTT broker for pushed commands (empty: none).\npub const MQTT_URL: &str = {mqtt:?};\n"
        ),
    )
    .expect("write settings.rs");
}
