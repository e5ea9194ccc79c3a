//! The reset gate's exposure, kept by triggers as events arrive (migration 0015): per rollout,
//! how many devices left the old release (have an `installed` event of the rollout) and the sum
//! of when (each one's earliest), the figure [`super::installed_exposure_sql`] defines, read as
//! one row instead of grouping every `installed` event of the rollout at each evaluation.
//!
//! SQLite's trigger updates `rollout_exposure` in place (one writer). PostgreSQL's appends a
//! delta per rollout a statement changed to `rollout_exposure_deltas`; a read sums both and
//! folds a rollout's deltas when it finds many, as [`super::state_counts`] does (one
//! `Store::fold_if_many` for both).

use super::db::{Store, StoreError};
use sqlx::Row as _;

/// `$1` rollout: its kept figure and its pending deltas, summed, and how many deltas there are.
const EXPOSURE_SQL: &str =
    "SELECT CAST(SUM(n) AS BIGINT) AS n, CAST(SUM(at_sum) AS BIGINT) AS at_sum, \
     CAST(SUM(d) AS BIGINT) AS deltas FROM \
     (SELECT n, at_sum, 0 AS d FROM rollout_exposure WHERE rollout_id = $1 \
      UNION ALL \
      SELECT n, at_sum, 1 AS d FROM rollout_exposure_deltas WHERE rollout_id = $1) AS e";

/// `$1` rollout: its deltas moved into its kept figure, atomically (PostgreSQL). A concurrent
/// fold of the same rollout waits on the rows this one deletes and then skips them; a fold that
/// finds none inserts nothing.
const FOLD_SQL: &str = "WITH moved AS (DELETE FROM rollout_exposure_deltas WHERE rollout_id = $1 \
       RETURNING n, at_sum) \
     INSERT INTO rollout_exposure (rollout_id, n, at_sum) \
     SELECT $1::BIGINT, SUM(n), SUM(at_sum) FROM moved HAVING COUNT(*) > 0 \
     ON CONFLICT (rollout_id) DO UPDATE \
     SET n = rollout_exposure.n + excluded.n, at_sum = rollout_exposure.at_sum + excluded.at_sum";

/// When rollout `id`'s devices left the old release: how many did, and the sum of when (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Devices with an `installed` event of the rollout.
    pub left: u64,
    /// The sum of each one's earliest `installed` event's `received_at`, in ms.
    pub left_at_sum: i128,
}

impl Store {
    /// Rollout `id`'s kept exposure (see the module).
    pub async fn installed_exposure(&self, id: i64) -> Result<Exposure, StoreError> {
        let row = sqlx::query(EXPOSURE_SQL)
            .bind(id)
            .fetch_one(self.reader()?)
            .await?;
        let left = row.try_get::<Option<i64>, _>("n")?.unwrap_or(0);
        let at_sum = row.try_get::<Option<i64>, _>("at_sum")?.unwrap_or(0);
        let deltas = row.try_get::<Option<i64>, _>("deltas")?.unwrap_or(0);
        self.fold_if_many(FOLD_SQL, id, u64::try_from(deltas).unwrap_or(0), "exposure")
            .await;
        Ok(Exposure {
            left: u64::try_from(left).unwrap_or(0),
            left_at_sum: i128::from(at_sum),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::sqlite_migrated_before;
    use crate::store::installed_exposure_sql;

    /// Rollout `id`'s figure by its definition, over the events stored.
    async fn defined(store: &Store, id: i64) -> Exposure {
        let row = sqlx::query(&installed_exposure_sql())
            .bind(id)
            .fetch_one(store.pool_ref())
            .await
            .unwrap();
        Exposure {
            left: u64::try_from(row.get::<i64, _>("n")).unwrap(),
            left_at_sum: i128::from(row.get::<Option<i64>, _>("at_sum").unwrap_or(0)),
        }
    }

    /// Migration 15 fills the kept exposure of rollouts under way from the events already
    /// stored (several `installed` events per device: the earliest counts; other kinds and
    /// events of no rollout do not), and from then on its trigger keeps it: equal to the
    /// definition's before and after further events, an earlier one among them.
    #[tokio::test]
    async fn migration_15_keeps_the_exposure_of_the_rollouts_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let (url, old) = sqlite_migrated_before(&dir, 15).await;
        let mut setup = Vec::new();
        for d in 0..4 {
            setup.push(format!(
                "INSERT INTO devices (id, model, token_hash, created_at) VALUES ('d{d}', 'f429', x'00', 0)"
            ));
        }
        let events = [
            ("d0", 1, "installed", Some(1), 100),
            ("d0", 2, "installed", Some(1), 90),
            ("d0", 3, "confirmed", Some(1), 80),
            ("d1", 1, "installed", Some(1), 200),
            ("d1", 2, "installed", Some(2), 300),
            ("d2", 1, "installed", None, 10),
            ("d2", 2, "offer_accepted", Some(1), 20),
        ];
        for (device, id, kind, rollout, at) in events {
            setup.push(format!(
                "INSERT INTO device_events (device_id, event_id, kind, rollout_id, received_at) \
                 VALUES ('{device}', {id}, '{kind}', {}, {at})",
                rollout.map_or("NULL".to_string(), |r: i64| r.to_string())
            ));
        }
        for sql in &setup {
            sqlx::query(sql).execute(&old).await.unwrap();
        }
        old.close().await;

        let store = Store::connect(&url).await.unwrap();
        let want = |left, left_at_sum| Exposure { left, left_at_sum };
        assert_eq!(store.installed_exposure(1).await.unwrap(), want(2, 290));
        assert_eq!(store.installed_exposure(2).await.unwrap(), want(1, 300));
        assert_eq!(store.installed_exposure(3).await.unwrap(), want(0, 0));
        // From here the trigger: a new device, a later event (no change), an earlier one.
        for sql in [
            "INSERT INTO device_events (device_id, event_id, kind, rollout_id, received_at) \
             VALUES ('d3', 1, 'installed', 1, 400), ('d0', 4, 'installed', 1, 500), \
             ('d1', 3, 'installed', 1, 150)",
            "INSERT INTO device_events (device_id, event_id, kind, rollout_id, received_at) \
             VALUES ('d1', 3, 'installed', 1, 1) ON CONFLICT (device_id, event_id) DO NOTHING",
        ] {
            sqlx::query(sql).execute(store.pool_ref()).await.unwrap();
        }
        assert_eq!(store.installed_exposure(1).await.unwrap(), want(3, 640));
        for id in [1, 2, 3] {
            assert_eq!(
                store.installed_exposure(id).await.unwrap(),
                defined(&store, id).await,
                "rollout {id}"
            );
        }
    }
}
