//! Puts memory.x (stage-0's row of the flash map, checked against it by fota-protocol's
//! `linker_scripts_match_the_map` test) on the linker's search path and compiles in the trusted
//! public key from `FOTA_TRUSTED_KEY`, like the bootloader: the key that anchors every stage-1.
use std::{env, fs, path::PathBuf};

include!("../build-support/trusted_key.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=../build-support/trusted_key.rs");
    write_trusted_key(&out, "this stage-0 trusts no key and boots nothing");
}
