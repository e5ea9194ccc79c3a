//! Offers in the group commit (`group_commit.rs`): the offers of a batch, grouped by rollout
//! and deadline window, each group one `UPDATE` (on SQLite `device_id IN (...)` per chunk, on
//! PostgreSQL `device_id = ANY(array)`), in device order, after the batch's reports.
//!
//! At 100,000 devices an offer per device, each its own write, was most of the SQLite write
//! connection's turns in a rollout's last stage; in the group commit they ride the batches
//! that reports make anyway (docs/BENCHMARKS.md).

use super::db::{Backend, StoreError};
use super::rollout_devices::{batch_offer_sql, DeviceParams};
use super::sql::{device_chunks, padded, pg_array};
use super::sqlite_writer::{by_size, positional, BySize};
use sqlx::Row as _;
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

/// One offer waiting in a batch: `device` eligible -> offered in `rollout`, the deadline
/// `window_ms` after the offer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OfferWant<'a> {
    pub(crate) rollout: i64,
    pub(crate) device: &'a str,
    pub(crate) now: i64,
    pub(crate) window_ms: i64,
}

/// One offer statement: `batch_offer_sql(..)` bound with rollout, now, deadline and the devices
/// (on SQLite one parameter each, on PostgreSQL one array).
#[derive(Debug, PartialEq, Eq)]
struct OfferGroup<'a> {
    rollout: i64,
    now: i64,
    deadline: i64,
    /// (offer index, device), in device order.
    devices: Devices<'a>,
}

/// (offer index, device) pairs.
type Devices<'a> = Vec<(usize, &'a str)>;

/// The statements for `offers`: one group per (rollout, window) in that order, its devices in
/// device order (the lock order of every batch) and in the statements that name them
/// ([`device_chunks`]), the latest `now` of the group as its offer time. A device asked twice in one batch appears once: its
/// first offer makes the move, the later ones find it made (as they would one after another).
fn groups<'a>(backend: Backend, offers: &[OfferWant<'a>]) -> Vec<OfferGroup<'a>> {
    // Per (rollout, window), in key order: the latest `now` and the devices.
    let mut by_key: BTreeMap<(i64, i64), (i64, Devices<'a>)> = BTreeMap::new();
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    for (i, o) in offers.iter().enumerate() {
        let (latest, devices) = by_key
            .entry((o.rollout, o.window_ms))
            .or_insert((o.now, Vec::new()));
        *latest = (*latest).max(o.now);
        if seen.insert((o.rollout, o.device)) {
            devices.push((i, o.device));
        }
    }
    let mut out = Vec::new();
    for ((rollout, window_ms), (at, mut devices)) in by_key {
        devices.sort_by(|a, b| a.1.cmp(b.1));
        for chunk in device_chunks(backend, &devices) {
            out.push(OfferGroup {
                rollout,
                now: at,
                deadline: at.saturating_add(window_ms),
                devices: chunk.to_vec(),
            });
        }
    }
    out
}

/// Write `offers` in `tx`; per offer, whether it moved its device.
pub(super) async fn write(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    offers: &[OfferWant<'_>],
) -> Result<Vec<bool>, StoreError> {
    let mut offered = vec![false; offers.len()];
    for g in groups(backend, offers) {
        let moved: HashSet<String> = sqlx::query(&batch_offer_sql(DeviceParams::Array))
            .bind(g.rollout)
            .bind(g.now)
            .bind(g.deadline)
            .bind(pg_array(g.devices.iter().map(|(_, d)| Some(*d))))
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.try_get("device_id"))
            .collect::<Result<_, _>>()?;
        record(&g, &moved, &mut offered);
    }
    Ok(offered)
}

/// [`write`] on the SQLite writer's connection, inside its transaction.
pub(super) fn write_sqlite(
    tx: &rusqlite::Transaction<'_>,
    offers: &[OfferWant<'_>],
) -> Result<Vec<bool>, StoreError> {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    static TEXTS: BySize<String> = [const { OnceLock::new() }; 9];
    let mut offered = vec![false; offers.len()];
    for g in groups(Backend::Sqlite, offers) {
        let n = g.devices.len().next_power_of_two();
        let sql = by_size(&TEXTS, n, |n| {
            positional(&batch_offer_sql(DeviceParams::Each(n)))
        });
        let mut st = tx.prepare_cached(&sql)?;
        let mut values = vec![
            ToSqlOutput::Borrowed(ValueRef::Integer(g.rollout)),
            ToSqlOutput::Borrowed(ValueRef::Integer(g.now)),
            ToSqlOutput::Borrowed(ValueRef::Integer(g.deadline)),
        ];
        values.extend(
            padded(&g.devices).map(|&(_, d)| ToSqlOutput::Borrowed(ValueRef::Text(d.as_bytes()))),
        );
        let moved: HashSet<String> = st
            .query_map(rusqlite::params_from_iter(values), |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        record(&g, &moved, &mut offered);
    }
    Ok(offered)
}

fn record(g: &OfferGroup<'_>, moved: &HashSet<String>, offered: &mut [bool]) {
    for (i, device) in &g.devices {
        offered[*i] = moved.contains(*device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(rollout: i64, device: &str, now: i64, window_ms: i64) -> OfferWant<'_> {
        OfferWant {
            rollout,
            device,
            now,
            window_ms,
        }
    }

    #[test]
    fn offers_group_by_rollout_and_window_in_device_order_once_per_device() {
        let offers = [
            want(2, "b", 10, 5_000),
            want(1, "z", 11, 5_000),
            want(2, "a", 13, 5_000),
            want(2, "b", 14, 5_000),
            want(2, "c", 12, 9_000),
        ];
        let got = groups(Backend::Postgres, &offers);
        assert_eq!(
            got,
            vec![
                OfferGroup {
                    rollout: 1,
                    now: 11,
                    deadline: 5_011,
                    devices: vec![(1, "z")],
                },
                OfferGroup {
                    rollout: 2,
                    now: 14,
                    deadline: 5_014,
                    devices: vec![(2, "a"), (0, "b")],
                },
                OfferGroup {
                    rollout: 2,
                    now: 12,
                    deadline: 9_012,
                    devices: vec![(4, "c")],
                },
            ]
        );
    }

    #[test]
    fn a_large_group_splits_into_statements_sqlite_binds() {
        let names: Vec<String> = (0..700).map(|i| format!("d{i:04}")).collect();
        let offers: Vec<_> = names.iter().map(|d| want(1, d, 1, 1)).collect();
        let sizes: Vec<usize> = groups(Backend::Sqlite, &offers)
            .iter()
            .map(|g| g.devices.len())
            .collect();
        // At most 256 a statement, in order, each list padded to a power of two when bound
        // (sql::padded) unless another statement costs less than the repeats: 188 would repeat
        // 68 devices, so it is 128 and 60 (4 repeats).
        assert_eq!(sizes, [256, 256, 128, 60]);
    }
}
