//! A host emulator of a SIM7600-class 4G module, for the modem transport's tests, QEMU and the
//! benchmarks.
//!
//! It speaks the module's HTTP AT dialect (see `fota_modem::dialect`) over a byte stream: a TCP
//! connection (QEMU's `-chardev socket` on the emulated USART), or an in-process [`pipe`] for
//! host tests. Each HTTP request the device configures is made for real, with `ureq`, to the
//! URL the device set (a real `fota serve`), and the module's answers go back at a configurable
//! line rate ([`Pacing`]: 115200 baud is 11,520 bytes/s of 8N1 frames; 5,000 bytes/s is a
//! realistic 4G throughput). Faults are injected on demand through a shared [`Faults`] plan: a
//! link drop when a download reaches an offset, a lost PDP context, `ERROR` or `+CME ERROR`
//! answers, a module that goes silent, unsolicited result codes sprinkled between answers.
//!
//! - [`session`]: one connection's AT state machine ([`session::serve`]).
//! - [`mqtt`]: the module's MQTT client (`AT+CMQTT...`) over a real broker connection: the
//!   publishes it receives go to the device as URCs, between any two frames of any answer.
//! - [`pipe`]: the in-process byte pipe and the host [`fota_modem::Serial`] /
//!   [`fota_modem::Clock`] that the transport's tests run on.
//!
//! The binary `fota-modem-emulator` listens on a TCP port and serves one session per
//! connection (a QEMU restart is a module power cycle).
#![warn(missing_docs)]

pub mod mqtt;
pub mod pipe;
pub mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How fast the module's answers go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// As fast as the stream takes them.
    Unlimited,
    /// At most this many bytes per second (115200 baud 8N1 is 11,520).
    BytesPerSecond(u32),
}

impl Pacing {
    /// A UART at `baud` with 8N1 framing (10 bits per byte).
    pub fn baud(baud: u32) -> Self {
        Pacing::BytesPerSecond((baud / 10).max(1))
    }
}

/// Faults to inject, shared between the test or the command line and the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Drop the link (the HTTP request fails with network error 706) when an artifact request
    /// starts at or past this offset; once.
    pub drop_link_at: Option<u32>,
    /// How many requests fail when the link drops (at least 1).
    pub drop_requests: u32,
    /// Deactivate the PDP context (URC `+CGEV: NW PDN DEACT 1`; requests fail with 709 until
    /// `AT+CGACT=1,1`) when an artifact request starts at or past this offset; once.
    pub pdp_drop_at: Option<u32>,
    /// Answer `ERROR` to this many commands, from the next one.
    pub error_next: u32,
    /// Answer `+CME ERROR: 4` to this many commands, from the next one.
    pub cme_next: u32,
    /// Go silent (answer nothing, take nothing) when an artifact request starts at or past this
    /// offset; once.
    pub silent_at: Option<u32>,
    /// How long a silence lasts.
    pub silent_for: Duration,
    /// Put unsolicited result codes (`+CSQ`, `RING`, `+CREG`) before every answer.
    pub urc_noise: bool,
}

/// What the emulator did: for test assertions and the benchmarks' figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received from the device.
    pub rx_bytes: u64,
    /// Bytes sent to the device.
    pub tx_bytes: u64,
    /// AT commands received.
    pub commands: u64,
    /// HTTP requests made to the server.
    pub http_requests: u64,
    /// Artifact bytes delivered through `AT+HTTPREAD`.
    pub artifact_bytes: u64,
    /// The `Range` start of every artifact request, in order.
    pub range_starts: Vec<u32>,
    /// Faults injected: link drops, PDP drops, ERROR answers, silences.
    pub link_drops: u32,
    /// PDP contexts dropped.
    pub pdp_drops: u32,
    /// `ERROR` / `+CME ERROR` answers injected.
    pub errors: u32,
    /// Silences.
    pub silences: u32,
    /// Sessions (connections) served.
    pub sessions: u32,
    /// Broker connections accepted (`AT+CMQTTCONNECT`).
    pub mqtt_connects: u32,
    /// Publishes received from the broker and passed to the device.
    pub mqtt_publishes: u32,
    /// Broker connections lost (`+CMQTTCONNLOST` sent).
    pub mqtt_lost: u32,
}

/// The plan and the figures, shared between the sessions and whoever steers them.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<(FaultPlan, Stats)>>,
}

impl Faults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `plan`.
    pub fn with(plan: FaultPlan) -> Self {
        let faults = Self::new();
        faults.update(|p| *p = plan);
        faults
    }

    /// Change the plan.
    pub fn update(&self, f: impl FnOnce(&mut FaultPlan)) {
        f(&mut self.lock().0);
    }

    /// The figures so far.
    pub fn stats(&self) -> Stats {
        self.lock().1.clone()
    }

    pub(crate) fn with_both<T>(&self, f: impl FnOnce(&mut FaultPlan, &mut Stats) -> T) -> T {
        let mut guard = self.lock();
        let (plan, stats) = &mut *guard;
        f(plan, stats)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (FaultPlan, Stats)> {
        // A panicking session must not take the figures with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// The line rate of the module's answers.
    pub pacing: Pacing,
    /// The module's HTTP response buffer: a larger response fails (network error 707).
    pub module_buffer: usize,
    /// Time the module takes per HTTP request on top of the real one (network latency).
    pub latency: Duration,
    /// Print every HTTP request and injected fault to stderr.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pacing: Pacing::Unlimited,
            module_buffer: 64 * 1024,
            latency: Duration::ZERO,
            verbose: false,
        }
    }
}
