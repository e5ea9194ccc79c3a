//! The check-in hot path's write buffer.
//!
//! A check-in must not wait for a database write: at 10,000 check-ins per second that would be
//! 10,000 transactions. Instead each check-in (and report) records what it learned here, keyed by
//! device, newest wins, and a background task writes everything in one batch per flush interval,
//! and once more at shutdown. A failed flush puts the facts back for the next one, so nothing is
//! lost while the database is briefly away.

use crate::store::{DeviceFacts, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Shards of the buffer: check-ins on different cores rarely wait for one another.
const SHARDS: usize = 16;

/// Facts waiting to be written.
#[derive(Debug, Default)]
pub struct FactsBuffer {
    shards: [Mutex<HashMap<String, DeviceFacts>>; SHARDS],
}

fn shard_of(device_id: &str) -> usize {
    // FNV-1a: cheap, and only needs to spread ids, not resist anyone.
    let h = device_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % SHARDS as u64) as usize
}

impl FactsBuffer {
    /// Record what a request learned about a device.
    pub fn record(&self, device_id: &str, facts: DeviceFacts) {
        let mut pending = self.shards[shard_of(device_id)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(device_id) {
            Some(old) => merge(old, facts),
            None => {
                pending.insert(device_id.to_string(), facts);
            }
        }
    }

    /// Devices with unwritten facts.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self) -> HashMap<String, DeviceFacts> {
        let mut all = HashMap::new();
        for shard in &self.shards {
            all.extend(std::mem::take(
                &mut *shard.lock().unwrap_or_else(|p| p.into_inner()),
            ));
        }
        all
    }

    fn put_back(&self, facts: HashMap<String, DeviceFacts>) {
        for (id, f) in facts {
            self.record(&id, f);
        }
    }

    /// Write everything pending now. On failure the facts stay buffered.
    pub async fn flush(&self, store: &Store) -> Result<usize, crate::store::StoreError> {
        let batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, DeviceFacts)> =
            batch.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match store.flush_device_facts(&rows).await {
            Ok(()) => Ok(rows.len()),
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
            self.flush_logged(&store, metrics).await;
        }
        self.flush_logged(&store, metrics).await;
    }

    async fn flush_logged(&self, store: &Store, metrics: &crate::metrics::Metrics) {
        let started = std::time::Instant::now();
        match self.flush(store).await {
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
        let taken = buf.take();
        let f = &taken["d"];
        assert_eq!(f.last_seen_at, 20);
        assert_eq!(f.check_in, check_in("1.0.0"));
        assert!(buf.is_empty());
    }
}
