//! Per-device execution state in a rollout: who the targets are, offers, the moves of the
//! device state machine, silence past the deadline, and the counts the gate reads.
//!
//! Every move is conditional on the states [`DeviceState::allowed_from`] lists, written into
//! the statement, so the database enforces the domain's transition table and a device is never
//! offered a release by a halted rollout or beyond the current stage's cohort.

use super::db::{Backend, Store, StoreError};
use super::resets::{reset_figures_sql, ResetJoin};
use super::sql::{pg_array, pg_array_param, quoted, Param, Sql};
use crate::domain::{cohort, DeviceState, RolloutState, StateCounts};
use fota_protocol::messages::Component;
use sqlx::Row as _;
use std::collections::HashMap;

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
    /// Whose version `running_version` and `exclude_version` name: the application's (the
    /// version range always selects by the application a device runs) or the stage-1
    /// bootloader's.
    pub component: Component,
}

impl TargetFilter {
    fn push(&self, sql: &mut Sql) {
        sql.push(" WHERE devices.model = ")
            .bind(Param::Text(self.model.clone()));
        let tags: std::collections::BTreeSet<&String> = self.tags.iter().collect();
        if !tags.is_empty() {
            // One semi-join for every tag: the devices holding all of them. Its cost follows
            // the tag rows it reads, not the number of tags; a chain of EXISTS, one per tag,
            // overflowed SQLite's expression depth near 1,000 tags and took PostgreSQL seconds
            // to plan at 100.
            sql.push(" AND devices.id IN (SELECT device_id FROM device_tags WHERE tag IN (");
            for (i, t) in tags.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Param::Text((*t).clone()));
            }
            sql.push(") GROUP BY device_id HAVING COUNT(*) = ")
                .bind(Param::Int(tags.len() as i64))
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
        let column = match self.component {
            Component::Application => "devices.firmware_version",
            Component::Bootloader => "devices.bootloader_version",
        };
        if let Some(v) = &self.running_version {
            sql.push(" AND ")
                .push(column)
                .push(" = ")
                .bind(Param::Text(v.clone()));
        }
        if let Some(v) = &self.exclude_version {
            sql.push(" AND (")
                .push(column)
                .push(" IS NULL OR ")
                .push(column)
                .push(" <> ")
                .bind(Param::Text(v.clone()))
                .push(")");
        }
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
    pub state: DeviceState,
    /// Why, in words.
    pub reason: String,
}

impl Store {
    /// PostgreSQL: statistics on `rollout_devices.rollout_id` taken right after a rollout's
    /// targets are inserted, so that the planner knows how many devices the new rollout holds.
    ///
    /// The group commit moves many devices of one rollout in one statement (`rollout_id = $1
    /// AND device_id IN (...)`). Without statistics PostgreSQL estimates `rollout_id = $1` at
    /// half a percent of the table (100 of 20,000 rows), cheaper than 64 probes of the primary
    /// key, and reads every device of the rollout through the prefix of an index instead: 5.8 ms
    /// and 20,000 rows filtered per 64-device move at 20,000 targets (it grows with the
    /// rollout), against 0.29 ms by the primary key. No statement shape avoids it (a row-value
    /// `IN`, a join against `VALUES` and reordering the state index all kept the prefix scan:
    /// measured); statistics do, and a statistic taken before this rollout existed does not
    /// know its id (an unknown value is estimated rare: the same mistake). `device_id` is
    /// analysed too: without its statistics a 64-value `IN` list is estimated at a third of the
    /// table and a sequential scan wins. Only the key's two columns: the state statements must
    /// not lean on state statistics that go stale (see `by_key_state_guard`). `ANALYZE`
    /// samples at most 30,000 rows whatever the table's size. A failure is logged, not
    /// returned: the rollout is committed, and only speed depends on this.
    pub(crate) async fn analyze_targets(&self, rollout_id: i64) {
        if self.backend() != super::db::Backend::Postgres {
            return;
        }
        let Ok(pool) = self.pool() else { return };
        let started = std::time::Instant::now();
        match sqlx::query("ANALYZE rollout_devices (rollout_id, device_id)")
            .execute(pool)
            .await
        {
            Ok(_) => tracing::debug!(
                rollout_id,
                ms = started.elapsed().as_millis() as u64,
                "analysed the rollout's targets"
            ),
            Err(e) => tracing::warn!(rollout_id, error = %e, "ANALYZE rollout_devices failed"),
        }
    }

    /// The devices a filter selects, each with the counters that tell what its bootloader holds.
    /// The release counters are looked up here rather than joined in SQL: a model has a handful
    /// of releases, and a join per target cost SQLite a third more time at 100,000 targets.
    pub async fn targets(&self, filter: &TargetFilter) -> Result<Vec<Target>, StoreError> {
        let counters: HashMap<String, i64> = self
            .release_counters(&filter.model, filter.component)
            .await?
            .into_iter()
            .collect();
        let mut sql = Sql::default();
        sql.push(
            "SELECT devices.id, devices.firmware_version, devices.bootloader_version, \
             devices.security_counter FROM devices",
        );
        filter.push(&mut sql);
        let rows = sql.query().fetch_all(self.reader()?).await?;
        rows.iter()
            .map(|r| {
                let (version, reported): (Option<String>, Option<i64>) = match filter.component {
                    Component::Application => (
                        r.try_get("firmware_version")?,
                        r.try_get("security_counter")?,
                    ),
                    // The floor a device reports is its application bootloader's; stage-0's
                    // floor for stage-1s is not reported, only inferred from what it runs.
                    Component::Bootloader => (r.try_get("bootloader_version")?, None),
                };
                Ok(Target {
                    id: r.try_get("id")?,
                    reported_counter: reported,
                    running_release_counter: version.and_then(|v| counters.get(&v).copied()),
                })
            })
            .collect()
    }

    /// Targets inside `threshold` that have not been offered yet, counted up to `limit` when
    /// one is given (the gate needs no more: [`crate::rollout::gate::eligible_count_limit`]).
    /// Everyone inside a 100% threshold is counted without a scan. Without a limit the count
    /// visits every eligible target of the rollout (about 11 ms at 100,000 on SQLite); with one,
    /// it stops at the limit.
    pub async fn eligible_in_cohort(
        &self,
        id: i64,
        threshold: i64,
        whole: &StateCounts,
        limit: Option<u64>,
    ) -> Result<u64, StoreError> {
        if u64::try_from(threshold).unwrap_or(0) >= cohort::RANK_SPACE {
            return Ok(limit.map_or(whole.eligible, |l| whole.eligible.min(l)));
        }
        let sql = eligible_in_cohort_sql(limit.is_some());
        let mut query = sqlx::query(&sql).bind(id).bind(threshold);
        if let Some(l) = limit {
            query = query.bind(i64::try_from(l).unwrap_or(i64::MAX));
        }
        let row = query.fetch_one(self.reader()?).await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    /// The ranks of all targets that may be offered (for absolute-count stages: a device
    /// skipped for its security counter takes no place in a cohort).
    pub async fn rollout_ranks(&self, id: i64) -> Result<Vec<u32>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT rank FROM rollout_devices WHERE rollout_id = $1 AND state NOT IN ({})",
            quoted(DeviceState::OUTSIDE_COHORTS.map(DeviceState::as_str))
        ))
        .bind(id)
        .fetch_all(self.reader()?)
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
    ) -> Result<Option<DeviceState>, StoreError> {
        let row = sqlx::query(DEVICE_STATE_SQL)
            .bind(rollout_id)
            .bind(device_id)
            .fetch_optional(self.reader()?)
            .await?;
        row.map(|r| device_state(r.try_get("state")?)).transpose()
    }

    /// Every target of a rollout with its state, handed to `each` row by row as they arrive
    /// (no list of every row's columns in between): one read where a point read per device
    /// would take a round trip each (the engine's memory of a rollout's devices, filled once a
    /// rollout per replica).
    pub async fn rollout_device_states(
        &self,
        rollout_id: i64,
        mut each: impl FnMut(String, DeviceState) + Send,
    ) -> Result<(), StoreError> {
        use futures_util::TryStreamExt as _;
        let mut rows = sqlx::query(DEVICE_STATES_SQL)
            .bind(rollout_id)
            .fetch(self.reader()?);
        while let Some(r) = rows.try_next().await? {
            each(r.try_get("device_id")?, device_state(r.try_get("state")?)?);
        }
        Ok(())
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
        let mut tx = self.pool()?.begin().await?;
        let n = sqlx::query(&format!(
            "INSERT INTO rollout_devices (rollout_id, device_id, rank, state, updated_at) \
             VALUES ($1, $2, $3, {}, $4) ON CONFLICT (rollout_id, device_id) DO NOTHING",
            quoted([DeviceState::Eligible.as_str()])
        ))
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

    /// Move a device to `to` if its current state allows it. Returns whether it moved.
    pub async fn set_device_state(
        &self,
        rollout_id: i64,
        device_id: &str,
        to: DeviceState,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(text) = set_state_sql(to) else {
            return Ok(false);
        };
        let n = sqlx::query(&text)
            .bind(rollout_id)
            .bind(device_id)
            .bind(reason)
            .bind(now)
            .execute(self.pool()?)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Declare silent every device past its deadline in active or paused rollouts, one rollout
    /// at a time through the (rollout, state, deadline) index. Returns the rollouts that changed.
    pub async fn time_out_devices(&self, now: i64) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id FROM rollouts WHERE state IN ({})",
            quoted(RolloutState::DEADLINES_RUN.map(RolloutState::as_str))
        ))
        .fetch_all(self.reader()?)
        .await?;
        let update = time_out_sql();
        let mut changed = Vec::new();
        for r in rows {
            let id: i64 = r.try_get("id")?;
            let n = sqlx::query(&update)
                .bind(id)
                .bind(now)
                .execute(self.pool()?)
                .await?
                .rows_affected();
            if n > 0 {
                changed.push(id);
            }
        }
        Ok(changed)
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
        .fetch_all(self.reader()?)
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

/// The state guard of a statement that moves one device: `state` wrapped so that no index can
/// serve it, which leaves the primary key `(rollout_id, device_id)` the only index that matches.
///
/// Written bare, `state IN (...)` beside `rollout_id = $1` matches the `(rollout_id, state,
/// deadline_at)` index as well as the key. Until `rollout_devices` has statistics PostgreSQL
/// costs the two alike (one row each) and may take the state index, which then reads every
/// device of the rollout in that state to find one: an offer at 100,000 fresh targets read
/// 100,000 index entries and filtered 50,000 rows (15 ms instead of 0.1 ms), and with autovacuum
/// off nothing ever analyses the table. `state` is NOT NULL, so `COALESCE(state, '')` is the
/// same test. (An `ANALYZE` after a rollout's targets are inserted also fixes the fresh case,
/// for about 90 ms per 100,000 targets, but stale statistics, every target `eligible`, estimate
/// the later states at one row again: a tie once more.)
fn by_key_state_guard(from: &[DeviceState]) -> String {
    format!(
        "COALESCE(state, '') IN ({})",
        quoted(from.iter().map(|s| s.as_str()))
    )
}

/// How a many-device statement names its devices, from `$4` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceParams {
    /// `$4` .. `$(3 + n)`, a parameter each (SQLite, which has no arrays).
    Each(usize),
    /// `$4` alone, the devices as one array ([`super::sql::pg_array`]; PostgreSQL).
    Array,
}

impl DeviceParams {
    /// `device_id IN ($4, ...)` or `device_id = ANY($4::text::text[])`.
    fn predicate(self) -> String {
        match self {
            Self::Each(n) => {
                let devices: Vec<String> = (0..n.max(1)).map(|i| format!("${}", i + 4)).collect();
                format!("device_id IN ({})", devices.join(", "))
            }
            Self::Array => format!("device_id = ANY({})", pg_array_param(4, "text")),
        }
    }
}

/// Offer devices of one rollout (the group commit's offers, `offer_batch.rs`): each moves
/// eligible -> offered only while the rollout is active and its rank is inside the current
/// cohort. `$1` rollout, `$2` now, `$3` deadline, `$4`.. the devices. Returns the devices
/// offered.
pub(crate) fn batch_offer_sql(devices: DeviceParams) -> String {
    let to = DeviceState::Offered;
    format!(
        "UPDATE rollout_devices SET state = {}, \
           stage = (SELECT current_stage FROM rollouts WHERE id = $1), \
           offered_at = $2, deadline_at = $3, updated_at = $2 \
         WHERE rollout_id = $1 AND {} AND {} \
           AND EXISTS (SELECT 1 FROM rollouts r WHERE r.id = $1 AND r.state = {} \
                       AND rollout_devices.rank < r.current_threshold) \
         RETURNING device_id",
        quoted([to.as_str()]),
        devices.predicate(),
        by_key_state_guard(to.allowed_from()),
        quoted([RolloutState::Active.as_str()])
    )
}

/// A device's move to `to` (`None`: no state leads there): `$1` rollout, `$2` device, `$3`
/// reason (kept if null), `$4` now. A device that reports progress without having been offered
/// here still records the stage it is in.
fn set_state_sql(to: DeviceState) -> Option<String> {
    let from = to.allowed_from();
    if from.is_empty() {
        return None;
    }
    Some(format!(
        "UPDATE rollout_devices SET state = {}, reason = COALESCE($3, reason), updated_at = $4, \
           stage = COALESCE(stage, (SELECT current_stage FROM rollouts WHERE id = $1)) \
         WHERE rollout_id = $1 AND device_id = $2 AND {}",
        quoted([to.as_str()]),
        by_key_state_guard(from)
    ))
}

/// The same move for many devices of one rollout (the group commit of reports): `$1` rollout,
/// `$2` reason (kept if null), `$3` now, `$4`.. the devices. Returns the devices that moved.
pub(crate) fn batch_move_sql(to: DeviceState, devices: DeviceParams) -> Option<String> {
    let from = to.allowed_from();
    if from.is_empty() || devices == DeviceParams::Each(0) {
        return None;
    }
    Some(format!(
        "UPDATE rollout_devices SET state = {}, reason = COALESCE($2, reason), updated_at = $3, \
           stage = COALESCE(stage, (SELECT current_stage FROM rollouts WHERE id = $1)) \
         WHERE rollout_id = $1 AND {} AND {} RETURNING device_id",
        quoted([to.as_str()]),
        devices.predicate(),
        by_key_state_guard(from)
    ))
}

/// A device's state: `$1` rollout, `$2` device.
const DEVICE_STATE_SQL: &str =
    "SELECT state FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2";

/// Every target's state: `$1` rollout.
const DEVICE_STATES_SQL: &str =
    "SELECT device_id, state FROM rollout_devices WHERE rollout_id = $1";

/// Eligible targets below a threshold: `$1` rollout, `$2` threshold.
fn eligible_in_cohort_sql(limited: bool) -> String {
    let eligible = format!(
        "FROM rollout_devices WHERE rollout_id = $1 AND state = {} AND rank < $2",
        quoted([DeviceState::Eligible.as_str()])
    );
    if limited {
        format!("SELECT COUNT(*) AS n FROM (SELECT 1 {eligible} LIMIT $3) AS c")
    } else {
        format!("SELECT COUNT(*) AS n {eligible}")
    }
}

/// Silence past the deadline: `$1` rollout, `$2` now.
fn time_out_sql() -> String {
    let to = DeviceState::TimedOut;
    format!(
        "UPDATE rollout_devices SET state = {}, \
         reason = 'no confirmation before the deadline', updated_at = $2 \
         WHERE rollout_id = $1 AND state IN ({}) AND deadline_at < $2",
        quoted([to.as_str()]),
        quoted(to.allowed_from().iter().map(|s| s.as_str()))
    )
}

/// Which index a hot statement must be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotIndex {
    /// The primary key `(rollout_id, device_id)`: a statement about one device.
    PrimaryKey,
    /// The primary key, probed once for each row of another table read first through the
    /// named index.
    PrimaryKeyFrom(&'static str),
    /// Every target of the rollout, joined to another table: the state index's `rollout_id`
    /// prefix, or on PostgreSQL a sequential scan where its statistics of the key (taken when
    /// the targets were inserted) say the rollout is most of the table; it reads the
    /// rollout's every row either way.
    AllTargets,
    /// `(rollout_id, state, deadline_at)`: a statement about the devices of a rollout in
    /// some states.
    State,
}

/// One of the statements a rollout runs per device or per sweep tick, with example arguments
/// (SQL literals, in `$n` order) for a plan check.
#[derive(Debug, Clone)]
pub struct HotStatement {
    /// What it does.
    pub name: String,
    /// The text the store runs.
    pub sql: String,
    /// Arguments, as SQL literals.
    pub args: Vec<String>,
    /// The index of `rollout_devices` it must use.
    pub index: HotIndex,
}

/// The hot statements over `rollout_devices`, as the store runs them, with arguments naming
/// `rollout_id` and `device_id`: what the PostgreSQL plan test (`server/tests/plans.rs`)
/// explains on a fresh rollout, with and without statistics.
pub fn hot_statements(
    backend: Backend,
    rollout_id: i64,
    device_id: &str,
    now: i64,
) -> Vec<HotStatement> {
    let r = rollout_id.to_string();
    let d = quoted([device_id]);
    let t = now.to_string();
    let mut out = vec![
        HotStatement {
            name: "offer".into(),
            sql: batch_offer_sql(DeviceParams::Each(1)),
            args: vec![r.clone(), t.clone(), t.clone(), d.clone()],
            index: HotIndex::PrimaryKey,
        },
        HotStatement {
            name: "device state".into(),
            sql: DEVICE_STATE_SQL.into(),
            args: vec![r.clone(), d.clone()],
            index: HotIndex::PrimaryKey,
        },
        HotStatement {
            name: "eligible in cohort".into(),
            sql: eligible_in_cohort_sql(false),
            args: vec![r.clone(), "1000".into()],
            index: HotIndex::State,
        },
        HotStatement {
            name: "eligible in cohort, up to a limit".into(),
            sql: eligible_in_cohort_sql(true),
            args: vec![r.clone(), "1000".into(), "20".into()],
            index: HotIndex::State,
        },
        HotStatement {
            name: "time out".into(),
            sql: time_out_sql(),
            args: vec![r.clone(), t.clone()],
            index: HotIndex::State,
        },
    ];
    // The reset gate's join, both ways round (see `ResetJoin`): a rollout started an hour ago.
    let reset_args = vec![
        r.clone(),
        quoted(["2.0.0"]),
        (now - 3_600_000).to_string(),
        quoted([DeviceState::Confirmed.as_str()]),
    ];
    out.push(HotStatement {
        name: "reset gate, driven by the resets".into(),
        sql: reset_figures_sql(ResetJoin::FromResets),
        args: reset_args.clone(),
        index: HotIndex::PrimaryKeyFrom("device_resets_received"),
    });
    out.push(HotStatement {
        name: "reset gate, driven by the targets".into(),
        sql: reset_figures_sql(ResetJoin::FromTargets),
        args: reset_args,
        index: HotIndex::AllTargets,
    });
    // A group commit's batch: 64 devices (the benchmark's 64 connections), where a prefix scan
    // of the state index looks cheaper than 64 probes of the key until statistics say how many
    // devices the rollout holds (see `analyze_targets`). SQLite binds each device, PostgreSQL
    // one array of them.
    const BATCH_DEVICES: usize = 64;
    let batch: Vec<String> = std::iter::once(device_id.to_string())
        .chain((1..BATCH_DEVICES).map(|i| format!("{device_id}-{i}")))
        .collect();
    let (params, devices) = match backend {
        Backend::Sqlite => (
            DeviceParams::Each(BATCH_DEVICES),
            batch.iter().map(|b| quoted([b.as_str()])).collect(),
        ),
        Backend::Postgres => (
            DeviceParams::Array,
            vec![quoted([pg_array(batch.iter().map(Some)).as_str()])],
        ),
    };
    if let Some(sql) = batch_move_sql(DeviceState::Downloading, params) {
        let mut args = vec![r.clone(), "NULL".into(), t.clone()];
        args.extend(devices.iter().cloned());
        out.push(HotStatement {
            name: format!("group commit: move {BATCH_DEVICES} devices to downloading"),
            sql,
            args,
            index: HotIndex::PrimaryKey,
        });
    }
    let mut args = vec![r.clone(), t.clone(), t.clone()];
    args.extend(devices);
    out.push(HotStatement {
        name: format!("group commit: offer {BATCH_DEVICES} devices"),
        sql: batch_offer_sql(params),
        args,
        index: HotIndex::PrimaryKey,
    });
    for to in DeviceState::ALL {
        if let Some(sql) = set_state_sql(to) {
            out.push(HotStatement {
                name: format!("move to {}", to.as_str()),
                sql,
                args: vec![r.clone(), d.clone(), "NULL".into(), t.clone()],
                index: HotIndex::PrimaryKey,
            });
        }
    }
    out
}

pub(super) fn device_state(name: String) -> Result<DeviceState, StoreError> {
    name.parse()
        .map_err(|_| StoreError::Corrupt(format!("device state {name:?}")))
}
