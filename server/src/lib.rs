//! The fota server and operator CLI, as a library so the `fota` binary stays thin and the
//! integration tests can reach the pieces.
//!
//! - [`atomic`]: writing keys and images through a temporary file and a rename.
//! - [`cli`]: the `fota` command line (`keygen`, `sign`, `inspect`, `verify`, `token`, and the
//!   operator commands over the admin API: `release`, `rollout`, `rollback`, `devices`, `audit`).
//! - [`keys`]: Ed25519 key files (PKCS#8 and SubjectPublicKeyInfo PEM, as imgtool reads them).
//! - [`firmware`]: application builds (raw binary or ELF) turned into the payload to sign.
//! - [`serve`]: `fota serve`: start-up, the background flusher, graceful shutdown.
//! - [`api`]: the HTTP routes, one module per resource; [`error`]: its one error type.
//! - [`store`]: SQLite and PostgreSQL behind one `Store`; [`artifacts`]: image files by SHA-256.
//! - [`auth`]: admin and device tokens; [`config`]: layered configuration.
//! - [`rollout`]: staged canary rollouts: cohorts, gates, the engine.
//! - [`facts`]: the check-in write buffer; [`metrics`]: Prometheus; [`release`]: upload rules.

pub mod api;
pub mod artifacts;
pub mod atomic;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod facts;
pub mod firmware;
pub mod keys;
pub mod metrics;
pub mod release;
pub mod rollout;
pub mod serve;
pub mod store;
