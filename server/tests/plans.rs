//! PostgreSQL plans that never depend on autovacuum: the statements a rollout runs per device
//! and per sweep tick, explained on a freshly created rollout over 20,000 targets (only the
//! statistics the store itself takes of the key's columns when it inserts a rollout's targets,
//! as on a server with autovacuum off), again mid-rollout, and again after an `ANALYZE` that
//! has gone stale. A statement about one device must be served by the primary
//! key, one about a rollout's devices in some states by the state index; a sequential scan of
//! `rollout_devices` fails either. The reset gate's lookup of a device's `confirmed` event must
//! probe `device_events` by device: on SQLite through its key (device_id, event_id) (SQLite
//! indexes only `installed` and `rolled_back` events by more, migrations/sqlite/
//! 0014_events_partial_indexes.sql), on PostgreSQL through its partial index of `confirmed`
//! events (migrations/postgres/0016_events_partial_indexes.sql), never a sequential scan;
//! and SQLite's kept exposure must probe its partial index of `installed` events by rollout and
//! device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_server::domain::DeviceState;
use fota_server::store::{hot_statements, installed_exposure_sql, now_ms, Backend, HotIndex};
use fota_testkit::{on_postgres, provision_devices, release, spawn_app, start_rollout, Db};
use serde_json::{json, Value};
use sqlx::{Connection as _, Row as _};

const TARGETS: usize = 20_000;

/// PostgreSQL only (SQLite plans from its own rules, not from statistics it lacks); named
/// `...::postgres` so that scripts/test skips it, reported as skipped, without a server.
mod hot_statements_use_their_index_with_or_without_statistics {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "PostgreSQL: run with FOTA_TEST_POSTGRES_URL set (scripts/test does)"]
    async fn postgres() {
        super::hot_statements_use_their_index().await;
    }
}

/// SQLite plans from its own rules, with no statistics at all, but which index it takes still
/// depends on the indexes there are: a state index that covered `device_id` made it serve the
/// group commit's many-device move by scanning the rollout's whole part of that index (see
/// migrations/sqlite/0011_evaluation_covering.sql). Each hot statement must read
/// `rollout_devices` through its index. (The evaluations' counts no longer read it: triggers
/// keep them, `store/state_counts.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_statements_use_their_index_on_sqlite() {
    let app = spawn_app(Db::Sqlite).await;
    let devices = provision_devices(&app, "PS", 2_000, "f429").await;
    let rel = release(&app, "f429", "2.0.0", 1).await;
    let r = start_rollout(
        &app,
        json!({"release_id": rel, "stages": [{"percent": 100.0, "bake_s": 0, "min_sample": 1, "max_failure_rate": 0.5, "confirm_deadline_s": 600}]}),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    let mut db = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .unwrap();
    let mut failures = Vec::new();
    for s in hot_statements(Backend::Sqlite, id, &devices[7].0, now_ms()) {
        // `$n` as its literal, highest first so that `$1` does not eat the front of `$10`.
        let mut sql = s.sql.clone();
        for (n, arg) in s.args.iter().enumerate().rev() {
            sql = sql.replace(&format!("${}", n + 1), arg);
        }
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(&mut db)
            .await
            .unwrap_or_else(|e| panic!("explain {}: {e}", s.name))
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        if let HotIndex::PrimaryKeyFrom(first) = s.index {
            // SQLite lists a join's tables in the order it reads them.
            let want = format!("USING INDEX {first} ");
            if !plan.first().is_some_and(|d| d.contains(&want)) {
                failures.push(format!(
                    "{} is read first through {plan:?}, not {first}",
                    s.name
                ));
            }
        }
        let details: Vec<&String> = plan
            .iter()
            // The store's queries call it `rd` where they join it.
            .filter(|d| {
                d.split_whitespace()
                    .any(|w| w == "rollout_devices" || w == "rd")
            })
            .collect();
        let want = match s.index {
            HotIndex::PrimaryKey | HotIndex::PrimaryKeyFrom(_) => {
                "INDEX sqlite_autoindex_rollout_devices_1 "
            }
            HotIndex::State | HotIndex::AllTargets => "INDEX rollout_devices_state ",
        };
        if details.is_empty() || details.iter().any(|d| !d.contains(want)) {
            failures.push(format!(
                "{} reads rollout_devices through {details:?}, not {want}",
                s.name
            ));
        }
        // The reset gate's lookup of a device's `confirmed` event: its few events through the
        // key, never the rollout's part of the index by time.
        if s.sql.contains("device_events") {
            let events: Vec<&String> = plan
                .iter()
                .filter(|d| d.contains("device_events") || d.contains(" c "))
                .collect();
            let want = "USING INDEX sqlite_autoindex_device_events_1 (device_id=?";
            if events.is_empty() || events.iter().any(|d| !d.contains(want)) {
                failures.push(format!(
                    "{} reads device_events through {events:?}, not {want}",
                    s.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The reset gate's exposure (each target's first `installed` event of the rollout) is kept by
/// triggers as events are stored (migrations/sqlite/0015_rollout_exposure.sql): on SQLite each
/// `installed` event asks whether its device had one of the rollout before, a probe that must
/// go to the partial index of `installed` events by rollout and device, not a scan of the
/// rollout's part of it or of the device's events. The definition the kept figure is tested
/// against (`installed_exposure_sql`) still reads that index alone, in order, unsorted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposure_reads_the_installed_events_index_on_sqlite() {
    let app = spawn_app(Db::Sqlite).await;
    let mut db = sqlx::SqliteConnection::connect(&app.database_url)
        .await
        .unwrap();
    // The insert trigger's probe, as the trigger writes it, with a row's values for NEW.
    let probe = sqlite_plan(
        &mut db,
        "SELECT MIN(received_at) AS t FROM device_events \
         WHERE rollout_id = 1 AND kind = 'installed' AND device_id = 'd' AND event_id <> 7",
    )
    .await;
    assert!(
        probe
            .iter()
            .any(|d| d.contains("INDEX device_events_installed (rollout_id=? AND device_id=?)")),
        "the trigger's probe reads {probe:?}, not device_events_installed by rollout and device"
    );
    let plan = sqlite_plan(&mut db, &installed_exposure_sql().replace("$1", "1")).await;
    assert!(
        plan.iter()
            .any(|d| d.contains("COVERING INDEX device_events_installed (rollout_id=?)")),
        "the exposure reads {plan:?}, not device_events_installed"
    );
    assert!(
        !plan.iter().any(|d| d.contains("TEMP B-TREE")),
        "the exposure sorts: {plan:?}"
    );
}

/// SQLite's plan of `sql`: each step's detail.
async fn sqlite_plan(db: &mut sqlx::SqliteConnection, sql: &str) -> Vec<String> {
    sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

async fn hot_statements_use_their_index() {
    on_postgres(async {
        let app = spawn_app(Db::Postgres).await;
        let mut db = sqlx::PgConnection::connect(&app.database_url).await.unwrap();
        // Whatever the server's autovacuum setting, nothing analyses this table behind the
        // test's back: the plans below are the ones a server without autovacuum gets.
        sqlx::query("ALTER TABLE rollout_devices SET (autovacuum_enabled = false)")
            .execute(&mut db)
            .await
            .unwrap();
        let devices = provision_devices(&app, "PL", TARGETS, "f429").await;
        let rel = release(&app, "f429", "2.0.0", 1).await;
        let stage = |percent: f64| {
            json!({"percent": percent, "bake_s": 0, "min_sample": 1, "max_failure_rate": 0.5, "confirm_deadline_s": 600})
        };
        let r = start_rollout(
            &app,
            json!({"release_id": rel, "stages": [stage(100.0)]}),
        )
        .await;
        assert_eq!(r["targets"], TARGETS);
        let id = r["id"].as_i64().unwrap();
        // The store analyses the key's columns once the targets are in (nothing else does here):
        // a group commit's many-device move needs to know how many devices the rollout has.
        let analysed: Vec<String> = sqlx::query(
            "SELECT attname FROM pg_stats WHERE tablename = 'rollout_devices' ORDER BY attname",
        )
        .fetch_all(&mut db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("attname"))
        .collect();
        assert_eq!(
            analysed,
            ["device_id", "rollout_id"],
            "the store takes statistics of the new rollout's targets, of its key's columns only"
        );
        check(&mut db, id, &devices[7].0, "fresh rollout, no state statistics", false).await;

        // Mid-rollout: a quarter offered, some of them downloading.
        let store = &app.server.state.store;
        let now = now_ms();
        for (i, (device, _)) in devices.iter().enumerate().take(TARGETS / 4) {
            assert!(store.offer_device(id, device, now, 600).await.unwrap());
            if i % 2 == 0 {
                store
                    .set_device_state(id, device, DeviceState::Downloading, None, now)
                    .await
                    .unwrap();
            }
        }
        check(&mut db, id, &devices[8].0, "mid-rollout, no state statistics", false).await;

        // Statistics taken now, then stale: the next quarter moves on after the ANALYZE.
        sqlx::query("ANALYZE rollout_devices")
            .execute(&mut db)
            .await
            .unwrap();
        for (device, _) in devices.iter().skip(TARGETS / 4).take(TARGETS / 4) {
            assert!(store.offer_device(id, device, now, 600).await.unwrap());
        }
        check(&mut db, id, &devices[9].0, "stale statistics", true).await;
    })
    .await;
}

/// Explain every hot statement as a custom and as a generic plan (sqlx prepares statements;
/// PostgreSQL may switch a prepared statement to its generic plan after five runs).
///
/// Two exceptions. With statistics only: counting the eligible targets below a threshold needs
/// each one's rank, which only the table holds, so once statistics say (rightly or not) that
/// most of the table is this rollout's eligible targets, a sequential scan reads no more than
/// the state index would (with or without a limit on the count). It runs once per gate
/// evaluation, not per device. And a statement
/// over all the rollout's targets ([`HotIndex::AllTargets`]) may scan the table, which here is
/// all this rollout's, as the key's statistics say.
async fn check(
    db: &mut sqlx::PgConnection,
    rollout: i64,
    device: &str,
    when: &str,
    with_statistics: bool,
) {
    let mut failures = Vec::new();
    for (n, s) in hot_statements(Backend::Postgres, rollout, device, now_ms())
        .iter()
        .enumerate()
    {
        let name = format!("hot_{n}");
        sqlx::raw_sql(&format!("DEALLOCATE ALL; PREPARE {name} AS {}", s.sql))
            .execute(&mut *db)
            .await
            .unwrap_or_else(|e| panic!("prepare {}: {e}", s.name));
        for mode in ["force_custom_plan", "force_generic_plan"] {
            // EXPLAIN of an UPDATE does not run it (no ANALYZE option).
            let plan: String = sqlx::raw_sql(&format!(
                "SET plan_cache_mode = {mode}; EXPLAIN (FORMAT JSON) EXECUTE {name}({})",
                s.args.join(", ")
            ))
            .fetch_all(&mut *db)
            .await
            .unwrap()
            .last()
            .expect("a plan")
            // json arrives as its text over the simple protocol.
            .try_get_unchecked::<String, _>(0)
            .unwrap();
            let plan: Value = serde_json::from_str(&plan).unwrap();
            let mut scans = Vec::new();
            scans_of(&plan[0]["Plan"], "rollout_devices", &mut scans);
            if s.sql.contains("device_events") {
                // The reset gate's lookup of a device's `confirmed` event: a probe of the
                // partial index of `confirmed` events by device (migrations/postgres/0016),
                // not a scan, nor the key (a visit to the table for each of the device's
                // events).
                let mut events = Vec::new();
                scans_of(&plan[0]["Plan"], "device_events", &mut events);
                let by_device = |index: &str| index == "device_events_confirmed";
                if events.is_empty() || events.iter().any(|(_, index)| !by_device(index)) {
                    failures.push(format!(
                        "{when}, {mode}: {} reads device_events through {events:?}, not by device",
                        s.name
                    ));
                }
            }
            let want = match s.index {
                HotIndex::PrimaryKey | HotIndex::PrimaryKeyFrom(_) => "rollout_devices_pkey",
                HotIndex::State | HotIndex::AllTargets => "rollout_devices_state",
            };
            let scan_ok = (with_statistics && s.name.starts_with("eligible in cohort"))
                || s.index == HotIndex::AllTargets;
            let bad: Vec<&(String, String)> = scans
                .iter()
                .filter(|(kind, index)| index != want && !(scan_ok && kind == "Seq Scan"))
                .collect();
            if scans.is_empty() || !bad.is_empty() {
                failures.push(format!(
                    "{when}, {mode}: {} reads rollout_devices through {scans:?}, not {want}",
                    s.name
                ));
            }
        }
    }
    sqlx::raw_sql("DEALLOCATE ALL; RESET plan_cache_mode")
        .execute(&mut *db)
        .await
        .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (node type, index or "") of every scan of `table` in a JSON plan.
fn scans_of(node: &Value, table: &str, out: &mut Vec<(String, String)>) {
    let kind = node["Node Type"].as_str().unwrap_or_default();
    let relation = node["Relation Name"].as_str();
    let index = node["Index Name"].as_str();
    let on_target = relation == Some(table)
        || (kind == "Bitmap Index Scan" && index.is_some_and(|i| i.starts_with(table)));
    if on_target && kind != "ModifyTable" && kind != "Bitmap Heap Scan" {
        out.push((kind.to_string(), index.unwrap_or("").to_string()));
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            scans_of(child, table, out);
        }
    }
}
