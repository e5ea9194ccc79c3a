//! Device events (reports): stored once per (device, event id), so retries are harmless.

use super::db::{Store, StoreError};
use super::sql::{Param, Sql};
use fota_protocol::messages::Event;
use serde::Serialize;
use sqlx::Row as _;

/// What storing a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreOutcome {
    /// Events stored now.
    pub stored: u32,
    /// Events that were stored before (a retried report).
    pub duplicates: u32,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    /// Per-device event id.
    pub event_id: i64,
    /// Event kind (snake_case, as the device sent it).
    pub kind: String,
    /// Rollout it is about.
    pub rollout_id: Option<i64>,
    /// Version it is about.
    pub version: Option<String>,
    /// Detail.
    pub reason: Option<String>,
    /// When the server stored it (Unix ms).
    pub received_at: i64,
}

/// The stable name of an event kind (its JSON form).
pub fn event_kind_name(kind: fota_protocol::messages::EventKind) -> String {
    kind.name().to_string()
}

/// The JSON form of a unit enum of the protocol (`"rolled_back"`, `"independent_watchdog"`):
/// the name the database stores.
pub(super) fn json_name<T: serde::Serialize + std::fmt::Debug>(value: T) -> String {
    serde_json::to_value(&value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{value:?}"))
}

impl Store {
    /// Store a device's events in one statement; returns only after they are durable.
    pub async fn store_events(
        &self,
        device_id: &str,
        events: &[Event],
        now: i64,
    ) -> Result<StoreOutcome, StoreError> {
        if events.is_empty() {
            return Ok(StoreOutcome::default());
        }
        let mut sql = Sql::default();
        sql.push(
            "INSERT INTO device_events \
             (device_id, event_id, kind, rollout_id, version, reason, received_at) VALUES ",
        );
        for (i, e) in events.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            // u64 ids above i64::MAX wrap to negative: still unique per device, still idempotent.
            sql.push("(")
                .bind(Param::Text(device_id.to_string()))
                .push(", ")
                .bind(Param::Int(e.id as i64))
                .push(", ")
                .bind(Param::Text(event_kind_name(e.kind)))
                .push(", ")
                .bind(Param::OptInt(e.rollout_id.map(|r| r as i64)))
                .push(", ")
                .bind(Param::OptText(e.version.map(|v| v.to_string())))
                .push(", ")
                .bind(Param::OptText(e.reason.as_ref().map(|r| r.to_string())))
                .push(", ")
                .bind(Param::Int(now))
                .push(")");
        }
        sql.push(" ON CONFLICT (device_id, event_id) DO NOTHING");
        let stored = sql.query().execute(self.pool()?).await?.rows_affected();
        let stored = u32::try_from(stored).unwrap_or(u32::MAX);
        Ok(StoreOutcome {
            stored,
            duplicates: (events.len() as u32).saturating_sub(stored),
        })
    }

    /// A device's most recent events, newest first.
    pub async fn device_events(
        &self,
        device_id: &str,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, kind, rollout_id, version, reason, received_at FROM device_events \
             WHERE device_id = $1 ORDER BY received_at DESC, event_id DESC LIMIT $2",
        )
        .bind(device_id)
        .bind(i64::from(limit))
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    event_id: r.try_get("event_id")?,
                    kind: r.try_get("kind")?,
                    rollout_id: r.try_get("rollout_id")?,
                    version: r.try_get("version")?,
                    reason: r.try_get("reason")?,
                    received_at: r.try_get("received_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Database)
    }
}
