//! The OTA runtime an STM32F429 application links: everything between the board's drivers and
//! the [`OtaClient`], free of hardware so it is tested on the host.
//!
//! - [`read_identity`]: the device's identity from its area (0x0800_7E00, the last 512 bytes of sector 1): device id, token,
//!   server URL, model, CRC ([`fota_protocol::identity`]). A device without a valid identity
//!   does not run OTA at all, and says why.
//! - [`Runtime`]: the application's OTA main loop, one bounded [`poll`](Runtime::poll) at a
//!   time: confirm a trial (or unconfirmed) image once it reached the server and passed its
//!   self-test, check in at the interval the server asks for, download and install an offer,
//!   report events, back off after failures (2 s doubling up to 5 min by default), and ask for
//!   a reset when an image is installed or when the trial deadline passes.
//! - Commands the server pushes (MQTT, through a transport with a push path:
//!   [`Transport::take_command`]), taken at every poll, idle or not: a nudge (`check_in`)
//!   brings the next check-in forward to a random moment within its jitter; a `stop` drops the
//!   download of that rollout at once, between two of its chunks, so a halted rollout stops a
//!   download already running.
//!
//! # The trial deadline
//!
//! The bootloader counts trial *boots*: a trial image that hangs or crashes is reset by the
//! watchdog and reverted after three attempts. An image that runs, feeds the watchdog and never
//! reaches the server (the field incident) would never be reset, so never reverted. The runtime
//! closes that gap: on a trial boot, if the image has not confirmed itself within
//! [`RuntimeConfig::trial_deadline_ms`] of booting, [`poll`](Runtime::poll) returns
//! [`Action::Reset`] with [`ResetReason::TrialDeadline`]; the board resets, the bootloader
//! counts the attempt, and after the third it reverts to the confirmed image, which reports the
//! rollback. A stage-1 on trial (a new bootloader, installed by the client) is held to the same
//! deadline: the application it booted must reach the server, or the reset lets stage-0 count
//! the attempt and, after the third, fall back to the old stage-1. It relies on the runtime being polled (the application's main loop must keep
//! calling it) and on the clock advancing; docs/FIRMWARE.md lists what it cannot cover.
//!
//! The crate is `no_std`, has no `unsafe` and allocates nothing.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

use core::fmt;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use fota_boot::BootMode;
use fota_ota_client::transport::Transport;
use fota_ota_client::{AfterBoot, CheckInOutcome, OtaClient, Persist, Pushed, Step};
use fota_protocol::identity::{Identity, IdentityError, MAX_RECORD_LEN, PARTITION};
use fota_protocol::layout::FLASH_BASE;
use fota_protocol::messages::CommandKind;

/// Where the runtime's lines go (semihosting under QEMU, a UART or nowhere on a device).
pub trait Log {
    /// One line, without its newline.
    fn line(&mut self, args: fmt::Arguments<'_>);
}

/// A [`Log`] that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLog;

impl Log for NoLog {
    fn line(&mut self, _args: fmt::Arguments<'_>) {}
}

/// Read the identity record from the identity sector of `flash` (offsets from 0x0800_0000)
/// into `buf` and decode it.
pub fn read_identity<'b, F: ReadNorFlash>(
    flash: &mut F,
    buf: &'b mut [u8; MAX_RECORD_LEN],
) -> Result<Identity<'b>, IdentityError> {
    flash
        .read(PARTITION.start - FLASH_BASE, buf)
        .map_err(|_| IdentityError::Truncated)?;
    Identity::decode(buf)
}

/// Tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// A trial image that has not confirmed itself this long after booting is reset.
    pub trial_deadline_ms: u64,
    /// First pause after a failed request; it doubles after each further failure.
    pub retry_min_ms: u64,
    /// The longest pause after failures.
    pub retry_max_ms: u64,
    /// Check-in interval until the server has said one.
    pub default_poll_ms: u64,
    /// Seed of the random share of a nudge's jitter (different per device: its id, the time).
    pub jitter_seed: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            trial_deadline_ms: 10 * 60 * 1000,
            retry_min_ms: 2_000,
            retry_max_ms: 5 * 60 * 1000,
            default_poll_ms: 60 * 60 * 1000,
            jitter_seed: 1,
        }
    }
}

/// Why the runtime asks for a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// An update is installed and marked pending: the bootloader tries it next.
    Installed,
    /// A trial image did not confirm itself in time.
    TrialDeadline,
}

/// What the main loop should do after a [`poll`](Runtime::poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// More to do: poll again at once.
    Continue,
    /// Waiting (a backoff, or a download paused after a failure): poll again after this many
    /// milliseconds, or earlier.
    Wait(u64),
    /// Nothing to do until the next check-in, this many milliseconds away: the image is
    /// confirmed (or reported), no download runs and no event waits to be sent.
    Idle(u64),
    /// Reset the device now.
    Reset(ResetReason),
}

/// The OTA main loop. See the [crate docs](crate).
#[derive(Debug)]
pub struct Runtime<'k, T, F, P> {
    client: OtaClient<'k, T, F, P>,
    config: RuntimeConfig,
    self_test: fn() -> bool,
    booted_ms: u64,
    after_boot_done: bool,
    /// When the next check-in (or after-boot attempt) is due.
    next_check_in: u64,
    /// When requests may be retried after a failure.
    retry_at: u64,
    /// The current backoff.
    backoff: u64,
    /// Fetch failures of the download seen at the last step.
    fetch_failures: u32,
    /// The last download offset logged.
    logged_offset: u32,
    /// xorshift32 state for the nudges' jitter.
    random: u32,
}

impl<'k, T, F, P> Runtime<'k, T, F, P>
where
    T: Transport,
    F: NorFlash + ReadNorFlash,
    P: Persist,
{
    /// A runtime around `client`, booted at `now_ms`; `self_test` is the application's own
    /// check, run once on a trial boot before it confirms.
    pub fn new(
        client: OtaClient<'k, T, F, P>,
        config: RuntimeConfig,
        self_test: fn() -> bool,
        now_ms: u64,
        log: &mut impl Log,
    ) -> Self {
        let info = client.boot().info();
        match info.mode {
            BootMode::Trial { attempt } => log.line(format_args!(
                "ota: slot {} on trial (attempt {attempt}), deadline {} ms",
                info.slot, config.trial_deadline_ms
            )),
            BootMode::Confirmed => log.line(format_args!("ota: slot {} confirmed", info.slot)),
            BootMode::Unconfirmed => log.line(format_args!("ota: slot {} unconfirmed", info.slot)),
        }
        if let Some(stage1) = client.running_stage1() {
            log.line(format_args!(
                "ota: booted through stage-1 slot {} {} ({})",
                stage1.slot,
                stage1.version,
                stage1.mode.label()
            ));
        }
        if let Some(d) = client.download() {
            log.line(format_args!(
                "ota: resuming download of {} for {}slot {} ({} bytes)",
                d.offer().version,
                match d.offer().component {
                    fota_protocol::messages::Component::Application => "",
                    fota_protocol::messages::Component::Bootloader => "stage-1 ",
                },
                d.offer().slot,
                d.offer().size
            ));
        }
        Self {
            client,
            config,
            self_test,
            booted_ms: now_ms,
            after_boot_done: false,
            next_check_in: now_ms,
            retry_at: now_ms,
            backoff: 0,
            fetch_failures: 0,
            logged_offset: 0,
            random: config.jitter_seed.max(1),
        }
    }

    /// The client.
    pub fn client(&self) -> &OtaClient<'k, T, F, P> {
        &self.client
    }

    /// The client, mutably.
    pub fn client_mut(&mut self) -> &mut OtaClient<'k, T, F, P> {
        &mut self.client
    }

    /// Give the client back.
    pub fn into_client(self) -> OtaClient<'k, T, F, P> {
        self.client
    }

    fn next_random(&mut self) -> u32 {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random = x;
        x
    }

    /// Act on the commands the server pushed (bounded: at most a queue's worth per poll).
    fn take_pushed(&mut self, now: u64, log: &mut impl Log) {
        for _ in 0..8 {
            let Some(command) = self.client.transport_mut().take_command() else {
                return;
            };
            let random = self.next_random();
            match self.client.command(&command, random) {
                Pushed::CheckInAfter(s) => {
                    let at = now + u64::from(s) * 1000;
                    self.next_check_in = self.next_check_in.min(at);
                    log.line(format_args!(
                        "ota: pushed check_in (jitter {} s): checking in within {s} s",
                        command.jitter_s.unwrap_or(0)
                    ));
                }
                Pushed::Stopped => {
                    self.fetch_failures = 0;
                    self.logged_offset = 0;
                    log.line(format_args!(
                        "ota: pushed stop of rollout {}: download dropped",
                        command.rollout_id.unwrap_or(0)
                    ));
                }
                Pushed::Acknowledged(n) => {
                    log.line(format_args!("ota: pushed report_ack: {n} events forgotten"))
                }
                Pushed::Ignored => log.line(format_args!(
                    "ota: pushed {}: nothing to do",
                    match command.kind {
                        CommandKind::CheckIn => "check_in",
                        CommandKind::Stop => "stop",
                        CommandKind::ReportAck => "report_ack",
                    }
                )),
            }
        }
    }

    fn failed(&mut self, now: u64) {
        self.backoff = if self.backoff == 0 {
            self.config.retry_min_ms
        } else {
            (self.backoff * 2).min(self.config.retry_max_ms)
        };
        self.retry_at = now + self.backoff;
    }

    fn succeeded(&mut self) {
        self.backoff = 0;
    }

    fn poll_ms(&self) -> u64 {
        self.client
            .poll_interval_s()
            .map_or(self.config.default_poll_ms, |s| u64::from(s) * 1000)
    }

    /// One bounded step of the OTA work at time `now_ms`; says what to do next. On a trial
    /// boot no wait it asks for reaches past the trial deadline.
    pub fn poll(&mut self, now_ms: u64, log: &mut impl Log) -> Action {
        let action = self.step(now_ms, log);
        if !self.client.on_trial() {
            return action;
        }
        let deadline = self.booted_ms + self.config.trial_deadline_ms;
        let left = deadline.saturating_sub(now_ms).max(1);
        match action {
            Action::Wait(ms) => Action::Wait(ms.min(left)),
            Action::Idle(ms) => Action::Wait(ms.min(left)),
            other => other,
        }
    }

    fn step(&mut self, now_ms: u64, log: &mut impl Log) -> Action {
        let now = now_ms;
        // What runs and for how long, for the next boot's reset report (written every few
        // minutes, not at every poll).
        let uptime_s = now.saturating_sub(self.booted_ms) / 1000;
        self.client
            .record_uptime(u32::try_from(uptime_s).unwrap_or(u32::MAX));
        // 1. The trial deadline (of the application, or of the stage-1 that booted it), before
        // anything that could take time.
        if self.client.on_trial()
            && now.saturating_sub(self.booted_ms) >= self.config.trial_deadline_ms
        {
            log.line(format_args!(
                "ota: trial deadline: not confirmed {} ms after boot; resetting",
                now.saturating_sub(self.booted_ms)
            ));
            return Action::Reset(ResetReason::TrialDeadline);
        }
        // Pushed commands, even during a backoff: a stop must not wait for the link to recover.
        self.take_pushed(now, log);
        if now < self.retry_at {
            return Action::Wait(self.retry_at - now);
        }

        // 2. Once per boot: confirm a trial, or notice a rollback.
        if !self.after_boot_done {
            let outcome = self.client.after_boot(self.self_test);
            match outcome {
                Ok(AfterBoot::CheckInFailed) => {
                    self.failed(now);
                    log.line(format_args!(
                        "ota: cannot reach the server to confirm; retry in {} ms",
                        self.backoff
                    ));
                    return Action::Wait(self.backoff);
                }
                Ok(AfterBoot::SelfTestFailed) => {
                    self.failed(now);
                    log.line(format_args!("ota: self-test failed: not confirming"));
                    return Action::Wait(self.backoff);
                }
                Err(e) => {
                    self.failed(now);
                    log.line(format_args!("ota: after boot: {e:?}"));
                    return Action::Wait(self.backoff);
                }
                Ok(result) => {
                    self.succeeded();
                    self.after_boot_done = true;
                    let slot = self.client.boot().info().slot;
                    match result {
                        AfterBoot::NewlyConfirmed => {
                            log.line(format_args!("ota: confirmed slot {slot}"));
                            // The trial's check-in counts as this boot's first.
                            self.next_check_in = now + self.poll_ms();
                        }
                        AfterBoot::Stage1Confirmed(stage1) => {
                            log.line(format_args!("ota: confirmed stage-1 slot {stage1}"));
                            self.next_check_in = now + self.poll_ms();
                        }
                        AfterBoot::RolledBack => log.line(format_args!(
                            "ota: the bootloader rolled back to slot {slot}; reporting"
                        )),
                        _ => {}
                    }
                }
            }
        }

        // 3. Events first: what the server has not acknowledged.
        if !self.client.queued_events().is_empty() {
            let mut names: [&str; 16] = [""; 16];
            let n = self.client.queued_events().len().min(names.len());
            for (slot, e) in names.iter_mut().zip(self.client.queued_events()) {
                *slot = e.kind.name();
            }
            match self.client.flush_reports() {
                Ok(sent) => {
                    self.succeeded();
                    log.line(format_args!(
                        "ota: reported {sent} events: {}",
                        Joined(&names[..n.min(sent)])
                    ));
                }
                Err(e) => {
                    self.failed(now);
                    log.line(format_args!(
                        "ota: report failed: {e:?}; retry in {} ms",
                        self.backoff
                    ));
                    return Action::Wait(self.backoff);
                }
            }
            return Action::Continue;
        }

        // 4. The download, one step at a time.
        if self.client.download().is_some() {
            let patching = self.client.applying_patch().is_some();
            let step = self.client.download_step();
            let failures = self.client.fetch_failures();
            if patching && step == Step::Continue && self.client.applying_patch().is_none() {
                if let Some(e) = self.client.queued_events().last() {
                    log.line(format_args!(
                        "ota: {}; downloading the full image",
                        e.reason.as_deref().unwrap_or("delta patch given up")
                    ));
                }
            }
            match step {
                Step::Reboot => {
                    if let Ok(n) = self.client.flush_reports() {
                        log.line(format_args!("ota: reported {n} events: installed"));
                    }
                    log.line(format_args!("ota: update installed and pending; resetting"));
                    return Action::Reset(ResetReason::Installed);
                }
                Step::Failed => {
                    if let Some(e) = self.client.queued_events().last() {
                        log.line(format_args!(
                            "ota: download ended: {} ({})",
                            e.kind.name(),
                            e.reason.as_deref().unwrap_or("")
                        ));
                    }
                    return Action::Continue;
                }
                Step::Idle => {}
                Step::Continue => {
                    if let Some(d) = self.client.download() {
                        let offset = d.resume_offset();
                        if offset >= self.logged_offset + 8192 || offset < self.logged_offset {
                            self.logged_offset = offset - offset % 8192;
                            log.line(format_args!("ota: download {offset}/{}", d.offer().size));
                        }
                    }
                    if failures > self.fetch_failures {
                        self.fetch_failures = failures;
                        self.failed(now);
                        log.line(format_args!(
                            "ota: fetch failed ({failures} in a row); retry in {} ms",
                            self.backoff
                        ));
                        return Action::Wait(self.backoff);
                    }
                    if failures == 0 && self.fetch_failures > 0 {
                        self.fetch_failures = 0;
                        self.succeeded();
                    }
                    return Action::Continue;
                }
            }
        }

        // 5. Check in when it is time.
        if now >= self.next_check_in {
            match self.client.check_in() {
                Ok(outcome) => {
                    self.succeeded();
                    self.next_check_in = now + self.poll_ms();
                    match outcome {
                        CheckInOutcome::Started => {
                            if let Some(d) = self.client.download() {
                                log.line(format_args!(
                                    "ota: offer {} for {}slot {} ({} bytes, rollout {}): downloading",
                                    d.offer().version,
                                    match d.offer().component {
                                        fota_protocol::messages::Component::Application => "",
                                        fota_protocol::messages::Component::Bootloader => {
                                            "stage-1 "
                                        }
                                    },
                                    d.offer().slot,
                                    d.offer().size,
                                    d.offer().rollout_id
                                ));
                            }
                            if let Some(p) = self.client.applying_patch() {
                                log.line(format_args!(
                                    "ota: rebuilding it from a {}-byte delta patch of the running image",
                                    p.size
                                ));
                            }
                            self.logged_offset = 0;
                        }
                        CheckInOutcome::NoOffer => {
                            log.line(format_args!("ota: check-in: no offer"))
                        }
                        other => log.line(format_args!("ota: check-in: {other:?}")),
                    }
                    return Action::Continue;
                }
                Err(e) => {
                    self.failed(now);
                    log.line(format_args!(
                        "ota: check-in failed: {e:?}; retry in {} ms",
                        self.backoff
                    ));
                    return Action::Wait(self.backoff);
                }
            }
        }
        Action::Idle(self.next_check_in - now)
    }
}

/// Names joined with ", ".
struct Joined<'a>(&'a [&'a str]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}
