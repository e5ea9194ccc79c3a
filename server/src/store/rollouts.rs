//! Rollouts and their stages: creating one (with its targets, in one transaction), reading
//! them, and the conditional, audited changes of state.
//!
//! Every decision that changes a rollout (advance, halt, complete, pause, resume, abort) is one
//! conditional UPDATE (`WHERE state IN (...) AND current_stage = ...`, the states from
//! [`RolloutAction::from_states`]) in the same transaction as its audit entry: when two replicas
//! decide at once, exactly one UPDATE matches and only that one writes an audit entry.

use super::audit::{insert_audit, AuditEntry};
use super::db::{Store, StoreError};
use super::rollout_devices::SkippedTarget;
use super::sql::{quoted, Param, Sql};
use crate::domain::{cohort, DeviceState, RolloutAction, RolloutKind, RolloutState};
use sqlx::any::AnyRow;
use sqlx::{Executor as _, Row as _};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// Id.
    pub id: i64,
    /// The release it rolls out.
    pub release_id: i64,
    /// A rollout or a rollback.
    pub kind: RolloutKind,
    /// Where it is.
    pub state: RolloutState,
    /// Hardware model (the release's).
    pub model: String,
    /// Required tags.
    pub selector_tags: Vec<String>,
    /// Running-version range, as sortable keys.
    pub version_min_key: Option<i64>,
    /// Upper bound.
    pub version_max_key: Option<i64>,
    /// Only devices running this release (rollbacks).
    pub from_release_id: Option<i64>,
    /// Targets so far (late joiners add to it).
    pub targets: i64,
    /// Current stage index.
    pub current_stage: i64,
    /// Ranks below this are in the cohorts so far.
    pub current_threshold: i64,
    /// When the current stage started (Unix ms).
    pub stage_started_at: i64,
    /// Stage an operator approved advancing past.
    pub approved_stage: Option<i64>,
    /// JSON of the halt reason.
    pub halt_reason: Option<String>,
    /// Created at.
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// Last change.
    pub updated_at: i64,
}

/// A stage as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRow {
    /// Index.
    pub idx: i64,
    /// Cumulative basis points, or
    pub percent_bp: Option<i64>,
    /// cumulative device count.
    pub device_count: Option<i64>,
    /// Bake seconds.
    pub bake_s: i64,
    /// Minimum sample.
    pub min_sample: i64,
    /// Max failure rate, ppm.
    pub max_failure_ppm: i64,
    /// Confirmation deadline, seconds.
    pub confirm_deadline_s: i64,
    /// Reset limit, percent of the baseline's rate (0: off).
    pub max_reset_ratio_pct: i64,
    /// Device-seconds before resets may halt.
    pub min_device_s: i64,
    /// Advance without approval.
    pub auto_advance: bool,
}

/// A rollout to create.
#[derive(Debug, Clone)]
pub struct NewRollout {
    /// Release.
    pub release_id: i64,
    /// A rollout or a rollback.
    pub kind: RolloutKind,
    /// Model.
    pub model: String,
    /// Required tags.
    pub selector_tags: Vec<String>,
    /// Version range keys.
    pub version_min_key: Option<i64>,
    /// Upper bound.
    pub version_max_key: Option<i64>,
    /// Only devices running this release.
    pub from_release_id: Option<i64>,
    /// Stages.
    pub stages: Vec<StageRow>,
    /// Creator.
    pub created_by: String,
}

/// What a conditional rollout change sets.
#[derive(Debug, Clone, Default)]
pub struct RolloutChange {
    /// New state.
    pub state: Option<RolloutState>,
    /// New stage and its threshold.
    pub stage: Option<(i64, i64)>,
    /// New approved stage.
    pub approved_stage: Option<i64>,
    /// Halt reason JSON.
    pub halt_reason: Option<String>,
}

const ROLLOUT_COLUMNS: &str =
    "id, release_id, kind, state, model, selector_tags, version_min_key, \
    version_max_key, from_release_id, targets, current_stage, current_threshold, stage_started_at, \
    approved_stage, halt_reason, created_at, created_by, updated_at";

fn rollout_from_row(r: &AnyRow) -> Result<RolloutRow, StoreError> {
    let tags: String = r.try_get("selector_tags")?;
    Ok(RolloutRow {
        id: r.try_get("id")?,
        release_id: r.try_get("release_id")?,
        kind: {
            let kind: String = r.try_get("kind")?;
            RolloutKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("rollout kind {kind:?}")))?
        },
        state: {
            let state: String = r.try_get("state")?;
            state
                .parse()
                .map_err(|e: crate::domain::rollout_state::UnknownRolloutState| {
                    StoreError::Corrupt(format!("rollout state {:?}", e.0))
                })?
        },
        model: r.try_get("model")?,
        selector_tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        version_min_key: r.try_get("version_min_key")?,
        version_max_key: r.try_get("version_max_key")?,
        from_release_id: r.try_get("from_release_id")?,
        targets: r.try_get("targets")?,
        current_stage: r.try_get("current_stage")?,
        current_threshold: r.try_get("current_threshold")?,
        stage_started_at: r.try_get("stage_started_at")?,
        approved_stage: r.try_get("approved_stage")?,
        halt_reason: r.try_get("halt_reason")?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// The unfinished rollout of a model, if any: active, paused, or halted (a halted rollout
    /// can be resumed, so it still owns its model until aborted).
    pub async fn unfinished_rollout(&self, model: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT id FROM rollouts WHERE model = $1 AND state IN ({}) ORDER BY id LIMIT 1",
            quoted(RolloutState::UNFINISHED.map(RolloutState::as_str))
        ))
        .bind(model)
        .fetch_optional(self.reader()?)
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Create a rollout over `targets` in one transaction: the rollout, its stages, a row per
    /// target with its rank, the first stage's threshold, and the audit entry. `skipped` targets
    /// are stored too, in their state and with their reason, but never offered and never counted
    /// in a cohort's size. Also aborts `abort_first` (a rollback replacing a bad rollout),
    /// conditionally, with its own entry.
    pub async fn create_rollout(
        &self,
        new: &NewRollout,
        targets: &[String],
        skipped: &[SkippedTarget],
        now: i64,
        audit_detail: serde_json::Value,
        abort_first: Option<(i64, AuditEntry)>,
    ) -> Result<RolloutRow, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        if let Some((bad, entry)) = &abort_first {
            let abort = RolloutAction::Abort;
            let aborted = abort.to_state().map_or("", RolloutState::as_str);
            let n = sqlx::query(&format!(
                "UPDATE rollouts SET state = {}, updated_at = $2 WHERE id = $1 AND state IN ({})",
                quoted([aborted]),
                quoted(abort.from_states().iter().map(|s| s.as_str()))
            ))
            .bind(*bad)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                insert_audit(&mut tx, entry).await?;
            }
        }
        // A rollout starts active.
        let row = sqlx::query(&format!(
            "INSERT INTO rollouts (release_id, kind, state, model, selector_tags, version_min_key, \
             version_max_key, from_release_id, targets, current_stage, current_threshold, \
             stage_started_at, created_at, created_by, updated_at) \
             VALUES ($1, $2, {}, $3, $4, $5, $6, $7, $8, 0, 0, $9, $9, $10, $9) RETURNING id",
            quoted([RolloutState::Active.as_str()])
        ))
        .bind(new.release_id)
        .bind(new.kind.as_str())
        .bind(new.model.as_str())
        .bind(serde_json::to_string(&new.selector_tags).unwrap_or_else(|_| "[]".into()))
        .bind(new.version_min_key)
        .bind(new.version_max_key)
        .bind(new.from_release_id)
        .bind((targets.len() + skipped.len()) as i64)
        .bind(now)
        .bind(new.created_by.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        for s in &new.stages {
            sqlx::query(
                "INSERT INTO rollout_stages (rollout_id, idx, percent_bp, device_count, bake_s, \
                 min_sample, max_failure_ppm, confirm_deadline_s, auto_advance, \
                 max_reset_ratio_pct, min_device_s) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(id)
            .bind(s.idx)
            .bind(s.percent_bp)
            .bind(s.device_count)
            .bind(s.bake_s)
            .bind(s.min_sample)
            .bind(s.max_failure_ppm)
            .bind(s.confirm_deadline_s)
            .bind(i64::from(s.auto_advance))
            .bind(s.max_reset_ratio_pct)
            .bind(s.min_device_s)
            .execute(&mut *tx)
            .await?;
        }
        let mut ranks: Vec<u32> = targets.iter().map(|d| cohort::rank(id, d)).collect();
        let rows = targets
            .iter()
            .zip(&ranks)
            .map(|(device, rank)| (device.as_str(), *rank, DeviceState::Eligible, None))
            .chain(skipped.iter().map(|s| {
                (
                    s.id.as_str(),
                    cohort::rank(id, &s.id),
                    s.state,
                    Some(s.reason.as_str()),
                )
            }))
            .collect::<Vec<_>>();
        // 100,000 rows as plain SQL text, 1,000 rows per statement, sent without a prepare
        // round trip (a prepared statement per chunk made PostgreSQL plan each one). Every value
        // is ours: integers we computed, state names and reasons we wrote, and device ids that
        // passed the id rules at provisioning (`[A-Za-z0-9._:-]`), quoted and escaped all the
        // same.
        let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
        for chunk in rows.chunks(1000) {
            let mut sql = String::with_capacity(chunk.len() * 64);
            sql.push_str("INSERT INTO rollout_devices (rollout_id, device_id, rank, state, reason, updated_at) VALUES ");
            for (i, (device, rank, state, reason)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "({id}, {}, {rank}, {}, {}, {now})",
                    quote(device),
                    quote(state.as_str()),
                    reason.map_or_else(|| "NULL".to_string(), quote)
                ));
            }
            // No arguments: PostgreSQL gets it as one simple query, no prepare.
            (&mut *tx).execute(sql.as_str()).await?;
        }
        let first = new
            .stages
            .first()
            .ok_or_else(|| StoreError::Corrupt("rollout without stages".into()))?;
        let offerable = ranks.len() as u64;
        let (threshold, reach) =
            cohort::stage_threshold(first.percent_bp, first.device_count, &mut ranks, 0);
        sqlx::query("UPDATE rollouts SET current_threshold = $2 WHERE id = $1")
            .bind(id)
            .bind(threshold)
            .execute(&mut *tx)
            .await?;
        let mut detail = audit_detail;
        detail["first_stage"] =
            serde_json::json!(cohort::reach_text(reach, offerable, first.percent_bp));
        insert_audit(
            &mut tx,
            &AuditEntry::new(
                &new.created_by,
                new.kind.create_action(),
                Some(id),
                Some(new.release_id),
                detail,
                now,
            ),
        )
        .await?;
        tx.commit().await?;
        self.analyze_targets(id).await;
        self.rollout(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("rollout {id}")))
    }

    /// One rollout.
    pub async fn rollout(&self, id: i64) -> Result<Option<RolloutRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.reader()?)
        .await?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    /// Rollouts, newest first; optionally only those in `states`.
    pub async fn list_rollouts(
        &self,
        states: &[RolloutState],
    ) -> Result<Vec<RolloutRow>, StoreError> {
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts"));
        if !states.is_empty() {
            sql.push(" WHERE state IN (")
                .bind_list(states.iter().map(|s| s.as_str()))
                .push(")");
        }
        sql.push(" ORDER BY id DESC");
        let rows = sql.query().fetch_all(self.reader()?).await?;
        rows.iter().map(rollout_from_row).collect()
    }

    /// A rollout's stages, in order.
    pub async fn rollout_stages(&self, id: i64) -> Result<Vec<StageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT idx, percent_bp, device_count, bake_s, min_sample, max_failure_ppm, \
             confirm_deadline_s, auto_advance, max_reset_ratio_pct, min_device_s \
             FROM rollout_stages WHERE rollout_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(self.reader()?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StageRow {
                    idx: r.try_get("idx")?,
                    percent_bp: r.try_get("percent_bp")?,
                    device_count: r.try_get("device_count")?,
                    bake_s: r.try_get("bake_s")?,
                    min_sample: r.try_get("min_sample")?,
                    max_failure_ppm: r.try_get("max_failure_ppm")?,
                    confirm_deadline_s: r.try_get("confirm_deadline_s")?,
                    max_reset_ratio_pct: r.try_get("max_reset_ratio_pct")?,
                    min_device_s: r.try_get("min_device_s")?,
                    auto_advance: r.try_get::<i64, _>("auto_advance")? != 0,
                })
            })
            .collect()
    }

    /// Apply `change` to a rollout only if it is in one of `from_states` (and, with
    /// `expected_stage`, at that stage), writing `audit` in the same transaction. Returns whether
    /// this call made the change; a replica that lost the race gets false and writes nothing.
    pub async fn change_rollout(
        &self,
        id: i64,
        from_states: &[RolloutState],
        expected_stage: Option<i64>,
        change: &RolloutChange,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool()?.begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE rollouts SET updated_at = ")
            .bind(Param::Int(audit.at));
        if let Some(state) = &change.state {
            sql.push(", state = ")
                .bind(Param::Text(state.as_str().to_string()));
        }
        if let Some((stage, threshold)) = change.stage {
            sql.push(", current_stage = ")
                .bind(Param::Int(stage))
                .push(", current_threshold = ")
                .bind(Param::Int(threshold))
                .push(", stage_started_at = ")
                .bind(Param::Int(audit.at));
        }
        if let Some(approved) = change.approved_stage {
            sql.push(", approved_stage = ").bind(Param::Int(approved));
        }
        if let Some(reason) = &change.halt_reason {
            sql.push(", halt_reason = ")
                .bind(Param::Text(reason.clone()));
        }
        sql.push(" WHERE id = ")
            .bind(Param::Int(id))
            .push(" AND state IN (")
            .bind_list(from_states.iter().map(|s| s.as_str()))
            .push(")");
        if let Some(stage) = expected_stage {
            sql.push(" AND current_stage = ").bind(Param::Int(stage));
        }
        let n = sql.query().execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
