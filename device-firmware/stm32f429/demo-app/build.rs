//! Links the demo for slot A or slot B (copies memory-slot-{a,b}.x to OUT_DIR as memory.x) and
//! compiles in the trusted public key from `FOTA_TRUSTED_KEY`, like the bootloader: the demo
//! verifies its own image before `mark_confirmed` (to learn its security counter).
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
        "the demo app cannot verify itself, so it never confirms",
    );
}
