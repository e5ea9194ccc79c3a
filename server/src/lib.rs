//! The fota server, as a library: `fota serve` (in the `fota-cli` crate's binary) and the tests
//! link it.
//!
//! - [`serve`]: `fota serve`: start-up, the background flusher, graceful shutdown.
//! - [`api`]: the HTTP routes, one module per resource; [`error`]: its one error type.
//! - [`store`]: SQLite and PostgreSQL behind one `Store`; [`artifacts`]: image files by SHA-256.
//! - [`auth`]: admin and device tokens; [`config`]: layered configuration.
//! - [`keys`]: reading Ed25519 key files (PKCS#8 and SubjectPublicKeyInfo PEM, as imgtool
//!   writes them): the trusted keys.
//! - [`rollout`]: staged canary rollouts: cohorts, gates, the engine.
//! - [`facts`]: the check-in write buffer; [`metrics`]: Prometheus; [`release`]: upload rules.

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod config;
pub mod error;
pub mod facts;
pub mod keys;
pub mod metrics;
pub mod release;
pub mod rollout;
pub mod serve;
pub mod store;
