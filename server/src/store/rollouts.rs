//! Rollouts, their stages, per-device execution state and the audit log.
//!
//! Every decision that changes a rollout (advance, halt, complete, pause, resume, abort) is one
//! conditional UPDATE (`WHERE state = ... AND current_stage = ...`) in the same transaction as its
//! audit entry: when two replicas decide at once, exactly one UPDATE matches and only that one
//! writes an audit entry. Offers are conditional the same way, so a device is never offered a
//! release by a halted rollout or beyond the current stage's cohort.

use super::sql::{Param, Sql};
use super::{Store, StoreError};
use crate::rollout::cohort;
use crate::rollout::gate::StateCounts;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Executor as _, Row as _};
use std::collections::HashMap;

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// Id.
    pub id: i64,
    /// The release it rolls out.
    pub release_id: i64,
    /// `rollout` or `rollback`.
    pub kind: String,
    /// `active`, `paused`, `halted`, `aborted`, `completed`.
    pub state: String,
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
    /// Advance without approval.
    pub auto_advance: bool,
}

/// A rollout to create.
#[derive(Debug, Clone)]
pub struct NewRollout {
    /// Release.
    pub release_id: i64,
    /// `rollout` or `rollback`.
    pub kind: String,
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

/// Who selects targets, as SQL filters over `devices`.
#[derive(Debug, Clone, Default)]
pub struct TargetFilter {
    /// Model.
    pub model: String,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Version key range.
    pub version_min_key: Option<i64>,
    /// Upper bound.
    pub version_max_key: Option<i64>,
    /// Running exactly this version.
    pub running_version: Option<String>,
    /// Not running this version (already there: nothing to do).
    pub exclude_version: Option<String>,
}

impl TargetFilter {
    fn push(&self, sql: &mut Sql) {
        sql.push(" WHERE devices.model = ")
            .bind(Param::Text(self.model.clone()));
        for t in &self.tags {
            sql.push(" AND EXISTS (SELECT 1 FROM device_tags t WHERE t.device_id = devices.id AND t.tag = ")
                .bind(Param::Text(t.clone()))
                .push(")");
        }
        if let Some(k) = self.version_min_key {
            sql.push(" AND devices.firmware_version_key >= ")
                .bind(Param::Int(k));
        }
        if let Some(k) = self.version_max_key {
            sql.push(" AND devices.firmware_version_key <= ")
                .bind(Param::Int(k));
        }
        if let Some(v) = &self.running_version {
            sql.push(" AND devices.firmware_version = ")
                .bind(Param::Text(v.clone()));
        }
        if let Some(v) = &self.exclude_version {
            sql.push(" AND (devices.firmware_version IS NULL OR devices.firmware_version <> ")
                .bind(Param::Text(v.clone()))
                .push(")");
        }
    }
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Id (0 before it is stored).
    pub id: i64,
    /// When (Unix ms).
    pub at: i64,
    /// Token name, or `fota` for automatic decisions.
    pub actor: String,
    /// What, e.g. `rollout.create`, `rollout.halt`, `rollout.advance`.
    pub action: String,
    /// Rollout concerned.
    pub rollout_id: Option<i64>,
    /// Release concerned.
    pub release_id: Option<i64>,
    /// Why and with what numbers.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// A new entry.
    pub fn new(
        actor: &str,
        action: &str,
        rollout_id: Option<i64>,
        release_id: Option<i64>,
        detail: serde_json::Value,
        at: i64,
    ) -> Self {
        Self {
            id: 0,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            rollout_id,
            release_id,
            detail,
        }
    }
}

/// What a conditional rollout change sets.
#[derive(Debug, Clone, Default)]
pub struct RolloutChange {
    /// New state.
    pub state: Option<String>,
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
        kind: r.try_get("kind")?,
        state: r.try_get("state")?,
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

/// The threshold a stage reaches, given the ranks of all current targets.
pub fn stage_threshold(stage: &StageRow, ranks: &mut [u32]) -> i64 {
    let t = match (stage.percent_bp, stage.device_count) {
        (Some(bp), _) => cohort::threshold_for_basis_points(u32::try_from(bp).unwrap_or(10_000)),
        (None, Some(n)) => cohort::threshold_for_count(ranks, u64::try_from(n).unwrap_or(0)),
        (None, None) => 0,
    };
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// States a device may move to `to` from. Outcomes only move forward; late news (a report
/// arriving after the deadline declared the device silent) replaces the silence.
pub fn allowed_from(to: &str) -> &'static [&'static str] {
    match to {
        "offered" => &["eligible"],
        "downloading" => &["eligible", "offered"],
        "installed" => &["eligible", "offered", "downloading"],
        "confirmed" | "failed" | "rolled_back" => &[
            "eligible",
            "offered",
            "downloading",
            "installed",
            "timed_out",
        ],
        "timed_out" => &["offered", "downloading", "installed"],
        "protection_blocked" => &["eligible", "offered"],
        // The device holds more than the release (its floor rose, or it joined late): the
        // offer stops, and a download in flight is withdrawn at its next check-in.
        "security_counter_blocked" => &["eligible", "offered", "downloading"],
        _ => &[],
    }
}

/// A device a filter selects, with what tells the security counter its bootloader holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Device id.
    pub id: String,
    /// The counter the device last reported holding, if it reports one.
    pub reported_counter: Option<i64>,
    /// The security counter of the release it runs, if the server has that release.
    pub running_release_counter: Option<i64>,
}

/// A target left out of a rollout's offers from the start, with its state and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTarget {
    /// Device id.
    pub id: String,
    /// The state it is stored in (e.g. `security_counter_blocked`).
    pub state: &'static str,
    /// Why, in words.
    pub reason: String,
}

impl Store {
    /// The devices a filter selects, each with the counters that tell what its bootloader holds.
    /// The release counters are looked up here rather than joined in SQL: a model has a handful
    /// of releases, and a join per target cost SQLite a third more time at 100,000 targets.
    pub async fn targets(&self, filter: &TargetFilter) -> Result<Vec<Target>, StoreError> {
        let counters: HashMap<String, i64> = self
            .release_counters(&filter.model)
            .await?
            .into_iter()
            .collect();
        let mut sql = Sql::default();
        sql.push(
            "SELECT devices.id, devices.firmware_version, devices.security_counter FROM devices",
        );
        filter.push(&mut sql);
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let version: Option<String> = r.try_get("firmware_version")?;
                Ok(Target {
                    id: r.try_get("id")?,
                    reported_counter: r.try_get("security_counter")?,
                    running_release_counter: version.and_then(|v| counters.get(&v).copied()),
                })
            })
            .collect()
    }

    /// The security counter of every release of a model, by version.
    pub async fn release_counters(&self, model: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT version, security_counter FROM releases WHERE model = $1")
            .bind(model)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("version")?, r.try_get("security_counter")?)))
            .collect()
    }

    /// The unfinished rollout of a model, if any: active, paused, or halted (a halted rollout
    /// can be resumed, so it still owns its model until aborted).
    pub async fn unfinished_rollout(&self, model: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT id FROM rollouts WHERE model = $1 AND state IN ('active', 'paused', 'halted') ORDER BY id LIMIT 1",
        )
        .bind(model)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }

    /// Whether any rollout uses a release (then it cannot be deleted).
    pub async fn release_in_use(&self, release_id: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM rollouts WHERE release_id = $1 OR from_release_id = $1",
        )
        .bind(release_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
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
        let mut tx = self.pool().begin().await?;
        if let Some((bad, entry)) = &abort_first {
            let n = sqlx::query(
                "UPDATE rollouts SET state = 'aborted', updated_at = $2 WHERE id = $1 AND state IN ('active', 'paused', 'halted')",
            )
            .bind(*bad)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 {
                insert_audit(&mut tx, entry).await?;
            }
        }
        let row = sqlx::query(
            "INSERT INTO rollouts (release_id, kind, state, model, selector_tags, version_min_key, \
             version_max_key, from_release_id, targets, current_stage, current_threshold, \
             stage_started_at, created_at, created_by, updated_at) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, 0, 0, $9, $9, $10, $9) RETURNING id",
        )
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
                 min_sample, max_failure_ppm, confirm_deadline_s, auto_advance) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
            .execute(&mut *tx)
            .await?;
        }
        let mut ranks: Vec<u32> = targets.iter().map(|d| cohort::rank(id, d)).collect();
        let rows = targets
            .iter()
            .zip(&ranks)
            .map(|(device, rank)| (device.as_str(), *rank, "eligible", None))
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
                    quote(state),
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
        let threshold = stage_threshold(first, &mut ranks);
        sqlx::query("UPDATE rollouts SET current_threshold = $2 WHERE id = $1")
            .bind(id)
            .bind(threshold)
            .execute(&mut *tx)
            .await?;
        let mut detail = audit_detail;
        detail["threshold"] = serde_json::json!(threshold);
        insert_audit(
            &mut tx,
            &AuditEntry::new(
                &new.created_by,
                if new.kind == "rollback" {
                    "rollback.create"
                } else {
                    "rollout.create"
                },
                Some(id),
                Some(new.release_id),
                detail,
                now,
            ),
        )
        .await?;
        tx.commit().await?;
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
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    /// Rollouts, newest first; optionally only those in `states`.
    pub async fn list_rollouts(&self, states: &[&str]) -> Result<Vec<RolloutRow>, StoreError> {
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts"));
        if !states.is_empty() {
            sql.push(" WHERE state IN (");
            for (i, s) in states.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Param::Text((*s).to_string()));
            }
            sql.push(")");
        }
        sql.push(" ORDER BY id DESC");
        let rows = sql.query().fetch_all(self.pool()).await?;
        rows.iter().map(rollout_from_row).collect()
    }

    /// A rollout's stages, in order.
    pub async fn rollout_stages(&self, id: i64) -> Result<Vec<StageRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT idx, percent_bp, device_count, bake_s, min_sample, max_failure_ppm, \
             confirm_deadline_s, auto_advance FROM rollout_stages WHERE rollout_id = $1 ORDER BY idx",
        )
        .bind(id)
        .fetch_all(self.pool())
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
                    auto_advance: r.try_get::<i64, _>("auto_advance")? != 0,
                })
            })
            .collect()
    }

    /// Device counts per state: over the whole rollout, and per stage offered in. Reads only the
    /// devices that left `eligible` (through the state index); eligible ones are the targets
    /// minus those, so the cost follows the devices in play, not the fleet.
    pub async fn rollout_counts(
        &self,
        id: i64,
    ) -> Result<(StateCounts, HashMap<i64, StateCounts>), StoreError> {
        let rows = sqlx::query(
            "SELECT stage, state, COUNT(*) AS n FROM rollout_devices WHERE rollout_id = $1 \
             AND state IN ('offered', 'downloading', 'installed', 'confirmed', 'failed', \
             'rolled_back', 'timed_out', 'protection_blocked', 'security_counter_blocked') \
             GROUP BY stage, state",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        let targets: i64 = sqlx::query("SELECT targets FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get("targets"))
            .transpose()?
            .unwrap_or(0);
        let mut whole = StateCounts::default();
        let mut stages: HashMap<i64, StateCounts> = HashMap::new();
        let mut in_play = 0u64;
        for r in rows {
            let stage: Option<i64> = r.try_get("stage")?;
            let state: String = r.try_get("state")?;
            let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
            in_play += n;
            whole.add(&state, n);
            if let Some(s) = stage {
                stages.entry(s).or_default().add(&state, n);
            }
        }
        whole.eligible = u64::try_from(targets).unwrap_or(0).saturating_sub(in_play);
        Ok((whole, stages))
    }

    /// Targets inside `threshold` that have not been offered yet. Everyone inside a 100%
    /// threshold is counted without a scan.
    pub async fn eligible_in_cohort(
        &self,
        id: i64,
        threshold: i64,
        whole: &StateCounts,
    ) -> Result<u64, StoreError> {
        if u64::try_from(threshold).unwrap_or(0) >= cohort::RANK_SPACE {
            return Ok(whole.eligible);
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM rollout_devices WHERE rollout_id = $1 AND state = 'eligible' AND rank < $2",
        )
        .bind(id)
        .bind(threshold)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    /// The ranks of all targets that may be offered (for absolute-count stages: a device
    /// skipped for its security counter takes no place in a cohort).
    pub async fn rollout_ranks(&self, id: i64) -> Result<Vec<u32>, StoreError> {
        let rows = sqlx::query(
            "SELECT rank FROM rollout_devices WHERE rollout_id = $1 \
             AND state <> 'security_counter_blocked'",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(u32::try_from(r.try_get::<i64, _>("rank")?).unwrap_or(u32::MAX)))
            .collect()
    }

    /// A device's state in a rollout.
    pub async fn rollout_device_state(
        &self,
        rollout_id: i64,
        device_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT state FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2",
        )
        .bind(rollout_id)
        .bind(device_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("state")).transpose()?)
    }

    /// Add a device that matches the selector but was provisioned after the rollout started.
    /// Returns whether it was added (false: it was a target already).
    pub async fn add_late_target(
        &self,
        rollout_id: i64,
        device_id: &str,
        rank: u32,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query(
            "INSERT INTO rollout_devices (rollout_id, device_id, rank, state, updated_at) \
             VALUES ($1, $2, $3, 'eligible', $4) ON CONFLICT (rollout_id, device_id) DO NOTHING",
        )
        .bind(rollout_id)
        .bind(device_id)
        .bind(i64::from(rank))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            sqlx::query("UPDATE rollouts SET targets = targets + 1 WHERE id = $1")
                .bind(rollout_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Offer: eligible -> offered, only while the rollout is active and the device's rank is
    /// inside the current cohort, as one statement. Returns whether this call made the offer.
    pub async fn offer_device(
        &self,
        rollout_id: i64,
        device_id: &str,
        now: i64,
        confirm_deadline_s: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE rollout_devices SET state = 'offered', \
               stage = (SELECT current_stage FROM rollouts WHERE id = $1), \
               offered_at = $3, deadline_at = $4, updated_at = $3 \
             WHERE rollout_id = $1 AND device_id = $2 AND state = 'eligible' \
               AND EXISTS (SELECT 1 FROM rollouts r WHERE r.id = $1 AND r.state = 'active' \
                           AND rollout_devices.rank < r.current_threshold)",
        )
        .bind(rollout_id)
        .bind(device_id)
        .bind(now)
        .bind(now.saturating_add(confirm_deadline_s.saturating_mul(1000)))
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Move a device to `to` if its current state allows it. Returns whether it moved.
    pub async fn set_device_state(
        &self,
        rollout_id: i64,
        device_id: &str,
        to: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let from = allowed_from(to);
        if from.is_empty() {
            return Ok(false);
        }
        let mut sql = Sql::default();
        sql.push("UPDATE rollout_devices SET state = ")
            .bind(Param::Text(to.to_string()))
            .push(", reason = COALESCE(")
            .bind(Param::OptText(reason.map(str::to_string)))
            .push(", reason), updated_at = ")
            .bind(Param::Int(now));
        // A device that reports progress without having been offered here (another replica's
        // offer not visible yet is impossible: offers commit before the answer) still records
        // the stage it is in.
        sql.push(", stage = COALESCE(stage, (SELECT current_stage FROM rollouts WHERE id = ")
            .bind(Param::Int(rollout_id))
            .push("))");
        sql.push(" WHERE rollout_id = ")
            .bind(Param::Int(rollout_id))
            .push(" AND device_id = ")
            .bind(Param::Text(device_id.to_string()))
            .push(" AND state IN (");
        for (i, s) in from.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Param::Text((*s).to_string()));
        }
        sql.push(")");
        Ok(sql.query().execute(self.pool()).await?.rows_affected() > 0)
    }

    /// Declare silent every device past its deadline in active or paused rollouts, one rollout
    /// at a time through the (rollout, state, deadline) index. Returns the rollouts that changed.
    pub async fn time_out_devices(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT id FROM rollouts WHERE state IN ('active', 'paused')")
            .fetch_all(self.pool())
            .await?;
        let mut changed = Vec::new();
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let n = sqlx::query(
                "UPDATE rollout_devices SET state = 'timed_out', \
                 reason = 'no confirmation before the deadline', updated_at = $2 \
                 WHERE rollout_id = $1 AND state IN ('offered', 'downloading', 'installed') AND deadline_at < $2",
            )
            .bind(id)
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected();
            if n > 0 {
                changed.push(id);
            }
        }
        Ok(changed)
    }

    /// Apply `change` to a rollout only if it is in one of `from_states` (and, with
    /// `expected_stage`, at that stage), writing `audit` in the same transaction. Returns whether
    /// this call made the change; a replica that lost the race gets false and writes nothing.
    pub async fn change_rollout(
        &self,
        id: i64,
        from_states: &[&str],
        expected_stage: Option<i64>,
        change: &RolloutChange,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let mut sql = Sql::default();
        sql.push("UPDATE rollouts SET updated_at = ")
            .bind(Param::Int(audit.at));
        if let Some(state) = &change.state {
            sql.push(", state = ").bind(Param::Text(state.clone()));
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
            .push(" AND state IN (");
        for (i, s) in from_states.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Param::Text((*s).to_string()));
        }
        sql.push(")");
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

    /// Record an audit entry on its own.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit entries, newest first, optionally for one rollout.
    pub async fn audit_log(
        &self,
        rollout_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, rollout_id, release_id, detail FROM audit_log \
             WHERE ($1 IS NULL OR rollout_id = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(rollout_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    rollout_id: r.try_get("rollout_id")?,
                    release_id: r.try_get("release_id")?,
                    detail: {
                        let text: String = r.try_get("detail")?;
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                    },
                })
            })
            .collect()
    }

    /// Devices of a rollout with their state and rank (for checks and the CLI).
    pub async fn rollout_devices(
        &self,
        id: i64,
    ) -> Result<Vec<(String, String, i64, Option<i64>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, state, rank, stage FROM rollout_devices WHERE rollout_id = $1 ORDER BY device_id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("device_id")?,
                    r.try_get("state")?,
                    r.try_get("rank")?,
                    r.try_get("stage")?,
                ))
            })
            .collect()
    }
}

async fn insert_audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    e: &AuditEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, rollout_id, release_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.at)
    .bind(e.actor.as_str())
    .bind(e.action.as_str())
    .bind(e.rollout_id)
    .bind(e.release_id)
    .bind(e.detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
