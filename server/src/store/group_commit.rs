//! Group commit of device reports: reports that arrive together are stored in one transaction
//! (their events, and the device state moves those events make), and each caller is answered
//! only once the transaction holding its report has committed.
//!
//! A caller queues its report and waits. A writer task takes everything queued, writes it in one
//! transaction, answers every caller of the batch and takes the next batch, until the queue is
//! empty; reports that arrive while a batch commits form the next one. SQLite has one writer
//! task (it has one writer anyway), PostgreSQL a few. The writer is a spawned task, so a caller
//! that goes away (its client disconnected) takes nobody's batch down with it.
//!
//! Idempotency is by (device, event id), across batches and retries: an event already stored, or
//! stored earlier in the same batch, counts as a duplicate and moves nothing again. A batch that
//! fails is retried report by report, so one report's error is its own.

use super::db::{Backend, Store, StoreError};
use super::events::event_kind_name;
use super::group_queue::{Pending, ReportOutcome};
use super::rollout_devices::batch_move_sql;
use super::sql::{binary_chunks, rows_per_statement};
use super::sqlite_writer::positional;
use crate::domain::DeviceState;
use fota_protocol::messages::Event;
use sqlx::Row as _;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

/// Reports one transaction holds at most.
const MAX_BATCH: usize = 1024;

/// A running writer. It gives its place up itself, under the queue's lock, when it finds the
/// queue empty; should its task end any other way (a panic, the runtime shutting down), dropping
/// the slot gives the place up so that the next report starts a new writer.
struct WriterSlot {
    store: Store,
    released: bool,
}

impl Drop for WriterSlot {
    fn drop(&mut self) {
        if !self.released {
            let mut q = self
                .store
                .group_commit()
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            q.writers = q.writers.saturating_sub(1);
        }
    }
}

impl Store {
    /// Store a device's report (its events, once per event id, and the state moves they make)
    /// in the next group commit; returns once that transaction has committed.
    pub async fn store_report(
        &self,
        device_id: &str,
        events: &[Event],
        now: i64,
    ) -> Result<ReportOutcome, StoreError> {
        if events.is_empty() {
            return Ok(ReportOutcome::default());
        }
        // Refuse at once while the database is known to be down (as every statement does).
        self.pool()?;
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut q = self
                .group_commit()
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            q.pending.push(Pending {
                device: device_id.to_string(),
                events: events.to_vec(),
                now,
                reply,
            });
            let max = match self.backend() {
                Backend::Sqlite => 1,
                Backend::Postgres => 4,
            };
            // A new writer only when the ones running have more queued than one batch each.
            let wanted = q.pending.len().div_ceil(MAX_BATCH).max(1);
            if q.writers < max && q.writers < wanted {
                q.writers += 1;
                true
            } else {
                false
            }
        };
        if start_writer {
            tokio::spawn(write_batches(WriterSlot {
                store: self.clone(),
                released: false,
            }));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the report writer stopped before committing".into(),
            ))
        })
    }
}

async fn write_batches(mut slot: WriterSlot) {
    let store = slot.store.clone();
    loop {
        let batch: Vec<Pending> = {
            let mut q = store
                .group_commit()
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = q.pending.len().min(MAX_BATCH);
            if n == 0 {
                // Still holding the lock: a report queued after this sees writers - 1 and
                // starts a writer of its own (the slot is released below, under the lock).
                q.writers = q.writers.saturating_sub(1);
                slot.released = true;
                return;
            }
            q.pending.drain(..n).collect()
        };
        let reports: Vec<(&str, &[Event], i64)> = batch
            .iter()
            .map(|p| (p.device.as_str(), p.events.as_slice(), p.now))
            .collect();
        match store.write_reports(&reports).await {
            Ok(outcomes) => {
                let gc = store.group_commit();
                gc.batches.fetch_add(1, Ordering::Relaxed);
                gc.reports.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(p) = batch.into_iter().next() {
                    let _ = p.reply.send(Err(e));
                }
            }
            Err(_) => {
                // One report's error must not fail the others: each alone.
                for p in batch {
                    let result = store
                        .write_reports(&[(p.device.as_str(), p.events.as_slice(), p.now)])
                        .await
                        .map(|mut o| o.pop().unwrap_or_default());
                    let _ = p.reply.send(result);
                }
            }
        }
    }
}

impl Store {
    /// Group commits so far, and the reports they held (their ratio is the mean batch).
    pub fn group_commit_stats(&self) -> (u64, u64) {
        let gc = self.group_commit();
        (
            gc.batches.load(Ordering::Relaxed),
            gc.reports.load(Ordering::Relaxed),
        )
    }

    /// Write reports in one transaction: every event once per (device, event id), then the
    /// state moves of the events stored now, in each device's order. One outcome per report.
    ///
    /// On SQLite the transaction runs on the report writer's own connection, on a blocking
    /// thread, while this holds the write pool's one connection: the batch takes its turn with
    /// every other write, as it would on that connection (`sqlite_writer.rs`).
    pub(crate) async fn write_reports(
        &self,
        reports: &[(&str, &[Event], i64)],
    ) -> Result<Vec<ReportOutcome>, StoreError> {
        if self.backend() == Backend::Sqlite {
            let owned: Vec<(String, Vec<Event>, i64)> = reports
                .iter()
                .map(|(d, e, now)| (d.to_string(), e.to_vec(), *now))
                .collect();
            let on_sqlite = self.on_sqlite_writer(move |conn| {
                let reports: Vec<(&str, &[Event], i64)> = owned
                    .iter()
                    .map(|(d, e, now)| (d.as_str(), e.as_slice(), *now))
                    .collect();
                write_reports_sqlite(conn, &reports)
            });
            if let Some(result) = on_sqlite.await {
                return result;
            }
        }
        let mut tx = self.writer()?.begin().await?;
        // 1. The events. RETURNING names the rows inserted now; the rest were there already.
        let rows = event_rows(reports);
        let mut inserted: HashSet<(String, i64)> = HashSet::new();
        for chunk in binary_chunks(&rows, rows_per_statement(self.backend(), 7, 256)) {
            let text = insert_events_sql(chunk.len());
            let mut q = sqlx::query(&text);
            for r in chunk {
                q = q
                    .bind(r.device)
                    .bind(r.id)
                    .bind(r.kind.as_str())
                    .bind(r.rollout)
                    .bind(r.version.clone())
                    .bind(r.reason.clone())
                    .bind(r.now);
            }
            for r in q.fetch_all(&mut *tx).await? {
                inserted.insert((r.try_get("device_id")?, r.try_get("event_id")?));
            }
        }
        // 2. What the new events ask for; 3. the moves, in order.
        let mut plan = plan(self.backend(), reports, inserted);
        for m in &plan.moves {
            let Some(text) = batch_move_sql(m.to, m.devices.len()) else {
                continue;
            };
            let mut q = sqlx::query(&text)
                .bind(m.rollout)
                .bind(m.reason.as_deref())
                .bind(m.now);
            for (_, device) in &m.devices {
                q = q.bind(*device);
            }
            let moved: HashSet<String> = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("device_id"))
                .collect::<Result<_, _>>()?;
            m.record(&moved, &mut plan.outcomes);
        }
        super::resets::insert(&mut tx, &plan.resets).await?;
        super::patches::record_fallbacks(&mut tx, &plan.fallbacks).await?;
        tx.commit().await?;
        Ok(plan.outcomes)
    }
}

/// [`Store::write_reports`] on the SQLite report writer's connection, from a blocking thread:
/// the same statements, bound by position, in one `BEGIN IMMEDIATE` transaction.
fn write_reports_sqlite(
    conn: &mut rusqlite::Connection,
    reports: &[(&str, &[Event], i64)],
) -> Result<Vec<ReportOutcome>, StoreError> {
    use rusqlite::types::Value;
    let text = |v: Option<&str>| v.map_or(Value::Null, |s| Value::Text(s.to_string()));
    let int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // 1. The events, up to 256 a statement: binding by position, the parameter cap that sqlx's
    // by-name binding needs (`SQLITE_MAX_PARAMS`) does not apply here.
    let rows = event_rows(reports);
    let mut inserted: HashSet<(String, i64)> = HashSet::new();
    for chunk in binary_chunks(&rows, 256) {
        let mut st = tx.prepare_cached(&positional(&insert_events_sql(chunk.len())))?;
        let mut values = Vec::with_capacity(chunk.len() * 7);
        for r in chunk {
            values.extend([
                Value::Text(r.device.to_string()),
                Value::Integer(r.id),
                Value::Text(r.kind.clone()),
                int(r.rollout),
                text(r.version.as_deref()),
                text(r.reason.as_deref()),
                Value::Integer(r.now),
            ]);
        }
        let mut found = st.query(rusqlite::params_from_iter(values))?;
        while let Some(row) = found.next()? {
            inserted.insert((row.get(0)?, row.get(1)?));
        }
    }
    // 2. What the new events ask for; 3. the moves, in order.
    let mut plan = plan(Backend::Sqlite, reports, inserted);
    for m in &plan.moves {
        let Some(sql) = batch_move_sql(m.to, m.devices.len()) else {
            continue;
        };
        let mut st = tx.prepare_cached(&positional(&sql))?;
        let mut values = vec![
            Value::Integer(m.rollout),
            text(m.reason.as_deref()),
            Value::Integer(m.now),
        ];
        values.extend(m.devices.iter().map(|(_, d)| Value::Text(d.to_string())));
        let moved: HashSet<String> = st
            .query_map(rusqlite::params_from_iter(values), |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        m.record(&moved, &mut plan.outcomes);
    }
    if !plan.resets.is_empty() {
        let mut st = tx.prepare_cached(&positional(super::resets::INSERT_SQL))?;
        for (device, r, at) in &plan.resets {
            st.execute(rusqlite::params![
                device, r.event_id, r.version, r.cause, r.uptime_s, at
            ])?;
        }
    }
    if !plan.fallbacks.is_empty() {
        let mut st = tx.prepare_cached(&positional(super::patches::RECORD_FALLBACK_SQL))?;
        for (rollout, device, at) in &plan.fallbacks {
            st.execute(rusqlite::params![rollout, device, at])?;
        }
    }
    tx.commit()?;
    Ok(plan.outcomes)
}

/// One event row to insert.
pub(super) struct EventRow<'a> {
    pub(super) device: &'a str,
    /// u64 ids above i64::MAX wrap to negative: still unique per device.
    pub(super) id: i64,
    pub(super) kind: String,
    pub(super) rollout: Option<i64>,
    pub(super) version: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) now: i64,
}

/// Every event of `reports`, in order.
pub(super) fn event_rows<'a>(reports: &[(&'a str, &'a [Event], i64)]) -> Vec<EventRow<'a>> {
    reports
        .iter()
        .flat_map(|(d, events, now)| {
            events.iter().map(move |e| EventRow {
                device: d,
                id: e.id as i64,
                kind: event_kind_name(e.kind),
                rollout: e.rollout_id.map(|r| r as i64),
                version: e.version.map(|v| v.to_string()),
                reason: super::resets::stored_reason(e),
                now: *now,
            })
        })
        .collect()
}

/// `n` events in one INSERT (seven parameters each, in [`EventRow`]'s order); RETURNING names
/// the rows inserted now.
pub(super) fn insert_events_sql(n: usize) -> String {
    let mut text = String::from(
        "INSERT INTO device_events \
         (device_id, event_id, kind, rollout_id, version, reason, received_at) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            text.push_str(", ");
        }
        let b = i * 7;
        text.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7
        ));
    }
    text.push_str(" ON CONFLICT (device_id, event_id) DO NOTHING RETURNING device_id, event_id");
    text
}

/// What a batch does once its events are in: the outcomes so far, the moves to make (in order),
/// and the resets and patch fallbacks to record.
pub(super) struct Plan<'a> {
    pub(super) outcomes: Vec<ReportOutcome>,
    pub(super) moves: Vec<Move<'a>>,
    pub(super) resets: Vec<(&'a str, super::resets::NewReset, i64)>,
    pub(super) fallbacks: Vec<(i64, &'a str, i64)>,
}

/// One state-move statement: `batch_move_sql(to, devices.len())` bound with rollout, reason,
/// now and the devices.
pub(super) struct Move<'a> {
    pub(super) rollout: i64,
    pub(super) to: DeviceState,
    pub(super) reason: Option<String>,
    pub(super) now: i64,
    /// (report index, device), in device order.
    pub(super) devices: Vec<(usize, &'a str)>,
}

impl Move<'_> {
    /// Record the move in the outcome of each report whose device `moved` names.
    pub(super) fn record(&self, moved: &HashSet<String>, outcomes: &mut [ReportOutcome]) {
        for (report, device) in &self.devices {
            if moved.contains(*device) {
                outcomes[*report].moved.push((self.rollout, self.to));
            }
        }
    }
}

/// Given the events `inserted` now (device, event id), plan the rest of the batch: which events
/// are new (first occurrence only) and the moves they ask for, in rounds: round k holds each
/// device's k-th move, so a device's moves apply in its order; inside a round, one statement per
/// (rollout, state, reason) over all its devices, in device order (the same lock order in every
/// batch), in chunks a statement binds.
pub(super) fn plan<'a>(
    backend: Backend,
    reports: &[(&'a str, &'a [Event], i64)],
    mut inserted: HashSet<(String, i64)>,
) -> Plan<'a> {
    let mut outcomes = vec![ReportOutcome::default(); reports.len()];
    // Per device, in order: (report index, rollout, to, reason, now).
    let mut wants: Vec<Vec<Want>> = Vec::new();
    let mut device_slot: HashMap<&str, usize> = HashMap::new();
    // Unexpected resets stored now, for the health gate's counts.
    let mut resets = Vec::new();
    // Delta patches given up for the full image: no patch for them again in the rollout.
    let mut fallbacks = Vec::new();
    for (ri, (device, events, now)) in reports.iter().enumerate() {
        for e in events.iter() {
            if !inserted.remove(&(device.to_string(), e.id as i64)) {
                outcomes[ri].duplicates += 1;
                continue;
            }
            outcomes[ri].stored += 1;
            if let Some(reset) = super::resets::unexpected(e) {
                if let Some(v) = &reset.version {
                    outcomes[ri].crashed_versions.push(v.clone());
                }
                resets.push((*device, reset, *now));
            }
            let Some(rollout) = e.rollout_id.and_then(|r| i64::try_from(r).ok()) else {
                continue;
            };
            if e.is_patch_fallback() {
                fallbacks.push((rollout, *device, *now));
            }
            let Some(to) = DeviceState::moved_by(e) else {
                continue;
            };
            let slot = *device_slot.entry(device).or_insert_with(|| {
                wants.push(Vec::new());
                wants.len() - 1
            });
            wants[slot].push(Want {
                report: ri,
                device,
                rollout,
                to,
                reason: e.reason.as_ref().map(|r| r.to_string()),
                now: *now,
            });
        }
    }
    let mut moves = Vec::new();
    let rounds = wants.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..rounds {
        let mut groups: HashMap<(i64, DeviceState, Option<&str>), Vec<&Want>> = HashMap::new();
        for w in wants.iter().filter_map(|w| w.get(k)) {
            groups
                .entry((w.rollout, w.to, w.reason.as_deref()))
                .or_default()
                .push(w);
        }
        let mut keys: Vec<_> = groups.keys().copied().collect();
        keys.sort();
        for key in keys {
            let mut group = groups.remove(&key).unwrap_or_default();
            group.sort_by(|a, b| a.device.cmp(b.device));
            let (rollout, to, reason) = key;
            let now = group.iter().map(|w| w.now).max().unwrap_or(0);
            for chunk in binary_chunks(&group, rows_per_statement(backend, 1, 256)) {
                moves.push(Move {
                    rollout,
                    to,
                    reason: reason.map(str::to_string),
                    now,
                    devices: chunk.iter().map(|w| (w.report, w.device)).collect(),
                });
            }
        }
    }
    Plan {
        outcomes,
        moves,
        resets,
        fallbacks,
    }
}

struct Want<'a> {
    report: usize,
    device: &'a str,
    rollout: i64,
    to: DeviceState,
    reason: Option<String>,
    now: i64,
}
