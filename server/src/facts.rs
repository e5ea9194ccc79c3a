//! The check-in hot path's write buffer.
//!
//! A check-in must not wait for a database write: at 10,000 check-ins per second that would be
//! 10,000 transactions. Instead each check-in (and report) records what it learned here, keyed by
//! device, newest wins, and a background task writes everything in one batch per flush interval,
//! and once more at shutdown. A failed flush puts the facts back for the next one, so nothing is
//! lost while the database is briefly away.
//!
//! A device's facts are written at the first flush after they arrive when they are news: the
//! device has not been written by this replica within the [resolution](FactsBuffer::new), or
//! its check-in says something else than what was written (a new version, slot, boot state...).
//! Otherwise (a report after a check-in, the same check-in again soon after) they wait in the
//! buffer, merged with whatever comes next, until the resolution has passed since the
//! device's last write. So the stored last-seen time trails the truth by at most the resolution
//! (a tenth of the poll interval, a minute at most; a device counts as silent after two polls)
//! plus one flush interval, while a device's burst of requests during an update (the offer's
//! check-in, its reports, the trial's check-in, the confirmation) costs fewer row updates.

use crate::store::{now_ms, DeviceCheckInFacts, DeviceFacts, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Shards of the buffer: check-ins on different cores rarely wait for one another.
const SHARDS: usize = 16;

/// The longest [resolution](FactsBuffer::new) of the stored last-seen times.
pub const MAX_RESOLUTION: Duration = Duration::from_secs(60);

/// A device in the buffer: facts waiting, and what this replica last wrote of it.
#[derive(Debug, Default)]
struct Slot {
    pending: Option<DeviceFacts>,
    /// The last-seen time last written, and the check-in facts stored then (as far as this
    /// replica knows: the last ones it wrote).
    written: Option<(i64, Option<DeviceCheckInFacts>)>,
}

impl Slot {
    /// Whether the pending facts go in the next flush (see the module doc).
    fn due(&self, now: i64, resolution_ms: i64) -> bool {
        let Some(pending) = &self.pending else {
            return false;
        };
        match self.written {
            None => true,
            Some((at, stored)) => {
                now.saturating_sub(at) >= resolution_ms
                    || pending.check_in.is_some_and(|c| stored != Some(c))
            }
        }
    }
}

/// Facts waiting to be written.
#[derive(Debug, Default)]
pub struct FactsBuffer {
    shards: [Mutex<HashMap<String, Slot>>; SHARDS],
    /// How far the stored last-seen time may trail the last request, in ms (0: every flush
    /// writes everything pending).
    resolution_ms: i64,
}

fn shard_of(device_id: &str) -> usize {
    // FNV-1a: cheap, and only needs to spread ids, not resist anyone.
    let h = device_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % SHARDS as u64) as usize
}

impl FactsBuffer {
    /// A buffer whose stored last-seen times may trail a device's last request by
    /// `resolution` (capped at [`MAX_RESOLUTION`]) plus one flush interval.
    pub fn new(resolution: Duration) -> Self {
        Self {
            shards: Default::default(),
            resolution_ms: i64::try_from(resolution.min(MAX_RESOLUTION).as_millis()).unwrap_or(0),
        }
    }

    /// The resolution for a fleet polling every `poll_interval`: a tenth of it, at most
    /// [`MAX_RESOLUTION`]; a device counts as silent after two polls.
    pub fn resolution_for(poll_interval: Duration) -> Duration {
        (poll_interval / 10).min(MAX_RESOLUTION)
    }

    /// Record what a request learned about a device.
    pub fn record(&self, device_id: &str, facts: DeviceFacts) {
        let mut shard = self.shards[shard_of(device_id)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let slot = match shard.get_mut(device_id) {
            Some(slot) => slot,
            None => shard.entry(device_id.to_string()).or_default(),
        };
        match &mut slot.pending {
            Some(old) => merge(old, facts),
            None => slot.pending = Some(facts),
        }
    }

    /// Devices with unwritten facts.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|slot| slot.pending.is_some())
                    .count()
            })
            .sum()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Take the pending facts that are due at `now` (all of them if `all`), and forget the
    /// devices with nothing pending whose last write is older than the resolution: their next
    /// facts are due whatever they say.
    fn take(&self, now: i64, all: bool) -> Vec<(String, DeviceFacts)> {
        let mut batch = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|id, slot| {
                if all || slot.due(now, self.resolution_ms) {
                    if let Some(f) = slot.pending.take() {
                        batch.push((id.clone(), f));
                    }
                }
                slot.pending.is_some()
                    || slot
                        .written
                        .is_some_and(|(at, _)| now.saturating_sub(at) < self.resolution_ms)
            });
        }
        batch
    }

    /// Remember what a flush wrote.
    fn written(&self, batch: &[(String, DeviceFacts)]) {
        if self.resolution_ms == 0 {
            return;
        }
        for (id, f) in batch {
            let mut shard = self.shards[shard_of(id)]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let slot = shard.entry(id.clone()).or_default();
            let stored = match (f.check_in, slot.written) {
                (Some(c), _) => Some(c),
                (None, Some((_, stored))) => stored,
                (None, None) => None,
            };
            slot.written = Some((f.last_seen_at, stored));
        }
    }

    fn put_back(&self, facts: Vec<(String, DeviceFacts)>) {
        for (id, f) in facts {
            self.record(&id, f);
        }
    }

    /// Write everything pending now. On failure the facts stay buffered.
    pub async fn flush(&self, store: &Store) -> Result<usize, crate::store::StoreError> {
        self.flush_taken(store, self.take(now_ms(), true)).await
    }

    /// Write what is due (see the module doc). On failure the facts stay buffered.
    pub async fn flush_due(&self, store: &Store) -> Result<usize, crate::store::StoreError> {
        self.flush_taken(store, self.take(now_ms(), false)).await
    }

    async fn flush_taken(
        &self,
        store: &Store,
        batch: Vec<(String, DeviceFacts)>,
    ) -> Result<usize, crate::store::StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        match store.flush_device_facts(&batch).await {
            Ok(()) => {
                self.written(&batch);
                Ok(batch.len())
            }
            Err(e) => {
                self.put_back(batch);
                Err(e)
            }
        }
    }

    /// Flush every `interval` until `shutdown` flips, then flush once more.
    pub async fn run_flusher(
        &self,
        store: Store,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
        metrics: &crate::metrics::Metrics,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.flush_logged(&store, metrics, false).await;
        }
        self.flush_logged(&store, metrics, true).await;
    }

    async fn flush_logged(&self, store: &Store, metrics: &crate::metrics::Metrics, all: bool) {
        let started = std::time::Instant::now();
        let flushed = if all {
            self.flush(store).await
        } else {
            self.flush_due(store).await
        };
        match flushed {
            Ok(0) => {}
            Ok(n) => {
                metrics.facts_flushed.inc_by(n as u64);
                metrics
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                tracing::debug!(devices = n, "flushed check-in facts");
            }
            // The health monitor reports an outage once; the facts wait for its end.
            Err(e @ crate::store::StoreError::Unavailable(_)) => {
                tracing::debug!(error = %e, pending = self.len(), "check-in facts wait for the database")
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = self.len(), "flushing check-in facts failed; will retry")
            }
        }
    }
}

/// Newer news wins; a report (no check-in facts) keeps the check-in facts it found.
fn merge(old: &mut DeviceFacts, new: DeviceFacts) {
    if new.last_seen_at >= old.last_seen_at {
        old.last_seen_at = new.last_seen_at;
        if new.check_in.is_some() {
            old.check_in = new.check_in;
        }
    } else if old.check_in.is_none() {
        old.check_in = new.check_in;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeviceCheckInFacts;

    fn check_in(version: &str) -> Option<DeviceCheckInFacts> {
        Some(DeviceCheckInFacts {
            firmware_version: version.parse().unwrap(),
            running_slot: fota_protocol::SlotId::A,
            boot_state: fota_protocol::messages::BootState::Confirmed,
            bootloader_version: "1.0.0".parse().unwrap(),
            rdp_level: fota_protocol::messages::RdpLevel::Level1,
            wrp_mask: 0,
            security_counter: Some(1),
        })
    }

    #[test]
    fn newest_facts_win_and_reports_keep_check_in_facts() {
        let buf = FactsBuffer::default();
        buf.record(
            "d",
            DeviceFacts {
                last_seen_at: 10,
                check_in: check_in("1.0.0"),
            },
        );
        buf.record(
            "d",
            DeviceFacts {
                last_seen_at: 20,
                check_in: None,
            },
        );
        buf.record(
            "d",
            DeviceFacts {
                last_seen_at: 5,
                check_in: check_in("0.9.0"),
            },
        );
        let taken = buf.take(0, true);
        let f = &taken[0].1;
        assert_eq!(f.last_seen_at, 20);
        assert_eq!(f.check_in, check_in("1.0.0"));
        assert!(buf.is_empty());
    }

    fn seen(at: i64, check_in: Option<DeviceCheckInFacts>) -> DeviceFacts {
        DeviceFacts {
            last_seen_at: at,
            check_in,
        }
    }

    fn due_ids(buf: &FactsBuffer, now: i64) -> Vec<(String, DeviceFacts)> {
        let batch = buf.take(now, false);
        buf.written(&batch);
        batch
    }

    /// News is written at the next flush; a report or the same check-in within the resolution
    /// of the device's last write waits, merged, until the resolution has passed.
    #[test]
    fn news_is_due_at_once_and_repeats_wait_for_the_resolution() {
        let buf = FactsBuffer::new(Duration::from_secs(5));
        // Never written by this replica: due.
        buf.record("d", seen(1_000, check_in("1.0.0")));
        assert_eq!(
            due_ids(&buf, 1_000),
            vec![("d".to_string(), seen(1_000, check_in("1.0.0")))]
        );
        // A report, then the same check-in again, within 5 s of that write: they wait.
        buf.record("d", seen(2_000, None));
        buf.record("d", seen(3_000, check_in("1.0.0")));
        assert!(due_ids(&buf, 3_000).is_empty());
        assert_eq!(buf.len(), 1);
        // 5 s after the write, the newest of them is written.
        assert_eq!(
            due_ids(&buf, 6_000),
            vec![("d".to_string(), seen(3_000, check_in("1.0.0")))]
        );
        assert!(buf.is_empty());
        // A check-in that says something else is news at once, and a report after it waits.
        buf.record("d", seen(6_500, check_in("2.0.0")));
        assert_eq!(
            due_ids(&buf, 6_500),
            vec![("d".to_string(), seen(6_500, check_in("2.0.0")))]
        );
        buf.record("d", seen(7_000, None));
        assert!(due_ids(&buf, 7_000).is_empty());
        // What is stored is what the last written check-in said: the same again still waits.
        buf.record("d", seen(8_000, check_in("2.0.0")));
        assert!(due_ids(&buf, 8_000).is_empty());
        // A flush of everything (shutdown) takes what waits.
        assert_eq!(
            buf.take(8_000, true),
            vec![("d".to_string(), seen(8_000, check_in("2.0.0")))]
        );
    }

    /// A device quiet for the resolution is forgotten: its next facts are due whatever they say,
    /// and the buffer holds only devices heard from lately.
    #[test]
    fn quiet_devices_are_forgotten_and_a_zero_resolution_writes_everything() {
        let buf = FactsBuffer::new(Duration::from_secs(5));
        buf.record("d", seen(1_000, check_in("1.0.0")));
        due_ids(&buf, 1_000);
        assert_eq!(
            buf.shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>(),
            1
        );
        assert!(due_ids(&buf, 6_000).is_empty());
        assert_eq!(
            buf.shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>(),
            0
        );
        buf.record("d", seen(6_100, None));
        assert_eq!(due_ids(&buf, 6_100).len(), 1);

        let every = FactsBuffer::new(Duration::ZERO);
        for at in [1_000, 1_001] {
            every.record("d", seen(at, None));
            assert_eq!(due_ids(&every, at), vec![("d".to_string(), seen(at, None))]);
        }
        assert_eq!(
            every
                .shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>(),
            0
        );
        assert_eq!(
            FactsBuffer::resolution_for(Duration::from_secs(50)),
            Duration::from_secs(5)
        );
        assert_eq!(
            FactsBuffer::resolution_for(Duration::from_secs(3600)),
            MAX_RESOLUTION
        );
    }
}
