//! Staged canary rollouts: a bad release must never reach more than its canary.
//!
//! - [`cohort`]: deterministic ranks and stage thresholds.
//! - [`plan`]: stages, defaults, target selectors.
//! - [`gate`]: the pure halt / advance / complete decision.
//! - [`engine`]: offers, device state, evaluation, the sweep; all decisions conditional in the
//!   database so several replicas can share one.

pub mod cohort;
pub mod engine;
pub mod gate;
pub mod plan;

pub use engine::Engine;
