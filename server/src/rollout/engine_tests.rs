//! The engine over a real [`Store`]: an in-memory SQLite database of its own per test, no HTTP,
//! no server. What the HTTP suites show end to end, here one decision at a time: a late joiner
//! is added to a running rollout and offered in its cohort; a device whose write protection
//! covers its target slot is skipped, never offered, never a failure; and a conditional update
//! that loses a race changes nothing and writes no audit entry, so two replicas decide once.

use super::control;
use super::engine::{DeviceView, Engine};
use super::launch::{self, RolloutRequest};
use super::plan::{Selector, StageSpec};
use crate::domain::auth::token_hash;
use crate::domain::{DeviceState, RolloutAction, RolloutState};
use crate::store::{
    now_ms, AuditEntry, NewDevice, NewRelease, ReleaseImage, RolloutChange, RolloutRow, Store,
};
use fota_protocol::messages::{BootState, CheckIn, Event, EventKind, RdpLevel};
use fota_protocol::{ImageVersion, SlotId};

const MODEL: &str = "f429";

/// A fresh, empty in-memory database (shared by the pool's connections, gone with the pool).
async fn store() -> Store {
    Store::in_memory().await
}

async fn provision(store: &Store, ids: &[&str], tags: &[&str]) {
    let devices: Vec<NewDevice> = ids
        .iter()
        .map(|id| NewDevice {
            id: id.to_string(),
            model: MODEL.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            token_hash: token_hash(id),
        })
        .collect();
    store
        .register_devices(&devices, "test", now_ms())
        .await
        .unwrap();
}

/// A release of `version` (images are rows only: the engine offers by address and size).
async fn release(store: &Store, version: &str, counter: u32) -> i64 {
    let image = |slot: &str, fill: char| ReleaseImage {
        slot: slot.to_string(),
        sha256: fill.to_string().repeat(64),
        size: 8192,
        key_hash: "00".repeat(32),
    };
    store
        .create_release(
            &NewRelease {
                model: MODEL.to_string(),
                version: version.parse().unwrap(),
                component: fota_protocol::messages::Component::Application,
                security_counter: counter,
                notes: String::new(),
                created_by: "test".to_string(),
                images: vec![image("a", 'a'), image("b", 'b')],
                image_bytes: vec![Vec::new(), Vec::new()],
            },
            now_ms(),
        )
        .await
        .unwrap()
        .id
}

async fn start(store: &Store, engine: &Engine, release: i64, stages: &[StageSpec]) -> RolloutRow {
    launch::start_rollout(
        store,
        engine,
        "test",
        RolloutRequest {
            release_id: release,
            selector: &Selector::default(),
            stages: Some(stages),
        },
    )
    .await
    .unwrap()
}

fn stage(percent: Option<f64>, devices: Option<u64>, min_sample: u64) -> StageSpec {
    StageSpec {
        percent,
        devices,
        bake_s: Some(0),
        min_sample: Some(min_sample),
        max_failure_rate: Some(0.5),
        confirm_deadline_s: Some(3600),
        auto_advance: Some(true),
        ..StageSpec::default()
    }
}

fn check_in(version: &str, wrp_mask: u32) -> CheckIn {
    CheckIn {
        model: MODEL.try_into().unwrap(),
        firmware_version: version.parse().unwrap(),
        running_slot: SlotId::A,
        boot_state: BootState::Confirmed,
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask,
        security_counter: None,
        stage1: None,
        delta_format: None,
    }
}

fn view<'a>(id: &'a str, tags: &'a [String], check_in: &'a CheckIn) -> DeviceView<'a> {
    DeviceView {
        id,
        model: MODEL,
        tags,
        check_in,
    }
}

async fn audit_count(store: &Store, rollout: i64, action: RolloutAction) -> usize {
    store
        .audit_log(Some(rollout), 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == action.audit_name())
        .count()
}

/// A device provisioned after the rollout started, matching its selector, joins at its first
/// check-in with its own rank, and is offered when that rank is inside the current cohort; a
/// late device already on the release does not join.
#[tokio::test]
async fn a_late_joiner_is_added_and_offered_in_its_cohort() {
    let store = store().await;
    let engine = Engine::default();
    provision(&store, &["D-1", "D-2"], &[]).await;
    let rel = release(&store, "2.0.0", 1).await;
    let r = start(&store, &engine, rel, &[stage(Some(100.0), None, 1)]).await;
    assert_eq!(r.targets, 2);

    provision(&store, &["LATE-1", "LATE-2"], &[]).await;
    assert_eq!(
        store.rollout_device_state(r.id, "LATE-1").await.unwrap(),
        None
    );
    let old = check_in("1.0.0", 0);
    let offer = engine
        .check_in(&store, &view("LATE-1", &[], &old))
        .await
        .unwrap()
        .expect("a late joiner inside a 100% cohort is offered");
    assert_eq!(offer.rollout_id, r.id as u64);
    assert_eq!(offer.slot, SlotId::B);
    assert_eq!(offer.version, "2.0.0".parse().unwrap());
    assert_eq!(
        store.rollout_device_state(r.id, "LATE-1").await.unwrap(),
        Some(DeviceState::Offered)
    );
    assert_eq!(store.rollout(r.id).await.unwrap().unwrap().targets, 3);

    // Already on the release: nothing to do, not a target.
    let current = check_in("2.0.0", 0);
    assert!(engine
        .check_in(&store, &view("LATE-2", &[], &current))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.rollout_device_state(r.id, "LATE-2").await.unwrap(),
        None
    );
    assert_eq!(store.rollout(r.id).await.unwrap().unwrap().targets, 3);

    // A second replica (no cache) sees the same: the late joiner's offer is in the database.
    let other = Engine::default();
    let again = other
        .check_in(&store, &view("LATE-1", &[], &old))
        .await
        .unwrap();
    assert_eq!(again, Some(offer), "a lost answer is offered again");
}

/// A replica reads a rollout's targets once, at the first check-in it sees for the rollout, and
/// answers from that memory: what another replica changed since is settled by the database's
/// conditional moves, never by the memory. Here replica A remembers every target eligible, then
/// replica B offers one and takes another to confirmed: A offers the first again (a lost
/// answer, the same offer, no second move) and nothing to the confirmed one; a device
/// provisioned after A's read still joins, and a rollout resumed after a pause is read again.
#[tokio::test]
async fn a_replica_remembers_a_rollout_read_once_and_the_database_decides() {
    let store = store().await;
    let (a, b) = (Engine::default(), Engine::default());
    let ids = ["M-1", "M-2", "M-3"];
    provision(&store, &ids, &[]).await;
    let rel = release(&store, "2.0.0", 1).await;
    let r = start(&store, &a, rel, &[stage(Some(100.0), None, 3)]).await;
    let old = check_in("1.0.0", 0);

    // A's first check-in of the rollout reads every target.
    a.check_in(&store, &view("M-1", &[], &old))
        .await
        .unwrap()
        .expect("offered");
    // B offers M-2 and takes M-3 through to confirmed.
    let offer_2 = b
        .check_in(&store, &view("M-2", &[], &old))
        .await
        .unwrap()
        .expect("offered");
    let offer_3 = b
        .check_in(&store, &view("M-3", &[], &old))
        .await
        .unwrap()
        .expect("offered");
    let mut confirmed = event(1, EventKind::Confirmed, r.id);
    confirmed.version = Some(offer_3.version);
    b.apply_events(&store, "M-3", &[confirmed]).await.unwrap();

    // A, which remembered both eligible, changes nothing the database decided.
    let again = a.check_in(&store, &view("M-2", &[], &old)).await.unwrap();
    assert_eq!(again, Some(offer_2), "a lost answer is offered again");
    assert!(a
        .check_in(&store, &view("M-3", &[], &old))
        .await
        .unwrap()
        .is_none());
    let (counts, _) = store.rollout_counts(r.id).await.unwrap();
    assert_eq!((counts.offered, counts.confirmed), (2, 1), "{counts:?}");
    assert_eq!(
        store.rollout_device_state(r.id, "M-3").await.unwrap(),
        Some(DeviceState::Confirmed)
    );

    // A device provisioned after A's read is not in its memory: it joins at its check-in.
    provision(&store, &["M-LATE"], &[]).await;
    a.check_in(&store, &view("M-LATE", &[], &old))
        .await
        .unwrap()
        .expect("a late joiner is offered");
    assert_eq!(store.rollout(r.id).await.unwrap().unwrap().targets, 4);

    // Paused, A forgets the rollout; resumed, A reads it again and sees B's offer. Both by the
    // operator's path through A, which tells A's cache of active rollouts.
    control::apply(&store, &a, "ops", r.id, RolloutAction::Pause)
        .await
        .unwrap();
    assert!(
        a.check_in(&store, &view("M-2", &[], &old))
            .await
            .unwrap()
            .is_none(),
        "no offer while paused"
    );
    control::apply(&store, &a, "ops", r.id, RolloutAction::Resume)
        .await
        .unwrap();
    let resent = a.check_in(&store, &view("M-2", &[], &old)).await.unwrap();
    assert_eq!(resent.map(|o| o.rollout_id), Some(r.id as u64));
    let (counts, _) = store.rollout_counts(r.id).await.unwrap();
    assert_eq!(counts.offered, 3, "{counts:?}");
}

/// Write protection over the slot an update would write: the device is skipped with the reason,
/// never offered (not at a second check-in either), and counts as no failure: the gate still
/// completes the rollout once the other target confirms.
#[tokio::test]
async fn a_protected_device_is_skipped_never_offered_and_no_failure() {
    let store = store().await;
    let engine = Engine::default();
    provision(&store, &["P-1", "OK-1"], &[]).await;
    let rel = release(&store, "2.0.0", 1).await;
    let r = start(&store, &engine, rel, &[stage(Some(100.0), None, 1)]).await;

    let protected = check_in("1.0.0", SlotId::B.partition().sector_mask());
    for _ in 0..2 {
        assert!(engine
            .check_in(&store, &view("P-1", &[], &protected))
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(
        store.rollout_device_state(r.id, "P-1").await.unwrap(),
        Some(DeviceState::ProtectionBlocked)
    );
    let listed = store
        .rollout_devices(r.id)
        .await
        .unwrap()
        .into_iter()
        .find(|(id, ..)| id == "P-1")
        .map(|(_, state, ..)| state);
    assert_eq!(listed.as_deref(), Some("protection_blocked"));

    // The other device updates and confirms.
    let ok = check_in("1.0.0", 0);
    let offer = engine
        .check_in(&store, &view("OK-1", &[], &ok))
        .await
        .unwrap()
        .expect("offered");
    let confirmed = Event {
        id: 1,
        kind: EventKind::Confirmed,
        rollout_id: Some(offer.rollout_id),
        version: Some(offer.version),
        reason: None,
        reset: None,
    };
    engine
        .apply_events(&store, "OK-1", &[confirmed])
        .await
        .unwrap();
    let (counts, _) = store.rollout_counts(r.id).await.unwrap();
    assert_eq!(counts.protection_blocked, 1);
    assert_eq!(counts.confirmed, 1);
    assert_eq!(counts.failures(), 0);

    engine.evaluate(&store, r.id).await.unwrap();
    let r = store.rollout(r.id).await.unwrap().unwrap();
    assert_eq!(r.state, RolloutState::Completed, "a skip is no failure");
}

/// Two replicas decide at once: the conditional update that loses the race changes nothing and
/// writes no audit entry. Shown directly on the store (the same expected stage twice), and with
/// two engines evaluating one rollout concurrently: one advance, not two.
#[tokio::test]
async fn a_conditional_update_that_loses_a_race_changes_nothing() {
    let store = store().await;
    let engine = Engine::default();
    let ids = ["R-1", "R-2", "R-3", "R-4"];
    provision(&store, &ids, &[]).await;
    let rel = release(&store, "2.0.0", 1).await;
    let stages = [stage(None, Some(1), 1), stage(Some(100.0), None, 1)];
    let r = start(&store, &engine, rel, &stages).await;

    // The one device of the first stage's cohort takes the update and confirms.
    let old = check_in("1.0.0", 0);
    let mut offered = Vec::new();
    for id in ids {
        if let Some(offer) = engine.check_in(&store, &view(id, &[], &old)).await.unwrap() {
            offered.push((id, offer));
        }
    }
    assert_eq!(offered.len(), 1, "a one-device stage offers one device");
    let (id, offer) = &offered[0];
    let confirmed = Event {
        id: 1,
        kind: EventKind::Confirmed,
        rollout_id: Some(offer.rollout_id),
        version: Some(offer.version),
        reason: None,
        reset: None,
    };
    engine.apply_events(&store, id, &[confirmed]).await.unwrap();

    // Two replicas, no shared memory, evaluate at the same moment.
    let (a, b) = (Engine::default(), Engine::default());
    let (va, vb) = tokio::join!(a.evaluate(&store, r.id), b.evaluate(&store, r.id));
    va.unwrap();
    vb.unwrap();
    let now = store.rollout(r.id).await.unwrap().unwrap();
    assert_eq!(now.current_stage, 1, "advanced once, to the second stage");
    assert_eq!(audit_count(&store, r.id, RolloutAction::Advance).await, 1);

    // The same decision taken twice from what was read before: the second one loses.
    let pause = RolloutAction::Pause;
    let change = RolloutChange {
        state: pause.to_state(),
        ..RolloutChange::default()
    };
    let entry = AuditEntry::new(
        "ops",
        pause.audit_name(),
        Some(r.id),
        Some(rel),
        serde_json::json!({}),
        now_ms(),
    );
    let stage = Some(now.current_stage);
    assert!(store
        .change_rollout(r.id, pause.from_states(), stage, &change, &entry)
        .await
        .unwrap());
    assert!(
        !store
            .change_rollout(r.id, pause.from_states(), stage, &change, &entry)
            .await
            .unwrap(),
        "a paused rollout cannot be paused again"
    );
    assert_eq!(audit_count(&store, r.id, pause).await, 1);
    // A stale stage loses the same way, whatever the state allows.
    let resume = RolloutAction::Resume;
    let resumed = RolloutChange {
        state: resume.to_state(),
        ..RolloutChange::default()
    };
    assert!(!store
        .change_rollout(r.id, resume.from_states(), Some(0), &resumed, &entry)
        .await
        .unwrap());
    let after = store.rollout(r.id).await.unwrap().unwrap();
    assert_eq!(after.state, RolloutState::Paused);
    assert_eq!(after.current_stage, 1);
}

fn event(id: u64, kind: EventKind, rollout: i64) -> Event {
    Event {
        id,
        kind,
        rollout_id: Some(rollout as u64),
        version: None,
        reason: None,
        reset: None,
    }
}

/// One group commit: events stored once per (device, event id), within the batch and across
/// batches; each device's moves applied in its order; only new events move anything.
#[tokio::test]
async fn a_group_commit_stores_each_event_once_and_moves_in_order() {
    let store = store().await;
    let engine = Engine::default();
    let ids = ["G-1", "G-2", "G-3"];
    provision(&store, &ids, &[]).await;
    let rel = release(&store, "2.0.0", 1).await;
    let r = start(&store, &engine, rel, &[stage(Some(100.0), None, 3)]).await;
    let id = r.id;
    let g1 = [
        event(1, EventKind::DownloadStarted, id),
        event(2, EventKind::Installed, id),
    ];
    // G-2's report twice in one batch (a retry overtaking its original), G-3 with an event id
    // repeated inside its report.
    let g2 = [event(1, EventKind::DownloadStarted, id)];
    let g3 = [
        event(7, EventKind::DownloadStarted, id),
        event(7, EventKind::Installed, id),
    ];
    let now = now_ms();
    let out = store
        .write_reports(&[
            ("G-1", &g1[..], now),
            ("G-2", &g2[..], now),
            ("G-2", &g2[..], now),
            ("G-3", &g3[..], now),
        ])
        .await
        .unwrap();
    assert_eq!((out[0].stored, out[0].duplicates), (2, 0));
    assert_eq!(
        out[0].moved,
        [(id, DeviceState::Downloading), (id, DeviceState::Installed)],
        "a device's moves apply in its order"
    );
    assert_eq!((out[1].stored, out[1].duplicates), (1, 0));
    assert_eq!(out[1].moved, [(id, DeviceState::Downloading)]);
    assert_eq!(
        (out[2].stored, out[2].duplicates),
        (0, 1),
        "stored once per batch"
    );
    assert!(out[2].moved.is_empty());
    assert_eq!((out[3].stored, out[3].duplicates), (1, 1));
    assert_eq!(out[3].moved, [(id, DeviceState::Downloading)]);
    for (device, state) in [
        ("G-1", DeviceState::Installed),
        ("G-2", DeviceState::Downloading),
        ("G-3", DeviceState::Downloading),
    ] {
        assert_eq!(
            store.rollout_device_state(id, device).await.unwrap(),
            Some(state)
        );
        // Every event once in the database.
        let stored = store.device_events(device, 100).await.unwrap();
        let mut seen: Vec<i64> = stored.iter().map(|e| e.event_id).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), stored.len(), "{device}: an event stored twice");
    }

    // On SQLite the batch's 5 events went in as one INSERT of 8 rows and its first 3 moves as
    // one UPDATE naming 4 devices, each list padded with its last row (sql::padded): the
    // padding stored, moved and counted nothing twice.
    let mut counts: Vec<(DeviceState, u64)> = store
        .tallies(id)
        .await
        .unwrap()
        .iter()
        .map(|t| (t.state, t.n))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [(DeviceState::Downloading, 2), (DeviceState::Installed, 1)]
    );
    let mut events = 0;
    for d in ids {
        events += store.device_events(d, 100).await.unwrap().len();
    }
    assert_eq!(events, 4, "G-1's two, G-2's one, G-3's one");

    // A later batch retrying G-1's report: all duplicates, nothing moves again (G-1 stays
    // installed, not back to downloading).
    let out = store.write_reports(&[("G-1", &g1[..], now)]).await.unwrap();
    assert_eq!((out[0].stored, out[0].duplicates), (0, 2));
    assert!(out[0].moved.is_empty());
    assert_eq!(
        store.rollout_device_state(id, "G-1").await.unwrap(),
        Some(DeviceState::Installed)
    );
}

/// Reports sent at once are committed together (fewer transactions than reports), every one is
/// stored, and a failure that crosses the gate has halted the rollout when its report returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_share_commits_and_a_crossing_failure_halts_before_the_answer() {
    let store = store().await;
    let engine = Engine::default();
    let ids: Vec<String> = (0..200).map(|i| format!("C-{i:03}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    provision(&store, &refs, &[]).await;
    let rel = release(&store, "2.0.0", 1).await;
    let mut gate = stage(Some(100.0), None, 10);
    gate.max_failure_rate = Some(0.05);
    let r = start(&store, &engine, rel, &[gate]).await;
    let before = store.group_commit_stats();
    let engine = std::sync::Arc::new(engine);
    let mut reports = tokio::task::JoinSet::new();
    for d in ids.clone() {
        let (store, engine) = (store.clone(), engine.clone());
        reports.spawn(async move {
            let events = [
                event(1, EventKind::DownloadStarted, r.id),
                event(2, EventKind::Installed, r.id),
            ];
            engine.report(&store, &d, &events).await.unwrap()
        });
    }
    while let Some(outcome) = reports.join_next().await {
        let outcome = outcome.unwrap();
        assert_eq!((outcome.stored, outcome.duplicates), (2, 0));
    }
    let after = store.group_commit_stats();
    let (batches, sent) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(sent, 200);
    assert!(
        batches < sent,
        "200 reports sent at once took {batches} transactions"
    );
    let (counts, _) = store.rollout_counts(r.id).await.unwrap();
    assert_eq!(counts.installed, 200);

    // A rollback: one failure among a minimum sample of 10 is 10%, over the 5% limit. The
    // report that crosses the gate returns with the rollout halted.
    assert_eq!(
        store.rollout(r.id).await.unwrap().unwrap().state,
        RolloutState::Active
    );
    engine
        .report(&store, &ids[0], &[event(3, EventKind::RolledBack, r.id)])
        .await
        .unwrap();
    assert_eq!(
        store.rollout(r.id).await.unwrap().unwrap().state,
        RolloutState::Halted
    );
}

/// A bootloader rollout (issue 18): a late joiner already running the stage-1 version is not a
/// target (its application version does not matter); a single-stage device and one whose write
/// protection covers the other stage-1 slot are skipped with the reason in words; a two-stage
/// device is offered the stage-1 image for the slot it does not run.
#[tokio::test]
async fn a_bootloader_rollout_targets_by_stage1_version_and_skips_with_reasons() {
    use fota_protocol::messages::{Component, Stage1Status};
    let store = store().await;
    let engine = Engine::default();
    provision(&store, &["B-1"], &[]).await;
    let image = |slot: &str, fill: char| ReleaseImage {
        slot: slot.to_string(),
        sha256: fill.to_string().repeat(64),
        size: 4096,
        key_hash: "00".repeat(32),
    };
    let rel = store
        .create_release(
            &NewRelease {
                model: MODEL.to_string(),
                version: "1.1.0".parse().unwrap(),
                component: Component::Bootloader,
                security_counter: 1,
                notes: String::new(),
                created_by: "test".to_string(),
                images: vec![image("a", 'c'), image("b", 'd')],
                image_bytes: vec![Vec::new(), Vec::new()],
            },
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(rel.component, Component::Bootloader);
    let r = start(&store, &engine, rel.id, &[stage(Some(100.0), None, 1)]).await;
    provision(&store, &["LATE-ON-IT", "SINGLE", "WRP", "TWO"], &[]).await;

    let two_stage = |slot| {
        let mut c = check_in("2.0.0", 0);
        c.stage1 = Some(Stage1Status {
            slot,
            boot_state: BootState::Confirmed,
        });
        c
    };
    let mut on_it = two_stage(SlotId::B);
    on_it.bootloader_version = "1.1.0".parse().unwrap();
    assert!(engine
        .check_in(&store, &view("LATE-ON-IT", &[], &on_it))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .rollout_device_state(r.id, "LATE-ON-IT")
            .await
            .unwrap(),
        None,
        "already on the stage-1 version: not a target"
    );

    let single = check_in("2.0.0", 0);
    let mut wrp = two_stage(SlotId::A);
    wrp.wrp_mask = SlotId::B.stage1_partition().sector_mask();
    for (id, c) in [("SINGLE", &single), ("WRP", &wrp)] {
        assert!(engine
            .check_in(&store, &view(id, &[], c))
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            store.rollout_device_state(r.id, id).await.unwrap(),
            Some(DeviceState::ProtectionBlocked),
            "{id}"
        );
    }
    let reasons: Vec<(String, String)> = sqlx::query_as(
        "SELECT device_id, reason FROM rollout_devices WHERE rollout_id = $1 AND reason IS NOT NULL ORDER BY device_id",
    )
    .bind(r.id)
    .fetch_all(store.reader_ref())
    .await
    .unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].1.contains("single-stage"), "{reasons:?}");
    assert!(reasons[1].1.contains("stage-1 slot B"), "{reasons:?}");

    let offer = engine
        .check_in(&store, &view("TWO", &[], &two_stage(SlotId::B)))
        .await
        .unwrap()
        .expect("a confirmed two-stage device is offered");
    assert_eq!(offer.component, Component::Bootloader);
    assert_eq!(offer.slot, SlotId::A, "the stage-1 slot it does not run");
    assert_eq!(offer.sha256.to_string(), "c".repeat(64));
    assert_eq!(offer.size, 4096);
}
