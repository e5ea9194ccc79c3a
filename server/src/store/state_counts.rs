//! The rollouts' device counts by stage and state, kept by triggers as the devices move
//! (migration 0013), so that an evaluation reads a few rows whatever the rollout's size
//! instead of counting every target in play.
//!
//! SQLite's triggers update `rollout_state_counts` in place (one writer). PostgreSQL's append
//! deltas to `rollout_state_deltas`, one row per (rollout, stage, state) a statement changed
//! (statement triggers over its transition tables, migration 0014), so that concurrent moves
//! never queue on a counter row's lock; a read sums both, and folds a rollout's deltas into its
//! counts when it finds many.

use super::db::{Backend, Store, StoreError};
use super::rollout_devices::device_state;
use crate::domain::{DeviceState, StateCounts};
use sqlx::Row as _;
use std::collections::HashMap;

/// A read that finds at least this many deltas of its rollout folds them into the counts
/// (PostgreSQL). A rollout under way is read every second, so at most about a second's moves
/// wait, and a read's cost stays bounded by the fold size, not by the rollout's.
pub const FOLD_AT: u64 = 1_024;

/// The devices of one rollout in one stage (`None`: not offered in a stage) and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The stage the devices were offered in.
    pub stage: Option<i64>,
    /// Their state.
    pub state: DeviceState,
    /// How many.
    pub n: u64,
    /// The sum of their `updated_at` (when each moved into `state`), in ms.
    pub updated_at_sum: i128,
}

/// `$1` rollout: its counts and its pending deltas, summed per stage and state.
const TALLIES_SQL: &str = "SELECT stage, state, CAST(SUM(n) AS BIGINT) AS n, \
     CAST(SUM(updated_at_sum) AS BIGINT) AS at_sum, CAST(SUM(d) AS BIGINT) AS deltas FROM \
     (SELECT stage, state, n, updated_at_sum, 0 AS d FROM rollout_state_counts WHERE rollout_id = $1 \
      UNION ALL \
      SELECT stage, state, n, updated_at_sum, 1 AS d FROM rollout_state_deltas WHERE rollout_id = $1) AS c \
     GROUP BY stage, state";

/// `$1` rollout: its deltas moved into its counts, atomically (PostgreSQL). A concurrent fold
/// of the same rollout waits on the rows this one deletes and then skips them.
const FOLD_SQL: &str = "WITH moved AS (DELETE FROM rollout_state_deltas WHERE rollout_id = $1 \
       RETURNING stage, state, n, updated_at_sum) \
     INSERT INTO rollout_state_counts (rollout_id, stage, state, n, updated_at_sum) \
     SELECT $1::BIGINT, stage, state, SUM(n), SUM(updated_at_sum) FROM moved GROUP BY stage, state \
     ON CONFLICT (rollout_id, stage, state) DO UPDATE \
     SET n = rollout_state_counts.n + excluded.n, \
         updated_at_sum = rollout_state_counts.updated_at_sum + excluded.updated_at_sum";

impl Store {
    /// Rollout `id`'s devices per stage and state, except those still `eligible`.
    pub async fn tallies(&self, id: i64) -> Result<Vec<Tally>, StoreError> {
        let rows = sqlx::query(TALLIES_SQL)
            .bind(id)
            .fetch_all(self.reader()?)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut deltas = 0u64;
        for r in rows {
            deltas += u64::try_from(r.try_get::<i64, _>("deltas")?).unwrap_or(0);
            let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
            if n == 0 {
                continue;
            }
            let stage: i64 = r.try_get("stage")?;
            out.push(Tally {
                stage: (stage >= 0).then_some(stage),
                state: device_state(r.try_get("state")?)?,
                n,
                updated_at_sum: i128::from(r.try_get::<i64, _>("at_sum")?),
            });
        }
        self.fold_if_many(FOLD_SQL, id, deltas, "counts").await;
        Ok(out)
    }

    /// After a read of rollout `id`'s kept figures (`what`) that found `deltas` of them
    /// pending: on PostgreSQL, from [`FOLD_AT`] on, move them into the kept rows with
    /// `fold_sql` (bound with the rollout). What was read stays true: the fold only moves sums
    /// from one table to the other. A fold that fails leaves the deltas for the next read,
    /// which still sums them: the read's answer is good either way.
    pub(super) async fn fold_if_many(&self, fold_sql: &str, id: i64, deltas: u64, what: &str) {
        if deltas < FOLD_AT || self.backend() != Backend::Postgres {
            return;
        }
        let fold = async {
            sqlx::query(fold_sql).bind(id).execute(self.pool()?).await?;
            Ok::<_, StoreError>(())
        };
        if let Err(e) = fold.await {
            tracing::warn!(rollout = id, deltas, error = %e, "folding the kept {what} failed");
        }
    }

    /// Device counts per state: over the whole rollout, and per stage offered in. Eligible ones
    /// are the targets minus every device counted.
    pub async fn rollout_counts(
        &self,
        id: i64,
    ) -> Result<(StateCounts, HashMap<i64, StateCounts>), StoreError> {
        let tallies = self.tallies(id).await?;
        let targets: i64 = sqlx::query("SELECT targets FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.reader()?)
            .await?
            .map(|r| r.try_get("targets"))
            .transpose()?
            .unwrap_or(0);
        let mut whole = StateCounts::default();
        let mut stages: HashMap<i64, StateCounts> = HashMap::new();
        let mut in_play = 0u64;
        for t in tallies {
            in_play += t.n;
            whole.add(t.state, t.n);
            if let Some(s) = t.stage {
                stages.entry(s).or_default().add(t.state, t.n);
            }
        }
        whole.eligible = u64::try_from(targets).unwrap_or(0).saturating_sub(in_play);
        Ok((whole, stages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::sqlite_migrated_before;

    /// Migration 13 fills the counts of rollouts already under way from `rollout_devices`, and
    /// from then on its triggers keep them: a database made by the migrations before it, with
    /// devices in several states and stages (and one never offered in a stage), reads the same
    /// counts as a recount, before and after a further move.
    #[tokio::test]
    async fn migration_13_counts_the_rollouts_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let (url, old) = sqlite_migrated_before(&dir, 13).await;
        let mut setup = vec![
            "INSERT INTO releases (id, model, version, version_key, security_counter, notes, created_at, created_by) \
             VALUES (1, 'f429', '2.0.0', 2, 0, '', 0, 't')"
                .to_string(),
            "INSERT INTO rollouts (release_id, kind, state, model, selector_tags, targets, current_stage, \
             current_threshold, stage_started_at, created_at, created_by, updated_at) \
             VALUES (1, 'rollout', 'active', 'f429', '[]', 8, 1, 100, 0, 0, 't', 0)"
                .to_string(),
        ];
        let devices = [
            ("eligible", None, 1),
            ("eligible", None, 1),
            ("security_counter_blocked", None, 2),
            ("offered", Some(1), 10),
            ("confirmed", Some(0), 20),
            ("confirmed", Some(0), 30),
            ("confirmed", Some(1), 40),
            ("failed", Some(1), 50),
        ];
        for (i, (state, stage, at)) in devices.iter().enumerate() {
            setup.push(format!(
                "INSERT INTO devices (id, model, token_hash, created_at) VALUES ('d{i}', 'f429', x'00', 0)"
            ));
            setup.push(format!(
                "INSERT INTO rollout_devices (rollout_id, device_id, rank, state, stage, updated_at) \
                 VALUES (1, 'd{i}', {i}, '{state}', {}, {at})",
                stage.map_or("NULL".to_string(), |s: i64| s.to_string())
            ));
        }
        for sql in &setup {
            sqlx::query(sql).execute(&old).await.unwrap();
        }
        old.close().await;

        let store = Store::connect(&url).await.unwrap();
        let tally = |stage, state, n, sum| Tally {
            stage,
            state,
            n,
            updated_at_sum: sum,
        };
        let sorted = |mut t: Vec<Tally>| {
            t.sort_by_key(|t| (t.stage, t.state.as_str()));
            t
        };
        assert_eq!(
            sorted(store.tallies(1).await.unwrap()),
            [
                tally(None, DeviceState::SecurityCounterBlocked, 1, 2),
                tally(Some(0), DeviceState::Confirmed, 2, 50),
                tally(Some(1), DeviceState::Confirmed, 1, 40),
                tally(Some(1), DeviceState::Failed, 1, 50),
                tally(Some(1), DeviceState::Offered, 1, 10),
            ]
        );
        let (whole, stages) = store.rollout_counts(1).await.unwrap();
        assert_eq!((whole.eligible, whole.confirmed), (2, 3));
        assert_eq!(stages[&1].offered, 1);
        // The triggers move the counts on from there.
        sqlx::query("UPDATE rollout_devices SET state = 'confirmed', updated_at = 60 WHERE device_id = 'd3'")
            .execute(store.pool_ref())
            .await
            .unwrap();
        let after = sorted(store.tallies(1).await.unwrap());
        assert_eq!(after[2], tally(Some(1), DeviceState::Confirmed, 2, 100));
        assert_eq!(after.len(), 4, "the emptied group is not listed: {after:?}");
    }
}
