//! Links the bootloader (stage-1) for stage-1 slot A or B (copies memory-stage1-{a,b}.x, checked
//! against the flash map by fota-protocol's `linker_scripts_match_the_map` test, to OUT_DIR as
//! memory.x) and compiles in the trusted public key.
//!
//! The key comes from the file named by `FOTA_TRUSTED_KEY`: the SubjectPublicKeyInfo PEM that
//! `fota keygen --out key.pem` writes next to the private key (`key.pub.pem`), or 32 raw bytes
//! (parsing in ../build-support/trusted_key.rs, shared with stage-0 and the demo app). Without
//! it the bootloader is built with no key and refuses every image (recovery mode): a build that
//! forgot its key can never run anything unsigned. qemu/run-tests.sh generates a throwaway test
//! key under target/ and passes it here.
use std::{env, fs, path::PathBuf};

include!("../build-support/trusted_key.rs");

fn main() {
    let a = env::var_os("CARGO_FEATURE_STAGE1_A").is_some();
    let b = env::var_os("CARGO_FEATURE_STAGE1_B").is_some();
    let file = match (a, b) {
        (true, true) => panic!("features stage1-a and stage1-b are exclusive"),
        (_, true) => "memory-stage1-b.x",
        (true, false) => "memory-stage1-a.x",
        (false, false) => {
            println!("cargo:warning=neither stage1-a nor stage1-b: linking for stage-1 A");
            "memory-stage1-a.x"
        }
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy(file, out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory-stage1-a.x");
    println!("cargo:rerun-if-changed=memory-stage1-b.x");
    println!("cargo:rerun-if-changed=../build-support/trusted_key.rs");
    write_trusted_key(&out, "this bootloader trusts no key and boots nothing");
}
