//! The statuses of the rollouts the dashboard watches live, shared by every stream of a
//! rollout (the streams and their follower task: `api/dashboard/events.rs`). Kept apart from
//! the handlers so that `AppState` can hold it without the state depending on them.

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// The status of each rollout watched live, shared by every stream watching it: one follower
/// task per rollout computes it at each change (at most once per `events::PROGRESS_EVERY` for
/// progress) and every stream sends that same text. A status reads the whole rollout (its
/// counts, resets and gate: hundreds of milliseconds at 100,000 devices, measured in
/// docs/BENCHMARKS.md), so a computation per stream made each open page and each reader cost
/// the server as much again.
#[derive(Debug, Default)]
pub struct LiveStatuses(std::sync::Mutex<HashMap<i64, Arc<Shared>>>);

/// One rollout's latest status (JSON), `None` until the follower computed the first.
pub(crate) type Shared = watch::Sender<Option<Arc<str>>>;

impl LiveStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Shared>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of rollout `id`'s statuses, and the sender to follow it with if nobody
    /// follows it yet (the caller starts the follower).
    pub(crate) fn watch(
        &self,
        id: i64,
    ) -> (watch::Receiver<Option<Arc<str>>>, Option<Arc<Shared>>) {
        let mut map = self.lock();
        if let Some(shared) = map.get(&id) {
            return (shared.subscribe(), None);
        }
        let shared = Arc::new(watch::Sender::new(None));
        map.insert(id, shared.clone());
        (shared.subscribe(), Some(shared))
    }

    /// The follower of `id` stops: forget it, unless a stream has just subscribed (`force`:
    /// stop whatever, e.g. the rollout is gone). Returns whether it is forgotten.
    pub(crate) fn leave(&self, id: i64, shared: &Arc<Shared>, force: bool) -> bool {
        let mut map = self.lock();
        if !force && shared.receiver_count() > 0 {
            return false;
        }
        if map.get(&id).is_some_and(|s| Arc::ptr_eq(s, shared)) {
            map.remove(&id);
        }
        true
    }

    /// Rollouts followed now (for tests and metrics).
    pub fn followed(&self) -> usize {
        self.lock().len()
    }
}
