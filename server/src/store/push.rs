//! What the MQTT push path asks: which devices a change of a rollout concerns.

use super::db::{Store, StoreError};
use super::sql::quoted;
use crate::domain::DeviceState;
use sqlx::Row as _;

impl Store {
    /// Targets of rollout `id` inside `threshold` that have not been offered yet: the devices a
    /// stage that reaches `threshold` should nudge to check in.
    pub async fn targets_to_nudge(
        &self,
        id: i64,
        threshold: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT device_id FROM rollout_devices WHERE rollout_id = $1 AND state = {} AND rank < $2",
            quoted([DeviceState::Eligible.as_str()])
        ))
        .bind(id)
        .bind(threshold)
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("device_id")?))
            .collect()
    }

    /// Devices of rollout `id` with its image on the way (offered or downloading, not yet
    /// installed): the ones a halt, pause or abort must stop.
    pub async fn downloads_in_flight(&self, id: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT device_id FROM rollout_devices WHERE rollout_id = $1 AND state IN ({})",
            quoted([
                DeviceState::Offered.as_str(),
                DeviceState::Downloading.as_str()
            ])
        ))
        .bind(id)
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("device_id")?))
            .collect()
    }

    /// Undo a registration whose broker half failed: delete devices `ids` (just registered, so
    /// nothing refers to them yet).
    pub async fn forget_devices(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool()?.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM devices WHERE id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
