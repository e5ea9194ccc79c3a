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

impl Store {
    /// The new release's figures of rollout `id` per stage (the stage each device was offered
    /// in): what status shows next to each stage. The gate judges the whole rollout
    /// ([`Store::reset_figures`]).
    pub async fn stage_resets(
        &self,
        id: i64,
        version: &str,
        started_at: i64,
        now: i64,
    ) -> Result<HashMap<i64, StageResets>, StoreError> {
        let rows = sqlx::query(
            "SELECT rd.stage AS stage, r.device_id AS device_id, COUNT(*) AS n \
             FROM device_resets r \
             JOIN rollout_devices rd ON rd.rollout_id = $1 AND rd.device_id = r.device_id \
             WHERE r.received_at >= $3 AND r.version = $2 AND rd.stage IS NOT NULL \
             AND rd.state = $4 AND r.event_id > \
             (SELECT MIN(c.event_id) FROM device_events c \
              WHERE c.device_id = r.device_id AND c.rollout_id = $1 AND c.kind = $5) \
             GROUP BY rd.stage, r.device_id, r.received_at / 3600000",
        )
        .bind(id)
        .bind(version)
        .bind(started_at)
        .bind(DeviceState::Confirmed.as_str())
        .bind(json_name(EventKind::Confirmed))
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
        let rows = sqlx::query(
            "SELECT stage, COUNT(*) AS n, CAST(SUM(updated_at) AS BIGINT) AS at_sum \
             FROM rollout_devices WHERE rollout_id = $1 AND state = $2 AND stage IS NOT NULL \
             GROUP BY stage",
        )
        .bind(id)
        .bind(DeviceState::Confirmed.as_str())
        .fetch_all(self.reader()?)
        .await?;
        for r in rows {
            let stage: i64 = r.try_get("stage")?;
            let n = u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
            let at_sum: Option<i64> = r.try_get("at_sum")?;
            let (device_s, _) = exposure(n, n, i128::from(at_sum.unwrap_or(0)), (0, 0), now, now);
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
        let rows = sqlx::query(
            "SELECT r.device_id AS device_id, \
             CASE WHEN r.version = $2 THEN 1 ELSE 0 END AS on_new, COUNT(*) AS n \
             FROM device_resets r \
             JOIN rollout_devices rd ON rd.rollout_id = $1 AND rd.device_id = r.device_id \
             WHERE r.received_at >= $3 \
             AND (COALESCE(r.version, '') <> $2 OR (rd.state = $4 AND r.event_id > \
             (SELECT MIN(c.event_id) FROM device_events c \
              WHERE c.device_id = r.device_id AND c.rollout_id = $1 AND c.kind = $5))) \
             GROUP BY r.device_id, CASE WHEN r.version = $2 THEN 1 ELSE 0 END, \
             r.received_at / 3600000",
        )
        .bind(id)
        .bind(version)
        .bind(started_at)
        .bind(DeviceState::Confirmed.as_str())
        .bind(json_name(EventKind::Confirmed))
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
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(SUM(updated_at) AS BIGINT) AS at_sum \
             FROM rollout_devices WHERE rollout_id = $1 AND state = $2",
        )
        .bind(id)
        .bind(DeviceState::Confirmed.as_str())
        .fetch_one(self.reader()?)
        .await?;
        let confirmed = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
        let at_sum: Option<i64> = row.try_get("at_sum")?;
        // When each target left the old release: its first `installed` event of this rollout
        // (the client sends it before it reboots into the new image).
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(SUM(t) AS BIGINT) AS at_sum FROM \
             (SELECT MIN(received_at) AS t FROM device_events \
              WHERE rollout_id = $1 AND kind = $2 GROUP BY device_id) AS installed",
        )
        .bind(id)
        .bind(json_name(EventKind::Installed))
        .fetch_one(self.reader()?)
        .await?;
        let left = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
        let left_at_sum: Option<i64> = row.try_get("at_sum")?;
        let (new_s, base_s) = exposure(
            targets,
            confirmed,
            i128::from(at_sum.unwrap_or(0)),
            (left, i128::from(left_at_sum.unwrap_or(0))),
            started_at,
            now,
        );
        f.new_device_s = new_s;
        f.base_device_s = base_s;
        Ok(f)
    }
}
