//! Puts memory.x on the linker's search path and compiles in the trusted public key.
//!
//! The key comes from the file named by `FOTA_TRUSTED_KEY`: the SubjectPublicKeyInfo PEM that
//! `fota keygen --out key.pem` writes next to the private key (`key.pub.pem`), or 32 raw bytes
//! (parsing in ../build-support/trusted_key.rs, shared with the demo app). Without it the
//! bootloader is built with no key and refuses every image (recovery mode): a build that forgot
//! its key can never run anything unsigned. qemu/run-tests.sh generates a throwaway test key
//! under target/ and passes it here.
use std::{env, fs, path::PathBuf};

include!("../build-support/trusted_key.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut memory = fs::read_to_string("memory.x").expect("read memory.x");
    if env::var_os("CARGO_FEATURE_NO_SIZE_BUDGET").is_some() {
        // Measurement and QEMU only: lets a bootloader over its 32 KB link so it can be sized
        // and tested. It then overlaps the journal sectors: never flash such a build.
        println!("cargo:warning=no-size-budget: linked with 64 KB of flash; not for a device");
        memory = memory.replace("LENGTH = 32K", "LENGTH = 64K");
    }
    fs::write(out.join("memory.x"), memory).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=../build-support/trusted_key.rs");
    write_trusted_key(&out, "this bootloader trusts no key and boots nothing");
}
