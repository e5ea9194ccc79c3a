//! Group commit of device reports and offers: reports and offers that arrive together are
//! stored in one transaction (the reports' events, the device state moves those events make,
//! then the offers' moves), and each caller is answered only once the transaction holding its
//! write has committed.
//!
//! A caller queues its write and waits. A writer task takes everything queued, writes it in one
//! transaction, answers every caller of the batch and takes the next batch, until the queue is
//! empty; writes that arrive while a batch commits form the next one. SQLite has one writer
//! task (it has one writer anyway), PostgreSQL a few. The writer is a spawned task, so a caller
//! that goes away (its client disconnected) takes nobody's batch down with it.
//!
//! Idempotency is by (device, event id), across batches and retries: an event already stored, or
//! stored earlier in the same batch, counts as a duplicate and moves nothing again. An offer
//! moves a device only from `eligible` (`offer_batch.rs`), so a device is offered once however
//! often it asks. A batch that fails is retried write by write, so one write's error is its own.

use super::db::{Backend, Store, StoreError};
use super::group_queue::{Job, Pending, ReportOutcome};
use super::offer_batch::{self, OfferWant};
use super::rollout_devices::{batch_move_sql, DeviceParams};
use super::sql::{device_chunks, padded, padded_chunks, pg_array, pg_array_param, STATEMENT_ROWS};
use super::sqlite_writer::{by_size, positional, BySize};
use crate::domain::DeviceState;
use fota_protocol::messages::Event;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row as _};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use tokio::sync::oneshot;

/// Writes one transaction holds at most.
const MAX_BATCH: usize = 1024;

/// A running writer. It gives its place up itself, under the queue's lock, when it finds the
/// queue empty; should its task end any other way (a panic, the runtime shutting down), dropping
/// the slot gives the place up so that the next write starts a new writer.
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
        self.queue_and_wait(device_id, now, "report", |reply| Job::Report {
            events: events.to_vec(),
            reply,
        })
        .await
    }

    /// Offer: eligible -> offered, only while the rollout is active and the device's rank is
    /// inside the current cohort, with a deadline `confirm_deadline_s` from now, in the next
    /// group commit. Returns, once that transaction has committed, whether this call made the
    /// offer.
    pub async fn offer_device(
        &self,
        rollout_id: i64,
        device_id: &str,
        now: i64,
        confirm_deadline_s: i64,
    ) -> Result<bool, StoreError> {
        self.queue_and_wait(device_id, now, "offer", |reply| Job::Offer {
            rollout: rollout_id,
            window_ms: confirm_deadline_s.saturating_mul(1000),
            reply,
        })
        .await
    }

    /// Queue `device`'s write (`job`, given the channel its answer comes back on) for the next
    /// group commit, and wait for that answer; `what` names the write if no answer comes.
    async fn queue_and_wait<T>(
        &self,
        device: &str,
        now: i64,
        what: &str,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue_write(Pending {
            device: device.to_string(),
            now,
            job: job(reply),
        })?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the {what} writer stopped before committing"
            )))
        })
    }

    /// Queue `p` for the next group commit, starting a writer if it needs one.
    fn queue_write(&self, p: Pending) -> Result<(), StoreError> {
        // Refuse at once while the database is known to be down (as every statement does).
        self.pool()?;
        let start_writer = {
            let mut q = self
                .group_commit()
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            q.pending.push(p);
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
        Ok(())
    }
}

async fn write_batches(mut slot: WriterSlot) {
    let store = slot.store.clone();
    // PostgreSQL: the connection this writer's batches run on, kept from one batch to the next
    // while the queue is busy, and back in the pool when the writer stops.
    let mut conn = None;
    loop {
        let batch: Vec<Pending> = {
            let mut q = store
                .group_commit()
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = q.pending.len().min(MAX_BATCH);
            if n == 0 {
                // Still holding the lock: a write queued after this sees writers - 1 and
                // starts a writer of its own (the slot is released below, under the lock).
                q.writers = q.writers.saturating_sub(1);
                slot.released = true;
                return;
            }
            q.pending.drain(..n).collect()
        };
        let (n_reports, n_offers) = {
            let (reports, offers) = split(&batch);
            (reports.len() as u64, offers.len() as u64)
        };
        let (batch, result) = store.write_pending(batch, &mut conn).await;
        match result {
            Ok((outcomes, offered)) => {
                let gc = store.group_commit();
                gc.batches.fetch_add(1, Ordering::Relaxed);
                gc.reports.fetch_add(n_reports, Ordering::Relaxed);
                gc.offers.fetch_add(n_offers, Ordering::Relaxed);
                let (mut outcomes, mut offered) = (outcomes.into_iter(), offered.into_iter());
                for p in batch {
                    match p.job {
                        Job::Report { reply, .. } => {
                            let _ = reply.send(Ok(outcomes.next().unwrap_or_default()));
                        }
                        Job::Offer { reply, .. } => {
                            let _ = reply.send(Ok(offered.next().unwrap_or(false)));
                        }
                    }
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(p) = batch.into_iter().next() {
                    match p.job {
                        Job::Report { reply, .. } => drop(reply.send(Err(e))),
                        Job::Offer { reply, .. } => drop(reply.send(Err(e))),
                    }
                }
            }
            Err(_) => {
                // One write's error must not fail the others: each alone.
                for p in batch {
                    let (mut one, result) = store.write_pending(vec![p], &mut conn).await;
                    let Some(p) = one.pop() else {
                        // Gone with the writer: its caller hears that the writer stopped.
                        continue;
                    };
                    match p.job {
                        Job::Report { reply, .. } => {
                            let _ =
                                reply.send(result.map(|(mut o, _)| o.pop().unwrap_or_default()));
                        }
                        Job::Offer { reply, .. } => {
                            let _ = reply.send(result.map(|(_, f)| f.first() == Some(&true)));
                        }
                    }
                }
            }
        }
    }
}

/// One queued report: the device, its events and the time it arrived.
type ReportWant<'a> = (&'a str, &'a [Event], i64);

/// A batch's reports and offers, each in queue order.
fn split(batch: &[Pending]) -> (Vec<ReportWant<'_>>, Vec<OfferWant<'_>>) {
    let mut reports = Vec::new();
    let mut offers = Vec::new();
    for p in batch {
        match &p.job {
            Job::Report { events, .. } => {
                reports.push((p.device.as_str(), events.as_slice(), p.now))
            }
            Job::Offer {
                rollout, window_ms, ..
            } => offers.push(OfferWant {
                rollout: *rollout,
                device: p.device.as_str(),
                now: p.now,
                window_ms: *window_ms,
            }),
        }
    }
    (reports, offers)
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

    /// Offers written by group commits so far.
    pub fn group_commit_offers(&self) -> u64 {
        self.group_commit().offers.load(Ordering::Relaxed)
    }

    /// Write reports in one transaction, as the group commit's writer does, without queueing
    /// them: the tests' way to put several reports in one batch.
    #[cfg(test)]
    pub(crate) async fn write_reports(
        &self,
        reports: &[ReportWant<'_>],
    ) -> Result<Vec<ReportOutcome>, StoreError> {
        let batch = reports
            .iter()
            .map(|(device, events, now)| Pending {
                device: device.to_string(),
                now: *now,
                job: Job::Report {
                    events: events.to_vec(),
                    reply: oneshot::channel().0,
                },
            })
            .collect();
        Ok(self.write_pending(batch, &mut None).await.1?.0)
    }

    /// Write `batch` in one transaction and hand it back with the result: every event once per
    /// (device, event id), then the state moves of the events stored now, in each device's
    /// order, then the offers. One outcome per report, and per offer whether it moved its
    /// device.
    ///
    /// On SQLite the transaction runs on the report writer's own connection, on a blocking
    /// thread, while this holds the write pool's one connection: the batch takes its turn with
    /// every other write, as it would on that connection (`sqlite_writer.rs`). The batch goes
    /// to that thread and back as it is, instead of being copied for it: the writer is the one
    /// serial stage of report ingest, so every copy it makes is a copy no other core can make
    /// for it. Should the writer fail before or while running the batch (the write turn
    /// refused, a panic), the batch comes back whole all the same, so a failed batch is still
    /// retried write by write.
    ///
    /// On PostgreSQL the transaction runs on `conn`, acquired from the write pool if it holds
    /// none. A writer keeps its connection from batch to batch: sqlx pings a connection before
    /// it hands it out and again when it takes it back, two round trips of the seven or so a
    /// batch of reports would make (BEGIN, the events, the moves, COMMIT). A failed batch
    /// leaves `conn` empty, so that the retry starts on a connection sqlx has checked.
    async fn write_pending(
        &self,
        batch: Vec<Pending>,
        conn: &mut Option<PoolConnection<Any>>,
    ) -> (
        Vec<Pending>,
        Result<(Vec<ReportOutcome>, Vec<bool>), StoreError>,
    ) {
        if self.backend() != Backend::Sqlite {
            let (reports, offers) = split(&batch);
            let result = self.write_batch_pg(conn, &reports, &offers).await;
            if result.is_err() {
                *conn = None;
            }
            return (batch, result);
        }
        let shared = std::sync::Arc::new(batch);
        let mine = std::sync::Arc::clone(&shared);
        let on_sqlite = self.on_sqlite_writer(move |conn| {
            let (reports, offers) = split(&mine);
            write_batch_sqlite(conn, &reports, &offers)
        });
        let result = on_sqlite.await.unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "the SQLite report writer is not open".to_string(),
            ))
        });
        // `on_sqlite_writer` has run the closure or dropped it by now, and its copy with it.
        let batch = std::sync::Arc::try_unwrap(shared).unwrap_or_default();
        (batch, result)
    }

    /// [`Store::write_pending`] on PostgreSQL.
    async fn write_batch_pg(
        &self,
        conn: &mut Option<PoolConnection<Any>>,
        reports: &[ReportWant<'_>],
        offers: &[OfferWant<'_>],
    ) -> Result<(Vec<ReportOutcome>, Vec<bool>), StoreError> {
        let conn = match conn {
            Some(conn) => conn,
            None => conn.insert(self.writer()?.acquire().await?),
        };
        // PostgreSQL: each statement binds its rows as arrays, so the events are one statement
        // and each group of moves one, whatever the batch's size.
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        // 1. The events. RETURNING names the rows inserted now; the rest were there already.
        let rows = event_rows(reports);
        let first = first_rows(&rows);
        let mut new = vec![false; rows.len()];
        if !rows.is_empty() {
            let found = sqlx::query(&insert_events_pg_sql())
                .bind(pg_array(rows.iter().map(|r| Some(r.device))))
                .bind(pg_array(rows.iter().map(|r| Some(r.id.to_string()))))
                .bind(pg_array(rows.iter().map(|r| Some(r.kind))))
                .bind(pg_array(
                    rows.iter().map(|r| r.rollout.map(|v| v.to_string())),
                ))
                .bind(pg_array(rows.iter().map(|r| r.version.as_deref())))
                .bind(pg_array(rows.iter().map(|r| r.reason.as_deref())))
                .bind(pg_array(rows.iter().map(|r| Some(r.now.to_string()))))
                .fetch_all(&mut *tx)
                .await?;
            for r in found {
                let device: String = r.try_get("device_id")?;
                let id: i64 = r.try_get("event_id")?;
                if let Some(&i) = first.get(&(device.as_str(), id)) {
                    new[i] = true;
                }
            }
        }
        // 2. What the new events ask for; 3. the moves, in order.
        let mut plan = plan(self.backend(), reports, &new);
        for m in &plan.moves {
            let Some(text) = batch_move_sql(m.to, DeviceParams::Array) else {
                continue;
            };
            let moved: HashSet<String> = sqlx::query(&text)
                .bind(m.rollout)
                .bind(m.reason.as_deref())
                .bind(m.now)
                .bind(pg_array(m.devices.iter().map(|(_, d)| Some(*d))))
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("device_id"))
                .collect::<Result<_, _>>()?;
            m.record(&moved, &mut plan.outcomes);
        }
        super::resets::insert(&mut tx, &plan.resets).await?;
        super::patches::record_fallbacks(&mut tx, &plan.fallbacks).await?;
        let offered = offer_batch::write(&mut tx, self.backend(), offers).await?;
        tx.commit().await?;
        Ok((plan.outcomes, offered))
    }
}

/// [`Store::write_pending`] on the SQLite report writer's connection, from a blocking thread:
/// the same statements, bound by position, in one `BEGIN IMMEDIATE` transaction.
fn write_batch_sqlite(
    conn: &mut rusqlite::Connection,
    reports: &[ReportWant<'_>],
    offers: &[OfferWant<'_>],
) -> Result<(Vec<ReportOutcome>, Vec<bool>), StoreError> {
    // Values bind borrowed from the batch: the writer copies nothing it binds.
    use rusqlite::types::{ToSqlOutput, ValueRef};
    fn text(v: Option<&str>) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(v.map_or(ValueRef::Null, |s| ValueRef::Text(s.as_bytes())))
    }
    fn int(v: Option<i64>) -> ToSqlOutput<'static> {
        ToSqlOutput::Borrowed(v.map_or(ValueRef::Null, ValueRef::Integer))
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // 1. The events, up to 256 a statement (binding by position, the parameter cap that sqlx's
    // by-name binding needs, `SQLITE_MAX_PARAMS`, does not apply here), a statement's rows
    // padded to a power of two by repeating its last row where that is cheaper than another
    // statement (`padded_chunks`): the copy conflicts with the row it repeats, so it stores
    // nothing, fires no trigger and is not in RETURNING.
    let rows = event_rows(reports);
    let first = first_rows(&rows);
    let mut new = vec![false; rows.len()];
    for chunk in padded_chunks(&rows, 256, STATEMENT_ROWS) {
        let n = chunk.len().next_power_of_two();
        let mut st = tx.prepare_cached(&insert_events_sqlite(n))?;
        let mut values = Vec::with_capacity(n * 7);
        for r in padded(chunk) {
            values.extend([
                text(Some(r.device)),
                int(Some(r.id)),
                text(Some(r.kind)),
                int(r.rollout),
                text(r.version.as_deref()),
                text(r.reason.as_deref()),
                int(Some(r.now)),
            ]);
        }
        let mut found = st.query(rusqlite::params_from_iter(values))?;
        while let Some(row) = found.next()? {
            let device = row.get_ref(0)?.as_str().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?;
            if let Some(&i) = first.get(&(device, row.get::<_, i64>(1)?)) {
                new[i] = true;
            }
        }
    }
    // 2. What the new events ask for; 3. the moves, in order, each group's devices in as few
    // statements as pay (`device_chunks`), each `IN` list padded the same way.
    let mut plan = plan(Backend::Sqlite, reports, &new);
    for m in &plan.moves {
        let Some(sql) = move_sqlite(m.to, m.devices.len().next_power_of_two()) else {
            continue;
        };
        let mut st = tx.prepare_cached(&sql)?;
        let mut values = vec![
            int(Some(m.rollout)),
            text(m.reason.as_deref()),
            int(Some(m.now)),
        ];
        values.extend(padded(&m.devices).map(|&(_, d)| text(Some(d))));
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
    let offered = offer_batch::write_sqlite(&tx, offers)?;
    tx.commit()?;
    Ok((plan.outcomes, offered))
}

/// One event row to insert.
pub(super) struct EventRow<'a> {
    pub(super) device: &'a str,
    /// u64 ids above i64::MAX wrap to negative: still unique per device.
    pub(super) id: i64,
    pub(super) kind: &'static str,
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
                kind: e.kind.name(),
                rollout: e.rollout_id.map(|r| r as i64),
                version: e.version.map(|v| v.to_string()),
                reason: super::resets::stored_reason(e),
                now: *now,
            })
        })
        .collect()
}

/// Where each (device, event id) of `rows` first occurs. An event the INSERT's RETURNING names
/// was stored now, as its first occurrence in the batch; a later one in the same batch is a
/// duplicate, as is one stored before.
pub(super) fn first_rows<'a>(rows: &[EventRow<'a>]) -> HashMap<(&'a str, i64), usize> {
    let mut first = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        first.entry((r.device, r.id)).or_insert(i);
    }
    first
}

/// [`insert_events_sql`] with SQLite's positional placeholders.
fn insert_events_sqlite(n: usize) -> Cow<'static, str> {
    static TEXTS: BySize<String> = [const { OnceLock::new() }; 9];
    match by_size(&TEXTS, n, |n| positional(&insert_events_sql(n))) {
        Cow::Borrowed(text) => Cow::Borrowed(text),
        Cow::Owned(text) => Cow::Owned(text),
    }
}

/// [`batch_move_sql`] to `to` for `n` devices with SQLite's positional placeholders, by state
/// and size (the [`padded`] lists' sizes).
fn move_sqlite(to: DeviceState, n: usize) -> Option<Cow<'static, str>> {
    static TEXTS: [BySize<Option<String>>; DeviceState::ALL.len()] =
        [const { [const { OnceLock::new() }; 9] }; DeviceState::ALL.len()];
    let build = |n| batch_move_sql(to, DeviceParams::Each(n)).map(|t| positional(&t));
    match by_size(&TEXTS[to as usize], n, build) {
        Cow::Borrowed(text) => text.as_deref().map(Cow::Borrowed),
        Cow::Owned(text) => text.map(Cow::Owned),
    }
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

/// Every event of a batch in one INSERT on PostgreSQL: seven arrays ([`pg_array`], in
/// [`EventRow`]'s order) read side by side; RETURNING names the rows inserted now.
fn insert_events_pg_sql() -> String {
    let columns = ["text", "bigint", "text", "bigint", "text", "text", "bigint"];
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, element)| pg_array_param(i + 1, element))
        .collect();
    format!(
        "INSERT INTO device_events \
         (device_id, event_id, kind, rollout_id, version, reason, received_at) \
         SELECT * FROM unnest({}) \
         ON CONFLICT (device_id, event_id) DO NOTHING RETURNING device_id, event_id",
        arrays.join(", ")
    )
}

/// What a batch does once its events are in: the outcomes so far, the moves to make (in order),
/// and the resets and patch fallbacks to record.
pub(super) struct Plan<'a> {
    pub(super) outcomes: Vec<ReportOutcome>,
    pub(super) moves: Vec<Move<'a>>,
    pub(super) resets: Vec<(&'a str, super::resets::NewReset, i64)>,
    pub(super) fallbacks: Vec<(i64, &'a str, i64)>,
}

/// One state-move statement: `batch_move_sql(to, ..)` bound with rollout, reason, now and the
/// devices (on SQLite one parameter each, on PostgreSQL one array).
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

/// Given which of the batch's events were stored now (`new`, one flag per event in
/// [`event_rows`]' order: a first occurrence the INSERT stored), plan the rest of the batch:
/// the outcomes and the moves the new events ask for, in rounds: round k holds each
/// device's k-th move, so a device's moves apply in its order; inside a round, one statement per
/// (rollout, state, reason) over all its devices, in device order (the same lock order in every
/// batch), in chunks a statement binds.
pub(super) fn plan<'a>(
    backend: Backend,
    reports: &[(&'a str, &'a [Event], i64)],
    new: &[bool],
) -> Plan<'a> {
    let mut outcomes = vec![ReportOutcome::default(); reports.len()];
    // Per device, in order: (report index, rollout, to, reason, now).
    let mut wants: Vec<Vec<Want>> = Vec::new();
    let mut device_slot: HashMap<&str, usize> = HashMap::new();
    // Unexpected resets stored now, for the health gate's counts.
    let mut resets = Vec::new();
    // Delta patches given up for the full image: no patch for them again in the rollout.
    let mut fallbacks = Vec::new();
    let mut new = new.iter().copied();
    for (ri, (device, events, now)) in reports.iter().enumerate() {
        for e in events.iter() {
            if !new.next().unwrap_or(false) {
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
            for chunk in device_chunks(backend, &group) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use fota_protocol::messages::EventKind;
    use sqlx::Connection as _;

    async fn pid(conn: &mut PoolConnection<Any>) -> i32 {
        sqlx::query("SELECT pg_backend_pid() AS pid")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
            .get::<i32, _>("pid")
    }

    fn report(device: &str, id: u64) -> Vec<Pending> {
        vec![Pending {
            device: device.to_string(),
            now: 1,
            job: Job::Report {
                events: vec![Event {
                    id,
                    kind: EventKind::DownloadStarted,
                    rollout_id: None,
                    version: None,
                    reason: None,
                    reset: None,
                }],
                reply: oneshot::channel().0,
            },
        }]
    }

    /// The SQLite writer's texts, cached by state and size, are the texts built for the call,
    /// for every state, for the sizes `padded` lists have and for others.
    #[test]
    fn cached_sqlite_texts_are_the_built_ones() {
        // The second round reads what the first cached.
        for n in [1, 2, 3, 64, 100, 256, 257, 512, 1, 3, 64, 100, 256, 257] {
            let built = positional(&insert_events_sql(n));
            assert_eq!(*insert_events_sqlite(n), built, "events, {n}");
            for to in DeviceState::ALL {
                let built = batch_move_sql(to, DeviceParams::Each(n)).map(|t| positional(&t));
                let cached = move_sqlite(to, n);
                assert_eq!(cached.as_deref(), built.as_deref(), "{to:?}, {n}");
            }
        }
        assert!(matches!(insert_events_sqlite(64), Cow::Borrowed(_)));
        assert!(matches!(insert_events_sqlite(100), Cow::Owned(_)));
        assert!(matches!(
            move_sqlite(DeviceState::Confirmed, 128),
            Some(Cow::Borrowed(_))
        ));
    }

    /// A PostgreSQL writer keeps its connection from batch to batch. Should that connection die
    /// in between (a restart, the connection killed), the batch on it fails and leaves the
    /// writer without a connection, so that the retry runs on a new one from the pool, which
    /// it then keeps: one failed attempt, never a stuck writer.
    #[tokio::test]
    #[ignore = "PostgreSQL: run with FOTA_TEST_POSTGRES_URL set (scripts/test does)"]
    async fn a_writer_whose_connection_died_retries_on_a_new_one_and_keeps_it() {
        let base = std::env::var("FOTA_TEST_POSTGRES_URL")
            .expect("FOTA_TEST_POSTGRES_URL: this test needs a PostgreSQL server");
        sqlx::any::install_default_drivers();
        // Named as the test kit names its databases (fota_t_<run id>_...), so that `.ci/run`'s
        // cleanup drops it should this fail and keep it; the kit cannot link here (a second
        // copy of the server would mean two global allocators).
        let run = std::env::var("FOTA_TEST_RUN_ID")
            .ok()
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| format!("p{}", std::process::id()));
        let name = format!("fota_t_{run}_gc_{}", std::process::id());
        let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let (root, _) = base.rsplit_once('/').unwrap();
        let store = Store::connect(&format!("{root}/{name}")).await.unwrap();
        let mut conn = None;
        let (_, first) = store.write_pending(report("D-1", 1), &mut conn).await;
        assert_eq!(first.unwrap().0[0].stored, 1);
        let held = pid(conn.as_mut().expect("the writer keeps its connection")).await;
        let (_, second) = store.write_pending(report("D-1", 2), &mut conn).await;
        assert_eq!(second.unwrap().0[0].stored, 1);
        assert_eq!(
            pid(conn.as_mut().unwrap()).await,
            held,
            "the same connection"
        );

        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(held)
            .execute(&mut admin)
            .await
            .unwrap();
        let (batch, failed) = store.write_pending(report("D-1", 3), &mut conn).await;
        assert!(failed.is_err(), "a batch on a dead connection fails");
        assert!(conn.is_none(), "and leaves the writer without it");
        let (_, retried) = store.write_pending(batch, &mut conn).await;
        assert_eq!(retried.unwrap().0[0].stored, 1, "the retry stores it");
        assert_ne!(
            pid(conn.as_mut().unwrap()).await,
            held,
            "on a new connection"
        );
        let ids: Vec<i64> = store
            .device_events("D-1", 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(ids.len(), 3, "{ids:?}");

        drop(conn);
        store.close().await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
