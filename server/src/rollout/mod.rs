//! Staged canary rollouts: a bad release must never reach more than its canary. The rollout
//! layer decides; it stands on the store and the domain, and knows nothing of HTTP.
//!
//! - [`plan`]: stages, defaults, target selectors, and [`plan::PlanError`].
//! - [`gate`]: the pure halt / advance / complete decision.
//! - [`launch`]: starting a rollout or a fleet rollback, with every rule a start obeys.
//! - [`control`]: an operator's pause, resume, abort, approve.
//! - [`delta`]: which offers carry a delta patch, and making each patch once.
//! - [`engine`]: offers at check-in, device state from reports, evaluation, the sweep; all
//!   decisions conditional in the database so several replicas can share one. Its tests over an
//!   in-memory SQLite store are in `engine_tests.rs`, beside it.

pub mod control;
pub mod delta;
pub mod engine;
#[cfg(test)]
mod engine_tests;
pub mod gate;
pub mod launch;
pub mod plan;

pub use delta::DeltaPolicy;
pub use engine::Engine;
