//! The ground floor: fota's vocabulary and its pure rules, with no I/O and no framework (no
//! axum, no sqlx, no clap). Everything else in the server may import it; it imports nothing of
//! the server.
//!
//! - [`names`]: device ids, models and tags, and [`names::NameError`].
//! - [`device_state`]: a device's state in a rollout, its transition table, and what an event or
//!   a check-in moves it to. The one place that says where a device may go from where.
//! - [`rollout_state`]: a rollout's state, and the actions (operator and automatic) that move
//!   it, each with the states it may start from.
//! - [`counts`]: [`StateCounts`], devices per state, and what counts as a failure or decided.
//! - [`cohort`]: deterministic ranks, stage thresholds.
//! - [`resets`]: unexpected resets per device-hour on a rollout's new and old release.
//! - [`version`]: versions as sortable integer keys.
//! - [`release`]: what makes two uploaded images a release; [`release::ReleaseError`].
//! - [`provisioning`]: what a provisioning request may hold.
//! - [`anti_rollback`]: the security counter a device holds, and whom a release would fail.
//! - [`auth`]: roles, and the token secrets and their hashes.
//! - [`schemas`]: the API document's schemas of these rules (name patterns, rollout states).
//!
//! Each rule returns its own error type with a stable `code()`; the HTTP layer maps each to the
//! status the API documents.

pub mod anti_rollback;
pub mod auth;
pub mod cohort;
pub mod counts;
pub mod device_state;
pub mod names;
pub mod provisioning;
pub mod release;
pub mod resets;
pub mod rollout_state;
pub mod schemas;
pub mod version;

pub use counts::StateCounts;
pub use device_state::DeviceState;
pub use resets::ResetFigures;
pub use rollout_state::{RolloutAction, RolloutKind, RolloutState};
