//! The state of group commit that the [`Store`](super::Store) holds: the reports and offers
//! waiting for a writer, and the writers running. The writers themselves are
//! `group_commit.rs`'s; this file needs nothing of the store but its error type, so the store
//! can hold it without a circle.

use super::error::StoreError;
use crate::domain::DeviceState;
use fota_protocol::messages::Event;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// What storing one report did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReportOutcome {
    /// Events stored now.
    pub stored: u32,
    /// Events stored before (a retry), or twice in this report.
    pub duplicates: u32,
    /// The device's state moves its new events made, in order: (rollout, new state).
    pub moved: Vec<(i64, DeviceState)>,
    /// The versions named by the unexpected resets stored now (what the device ran when it
    /// reset): each may cross the reset limit of a rollout of that version.
    pub crashed_versions: Vec<String>,
}

/// One device's write waiting for its group commit.
pub(super) struct Pending {
    pub(super) device: String,
    pub(super) now: i64,
    pub(super) job: Job,
}

/// What a waiting write is, and where its caller waits for the answer.
pub(super) enum Job {
    /// A report: its events, and the moves they make.
    Report {
        events: Vec<Event>,
        reply: oneshot::Sender<Result<ReportOutcome, StoreError>>,
    },
    /// An offer: eligible -> offered in `rollout`, deadline `window_ms` after it; answered
    /// with whether this offer moved the device.
    Offer {
        rollout: i64,
        window_ms: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) pending: Vec<Pending>,
    pub(super) writers: usize,
}

/// The queue in front of the report writers.
#[derive(Default)]
pub(crate) struct GroupCommit {
    pub(super) queue: Mutex<Queue>,
    /// Transactions committed, and the reports and offers they held.
    pub(super) batches: AtomicU64,
    pub(super) reports: AtomicU64,
    pub(super) offers: AtomicU64,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}
