//! Unexpected resets: stored with the report that carries them (in its group commit), and
//! counted per rollout for the health gate, with the device-hours each side of the rollout has
//! run ([`ResetFigures`]).

use super::db::{Store, StoreError};
use super::events::json_name;
use crate::domain::resets::StageResets;
use crate::domain::resets::{exposure, MAX_RESETS_PER_DEVICE_HOUR};
use crate::domain::{DeviceState, ResetFigures};
use fota_protocol::messages::{Event, EventKind};
use sqlx::Row as _;
use std::collections::HashMap;

/// An unexpected reset to store.
#[derive(Debug, Clone)]
pub(super) struct NewReset {
    pub(super) event_id: i64,
    pub(super) version: Option<String>,
    pub(super) cause: String,
    pub(super) uptime_s: i64,
}

/// The reset an event reports, if it is an unexpected one.
pub(super) fn unexpected(e: &Event) -> Option<NewReset> {
    let reset = e.reset.filter(|_| e.kind == EventKind::Reset)?;
    reset.cause.is_unexpected().then(|| NewReset {
        event_id: e.id as i64,
        version: e.version.map(|v| v.to_string()),
        cause: json_name(reset.cause),
        uptime_s: i64::from(reset.uptime_s),
    })
}

/// What the event history shows as a reset's detail when the device gave no reason:
/// `independent_watchdog after 310 s`.
pub(crate) fn stored_reason(e: &Event) -> Option<String> {
    match (&e.reason, e.reset) {
        (Some(r), _) => Some(r.to_string()),
        (None, Some(reset)) if e.kind == EventKind::Reset => Some(format!(
            "{} after {} s",
            json_name(reset.cause),
            reset.uptime_s
        )),
        _ => None,
    }
}

/// One reset: device, event id, version, cause, uptime, received at.
pub(super) const INSERT_SQL: &str =
    "INSERT INTO device_resets (device_id, event_id, version, cause, uptime_s, received_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device_id, event_id) DO NOTHING";

/// Store `rows` (device, reset, received at) in the report transaction.
pub(super) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[(&str, NewReset, i64)],
) -> Result<(), StoreError> {
    for (device, r, at) in rows {
        sqlx::query(INSERT_SQL)
            .bind(*device)
            .bind(r.event_id)
            .bind(r.version.clone())
            .bind(r.cause.as_str())
            .bind(r.uptime_s)
            .bind(*at)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Which side a rollout's join of its targets with the resets is read from: the resets since
/// the rollout started (through `device_resets_received`, each probing the target's key), or
/// the targets (each probing the device's resets). The gate evaluates a rollout every second,
/// and at 100,000 targets reading every target took 190 ms of a run's database time each time
/// (26% of it), while a rollout of minutes has seen a few thousand resets; a rollout of a small
/// part of a large fleet over weeks sees more resets than it has targets. Neither table has
/// statistics a planner could choose by (SQLite keeps none; PostgreSQL's may be missing), so the
/// store counts the resets, at most one more than the targets, and chooses.
///
/// Driven by the resets, each probes its target in a scalar subquery: neither backend turns
/// that into a join, so it stays one probe of the key per reset (written as a join, PostgreSQL
/// without statistics on the resets read every target by a sequential scan of
/// `rollout_devices` instead, and SQLite read the resets in key order, all of them, to save a
/// sort).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResetJoin {
    /// Driven by the resets since the rollout started.
    FromResets,
    /// Driven by the rollout's targets.
    FromTargets,
}

impl ResetJoin {
    /// The resets of rollout `$1`'s targets received since `$3`, as rows of `j`: `device_id`,
    /// `event_id`, `received_at`, `version` (never NULL), `state` (NULL: not a target), and
    /// `stage` if asked for.
    fn rows(self, with_stage: bool) -> String {
        let probe = |column: &str| {
            format!(
                "(SELECT rd.{column} FROM rollout_devices rd \
                 WHERE rd.rollout_id = $1 AND rd.device_id = r.device_id) AS {column}"
            )
        };
        let (state, stage, from) = match self {
            ResetJoin::FromResets => (
                probe("state"),
                with_stage.then(|| probe("stage")),
                "device_resets r".to_string(),
            ),
            ResetJoin::FromTargets => (
                "rd.state AS state".to_string(),
                with_stage.then(|| "rd.stage AS stage".to_string()),
                "rollout_devices rd JOIN device_resets r ON r.device_id = rd.device_id \
                 AND rd.rollout_id = $1"
                    .to_string(),
            ),
        };
        format!(
            "(SELECT r.device_id AS device_id, r.event_id AS event_id, \
             r.received_at AS received_at, COALESCE(r.version, '') AS version, {state}{} \
             FROM {from} WHERE r.received_at >= $3) AS j",
            stage.map(|s| format!(", {s}")).unwrap_or_default()
        )
    }
}

/// A reset query of rollout `id` (of `version`, started at `started_at`) with its arguments.
fn reset_query<'q>(
    sql: &'q str,
    id: i64,
    version: &'q str,
    started_at: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(id)
        .bind(version)
        .bind(started_at)
        .bind(DeviceState::Confirmed.as_str())
}

/// A confirmed target's reset of a run after its confirmation: a reset in `j` with an event id
/// above the device's first `confirmed` event of the rollout's (`$1` rollout, `$4` confirmed
/// state). One probe per reset, by device: on PostgreSQL through its partial index of
/// `confirmed` events, `device_events_confirmed (device_id, rollout_id, event_id)`
/// (migrations/postgres/0016_events_partial_indexes.sql), on SQLite through the primary key
/// (device_id, event_id), since SQLite indexes only `installed` and `rolled_back` events by more
/// than the key (migrations/sqlite/0014_events_partial_indexes.sql). The kind is a literal (the
/// event's JSON name; a test checks it): a prepared statement's generic plan uses a partial
/// index only if the statement implies its predicate. `server/tests/plans.rs` checks both.
const AFTER_CONFIRMATION: &str = "j.state = $4 AND j.event_id > \
     (SELECT MIN(c.event_id) FROM device_events c \
      WHERE c.device_id = j.device_id AND c.rollout_id = $1 AND c.kind = 'confirmed')";

/// How many of rollout `$1`'s targets left the old release and the sum of when: each one's
/// first `installed` event of the rollout. The definition of the figure the triggers of
/// migration 0015 keep ([`Store::installed_exposure`], what the gate reads): grouping every
/// `installed` event of the rollout at each evaluation cost 144 ms a call at 100,000 targets
/// on PostgreSQL without autovacuum. Tests check the kept figure against this one.
pub fn installed_exposure_sql() -> String {
    format!(
        "SELECT COUNT(*) AS n, CAST(SUM(t) AS BIGINT) AS at_sum FROM \
         (SELECT MIN(received_at) AS t FROM device_events \
          WHERE rollout_id = $1 AND kind = '{}' GROUP BY device_id) AS installed",
        json_name(EventKind::Installed)
    )
}

/// The gate's reset counts (see [`Store::reset_figures`]); `$1` rollout, `$2` its version, `$3`
/// its start, `$4` the confirmed state. Grouped by the hour first: SQLite would otherwise read
/// the resets in key order to save the sort, the whole table instead of the rollout's time.
pub(super) fn reset_figures_sql(from: ResetJoin) -> String {
    format!(
        "SELECT j.device_id AS device_id, \
         CASE WHEN j.version = $2 THEN 1 ELSE 0 END AS on_new, COUNT(*) AS n \
         FROM {} \
         WHERE j.state IS NOT NULL AND (j.version <> $2 OR ({AFTER_CONFIRMATION})) \
         GROUP BY j.received_at / 3600000, j.device_id, \
         CASE WHEN j.version = $2 THEN 1 ELSE 0 END",
        from.rows(false)
    )
}

/// Each stage's resets of the new release (see [`Store::stage_resets`]), with the arguments of
/// [`reset_figures_sql`].
fn stage_resets_sql(from: ResetJoin) -> String {
    format!(
        "SELECT j.stage AS stage, j.device_id AS device_id, COUNT(*) AS n \
         FROM {} \
         WHERE j.version = $2 AND j.stage IS NOT NULL AND {AFTER_CONFIRMATION} \
         GROUP BY j.received_at / 3600000, j.stage, j.device_id",
        from.rows(true)
    )
}

impl Store {
    /// Which side to read the join of a rollout's `targets` with the resets received since
    /// `started_at` from: the resets while there are no more of them than targets. Counting
    /// stops there, so this costs at most what it saves.
    async fn reset_join_from(
        &self,
        started_at: i64,
        targets: u64,
    ) -> Result<ResetJoin, StoreError> {
        let limit = i64::try_from(targets).unwrap_or(i64::MAX).saturating_add(1);
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM \
             (SELECT 1 FROM device_resets WHERE received_at >= $1 LIMIT $2) AS since",
        )
        .bind(started_at)
        .bind(limit)
        .fetch_one(self.reader()?)
        .await?
        .try_get("n")?;
        Ok(if n < limit {
            ResetJoin::FromResets
        } else {
            ResetJoin::FromTargets
        })
    }
}

impl Store {
    /// The new release's figures of rollout `id` per stage (the stage each device was offered
    /// in): what status shows next to each stage. The gate judges the whole rollout
    /// ([`Store::reset_figures`]). `targets` is the rollout's target count.
    pub async fn stage_resets(
        &self,
        id: i64,
        version: &str,
        started_at: i64,
        targets: u64,
        now: i64,
    ) -> Result<HashMap<i64, StageResets>, StoreError> {
        let from = self.reset_join_from(started_at, targets).await?;
        let sql = stage_resets_sql(from);
        let rows = reset_query(&sql, id, version, started_at)
            .fetch_all(self.reader()?)
            .await?;
        let mut out: HashMap<i64, StageResets> = HashMap::new();
        let mut devices: HashMap<i64, HashMap<String, ()>> = HashMap::new();
        for r in rows {
            let stage: i64 = r.try_get("stage")?;
            let n = u64::try_from(r.try_get::<i64, _>("n")?)
                .unwrap_or(0)
                .min(MAX_RESETS_PER_DEVICE_HOUR);
            out.entry(stage).or_default().resets += n;
            devices
                .entry(stage)
                .or_default()
                .insert(r.try_get("device_id")?, ());
        }
        for (stage, d) in devices {
            out.entry(stage).or_default().devices = d.len() as u64;
        }
        let confirmed = self.tallies(id).await?.into_iter().filter_map(|t| {
            let stage = t.stage?;
            (t.state == DeviceState::Confirmed).then_some((stage, t))
        });
        for (stage, t) in confirmed {
            let (device_s, _) = exposure(t.n, t.n, t.updated_at_sum, (0, 0), now, now);
            out.entry(stage).or_default().device_s = device_s;
        }
        Ok(out)
    }

    /// Unexpected resets among rollout `id`'s targets since it started (`started_at`), split
    /// by whether they ran `version` (the new release), with each side's device-seconds: a
    /// target counts on the old release until it leaves it (its first `installed` event) and on
    /// the new one from its confirmation; the trial in between counts on neither side.
    ///
    /// A reset of the new release counts only from a confirmed device, and only if the run it
    /// ended began after the confirmation: its event id is above the device's `confirmed`
    /// event's (a device numbers its events in order, and reports a reset at the boot after it,
    /// so a reset during the trial has the lower id even when it arrives after the
    /// confirmation). A trial's resets are the failure gate's (the bootloader answers them by
    /// reverting); counted on the new side, against device-hours that begin at confirmation,
    /// they would inflate the new release's rate by the length of the trials, and a healthy
    /// release with a background of resets halted (seen in the 100,000-device demo).
    ///
    /// `targets` is the rollout's target count. Unless `always`, the device-seconds (passes
    /// over the confirmed and installed targets) are left at 0 while fewer than two devices
    /// reset on the new release, since the gate cannot judge before that.
    pub async fn reset_figures(
        &self,
        id: i64,
        version: &str,
        started_at: i64,
        targets: u64,
        now: i64,
        always: bool,
    ) -> Result<ResetFigures, StoreError> {
        let from = self.reset_join_from(started_at, targets).await?;
        let sql = reset_figures_sql(from);
        let rows = reset_query(&sql, id, version, started_at)
            .fetch_all(self.reader()?)
            .await?;
        let mut f = ResetFigures::default();
        let mut new_devices: HashMap<String, ()> = HashMap::new();
        for r in rows {
            let n = u64::try_from(r.try_get::<i64, _>("n")?)
                .unwrap_or(0)
                .min(MAX_RESETS_PER_DEVICE_HOUR);
            if r.try_get::<i64, _>("on_new")? == 1 {
                f.new_resets += n;
                new_devices.insert(r.try_get("device_id")?, ());
            } else {
                f.base_resets += n;
            }
        }
        f.new_devices = new_devices.len() as u64;
        if !always && f.new_devices < 2 {
            return Ok(f);
        }
        let (confirmed, at_sum) = self
            .tallies(id)
            .await?
            .iter()
            .filter(|t| t.state == DeviceState::Confirmed)
            .fold((0u64, 0i128), |(n, sum), t| {
                (n + t.n, sum + t.updated_at_sum)
            });
        // When each target left the old release: its first `installed` event of this rollout
        // (the client sends it before it reboots into the new image), kept as events arrive.
        let left = self.installed_exposure(id).await?;
        let (new_s, base_s) = exposure(
            targets,
            confirmed,
            at_sum,
            (left.left, left.left_at_sum),
            started_at,
            now,
        );
        f.new_device_s = new_s;
        f.base_device_s = base_s;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The literal kind of [`AFTER_CONFIRMATION`] (and of the partial index it reads on
    /// PostgreSQL) is the name a `confirmed` event is stored under.
    #[test]
    fn the_confirmation_probe_names_the_stored_kind() {
        let stored = format!("c.kind = '{}'", json_name(EventKind::Confirmed));
        assert!(AFTER_CONFIRMATION.contains(&stored), "{AFTER_CONFIRMATION}");
    }
}
