//! A fleet of virtual devices, run by a few threads against one real `fota serve`.
//!
//! Devices are split into shards, one per thread. A thread runs the devices of its shard whose
//! time has come (a heap ordered by wake-up time) and sleeps until the next one; every request a
//! device makes is a blocking HTTP request, as on the modem, over the thread's share of a
//! keep-alive connection pool. Tens of threads keep tens of requests in flight, which is all a
//! 2-core machine's server can take anyway.
//!
//! With [`FleetConfig::mqtt`], each device also holds an MQTT session of its own
//! ([`crate::mqtt`]): a command the server pushes lands in the device's inbox and brings its
//! next turn forward to now, where the OTA client acts on it; and (with
//! [`MqttConfig::reports`]) the device publishes its reports through it.

use crate::device::{Context, Device, DeviceStatus, Faults, Timing, LAYOUT};
use crate::fleet_flash::FleetFlash;
use crate::link::{Link, Server};
use crate::mqtt::{Deliver, DeviceSession, MqttConfig, MqttSessions, MqttStats, Outbox};
use fota_boot::journal::RecordKind;
use fota_boot::{BootJournal, BootMode};
use fota_ota_client::Config;
use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::messages::Command;
use fota_protocol::SlotId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to run a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// The keys the devices' bootloaders trust.
    pub keys: Vec<TrustedKey>,
    /// The simulated clock.
    pub timing: Timing,
    /// The OTA client's tunables.
    pub client: Config,
    /// Simulator threads (each with its own requests in flight).
    pub threads: usize,
    /// Each device also subscribes to its commands through this broker (its broker account
    /// is its id and device token).
    pub mqtt: Option<MqttConfig>,
}

/// One device to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Its id on the server.
    pub id: String,
    /// Its device token.
    pub token: String,
    /// Its hardware model.
    pub model: String,
    /// Faults to inject.
    pub faults: Faults,
}

/// The flash of a device as it leaves the factory: `image_a` (linked for slot A) in slot A and a
/// journal saying A is confirmed at security counter `security_counter`.
pub fn factory_flash(image_a: &[u8], security_counter: u32) -> FleetFlash {
    let mut flash = FleetFlash::new();
    // A fresh FleetFlash is erased and in range: loading cannot fail.
    let _ = flash.load(LAYOUT.slot_offset(SlotId::A), image_a);
    if let Ok(mut journal) = BootJournal::open(&mut flash, LAYOUT.journal) {
        let _ = journal.append(RecordKind::SecurityCounter {
            value: security_counter,
        });
        let _ = journal.append(RecordKind::Confirmed { slot: SlotId::A });
    }
    flash
}

/// The flash of a two-stage device as it leaves the factory (issue 18): [`factory_flash`]'s,
/// plus `stage1_a` (a stage-1 build for stage-1 slot A) in stage-1 slot A and journal records
/// saying it is the confirmed stage-1 at stage-1 floor `stage1_counter`. A fleet started from
/// it runs stage-0 before the bootloader at every reset ([`Device`](crate::Device)).
pub fn factory_flash_two_stage(
    image_a: &[u8],
    security_counter: u32,
    stage1_a: &[u8],
    stage1_counter: u32,
) -> FleetFlash {
    let mut flash = factory_flash(image_a, security_counter);
    // Programmed in whole words, the last one padded with the erased value; the stage-1 slot is
    // erased and in range: loading cannot fail.
    let mut words = stage1_a.to_vec();
    words.resize(
        stage1_a.len().div_ceil(crate::flash::WORD) * crate::flash::WORD,
        0xFF,
    );
    let _ = flash.load(LAYOUT.stage1_offset(SlotId::A), &words);
    if let Ok(mut journal) = BootJournal::open(&mut flash, LAYOUT.journal) {
        let _ = journal.append(RecordKind::Stage1Floor {
            value: stage1_counter,
        });
        let _ = journal.append(RecordKind::Stage1Confirmed { slot: SlotId::A });
    }
    flash
}

/// Device indexes by wake-up time, soonest first.
type WakeQueue = BinaryHeap<Reverse<(Instant, usize)>>;

/// One device, and its status as of its last turn (readable while the device is mid-turn, so a
/// status reader never waits for a device's HTTP requests).
#[derive(Debug)]
struct Slot {
    device: Mutex<Device>,
    status: Mutex<DeviceStatus>,
    sched: Mutex<Sched>,
}

/// When a device runs next, and the commands pushed to it since its last turn. A wake-up
/// queue entry whose time is not `at` is stale (a command brought the turn forward).
#[derive(Debug)]
struct Sched {
    at: Instant,
    /// Commands waiting for the device's turn, with when each arrived (ms since the epoch).
    inbox: Vec<(Command, u64)>,
}

#[derive(Debug)]
struct Shard {
    slots: Vec<Slot>,
    queue: Mutex<WakeQueue>,
}

/// A running fleet.
#[derive(Debug)]
pub struct Fleet {
    shards: Vec<Arc<Shard>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    keys: &'static [TrustedKey],
    size: usize,
    mqtt: Option<MqttSessions>,
}

/// Devices by what they run, and the fleet's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Devices.
    pub devices: usize,
    /// Devices running each version confirmed.
    pub confirmed: BTreeMap<ImageVersion, usize>,
    /// Devices running each version as a trial (or unconfirmed).
    pub trial: BTreeMap<ImageVersion, usize>,
    /// Devices settled on each version ([`DeviceStatus::settled`]): running it confirmed, or
    /// resetting since they did.
    pub settled: BTreeMap<ImageVersion, usize>,
    /// Devices between a reset and their application (or in recovery mode).
    pub not_running: usize,
    /// Devices in recovery mode.
    pub in_recovery: usize,
    /// Sum of the devices' counters.
    pub boots: u64,
    /// Trial boots.
    pub trial_boots: u64,
    /// Images installed.
    pub installs: u64,
    /// Trials confirmed.
    pub confirmations: u64,
    /// Bootloader reverts reported.
    pub rollbacks: u64,
    /// Crashes and watchdog resets.
    pub crashes: u64,
    /// Of which: background watchdog resets.
    pub background_resets: u64,
    /// Power cuts.
    pub power_cuts: u64,
    /// Check-ins answered.
    pub check_ins: u64,
    /// Reports acknowledged (over HTTP or MQTT).
    pub reports: u64,
    /// Of which: acknowledged over MQTT (`report_ack`).
    pub mqtt_reports: u64,
    /// Check-in nudges received over MQTT while running.
    pub nudges: u64,
    /// Downloads dropped by a pushed stop.
    pub pushed_stops: u64,
    /// Downloads dropped by a check-in that no longer offered them.
    pub withdrawn: u64,
    /// Commands that arrived while the device was not running its application (lost).
    pub commands_lost: u64,
    /// Artifact bytes downloaded.
    pub bytes_fetched: u64,
    /// Of which delta patch bytes.
    pub patch_bytes_fetched: u64,
    /// Check-in answers whose offer carried a delta patch.
    pub patch_offers: u64,
    /// Failed requests.
    pub request_failures: u64,
    /// Devices that ever installed each version.
    pub ever_installed: BTreeMap<ImageVersion, usize>,
    /// Two-stage devices by the stage-1 version stage-0 booted last, confirmed.
    pub stage1_confirmed: BTreeMap<ImageVersion, usize>,
    /// Stage-1 trial boots (stage-0 booted a pending stage-1).
    pub stage1_trial_boots: u64,
    /// Stage-1s confirmed (an application booted through a new stage-1 confirmed it).
    pub stage1_confirmations: u64,
    /// Boots in which the stage-1 hung before any application ran.
    pub stage1_hangs: u64,
}

impl FleetSummary {
    /// Devices running `version`, confirmed.
    pub fn confirmed_on(&self, version: ImageVersion) -> usize {
        self.confirmed.get(&version).copied().unwrap_or(0)
    }

    /// Devices settled on `version`: running it confirmed, or rebooting after they did (a
    /// background watchdog reset). A fleet on one release counts all its devices here at any
    /// moment, while [`confirmed_on`](Self::confirmed_on) misses those between a reset and
    /// their application.
    pub fn settled_on(&self, version: ImageVersion) -> usize {
        self.settled.get(&version).copied().unwrap_or(0)
    }

    /// Two-stage devices whose last boot went through stage-1 `version`, confirmed.
    pub fn stage1_confirmed_on(&self, version: ImageVersion) -> usize {
        self.stage1_confirmed.get(&version).copied().unwrap_or(0)
    }

    fn add(&mut self, s: &DeviceStatus) {
        self.devices += 1;
        match (s.version, s.mode) {
            (Some(v), Some(BootMode::Confirmed)) => *self.confirmed.entry(v).or_default() += 1,
            (Some(v), Some(_)) => *self.trial.entry(v).or_default() += 1,
            _ => self.not_running += 1,
        }
        if let Some(v) = s.settled {
            *self.settled.entry(v).or_default() += 1;
        }
        self.in_recovery += usize::from(s.in_recovery);
        self.boots += u64::from(s.boots);
        self.trial_boots += u64::from(s.trial_boots);
        self.installs += u64::from(s.installs);
        self.confirmations += u64::from(s.confirmations);
        self.rollbacks += u64::from(s.rollbacks);
        self.crashes += u64::from(s.crashes);
        self.background_resets += u64::from(s.background_resets);
        self.power_cuts += u64::from(s.power_cuts);
        self.check_ins += s.link.check_ins;
        self.reports += s.link.reports + u64::from(s.mqtt_reports);
        self.mqtt_reports += u64::from(s.mqtt_reports);
        self.nudges += u64::from(s.nudges);
        self.pushed_stops += u64::from(s.pushed_stops);
        self.withdrawn += u64::from(s.withdrawn);
        self.commands_lost += u64::from(s.commands_lost);
        self.bytes_fetched += s.link.bytes_fetched;
        self.patch_bytes_fetched += s.link.patch_bytes_fetched;
        self.patch_offers += s.link.patch_offers;
        self.request_failures += s.link.failures;
        if let Some((_, v, BootMode::Confirmed)) = s.stage1 {
            *self.stage1_confirmed.entry(v).or_default() += 1;
        }
        self.stage1_trial_boots += u64::from(s.stage1_trial_boots);
        self.stage1_confirmations += u64::from(s.stage1_confirmations);
        self.stage1_hangs += u64::from(s.stage1_hangs);
        for (i, v) in s.installed.iter().enumerate() {
            if !s.installed[..i].contains(v) {
                *self.ever_installed.entry(*v).or_default() += 1;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking device turn is a bug the tests report; the data is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fleet {
    /// Start `devices`, each with a copy of `factory` (shared images are not copied).
    ///
    /// # Panics
    ///
    /// When the operating system refuses a thread (or the MQTT sessions' runtime).
    pub fn start(config: FleetConfig, factory: &FleetFlash, devices: Vec<DeviceSpec>) -> Fleet {
        let keys: &'static [TrustedKey] = Box::leak(config.keys.clone().into_boxed_slice());
        // Every device's boot verifies every image at every boot, with the real boot code: the
        // same few releases, signed once, checked hundreds of thousands of times. Each device
        // still hashes its own flash and compares the hash; a signature over a digest that
        // verified before is not checked again (`remember_verified`: exact bytes, accepted
        // verdicts only), which was a tenth of the 100,000-device demo's CPU.
        fota_protocol::image::ed25519::remember_verified(true);
        let threads = config.threads.clamp(1, 512).min(devices.len().max(1));
        let server = Server::new(&config.server, threads);
        let now = Instant::now();
        let size = devices.len();
        let mut shards: Vec<(Vec<Slot>, WakeQueue)> = (0..threads)
            .map(|_| {
                (
                    Vec::with_capacity(size / threads + 1),
                    BinaryHeap::with_capacity(size / threads + 1),
                )
            })
            .collect();
        let mut accounts = Vec::with_capacity(if config.mqtt.is_some() { size } else { 0 });
        for (i, spec) in devices.into_iter().enumerate() {
            let (slots, queue) = &mut shards[i % threads];
            let link = Link::new(server.clone(), &spec.id, &spec.token);
            let mut device = Device::new(&spec.id, &spec.model, factory.clone(), link, spec.faults);
            if let Some(mqtt) = &config.mqtt {
                let outbox = mqtt.reports.then(|| Arc::new(Outbox::default()));
                if let Some(outbox) = &outbox {
                    device.report_over_mqtt(Arc::clone(outbox));
                }
                accounts.push((i % threads, slots.len(), spec.id, spec.token, outbox));
            }
            queue.push(Reverse((now, slots.len())));
            slots.push(Slot {
                status: Mutex::new(device.status().clone()),
                device: Mutex::new(device),
                sched: Mutex::new(Sched {
                    at: now,
                    inbox: Vec::new(),
                }),
            });
        }
        let shards: Vec<Arc<Shard>> = shards
            .into_iter()
            .map(|(slots, queue)| {
                Arc::new(Shard {
                    slots,
                    queue: Mutex::new(queue),
                })
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let handles = shards
            .iter()
            .enumerate()
            .map(|(i, shard)| {
                let shard = Arc::clone(shard);
                let stop = Arc::clone(&stop);
                let timing = config.timing;
                let client = config.client;
                std::thread::Builder::new()
                    .name(format!("fleet-{i}"))
                    .stack_size(256 * 1024)
                    .spawn(move || run_shard(&shard, &stop, keys, &timing, client))
                    .unwrap_or_else(|e| panic!("cannot start a simulator thread: {e}"))
            })
            .collect();
        let mqtt = config.mqtt.as_ref().map(|mqtt| {
            let sessions = accounts
                .into_iter()
                .map(|(shard, index, id, token, outbox)| {
                    // Weak: a session the runtime has not dropped yet must not keep the
                    // devices from `stop`.
                    let shard = Arc::downgrade(&shards[shard]);
                    let deliver: Deliver = Box::new(move |command| {
                        if let Some(shard) = shard.upgrade() {
                            deliver(&shard, index, command);
                        }
                    });
                    DeviceSession {
                        id,
                        token,
                        deliver,
                        outbox,
                    }
                })
                .collect();
            MqttSessions::start(mqtt, sessions)
                .unwrap_or_else(|e| panic!("cannot start the MQTT sessions: {e}"))
        });
        Fleet {
            shards,
            stop,
            threads: handles,
            keys,
            size,
            mqtt,
        }
    }

    /// The process ids of the relays holding the MQTT sessions' sockets, if any
    /// ([`crate::MqttConfig::relay`]).
    pub fn mqtt_relay_pids(&self) -> Vec<u32> {
        self.mqtt
            .as_ref()
            .map_or_else(Vec::new, |m| m.relay_pids().to_vec())
    }

    /// The MQTT sessions' counters (`None` without [`FleetConfig::mqtt`]).
    pub fn mqtt_stats(&self) -> Option<MqttStats> {
        self.mqtt.as_ref().map(MqttSessions::stats)
    }

    /// Devices in the fleet.
    pub fn len(&self) -> usize {
        self.size
    }

    /// Whether the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Every device's status.
    pub fn statuses(&self) -> Vec<DeviceStatus> {
        let mut out = Vec::with_capacity(self.size);
        for shard in &self.shards {
            out.extend(shard.slots.iter().map(|s| lock(&s.status).clone()));
        }
        out
    }

    /// The fleet at a glance.
    pub fn summary(&self) -> FleetSummary {
        let mut summary = FleetSummary::default();
        for shard in &self.shards {
            for slot in &shard.slots {
                summary.add(&lock(&slot.status));
            }
        }
        summary
    }

    /// Wait until `done` holds for the fleet's summary (checked every 100 ms) or `timeout`
    /// passes; returns the last summary and whether `done` held.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&FleetSummary) -> bool,
    ) -> (FleetSummary, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let summary = self.summary();
            if done(&summary) {
                return (summary, true);
            }
            if Instant::now() >= deadline {
                return (summary, false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop every device and return them (powered off), for final checks such as
    /// [`Device::next_boot`].
    pub fn stop(mut self) -> (Vec<Device>, &'static [TrustedKey]) {
        drop(self.mqtt.take());
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        let mut devices = Vec::with_capacity(self.size);
        for shard in self.shards.drain(..) {
            match Arc::try_unwrap(shard) {
                Ok(shard) => devices.extend(
                    shard
                        .slots
                        .into_iter()
                        .map(|s| s.device.into_inner().unwrap_or_else(|e| e.into_inner())),
                ),
                // Only the threads held clones, and they have been joined.
                Err(_) => unreachable!("simulator threads are joined"),
            }
        }
        (devices, self.keys)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        drop(self.mqtt.take());
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn run_shard(
    shard: &Shard,
    stop: &AtomicBool,
    keys: &'static [TrustedKey],
    timing: &Timing,
    client: Config,
) {
    let cx = Context {
        keys,
        timing,
        client,
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let due = {
            let mut queue = lock(&shard.queue);
            match queue.peek() {
                Some(Reverse((at, _))) if *at <= now => queue.pop().map(|Reverse(entry)| entry),
                _ => None,
            }
        };
        let Some((at, index)) = due else {
            let wait = lock(&shard.queue)
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(20))
                .min(Duration::from_millis(20));
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            continue;
        };
        let slot = &shard.slots[index];
        let commands = {
            let mut sched = lock(&slot.sched);
            if sched.at != at {
                // Brought forward by a command: the device has another entry.
                continue;
            }
            std::mem::take(&mut sched.inbox)
        };
        let next = {
            let mut device = lock(&slot.device);
            for (command, received_ms) in &commands {
                device.command_received(now, command, *received_ms);
            }
            let next = device.turn(now, &cx);
            lock(&slot.status).clone_from(device.status());
            next
        };
        let mut sched = lock(&slot.sched);
        // A command that came during the turn: run again now.
        sched.at = if sched.inbox.is_empty() { next } else { now };
        lock(&shard.queue).push(Reverse((sched.at, index)));
    }
}

/// A command for device `index` of `shard`: into its inbox, and its next turn now.
fn deliver(shard: &Shard, index: usize, command: Command) {
    let Some(slot) = shard.slots.get(index) else {
        return;
    };
    let mut sched = lock(&slot.sched);
    // A device's inbox holds at most a few commands between turns; a flood is dropped.
    if sched.inbox.len() >= 16 {
        return;
    }
    sched.inbox.push((command, crate::device::unix_ms()));
    let now = Instant::now();
    if sched.at > now {
        sched.at = now;
        lock(&shard.queue).push(Reverse((now, index)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u8) -> ImageVersion {
        ImageVersion::new(2, minor, 0, 0)
    }

    /// A device rebooting after a background reset runs nothing, yet stays settled on the
    /// release it ran confirmed; a device on trial is settled on nothing new.
    #[test]
    fn a_confirmed_device_that_resets_stays_settled_on_its_release() {
        let running = DeviceStatus {
            version: Some(v(0)),
            mode: Some(BootMode::Confirmed),
            settled: Some(v(0)),
            ..DeviceStatus::default()
        };
        let resetting = DeviceStatus {
            version: Some(v(0)),
            mode: None,
            settled: Some(v(0)),
            ..DeviceStatus::default()
        };
        let on_trial = DeviceStatus {
            version: Some(v(1)),
            mode: Some(BootMode::Trial { attempt: 1 }),
            settled: None,
            ..DeviceStatus::default()
        };
        let mut summary = FleetSummary::default();
        for s in [&running, &resetting, &on_trial] {
            summary.add(s);
        }
        assert_eq!(summary.confirmed_on(v(0)), 1);
        assert_eq!(summary.not_running, 1);
        assert_eq!(summary.settled_on(v(0)), 2);
        assert_eq!(summary.settled_on(v(1)), 0);
        assert_eq!(summary.trial.get(&v(1)), Some(&1));
    }
}
