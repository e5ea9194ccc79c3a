//! The fota server and operator CLI, as a library so the `fota` binary stays thin and the
//! integration tests can reach the pieces.
//!
//! - [`atomic`]: writing keys and images through a temporary file and a rename.
//! - [`cli`]: the `fota` command line (`keygen`, `sign`, `inspect`, `verify`).
//! - [`keys`]: Ed25519 key files (PKCS#8 and SubjectPublicKeyInfo PEM, as imgtool reads them).
//! - [`firmware`]: application builds (raw binary or ELF) turned into the payload to sign.

pub mod atomic;
pub mod cli;
pub mod firmware;
pub mod keys;
