//! A read for the dashboard's chart: when a rollout's devices were decided.

use super::db::{Store, StoreError};
use super::sql::quoted;
use crate::domain::DeviceState;
use sqlx::Row as _;

/// Devices of one rollout that reached one decided state within one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecidedBucket {
    /// Bucket number: `(decided_at - since) / bucket_ms`, 0 for anything before `since`.
    pub bucket: i64,
    /// `confirmed`, `failed`, `rolled_back` or `timed_out`.
    pub state: String,
    /// How many devices.
    pub devices: i64,
}

impl Store {
    /// Rollout `id`'s decided devices (confirmed or a failure) counted per state and per
    /// `bucket_ms` since `since`, by when they reached that state (a decided device's
    /// `updated_at` is the moment it was decided: nothing moves it on). One grouped read
    /// through the (rollout, state) index, whatever the fleet's size.
    pub async fn decided_buckets(
        &self,
        id: i64,
        since: i64,
        bucket_ms: i64,
    ) -> Result<Vec<DecidedBucket>, StoreError> {
        let decided = [
            DeviceState::Confirmed,
            DeviceState::Failed,
            DeviceState::RolledBack,
            DeviceState::TimedOut,
        ];
        let rows = sqlx::query(&format!(
            "SELECT (updated_at - $2) / $3 AS bucket, state, COUNT(*) AS devices \
             FROM rollout_devices WHERE rollout_id = $1 AND state IN ({}) \
             GROUP BY 1, 2 ORDER BY 1, 2",
            quoted(decided.iter().map(|s| s.as_str()))
        ))
        .bind(id)
        .bind(since)
        .bind(bucket_ms.max(1))
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DecidedBucket {
                    bucket: r.try_get::<i64, _>("bucket")?.max(0),
                    state: r.try_get("state")?,
                    devices: r.try_get("devices")?,
                })
            })
            .collect()
    }
}
