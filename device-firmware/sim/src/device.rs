//! One virtual device: the real bootloader logic and the real OTA client on a [`FleetFlash`],
//! stepped by the fleet's scheduler.
//!
//! A device is a loop of power-on → bootloader → application → reset, as on the board:
//!
//! 1. **Boot**: [`fota_boot::boot`] over the device's flash (journal replay, verification of the
//!    slot it picks, the trial attempt recorded before the "jump"). Recovery mode if nothing
//!    verifies.
//! 2. **Run** the chosen image's [`AppBehaviour`], read from its payload in flash: a good build
//!    runs the OTA client's main loop (after-boot confirmation, periodic check-ins, download
//!    steps, reports); the others fault at once, hang until the watchdog fires, or crash later.
//! 3. **Reset**: everything in RAM is dropped, the OTA client included. The flash (and the
//!    client's persisted state, [`MemPersist`], which stands for its flash sectors) is all that
//!    survives. The next boot tells the client why it reset (power-on, update, fault, watchdog,
//!    as the board's RCC_CSR and fault record would), and the client reports it; a healthy
//!    device can be given a background rate of watchdog resets ([`Faults::background_reset_mean`]).

use crate::app::{behaviour_of, stage1_behaviour_of, AppBehaviour, Stage1Behaviour};
use crate::fleet_flash::FleetFlash;
use crate::link::{Link, LinkStats};
use crate::mqtt::Outbox;
use fota_boot::stage0::boot_stage1;
use fota_boot::{boot, BootAction, BootControl, BootMode, FlashLayout};
use fota_ota_client::{
    AfterBoot, CheckInOutcome, Config, DeviceInfo, MemPersist, OtaClient, Pushed, Running, Step,
};
use fota_protocol::image::{ImageVersion, TrustedKey};
use fota_protocol::messages::{Command, Model, RdpLevel, ResetCause};
use fota_protocol::SlotId;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The flash layout of every virtual device.
pub const LAYOUT: FlashLayout = FlashLayout::STM32F429;

/// How fast the simulated world turns. Real devices check in hourly; tests use milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between check-ins.
    pub check_in_interval: Duration,
    /// The first check-in after power-on comes at a random point of this much time (so a
    /// fleet that starts at once does not check in at once); at most `check_in_interval`.
    pub first_check_in_spread: Duration,
    /// From a reset to the application running.
    pub reboot: Duration,
    /// How long a hung application runs before the watchdog resets it.
    pub watchdog: Duration,
    /// Back-off after a failed request.
    pub retry: Duration,
    /// Download steps (fetch and program one chunk) per scheduling turn.
    pub steps_per_turn: u32,
    /// For a device with a slow link: the pause after each download step.
    pub slow_link_pause: Duration,
    /// How often a device in recovery mode tries the bootloader again.
    pub recovery_retry: Duration,
    /// A device reporting over MQTT publishes its report again when the server's `report_ack`
    /// has not come after this long (the server stores each event once, so a resend is safe).
    pub report_ack_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            check_in_interval: Duration::from_millis(500),
            first_check_in_spread: Duration::from_millis(500),
            reboot: Duration::from_millis(20),
            watchdog: Duration::from_millis(300),
            retry: Duration::from_millis(100),
            steps_per_turn: 8,
            slow_link_pause: Duration::from_millis(40),
            recovery_retry: Duration::from_secs(1),
            report_ack_timeout: Duration::from_secs(2),
        }
    }
}

/// Faults to inject into one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The link drops once in the middle of the first download, for two requests.
    pub link_drop: bool,
    /// The power is cut once in the middle of the first download's flash writes.
    pub power_cut: bool,
    /// Every download step is followed by [`Timing::slow_link_pause`].
    pub slow_link: bool,
    /// Whatever it runs, the watchdog resets it now and then: a random time after each boot,
    /// exponentially distributed with this mean (a healthy fleet's background of unexpected
    /// resets, so a release's reset rate has a baseline to be compared with).
    pub background_reset_mean: Option<Duration>,
    /// Mixed into the device's random numbers (check-in jitter, where faults strike, when its
    /// background resets come): fleets of the same device ids with different seeds live
    /// different histories; 0 keeps the id's own sequence.
    pub seed: u64,
}

/// What the simulator shares with every device.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Keys the bootloader and the client trust.
    pub keys: &'static [TrustedKey],
    /// The clock.
    pub timing: &'a Timing,
    /// The client's tunables.
    pub client: Config,
}

/// A device's counters and its state as of its last turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Its id.
    pub id: String,
    /// The slot it runs from (`None` in recovery or while resetting).
    pub slot: Option<SlotId>,
    /// The version it runs.
    pub version: Option<ImageVersion>,
    /// How its running image was booted.
    pub mode: Option<BootMode>,
    /// The version it last ran confirmed (booted confirmed, or confirmed on trial), kept
    /// through a reset until it boots an image again: a confirmed device that a background
    /// watchdog reset is still settled on its release while it reboots into it, though it
    /// runs nothing. `None` once it boots a trial, finds nothing valid, or hangs in stage-1.
    pub settled: Option<ImageVersion>,
    /// The bootloader found nothing valid at the last boot.
    pub in_recovery: bool,
    /// Boots (bootloader runs).
    pub boots: u32,
    /// Boots of a trial image.
    pub trial_boots: u32,
    /// Times the bootloader chose recovery mode.
    pub recoveries: u32,
    /// Images installed and marked pending (reboots into a trial).
    pub installs: u32,
    /// Versions of the images it installed, in order.
    pub installed: Vec<ImageVersion>,
    /// Offers it took (downloads started), by version.
    pub accepted: Vec<ImageVersion>,
    /// Trial images it confirmed.
    pub confirmations: u32,
    /// Bootloader reverts it noticed and reported.
    pub rollbacks: u32,
    /// Crashes and watchdog resets of the running application.
    pub crashes: u32,
    /// Of which: background watchdog resets ([`Faults::background_reset_mean`]).
    pub background_resets: u32,
    /// Power cuts it suffered.
    pub power_cuts: u32,
    /// The version it is downloading, as of its last turn.
    pub downloading: Option<ImageVersion>,
    /// Check-in nudges it received (over MQTT) while running.
    pub nudges: u32,
    /// Downloads it dropped on a pushed stop.
    pub pushed_stops: u32,
    /// Downloads it dropped because a check-in no longer offered them.
    pub withdrawn: u32,
    /// When it last dropped a download (stop or withdrawal), in milliseconds since the Unix
    /// epoch (comparable with the server's timestamps).
    pub stopped_at_ms: Option<u64>,
    /// When the pushed stop that last dropped a download reached the device (its session),
    /// in milliseconds since the Unix epoch: [`stopped_at_ms`](Self::stopped_at_ms) less this
    /// is how long it waited for the device's next turn.
    pub stop_received_at_ms: Option<u64>,
    /// Commands that arrived while its application was not running (lost, as on a device
    /// whose network is down).
    pub commands_lost: u32,
    /// Reports the server acknowledged over MQTT (`report_ack`).
    pub mqtt_reports: u32,
    /// Reports it published over MQTT (resends included).
    pub mqtt_reports_posted: u32,
    /// Its link's figures.
    pub link: LinkStats,
    /// A two-stage device: the stage-1 stage-0 booted last (stage-1 slot, version, how).
    pub stage1: Option<(SlotId, ImageVersion, BootMode)>,
    /// Boots of a stage-1 on trial.
    pub stage1_trial_boots: u32,
    /// New stage-1s it confirmed (an application booted through one and confirmed it).
    pub stage1_confirmations: u32,
    /// Boots in which the stage-1 hung before an application ran (the watchdog reset it).
    pub stage1_hangs: u32,
}

type Client = OtaClient<'static, Link, FleetFlash, MemPersist>;

/// The running application.
#[derive(Debug)]
struct App {
    client: Client,
    behaviour: AppBehaviour,
    booted_at: Instant,
    after_boot_done: bool,
    next_check_in: Instant,
    /// When the background watchdog reset comes, if one is due this boot.
    background_reset_at: Option<Instant>,
    /// When it last published a report over MQTT still waiting for its `report_ack`.
    report_posted_at: Option<Instant>,
}

#[derive(Debug)]
enum Phase {
    /// Reset; the bootloader runs at the next turn.
    Off {
        flash: FleetFlash,
        persist: MemPersist,
        link: Link,
    },
    /// The application runs.
    Running(Box<App>),
    /// The bootloader found nothing to run.
    Recovery {
        flash: FleetFlash,
        persist: MemPersist,
        link: Link,
    },
    /// Transient while a turn moves the parts around.
    Gone,
}

/// One virtual device. See the [module docs](self).
#[derive(Debug)]
pub struct Device {
    model: Model,
    /// Its factory flash holds a stage-1: stage-0 runs first at every reset.
    two_stage: bool,
    phase: Phase,
    faults: Faults,
    rng: u64,
    status: DeviceStatus,
    power_cut_armed: bool,
    link_drop_armed: bool,
    /// Why the next boot happens, and what ran before it (as the board's reset-cause register
    /// and fault record would say): a power-on unless a reset site says otherwise.
    next_reset: (ResetCause, Option<Running>),
    /// Its reports go through its MQTT session ([`Device::report_over_mqtt`]).
    mqtt_reports: Option<Arc<Outbox>>,
}

impl Device {
    /// A device `id` of hardware `model`, with `flash` as the factory left it.
    pub fn new(id: &str, model: &str, mut flash: FleetFlash, link: Link, faults: Faults) -> Self {
        let two_stage = [SlotId::A, SlotId::B]
            .iter()
            .any(|&slot| holds_image(&mut flash, LAYOUT.stage1_offset(slot)));
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for b in id.bytes() {
            rng = (rng ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        rng ^= faults.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if rng == 0 {
            // xorshift never leaves 0.
            rng = 1;
        }
        let mut m = Model::new();
        for c in model.chars() {
            if m.push(c).is_err() {
                break;
            }
        }
        Self {
            model: m,
            two_stage,
            phase: Phase::Off {
                flash,
                persist: MemPersist::default(),
                link,
            },
            faults,
            rng,
            status: DeviceStatus {
                id: id.to_owned(),
                ..DeviceStatus::default()
            },
            power_cut_armed: faults.power_cut,
            link_drop_armed: faults.link_drop,
            next_reset: (ResetCause::PowerOn, None),
            mqtt_reports: None,
        }
    }

    /// Publish reports through `outbox` (the device's MQTT session) instead of posting them over
    /// HTTP: each is settled by the server's `report_ack`, and published again after
    /// [`Timing::report_ack_timeout`] without one. A report due right before a reset (the
    /// installed image) still goes over HTTP, where the answer is the acknowledgement: the
    /// device does not wait for a push it would lose with its RAM.
    pub fn report_over_mqtt(&mut self, outbox: Arc<Outbox>) {
        self.mqtt_reports = Some(outbox);
    }

    /// Its counters and state.
    pub fn status(&self) -> &DeviceStatus {
        &self.status
    }

    /// Power the device off and run the bootloader on (a copy of) its flash: the image it
    /// would run next and how, or `None` for recovery mode. This is the "never bricked" check.
    pub fn next_boot(&mut self, keys: &[TrustedKey]) -> Option<(SlotId, ImageVersion, BootMode)> {
        self.power_cycle();
        let Phase::Off { flash, .. } = &self.phase else {
            return None;
        };
        let mut flash = flash.clone();
        flash.power_on();
        if self.two_stage {
            // Stage-0 in recovery: no stage-1 runs, so no application either.
            boot_stage1(&mut flash, &LAYOUT, keys).action.target()?;
        }
        match boot(&mut flash, &LAYOUT, keys).action {
            BootAction::Jump(t) => Some((t.slot(), t.image.image.header.version, t.mode)),
            BootAction::Recovery => None,
        }
    }

    /// A two-stage device: power it off and run stage-0 on (a copy of) its flash: the stage-1 it
    /// would boot next (stage-1 slot, version, how), or `None` for stage-0's recovery (or a
    /// single-stage device).
    pub fn next_stage1(&mut self, keys: &[TrustedKey]) -> Option<(SlotId, ImageVersion, BootMode)> {
        if !self.two_stage {
            return None;
        }
        self.power_cycle();
        let Phase::Off { flash, .. } = &self.phase else {
            return None;
        };
        let mut flash = flash.clone();
        flash.power_on();
        match boot_stage1(&mut flash, &LAYOUT, keys).action {
            BootAction::Jump(t) => Some((t.slot(), t.image.image.header.version, t.mode)),
            BootAction::Recovery => None,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A random duration in `0..max`.
    fn jitter(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().max(1) as u64;
        Duration::from_millis(self.random() % ms)
    }

    /// Power the device off and on: the application and everything in RAM are gone.
    pub fn power_cycle(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Gone);
        self.phase = match phase {
            Phase::Running(app) => {
                let (link, control, persist) = app.client.into_parts();
                Phase::Off {
                    flash: control.into_flash(),
                    persist,
                    link,
                }
            }
            Phase::Recovery {
                flash,
                persist,
                link,
            } => Phase::Off {
                flash,
                persist,
                link,
            },
            other => other,
        };
        self.status.slot = None;
        self.status.mode = None;
        self.status.downloading = None;
    }

    /// A command the server pushed (over MQTT), acted on by the OTA client if the application
    /// runs and reaches the network: a nudge brings the next check-in forward to within the
    /// jitter it names, a stop drops the download of its rollout at once.
    pub fn command(&mut self, now: Instant, command: &Command) {
        self.command_received(now, command, unix_ms());
    }

    /// [`command`](Self::command), for a command that reached the device's session at
    /// `received_ms` (milliseconds since the Unix epoch) and waited for this turn.
    pub fn command_received(&mut self, now: Instant, command: &Command, received_ms: u64) {
        let random = self.random() as u32;
        let Phase::Running(app) = &mut self.phase else {
            self.status.commands_lost += 1;
            return;
        };
        if app.behaviour == AppBehaviour::NeverReachesServer {
            self.status.commands_lost += 1;
            return;
        }
        match app.client.command(command, random) {
            Pushed::CheckInAfter(s) => {
                self.status.nudges += 1;
                app.next_check_in = app
                    .next_check_in
                    .min(now + Duration::from_secs(u64::from(s)));
            }
            Pushed::Stopped => {
                self.status.pushed_stops += 1;
                self.status.downloading = None;
                self.status.stopped_at_ms = Some(unix_ms());
                self.status.stop_received_at_ms = Some(received_ms);
                // What it wrote of the dropped image is shared with the devices that wrote
                // the same.
                app.client.boot_mut().flash_mut().seal();
            }
            Pushed::Acknowledged(_) => {
                self.status.mqtt_reports += 1;
                // The rest of the queue, if any, goes at this turn.
                app.report_posted_at = None;
            }
            Pushed::Ignored => {}
        }
    }

    /// Run the device until it next needs the CPU; returns when that is.
    pub fn turn(&mut self, now: Instant, cx: &Context<'_>) -> Instant {
        let phase = std::mem::replace(&mut self.phase, Phase::Gone);
        match phase {
            Phase::Off {
                flash,
                persist,
                link,
            } => self.boot(now, cx, flash, persist, link),
            Phase::Recovery {
                flash,
                persist,
                link,
            } => self.boot(now, cx, flash, persist, link),
            Phase::Running(app) => self.run(now, cx, app),
            Phase::Gone => now + cx.timing.retry,
        }
    }

    fn boot(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        mut flash: FleetFlash,
        persist: MemPersist,
        link: Link,
    ) -> Instant {
        flash.power_on();
        self.status.boots += 1;
        self.status.link = link.stats();
        if self.two_stage {
            // Stage-0: pick and verify a stage-1 (its trial attempt journaled before the jump).
            let outcome = boot_stage1(&mut flash, &LAYOUT, cx.keys);
            let Some(stage1) = outcome.action.target() else {
                self.status.stage1 = None;
                return self.recover(now, cx, flash, persist, link);
            };
            self.status.stage1 = Some((
                stage1.slot(),
                stage1.image.image.header.version,
                stage1.mode,
            ));
            if matches!(stage1.mode, BootMode::Trial { .. }) {
                self.status.stage1_trial_boots += 1;
            }
            // A stage-1 without a descriptor is not ours: it never boots an application.
            let behaviour =
                stage1_behaviour_of(&mut flash, &LAYOUT, stage1).unwrap_or(Stage1Behaviour::Hangs);
            if behaviour == Stage1Behaviour::Hangs {
                self.status.stage1_hangs += 1;
                self.status.crashes += 1;
                self.status.slot = None;
                self.status.version = None;
                self.status.mode = None;
                self.status.settled = None;
                // The watchdog resets it; nothing of an application ran.
                self.next_reset = (ResetCause::IndependentWatchdog, None);
                self.phase = Phase::Off {
                    flash,
                    persist,
                    link,
                };
                return now + cx.timing.watchdog;
            }
        }
        let outcome = boot(&mut flash, &LAYOUT, cx.keys);
        let target = match outcome.action {
            BootAction::Jump(target) => target,
            BootAction::Recovery => return self.recover(now, cx, flash, persist, link),
        };
        self.status.in_recovery = false;
        self.status.slot = Some(target.slot());
        self.status.version = Some(target.image.image.header.version);
        self.status.mode = Some(target.mode);
        self.status.settled =
            (target.mode == BootMode::Confirmed).then_some(target.image.image.header.version);
        if matches!(target.mode, BootMode::Trial { .. }) {
            self.status.trial_boots += 1;
        }
        // An image without a descriptor is not ours: it runs, but never reaches the server.
        let behaviour =
            behaviour_of(&mut flash, &LAYOUT, &target).unwrap_or(AppBehaviour::NeverReachesServer);
        if behaviour == AppBehaviour::FailsBoot {
            self.status.crashes += 1;
            // The image's fault handler records the fault, with its own version.
            self.next_reset = (
                ResetCause::Fault,
                Some(Running {
                    version: target.image.image.header.version,
                    uptime_s: 0,
                }),
            );
            self.phase = Phase::Off {
                flash,
                persist,
                link,
            };
            return now + cx.timing.reboot;
        }
        // Opening the journal may compact it; should that fail, the application cannot run
        // (on the board it would fault): reset and let the next boot decide again.
        let spare = flash.clone();
        let control = match BootControl::open(flash, LAYOUT, target.slot()) {
            Ok(control) => control,
            Err(_) => {
                self.status.crashes += 1;
                self.next_reset = (ResetCause::Fault, None);
                self.phase = Phase::Off {
                    flash: spare,
                    persist,
                    link,
                };
                return now + cx.timing.reboot;
            }
        };
        let info = DeviceInfo {
            model: self.model.clone(),
            firmware_version: target.image.image.header.version,
            bootloader_version: ImageVersion::new(1, 0, 0, 0),
            rdp_level: RdpLevel::Level1,
            wrp_mask: 0,
        };
        let mut client = OtaClient::new(link, control, persist, info, cx.keys, cx.client);
        let (cause, ran) = std::mem::replace(&mut self.next_reset, (ResetCause::PowerOn, None));
        client.boot_reset(cause, ran);
        let background_reset_at = self.faults.background_reset_mean.map(|mean| {
            // Exponential: -ln(U) x mean, U uniform in (0, 1].
            let u = (self.random() % 1_000_000 + 1) as f64 / 1_000_000.0;
            now + mean.mul_f64(-u.ln())
        });
        let first_check_in = if self.status.boots == 1 {
            now + self.jitter(
                cx.timing
                    .first_check_in_spread
                    .min(cx.timing.check_in_interval),
            )
        } else {
            now
        };
        self.phase = Phase::Running(Box::new(App {
            client,
            behaviour,
            booted_at: now,
            after_boot_done: false,
            next_check_in: first_check_in,
            background_reset_at,
            report_posted_at: None,
        }));
        now + cx.timing.reboot
    }

    /// Recovery mode: stage-0 or the bootloader found nothing valid to run.
    fn recover(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        flash: FleetFlash,
        persist: MemPersist,
        link: Link,
    ) -> Instant {
        self.status.recoveries += 1;
        self.status.in_recovery = true;
        self.status.slot = None;
        self.status.version = None;
        self.status.mode = None;
        self.status.settled = None;
        self.phase = Phase::Recovery {
            flash,
            persist,
            link,
        };
        now + cx.timing.recovery_retry
    }

    /// Reset from the running application, for `cause`.
    fn reset(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        app: Box<App>,
        cause: ResetCause,
    ) -> Instant {
        let ran = self.status.version.map(|version| Running {
            version,
            uptime_s: u32::try_from(now.saturating_duration_since(app.booted_at).as_secs())
                .unwrap_or(u32::MAX),
        });
        self.phase = Phase::Running(app);
        self.power_cycle();
        self.next_reset = (cause, ran);
        if let Phase::Off { flash, link, .. } = &mut self.phase {
            // Whatever the application wrote is shared with the devices that wrote the same.
            flash.seal();
            self.status.link = link.stats();
        }
        now + cx.timing.reboot
    }

    fn powered(app: &mut App) -> bool {
        app.client.boot_mut().flash_mut().is_powered()
    }

    fn run(&mut self, now: Instant, cx: &Context<'_>, mut app: Box<App>) -> Instant {
        let t = cx.timing;
        match app.behaviour {
            AppBehaviour::NeverReachesServer => {
                let fires = app.booted_at + t.watchdog;
                if now < fires {
                    self.phase = Phase::Running(app);
                    return fires;
                }
                self.status.crashes += 1;
                return self.reset(now, cx, app, ResetCause::IndependentWatchdog);
            }
            AppBehaviour::CrashesAfter { after_ms } => {
                if now >= app.booted_at + Duration::from_millis(u64::from(after_ms)) {
                    self.status.crashes += 1;
                    return self.reset(now, cx, app, ResetCause::Fault);
                }
            }
            AppBehaviour::Good | AppBehaviour::FailsBoot => {}
        }
        if app.background_reset_at.is_some_and(|at| now >= at) {
            self.status.crashes += 1;
            self.status.background_resets += 1;
            return self.reset(now, cx, app, ResetCause::IndependentWatchdog);
        }

        if !app.after_boot_done {
            match app.client.after_boot(|| true) {
                Ok(AfterBoot::CheckInFailed) | Err(_) => {
                    self.status.link = app.client.transport().stats();
                    self.phase = Phase::Running(app);
                    return now + t.retry;
                }
                Ok(outcome) => {
                    app.after_boot_done = true;
                    match outcome {
                        AfterBoot::NewlyConfirmed => self.status.confirmations += 1,
                        AfterBoot::RolledBack => self.status.rollbacks += 1,
                        AfterBoot::Stage1Confirmed(_) => {
                            self.status.stage1_confirmations += 1;
                            if let Some((_, _, mode)) = &mut self.status.stage1 {
                                *mode = BootMode::Confirmed;
                            }
                        }
                        _ => {}
                    }
                    if outcome == AfterBoot::NewlyConfirmed {
                        self.status.mode = Some(BootMode::Confirmed);
                        self.status.settled = self.status.version;
                    }
                    // As on the board (`fota-runtime`): the trial's check-in counts as this
                    // boot's first, so the next one is an interval away.
                    if matches!(
                        outcome,
                        AfterBoot::NewlyConfirmed | AfterBoot::Stage1Confirmed(_)
                    ) {
                        app.next_check_in = now + t.check_in_interval;
                    }
                }
            }
        }

        let mut wake = app.next_check_in;
        if app.client.download().is_some() {
            let mut pause = Duration::ZERO;
            for _ in 0..t.steps_per_turn.max(1) {
                // The client's persisted state stands for flash sectors; on a board nothing runs
                // after the power is cut, so what the step recorded after the cut must not
                // survive it. Keep the state from before the step while a cut is scheduled.
                let before = app
                    .client
                    .boot_mut()
                    .flash_mut()
                    .cut_pending()
                    .then(|| app.client.persist().clone());
                let step = app.client.download_step();
                if !Self::powered(&mut app) {
                    self.status.power_cuts += 1;
                    let wake = self.reset(now, cx, app, ResetCause::PowerOn);
                    if let (Some(before), Phase::Off { persist, .. }) = (before, &mut self.phase) {
                        *persist = before;
                    }
                    return wake;
                }
                match step {
                    Step::Reboot => {
                        self.status.installs += 1;
                        if let Some(d) = app.client.queued_events().last() {
                            if let Some(v) = d.version {
                                self.status.installed.push(v);
                            }
                        }
                        // Tell the server before the reset; what is not sent is lost with RAM.
                        let _ = app.client.flush_reports();
                        return self.reset(now, cx, app, ResetCause::Update);
                    }
                    Step::Failed | Step::Idle => {
                        app.client.boot_mut().flash_mut().seal();
                        break;
                    }
                    Step::Continue => {
                        if app.client.transport().last_failed() {
                            pause = t.retry;
                            break;
                        }
                        if self.faults.slow_link {
                            pause = t.slow_link_pause;
                            break;
                        }
                    }
                }
            }
            if app.client.download().is_some() {
                wake = wake.min(now + pause);
            }
        }

        if now >= app.next_check_in {
            let outcome = app.client.check_in();
            app.next_check_in = now + t.check_in_interval;
            wake = wake.min(app.next_check_in);
            if let Ok(CheckInOutcome::Withdrawn) = outcome {
                self.status.withdrawn += 1;
                self.status.stopped_at_ms = Some(unix_ms());
            }
            if let Ok(CheckInOutcome::Started) = outcome {
                if let Some(offer) = app.client.download().map(|d| d.offer().clone()) {
                    self.status.accepted.push(offer.version);
                    // A patch is what crosses the link: the drop lands inside it.
                    let fetched = app.client.applying_patch().map_or(offer.size, |p| p.size);
                    self.arm_faults(&mut app, offer.size, fetched, cx);
                }
                wake = now;
            } else if outcome.is_err() {
                app.next_check_in = now + t.retry;
                wake = wake.min(app.next_check_in);
            }
        }

        if !app.client.queued_events().is_empty() {
            if let Some(outbox) = &self.mqtt_reports {
                let due = app
                    .report_posted_at
                    .is_none_or(|at| now >= at + t.report_ack_timeout);
                if due {
                    if let Some(report) = app.client.pending_report() {
                        // Cannot fail: a report is plain data.
                        if let Ok(payload) = serde_json::to_vec(&report) {
                            outbox.post(payload);
                            app.report_posted_at = Some(now);
                            self.status.mqtt_reports_posted += 1;
                        }
                    }
                }
                if let Some(at) = app.report_posted_at {
                    wake = wake.min(at + t.report_ack_timeout);
                }
            } else if app.client.flush_reports().is_err() {
                wake = wake.min(now + t.retry);
            }
        }

        if let AppBehaviour::CrashesAfter { after_ms } = app.behaviour {
            wake = wake.min(app.booted_at + Duration::from_millis(u64::from(after_ms)));
        }
        if let Some(at) = app.background_reset_at {
            wake = wake.min(at);
        }
        self.status.link = app.client.transport().stats();
        self.status.downloading = app.client.download().map(|d| d.offer().version);
        self.phase = Phase::Running(app);
        wake
    }

    /// Arm the device's faults for a download of an image of `size` bytes, of which `fetched`
    /// cross the link (the image, or the patch it is rebuilt from).
    fn arm_faults(&mut self, app: &mut App, size: u32, fetched: u32, cx: &Context<'_>) {
        let chunk = cx.client.chunk_len.max(1) as u32;
        let chunks = size.div_ceil(chunk).max(2);
        if self.link_drop_armed {
            self.link_drop_armed = false;
            // Somewhere in the middle half of what is fetched.
            let at = fetched / 4 + (self.random() % u64::from(fetched / 2 + 1)) as u32;
            app.client.transport_mut().drop_at(at, 2);
        }
        if self.power_cut_armed {
            self.power_cut_armed = false;
            // The slot's two sector erases, then one write per chunk: somewhere among them.
            let ops = 2 + u64::from(chunks);
            let after = 1 + self.random() % ops;
            app.client.boot_mut().flash_mut().cut_power_after(after);
        }
    }
}

/// Whether an image header (MCUboot's magic) starts at `offset`.
fn holds_image(flash: &mut FleetFlash, offset: u32) -> bool {
    use embedded_storage::nor_flash::ReadNorFlash;
    let mut magic = [0u8; 4];
    flash.read(offset, &mut magic).is_ok() && u32::from_le_bytes(magic) == 0x96f3_b83d
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
