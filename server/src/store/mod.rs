//! Storage: one [`Store`] in front of SQLite (the embedded default, a file created on first run)
//! and PostgreSQL (for fleets past one machine), picked once from the URL scheme.
//!
//! Both backends run the same SQL, through sqlx's `Any` driver (on SQLite, the group commit and
//! the check-in facts flush run the same texts on a rusqlite connection of their own,
//! `sqlite_writer.rs`, to spare a thread hand-off per statement): every query here is written in the
//! dialect the two share (`$n` parameters, `ON CONFLICT`, `UPDATE ... FROM (VALUES ...)`, times as
//! Unix milliseconds in BIGINT), so no business rule lives in SQL that only one backend sees.
//! What differs (connection pragmas, the schema's identity columns) is in [`Backend`] and in the
//! twin migration directories `migrations/sqlite` and `migrations/postgres`, applied at start.
//!
//! Row types are plain structs decoded by hand from rows, so the domain stays free of sqlx. The
//! store imports the domain and nothing above it: its state guards are written from the
//! domain's transition tables ([`crate::domain::DeviceState`], [`crate::domain::RolloutState`]).
//!
//! - `devices`: provisioning, credentials, check-in facts, fleet views; `events`: device
//!   reports, once per event id; `resets`: unexpected resets and the gate's counts of them;
//!   `releases`: releases and their images; `patches`: delta patches between release images
//!   and the devices that gave one up; `artifacts`: the content-addressed bytes both are stored
//!   as; `tokens`: admin tokens.
//! - `rollouts`: rollouts and stages, created in one transaction, changed conditionally;
//!   `rollout_devices`: targets and each device's state in a rollout; `state_counts`: their
//!   counts by stage and state, kept by triggers as they move; `audit`: the audit log;
//!   `exposure`: when its targets left the old release, kept by triggers as events arrive;
//!   `timeline`: when a rollout's devices were decided (the dashboard's chart).

mod artifacts;
mod audit;
mod checkpoint;
mod db;
mod devices;
mod error;
mod events;
mod exposure;
mod group_commit;
mod group_queue;
mod health;
mod offer_batch;
mod patches;
mod push;
mod releases;
mod resets;
mod rollout_devices;
mod rollouts;
mod sql;
mod sqlite_writer;
mod state_counts;
mod timeline;
mod tokens;

pub use audit::AuditEntry;
pub use db::{now_ms, Backend, PoolSettings, Store, StoreError, DEFAULT_ACQUIRE_TIMEOUT};
pub use devices::{
    BootStateFilter, DeviceCheckInFacts, DeviceFacts, DeviceFilter, DeviceRecord, DeviceStatus,
    FleetSummary, ModelCount, NewDevice, StatusFilter, VersionCount,
};
pub use events::{event_kind_name, StoreOutcome, StoredEvent};
pub use exposure::Exposure;
pub use group_queue::ReportOutcome;
pub use health::PING_TIMEOUT;
pub use patches::StoredPatch;
pub use releases::{NewRelease, ReleaseImage, ReleaseRecord};
pub use resets::installed_exposure_sql;
pub use rollout_devices::{
    hot_statements, HotIndex, HotStatement, SkippedTarget, Target, TargetFilter,
};
pub use rollouts::{NewRollout, RolloutChange, RolloutRow, StageRow};
pub use state_counts::{Tally, FOLD_AT};
pub use timeline::DecidedBucket;
pub use tokens::AdminTokenRecord;
