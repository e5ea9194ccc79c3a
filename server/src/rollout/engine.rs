//! The rollout engine: offers at check-in, device state from reports and check-ins, gate
//! evaluation (inline on failure reports, and by a sweep for deadlines and advancement), and
//! the conditional, audited rollout changes.
//!
//! What the engine keeps in memory is a cache, never the truth: active rollouts (refreshed at
//! least every second, and at once after a local change) and each device's last known state per
//! rollout (read for every target at once when the replica first meets the rollout, then kept
//! by what this replica changes; terminal states never change, so they are safe to remember,
//! and a stale one only costs a conditional move that changes nothing). Every decision that
//! matters is made by a conditional statement in the database, so any replica may make it and
//! none makes it twice.

use super::delta::{DeltaPolicy, Patches};
use super::gate::{self, GateInput, HealthGate, Verdict};
use crate::domain::version::version_key;
use crate::domain::{
    anti_rollback, cohort, DeviceState, ResetFigures, RolloutAction, RolloutState, StateCounts,
};
use crate::store::{
    now_ms, AuditEntry, RolloutChange, RolloutRow, StageRow, Store, StoreError, StoreOutcome,
};
use dashmap::DashMap;
use fota_protocol::image::Digest;
use fota_protocol::messages::{BootState, CheckIn, Component, Event, Offer};
use fota_protocol::{ImageVersion, SlotId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Actor name of automatic decisions in the audit log.
pub const AUTOMATIC: &str = "fota";

/// How stale the active-rollout cache may get: bounds how long another replica's halt or
/// advance takes to be seen here (offers are also checked in the database, so a halt stops
/// offers everywhere at once).
pub const ACTIVE_CACHE_TTL: Duration = Duration::from_millis(500);

/// What a replica needs to know about an active rollout to answer check-ins.
#[derive(Debug, Clone)]
pub struct ActiveRollout {
    /// Rollout id.
    pub id: i64,
    /// Model.
    pub model: String,
    /// Release version.
    pub version: ImageVersion,
    /// What the release is: the application, or the stage-1 bootloader (offered into the
    /// device's other stage-1 slot).
    pub component: Component,
    /// Release security counter.
    pub security_counter: u32,
    /// Image per slot: (sha256, size).
    pub images: [(Digest, u32); 2],
    /// Current cohort threshold.
    pub threshold: i64,
    /// Current stage.
    pub stage: i64,
    /// The current stage's confirmation deadline.
    pub confirm_deadline_s: i64,
    /// Required tags.
    pub tags: Vec<String>,
    /// Version range keys.
    pub version_min_key: Option<i64>,
    /// Upper bound.
    pub version_max_key: Option<i64>,
    /// Only devices running this version (rollbacks).
    pub from_version: Option<String>,
    /// The security counter of every release of the model's component, by version: what a
    /// device running one holds at least (see [`anti_rollback`]).
    pub release_counters: HashMap<ImageVersion, u32>,
    /// The image each release of the model's application has for each slot: the base of a
    /// delta patch for a device that runs it there (empty for a bootloader rollout).
    pub bases: HashMap<(ImageVersion, SlotId), Digest>,
}

impl ActiveRollout {
    /// The version of this rollout's component the device runs: its application's, or its
    /// stage-1 bootloader's.
    fn running_version(&self, device: &DeviceView<'_>) -> ImageVersion {
        match self.component {
            Component::Application => device.check_in.firmware_version,
            Component::Bootloader => device.check_in.bootloader_version,
        }
    }

    /// Why this rollout must not offer its image to a device, if the device holds a higher
    /// security counter than the release (its bootloader, or for a stage-1 stage-0, would
    /// refuse the image). The floor a device reports is its application bootloader's; a
    /// stage-1's is inferred from the bootloader release it runs.
    fn counter_block(&self, device: &DeviceView<'_>) -> Option<String> {
        let running = self
            .release_counters
            .get(&self.running_version(device))
            .copied();
        let reported = match self.component {
            Component::Application => device.check_in.security_counter,
            Component::Bootloader => None,
        };
        let held = anti_rollback::held(reported, running);
        anti_rollback::blocks(held, self.security_counter)
            .then(|| anti_rollback::reason(held, self.security_counter))
    }
}

/// Whether an offer is the one that just moved its device out of `eligible`, or one made again
/// (the device may have lost the answer; another replica made the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offering {
    /// This check-in's conditional move made the offer: the device was never offered this
    /// rollout before (nothing moves a device back to `eligible`), so it cannot have given
    /// this rollout's patch up yet.
    First,
    /// The device was offered before and may have given the patch up since.
    Again,
}

/// A device's state in a rollout, as this replica last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Not a target.
    NotTarget,
    /// A target, not offered yet.
    Eligible,
    /// Offered and not decided.
    InFlight(DeviceState),
    /// Decided or skipped: nothing more to do.
    Done,
}

fn known_from_state(state: DeviceState) -> Known {
    match state {
        DeviceState::Eligible => Known::Eligible,
        s if s.is_in_flight() => Known::InFlight(s),
        _ => Known::Done,
    }
}

#[derive(Debug, Default)]
struct ActiveCache {
    loaded: Option<Instant>,
    rollouts: Vec<Arc<ActiveRollout>>,
    /// Bumped by every invalidation. A load keeps what it read only if no invalidation came
    /// while it read: a check-in that began loading before a stage opened must not put the old
    /// stage back in the cache after the change invalidated it, or the devices the push path
    /// nudges at once would be told "no offer" for up to [`ACTIVE_CACHE_TTL`] and, nudged
    /// only once a stage, wait for their next poll (an hour in the field).
    generation: u64,
}

impl ActiveCache {
    /// The cached rollouts, if fresh.
    fn fresh(&self) -> Option<Vec<Arc<ActiveRollout>>> {
        self.loaded
            .is_some_and(|t| t.elapsed() < ACTIVE_CACHE_TTL)
            .then(|| self.rollouts.clone())
    }

    fn invalidate(&mut self) {
        self.loaded = None;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Keep `rollouts`, read by a load that began at `generation`, unless the cache was
    /// invalidated since. Whether it was kept.
    fn keep(&mut self, generation: u64, rollouts: Vec<Arc<ActiveRollout>>) -> bool {
        if generation != self.generation {
            return false;
        }
        self.loaded = Some(Instant::now());
        self.rollouts = rollouts;
        true
    }
}

/// The engine's shared state.
#[derive(Debug, Default)]
pub struct Engine {
    active: RwLock<ActiveCache>,
    known: DashMap<(i64, String), Known>,
    /// Rollouts whose targets' states were read into `known` at once ([`Engine::recall`]).
    recalled: DashMap<i64, Arc<tokio::sync::OnceCell<()>>>,
    /// When the sweep last evaluated each rollout (see [`Engine::sweep`]).
    swept: Mutex<std::collections::HashMap<i64, Instant>>,
    /// Who hears of rollouts this replica changed (the MQTT push path), if anyone.
    moves: Mutex<Option<tokio::sync::mpsc::UnboundedSender<i64>>>,
    /// Everyone watching rollouts live (the dashboard's event streams).
    live: Live,
    /// The delta patches offers carry.
    patches: Patches,
}

/// What moved in a rollout, for those who watch it live ([`Engine::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its state or stage changed: started, advanced, halted, paused, resumed, approved,
    /// aborted, completed. Sent after the change committed.
    State(i64),
    /// Devices in it moved (offered, reported, timed out): its counts changed.
    Progress(i64),
}

/// How many changes a slow watcher may fall behind before it is told it lagged.
const LIVE_BACKLOG: usize = 1024;

#[derive(Debug)]
struct Live(tokio::sync::broadcast::Sender<Change>);

impl Default for Live {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(LIVE_BACKLOG).0)
    }
}

impl Live {
    fn send(&self, change: Change) {
        // No watcher is the common case, and not an error.
        let _ = self.0.send(change);
    }
}

/// How often the sweep re-evaluates a rollout in which no device timed out: progress (stage
/// advances, completion) is noticed within this. Each evaluation counts the rollout's targets
/// by state, which at 100,000 targets costs tens of milliseconds on SQLite and hundreds on
/// PostgreSQL under load, so doing it every sweep tick took a core. Silence (a device timed
/// out) and failure reports are evaluated at once, as before.
pub const PROGRESS_EVALUATION_INTERVAL: Duration = Duration::from_secs(1);

/// What a device tells at check-in that the engine uses.
#[derive(Debug, Clone)]
pub struct DeviceView<'a> {
    /// Device id.
    pub id: &'a str,
    /// Provisioned model.
    pub model: &'a str,
    /// Its tags.
    pub tags: &'a [String],
    /// What it reported.
    pub check_in: &'a CheckIn,
}

/// Whether a device that was not a target when the rollout started is one now. `key` is the
/// version key of the application it runs: the version range always selects by that.
fn selector_matches(r: &ActiveRollout, device: &DeviceView<'_>, key: i64) -> bool {
    let running = r.running_version(device);
    let version = running.to_string();
    r.tags.iter().all(|t| device.tags.contains(t))
        && r.version_min_key.is_none_or(|min| key >= min)
        && r.version_max_key.is_none_or(|max| key <= max)
        && r.from_version.as_ref().is_none_or(|v| *v == version)
        && running != r.version
}

impl Engine {
    /// An engine whose offers carry delta patches under `delta` ([`Engine::default`]: the
    /// default policy).
    pub fn new(delta: DeltaPolicy) -> Self {
        Self {
            patches: Patches::new(delta),
            ..Self::default()
        }
    }

    /// Hear of every rollout this replica starts or changes (a stage opened, a halt, a pause,
    /// an abort...): its id, after the change committed. One listener; a new one replaces it.
    pub fn watch_changes(&self) -> tokio::sync::mpsc::UnboundedReceiver<i64> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut moves) = self.moves.lock() {
            *moves = Some(tx);
        }
        rx
    }

    /// Rollout `id` changed here: reload the cache, tell the listener and the live watchers.
    pub fn changed(&self, id: i64) {
        self.invalidate();
        if let Ok(moves) = self.moves.lock() {
            if let Some(tx) = moves.as_ref() {
                let _ = tx.send(id);
            }
        }
        self.live.send(Change::State(id));
    }

    /// Watch every rollout live: a [`Change`] for each state change and each batch of device
    /// moves this replica makes. Any number of watchers; one that falls more than
    /// [`LIVE_BACKLOG`] changes behind is told it lagged (and should reload what it shows).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.live.0.subscribe()
    }

    /// Forget cached rollouts so the next check-in reloads them.
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.active.write() {
            cache.invalidate();
        }
    }

    async fn active_rollouts(&self, store: &Store) -> Result<Vec<Arc<ActiveRollout>>, StoreError> {
        let mut generation = 0;
        if let Ok(cache) = self.active.read() {
            if let Some(rollouts) = cache.fresh() {
                return Ok(rollouts);
            }
            generation = cache.generation;
        }
        let rows = store.list_rollouts(&[RolloutState::Active]).await?;
        let mut rollouts = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(a) = load_active(store, &r).await? {
                rollouts.push(Arc::new(a));
            }
        }
        if let Ok(mut cache) = self.active.write() {
            // Devices of rollouts that are no longer active need no memory.
            let live: HashSet<i64> = rollouts.iter().map(|r| r.id).collect();
            let dropped = cache.rollouts.iter().any(|r| !live.contains(&r.id));
            if cache.keep(generation, rollouts.clone()) {
                if dropped {
                    self.known.retain(|(id, _), _| live.contains(id));
                    self.recalled.retain(|id, _| live.contains(id));
                }
                self.patches.forget();
            }
        }
        Ok(rollouts)
    }

    /// The offer for a device at check-in, if it is in an active rollout's current cohort; also
    /// records what the check-in proves (a device running the new release confirmed it).
    pub async fn check_in(
        &self,
        store: &Store,
        device: &DeviceView<'_>,
    ) -> Result<Option<Offer>, StoreError> {
        let rollouts = self.active_rollouts(store).await?;
        let Some(r) = rollouts.iter().find(|r| r.model == device.model) else {
            return Ok(None);
        };
        self.recall(store, r.id).await;
        let key = (r.id, device.id.to_string());
        let known = match self.known.get(&key).map(|k| k.clone()) {
            Some(k) => k,
            None => {
                // Not a target when the rollout was recalled (a late one, or another replica
                // added it since), or the recall failed: ask for this device alone.
                let k = match store.rollout_device_state(r.id, device.id).await? {
                    Some(state) => known_from_state(state),
                    None => {
                        let key = version_key(&device.check_in.firmware_version);
                        if selector_matches(r, device, key) {
                            let rank = cohort::rank(r.id, device.id);
                            store
                                .add_late_target(r.id, device.id, rank, now_ms())
                                .await?;
                            Known::Eligible
                        } else {
                            Known::NotTarget
                        }
                    }
                };
                self.known.insert(key.clone(), k.clone());
                k
            }
        };
        let running_release = r.running_version(device) == r.version;
        // Whether what runs is on trial or confirmed: the application, or the stage-1 (whose
        // version a device without a stage-1 report only claims: nothing to judge it by).
        let boot_state = match r.component {
            Component::Application => Some(device.check_in.boot_state),
            Component::Bootloader => device.check_in.stage1.map(|s| s.boot_state),
        };
        match known {
            Known::NotTarget | Known::Done => Ok(None),
            Known::InFlight(known_state) if running_release => {
                // A move the known state rules out is not written (a trial's check-in after
                // its `installed` report: every update's first check-in from the new image).
                let Some(to) = boot_state.and_then(|b| DeviceState::check_in_move(known_state, b))
                else {
                    return Ok(None);
                };
                // Progress: the sweep's next evaluation of this rollout sees it.
                if store
                    .set_device_state(r.id, device.id, to, None, now_ms())
                    .await?
                {
                    self.live.send(Change::Progress(r.id));
                }
                self.known.insert(key, known_from_state(to));
                Ok(None)
            }
            // Offered or downloading on the old version: the device may have lost the answer.
            Known::InFlight(state) if state.may_resend_offer() => {
                if let Some(reason) = r.counter_block(device) {
                    return self.skip_for_counter(store, r, device, key, &reason).await;
                }
                Ok(Some(self.offer(store, r, device, Offering::Again).await?))
            }
            Known::InFlight(_) => Ok(None),
            Known::Eligible => {
                if running_release {
                    return Ok(None);
                }
                let rank = cohort::rank(r.id, device.id);
                if !cohort::is_in(rank, u64::try_from(r.threshold).unwrap_or(0)) {
                    return Ok(None);
                }
                if let Some(reason) = r.counter_block(device) {
                    return self.skip_for_counter(store, r, device, key, &reason).await;
                }
                let blocked = match r.component {
                    Component::Application => {
                        let target = device.check_in.running_slot.other();
                        let mask = device.check_in.wrp_mask & target.partition().sector_mask();
                        (mask != 0).then(|| {
                            format!(
                                "write protection (WRP mask {:#x}) covers slot {target}",
                                device.check_in.wrp_mask
                            )
                        })
                    }
                    Component::Bootloader => match device.check_in.stage1 {
                        None => Some(
                            "no stage-1 reported at check-in: a single-stage bootloader cannot \
                             be replaced over the air"
                                .to_string(),
                        ),
                        Some(stage1) => {
                            let target = stage1.slot.other();
                            let part = target.stage1_partition();
                            let mask = device.check_in.wrp_mask & part.sector_mask();
                            (mask != 0).then(|| {
                                format!(
                                    "write protection (WRP mask {:#x}) covers stage-1 slot {target}",
                                    device.check_in.wrp_mask
                                )
                            })
                        }
                    },
                };
                // A bootloader only over a confirmed application and a confirmed stage-1 (so a
                // failed trial has both to fall back to), and never while an application is
                // on trial: ask again at a later check-in.
                if r.component == Component::Bootloader
                    && blocked.is_none()
                    && (device.check_in.boot_state != BootState::Confirmed
                        || boot_state != Some(BootState::Confirmed))
                {
                    return Ok(None);
                }
                if let Some(reason) = blocked {
                    store
                        .set_device_state(
                            r.id,
                            device.id,
                            DeviceState::ProtectionBlocked,
                            Some(&reason),
                            now_ms(),
                        )
                        .await?;
                    self.known.insert(key, Known::Done);
                    return Ok(None);
                }
                if store
                    .offer_device(r.id, device.id, now_ms(), r.confirm_deadline_s)
                    .await?
                {
                    self.known
                        .insert(key, Known::InFlight(DeviceState::Offered));
                    self.live.send(Change::Progress(r.id));
                    return Ok(Some(self.offer(store, r, device, Offering::First).await?));
                }
                // Another replica offered it, or the rollout stopped: ask the database.
                let state = store.rollout_device_state(r.id, device.id).await?;
                let k = state.map_or(Known::NotTarget, known_from_state);
                self.known.insert(key, k.clone());
                Ok(match k {
                    Known::InFlight(s) if s.may_resend_offer() => {
                        Some(self.offer(store, r, device, Offering::Again).await?)
                    }
                    _ => None,
                })
            }
        }
    }

    /// Read every target's state of rollout `id` into the known states, once per active
    /// rollout per replica (again after it was paused or halted and resumed): one read instead
    /// of one round trip per device at its first check-in of the rollout, which at 100,000
    /// targets was the most frequent statement the server sent PostgreSQL. A state already
    /// known stays: it was learned after the read began, from a change this replica made.
    /// Check-ins of the rollout wait for the read (once); if it fails, each device it did not
    /// reach reads its own state at its first check-in, as before.
    async fn recall(&self, store: &Store, id: i64) {
        let cell = self.recalled.entry(id).or_default().clone();
        cell.get_or_init(|| async {
            let remember = |device, state| {
                self.known
                    .entry((id, device))
                    .or_insert_with(|| known_from_state(state));
            };
            if let Err(e) = store.rollout_device_states(id, remember).await {
                tracing::warn!(rollout = id, error = %e, "reading the rollout's device states failed; reading the rest device by device")
            }
        })
        .await;
    }

    /// Skip a device that holds a higher security counter than the release: listed as
    /// `security_counter_blocked` with the reason, never offered, not a failure.
    async fn skip_for_counter(
        &self,
        store: &Store,
        r: &ActiveRollout,
        device: &DeviceView<'_>,
        key: (i64, String),
        reason: &str,
    ) -> Result<Option<Offer>, StoreError> {
        let moved = store
            .set_device_state(
                r.id,
                device.id,
                DeviceState::SecurityCounterBlocked,
                Some(reason),
                now_ms(),
            )
            .await?;
        if moved {
            tracing::info!(rollout = r.id, device = device.id, reason, "offer skipped");
            self.known.insert(key, Known::Done);
        } else {
            // Its state moved on meanwhile (another replica, a report): ask again next time.
            self.known.remove(&key);
        }
        Ok(None)
    }

    /// The offer of `r`'s image for the slot the device does not run from: the other
    /// application slot, or for a bootloader the other stage-1 slot; with a delta patch from
    /// the image the device runs when one is worth it ([`Patches::for_offer`]).
    async fn offer(
        &self,
        store: &Store,
        r: &ActiveRollout,
        device: &DeviceView<'_>,
        offering: Offering,
    ) -> Result<Offer, StoreError> {
        let running = match (r.component, device.check_in.stage1) {
            (Component::Bootloader, Some(stage1)) => stage1.slot,
            _ => device.check_in.running_slot,
        };
        let slot = running.other();
        let (sha256, size) = r.images[match slot {
            SlotId::A => 0,
            SlotId::B => 1,
        }];
        let mut offer = Offer {
            rollout_id: u64::try_from(r.id).unwrap_or(0),
            version: r.version,
            component: r.component,
            slot,
            sha256,
            size,
            security_counter: r.security_counter,
            patch: None,
        };
        let check_in = device.check_in;
        let base = r
            .bases
            .get(&(check_in.firmware_version, check_in.running_slot))
            .copied();
        offer.patch = self
            .patches
            .for_offer(
                store,
                device.id,
                check_in.delta_format,
                base,
                &offer,
                offering == Offering::Again,
            )
            .await?;
        Ok(offer)
    }

    /// Apply a device's reported events to its rollout state. A failure is evaluated against the
    /// gate at once (the report that crosses it halts the rollout before it is acknowledged);
    /// other progress by the sweep (within [`PROGRESS_EVALUATION_INTERVAL`]).
    pub async fn apply_events(
        &self,
        store: &Store,
        device_id: &str,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let mut failed_rollouts = HashSet::new();
        for e in events {
            let Some(rollout) = e.rollout_id else {
                continue;
            };
            let Some(to) = DeviceState::moved_by(e) else {
                continue;
            };
            let Ok(rollout) = i64::try_from(rollout) else {
                continue;
            };
            let reason = e.reason.as_ref().map(|r| r.as_str());
            if store
                .set_device_state(rollout, device_id, to, reason, now_ms())
                .await?
            {
                self.known
                    .insert((rollout, device_id.to_string()), known_from_state(to));
                self.live.send(Change::Progress(rollout));
                // Progress waits for the sweep; a failure is evaluated now.
                if to.is_failure() {
                    failed_rollouts.insert(rollout);
                }
            }
        }
        for rollout in failed_rollouts {
            self.evaluate(store, rollout).await?;
        }
        Ok(())
    }

    /// A device's report: its events stored once per event id and the state moves of the new
    /// ones made, in the group commit of the reports that arrived with it
    /// ([`Store::store_report`]); then a failure among the moves evaluates its rollout's gate,
    /// so a failure report that crosses a gate has halted the rollout when this returns. An
    /// unexpected reset makes the active rollouts of the version it ran due at the next sweep.
    pub async fn report(
        &self,
        store: &Store,
        device_id: &str,
        events: &[Event],
    ) -> Result<StoreOutcome, StoreError> {
        let outcome = store.store_report(device_id, events, now_ms()).await?;
        let mut failed_rollouts = HashSet::new();
        let mut moved_rollouts = HashSet::new();
        for (rollout, to) in &outcome.moved {
            self.known
                .insert((*rollout, device_id.to_string()), known_from_state(*to));
            moved_rollouts.insert(*rollout);
            if to.is_failure() {
                failed_rollouts.insert(*rollout);
            }
        }
        if !outcome.crashed_versions.is_empty() {
            // An unexpected reset names the version it ran, not a rollout: it may cross the
            // reset limit of any active rollout of that version. Such rollouts are due at the
            // next sweep (within one sweep interval) rather than evaluated inside this request:
            // a healthy fleet resets all the time (tens a second at 100,000 devices), and an
            // evaluation per reset, each counting the rollout, overloads the database.
            let mut due = Vec::new();
            for r in self.active_rollouts(store).await? {
                let version = r.version.to_string();
                if outcome.crashed_versions.contains(&version) {
                    due.push(r.id);
                    moved_rollouts.insert(r.id);
                }
            }
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            for id in due {
                swept.remove(&id);
            }
        }
        for rollout in moved_rollouts {
            self.live.send(Change::Progress(rollout));
        }
        for rollout in failed_rollouts {
            self.evaluate(store, rollout).await?;
        }
        Ok(StoreOutcome {
            stored: outcome.stored,
            duplicates: outcome.duplicates,
        })
    }

    /// Evaluate one rollout's gate and act on the verdict. Returns the verdict.
    pub async fn evaluate(&self, store: &Store, id: i64) -> Result<Option<Verdict>, StoreError> {
        let Some(r) = store.rollout(id).await? else {
            return Ok(None);
        };
        if r.state != RolloutState::Active {
            return Ok(None);
        }
        let Some(Assessment {
            stages,
            whole,
            stage_counts,
            verdict,
            ..
        }) = assess(store, &r, false).await?
        else {
            return Ok(None);
        };
        let now = now_ms();
        let changed = match &verdict {
            Verdict::Halt(reason) => {
                let detail = serde_json::to_value(reason).unwrap_or_default();
                let changed = store
                    .change_rollout(
                        id,
                        RolloutAction::Halt.from_states(),
                        Some(r.current_stage),
                        &RolloutChange {
                            state: RolloutAction::Halt.to_state(),
                            halt_reason: Some(detail.to_string()),
                            ..RolloutChange::default()
                        },
                        &AuditEntry::new(
                            AUTOMATIC,
                            RolloutAction::Halt.audit_name(),
                            Some(id),
                            Some(r.release_id),
                            serde_json::json!({ "reason": reason.to_string(), "numbers": detail }),
                            now,
                        ),
                    )
                    .await?;
                if changed {
                    tracing::warn!(rollout = id, reason = %reason, "rollout halted");
                }
                changed
            }
            Verdict::Advance => {
                let next = r.current_stage + 1;
                let Some(next_stage) = stages.get(next as usize) else {
                    return Ok(Some(verdict));
                };
                let mut ranks = store.rollout_ranks(id).await?;
                let targets = ranks.len();
                let (threshold, reach) = cohort::stage_threshold(
                    next_stage.percent_bp,
                    next_stage.device_count,
                    &mut ranks,
                    r.current_threshold,
                );
                let changed = store
                    .change_rollout(
                        id,
                        RolloutAction::Advance.from_states(),
                        Some(r.current_stage),
                        &RolloutChange {
                            stage: Some((next, threshold)),
                            ..RolloutChange::default()
                        },
                        &AuditEntry::new(
                            AUTOMATIC,
                            RolloutAction::Advance.audit_name(),
                            Some(id),
                            Some(r.release_id),
                            serde_json::json!({
                                "from_stage": r.current_stage + 1,
                                "to_stage": next + 1,
                                "reaches": cohort::reach_text(reach, targets as u64, next_stage.percent_bp),
                                "stage_counts": stage_counts,
                                "counts": whole,
                            }),
                            now,
                        ),
                    )
                    .await?;
                if changed {
                    tracing::info!(rollout = id, stage = next + 1, "rollout advanced");
                }
                changed
            }
            Verdict::Complete => {
                store
                    .change_rollout(
                        id,
                        RolloutAction::Complete.from_states(),
                        Some(r.current_stage),
                        &RolloutChange {
                            state: RolloutAction::Complete.to_state(),
                            ..RolloutChange::default()
                        },
                        &AuditEntry::new(
                            AUTOMATIC,
                            RolloutAction::Complete.audit_name(),
                            Some(id),
                            Some(r.release_id),
                            serde_json::json!({ "counts": whole }),
                            now,
                        ),
                    )
                    .await?
            }
            Verdict::Wait(_) => false,
        };
        if changed {
            self.changed(id);
        }
        Ok(Some(verdict))
    }

    /// One sweep: declare silent devices past their deadline and evaluate the rollouts where
    /// that happened; evaluate every other active rollout once per
    /// [`PROGRESS_EVALUATION_INTERVAL`] (bake times, advances and completion need no report).
    pub async fn sweep(&self, store: &Store) -> Result<(), StoreError> {
        let timed_out: HashSet<i64> = store
            .time_out_devices(now_ms())
            .await?
            .into_iter()
            .collect();
        let now = Instant::now();
        let mut ids = timed_out.clone();
        {
            let active = store.list_rollouts(&[RolloutState::Active]).await?;
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            swept.retain(|id, _| active.iter().any(|r| r.id == *id));
            for r in active {
                let due = swept
                    .get(&r.id)
                    .is_none_or(|at| now.duration_since(*at) >= PROGRESS_EVALUATION_INTERVAL);
                if due || timed_out.contains(&r.id) {
                    swept.insert(r.id, now);
                    ids.insert(r.id);
                }
            }
        }
        for id in ids {
            if timed_out.contains(&id) {
                self.live.send(Change::Progress(id));
                // The timed-out devices' cached state is stale: reload on their next check-in.
                self.known
                    .retain(|(rid, _), k| *rid != id || !matches!(k, Known::InFlight(_)));
            }
            self.evaluate(store, id).await?;
        }
        Ok(())
    }

    /// Run [`sweep`](Self::sweep) every `interval` until `stop` flips.
    pub async fn run_sweeper(
        &self,
        store: Store,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            match self.sweep(&store).await {
                Ok(()) => {}
                // The health monitor reports an outage once; the sweep resumes after it.
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::debug!(error = %e, "rollout sweep waits for the database")
                }
                Err(e) => tracing::warn!(error = %e, "rollout sweep failed; will retry"),
            }
        }
    }
}

/// What the gate says about a rollout now, with the numbers it looked at.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The rollout's stages.
    pub stages: Vec<StageRow>,
    /// Counts over the whole rollout.
    pub whole: StateCounts,
    /// Counts of the current stage's cohort.
    pub stage_counts: StateCounts,
    /// Targets inside the cohorts so far not offered yet, if counted (see
    /// [`gate::needs_eligible_count`]; always, and in full, with `count_not_offered`; otherwise
    /// only as far as the verdict needs, [`gate::eligible_count_limit`]).
    pub not_offered: Option<u64>,
    /// The minimum sample the current stage applies: the plan's, capped at its cohort.
    pub min_sample: u64,
    /// The least denominator of the halting rate: the plan's minimum sample, capped at the
    /// cohorts so far.
    pub halt_min_sample: u64,
    /// Seconds since the current stage started.
    pub stage_age_s: i64,
    /// Unexpected resets on the new and the old release, when counted (the stage's reset limit
    /// is on, or `count_not_offered` asked for everything).
    pub resets: Option<ResetFigures>,
    /// The verdict.
    pub verdict: Verdict,
}

/// Evaluate a rollout's gate without acting on it (what `evaluate` acts on, and what the status
/// shows as the next step). `count_not_offered` counts the cohorts' devices not offered yet even
/// when the verdict does not need them (the status shows them).
pub async fn assess(
    store: &Store,
    r: &RolloutRow,
    count_not_offered: bool,
) -> Result<Option<Assessment>, StoreError> {
    let stages = store.rollout_stages(r.id).await?;
    let Some(stage) = usize::try_from(r.current_stage)
        .ok()
        .and_then(|i| stages.get(i))
        .copied()
    else {
        return Ok(None);
    };
    let (whole, per_stage) = store.rollout_counts(r.id).await?;
    let is_last = r.current_stage as usize + 1 >= stages.len();
    let stage_counts = per_stage.get(&r.current_stage).copied().unwrap_or_default();
    let gate = gate_of(&stage);
    // A count over the cohort: only where the verdict depends on it.
    let not_offered = if count_not_offered
        || gate::needs_eligible_count(&gate, &stage_counts, is_last)
    {
        Some(
            store
                .eligible_in_cohort(
                    r.id,
                    r.current_threshold,
                    &whole,
                    (!count_not_offered).then(|| gate::eligible_count_limit(&gate, &stage_counts)),
                )
                .await?,
        )
    } else {
        None
    };
    let stage_age_s = (now_ms() - r.stage_started_at) / 1000;
    let resets = if gate.max_reset_ratio_pct > 0 || count_not_offered {
        match store.release(r.release_id).await? {
            Some(release) => Some(
                store
                    .reset_figures(
                        r.id,
                        &release.version,
                        r.created_at,
                        u64::try_from(r.targets).unwrap_or(0),
                        now_ms(),
                        count_not_offered,
                    )
                    .await?,
            ),
            None => None,
        }
    } else {
        None
    };
    let input = GateInput {
        stage: u32::try_from(r.current_stage).unwrap_or(u32::MAX),
        is_last,
        gate: &gate,
        bake_s: stage.bake_s,
        auto_advance: stage.auto_advance,
        approved: r.approved_stage == Some(r.current_stage),
        whole: &whole,
        stage_counts: &stage_counts,
        eligible_in_cohort: not_offered.unwrap_or(0),
        stage_age_s,
        resets: resets.as_ref(),
    };
    let verdict = gate::evaluate(&input);
    Ok(Some(Assessment {
        min_sample: input.stage_min_sample(),
        halt_min_sample: input.halt_min_sample(),
        stages,
        whole,
        stage_counts,
        not_offered,
        stage_age_s,
        resets,
        verdict,
    }))
}

/// A stage's gate.
pub fn gate_of(stage: &StageRow) -> HealthGate {
    HealthGate {
        min_sample: u64::try_from(stage.min_sample).unwrap_or(0),
        max_failure_ppm: u32::try_from(stage.max_failure_ppm).unwrap_or(0),
        confirm_deadline_s: stage.confirm_deadline_s,
        max_reset_ratio_pct: u32::try_from(stage.max_reset_ratio_pct).unwrap_or(0),
        min_device_s: u64::try_from(stage.min_device_s).unwrap_or(0),
    }
}

async fn load_active(store: &Store, r: &RolloutRow) -> Result<Option<ActiveRollout>, StoreError> {
    let Some(release) = store.release(r.release_id).await? else {
        return Ok(None);
    };
    let stages = store.rollout_stages(r.id).await?;
    let Some(stage) = usize::try_from(r.current_stage)
        .ok()
        .and_then(|i| stages.get(i))
    else {
        return Ok(None);
    };
    let image = |slot: &str| {
        release
            .images
            .iter()
            .find(|i| i.slot == slot)
            .and_then(|i| Some((Digest::from_hex(&i.sha256)?, u32::try_from(i.size).ok()?)))
    };
    let (Some(a), Some(b)) = (image("a"), image("b")) else {
        return Err(StoreError::Corrupt(format!(
            "release {} lacks an image",
            release.id
        )));
    };
    let from_version = match r.from_release_id {
        Some(id) => store.release(id).await?.map(|rel| rel.version),
        None => None,
    };
    let release_counters = store
        .release_counters(&r.model, release.component)
        .await?
        .into_iter()
        .filter_map(|(version, counter)| {
            Some((
                version.parse().ok()?,
                anti_rollback::from_stored(Some(counter))?,
            ))
        })
        .collect();
    let bases = match release.component {
        Component::Application => store
            .release_images_of(&r.model, release.component)
            .await?
            .into_iter()
            .filter_map(|(version, slot, sha256)| {
                Some((
                    (version.parse().ok()?, slot.parse().ok()?),
                    Digest::from_hex(&sha256)?,
                ))
            })
            .collect(),
        Component::Bootloader => HashMap::new(),
    };
    Ok(Some(ActiveRollout {
        id: r.id,
        model: r.model.clone(),
        version: release
            .version
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("release version {:?}", release.version)))?,
        component: release.component,
        security_counter: u32::try_from(release.security_counter).unwrap_or(0),
        images: [a, b],
        threshold: r.current_threshold,
        stage: r.current_stage,
        confirm_deadline_s: stage.confirm_deadline_s,
        tags: r.selector_tags.clone(),
        version_min_key: r.version_min_key,
        version_max_key: r.version_max_key,
        from_version,
        release_counters,
        bases,
    }))
}

#[cfg(test)]
mod tests {
    use super::ActiveCache;

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let mut cache = ActiveCache::default();
        assert!(cache.fresh().is_none());
        // A load that read with nothing in between is kept.
        let generation = cache.generation;
        assert!(cache.keep(generation, Vec::new()));
        assert!(cache.fresh().is_some());
        // A stage opened (invalidation) while a check-in was reading the old stage: what it read
        // must not come back as fresh.
        let generation = cache.generation;
        cache.invalidate();
        assert!(cache.fresh().is_none());
        assert!(!cache.keep(generation, Vec::new()));
        assert!(cache.fresh().is_none());
        // The next load, begun after the change, is kept.
        let generation = cache.generation;
        assert!(cache.keep(generation, Vec::new()));
        assert!(cache.fresh().is_some());
    }
}
