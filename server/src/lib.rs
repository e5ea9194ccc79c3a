//! The fota server, as a library: `fota serve` (in the `fota-cli` crate's binary) and the tests
//! link it.
//!
//! Layers, each importing only the ones below it (docs/ARCHITECTURE.md has the map):
//!
//! - [`serve`] and [`config`]: `fota serve`: configuration, start-up, the background flusher
//!   and sweeper, graceful shutdown. The only place that wires the layers together.
//! - [`transport`]: connections under the API: TLS, timeouts, caps on connections and on
//!   request bodies in flight, so hostile clients cannot hold sockets or memory.
//! - [`api`]: HTTP: routes by audience (devices, operators, open), auth extractors, the error
//!   type and its stable codes.
//! - [`rollout`]: staged canary rollouts: plans, gates, starting and steering, the engine.
//! - [`store`]: SQLite and PostgreSQL behind one `Store`.
//! - [`domain`]: the vocabulary and pure rules: names, state machines, counts, cohorts,
//!   release rules, roles and tokens.
//!
//! Beside them: [`facts`] (the check-in write buffer in front of the store), [`artifacts`]
//! (image files by SHA-256), [`metrics`] (Prometheus) and [`keys`] (reading Ed25519 key files,
//! PKCS#8 and SubjectPublicKeyInfo PEM as imgtool writes them). The process's allocator is
//! mimalloc (`allocator`, private).

mod allocator;
pub mod api;
pub mod artifacts;
pub mod config;
pub mod domain;
pub mod facts;
pub mod keys;
pub mod metrics;
pub mod rollout;
pub mod serve;
pub mod store;
pub mod transport;
