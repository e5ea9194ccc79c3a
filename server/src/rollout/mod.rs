//! Staged canary rollouts: a bad release must never reach more than its canary.
//!
//! - [`anti_rollback`]: never offer an image below the security counter a device holds.
//! - [`cohort`]: deterministic ranks and stage thresholds.
//! - [`plan`]: stages, defaults, target selectors.
//! - [`gate`]: the pure halt / advance / complete decision.
//! - [`engine`]: offers, device state, evaluation, the sweep; all decisions conditional in the
//!   database so several replicas can share one.

pub mod anti_rollback;
pub mod cohort;
pub mod engine;
pub mod gate;
pub mod plan;

pub use engine::Engine;
