//! The rollouts' device counts by stage and state, kept by triggers as the devices move
//! (migration 0013), so that an evaluation reads a few rows whatever the rollout's size
//! instead of counting every target in play.
//!
//! SQLite's triggers update `rollout_state_counts` in place (one writer). PostgreSQL's append
//! deltas to `rollout_state_deltas`, so that concurrent moves never queue on a counter row's
//! lock; a read sums both, and folds a rollout's deltas into its counts when it finds many.

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
        if deltas >= FOLD_AT && self.backend() == Backend::Postgres {
            // What was read stays true: the fold only moves sums from one table to the other.
            sqlx::query(FOLD_SQL).bind(id).execute(self.pool()?).await?;
        }
        Ok(out)
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
