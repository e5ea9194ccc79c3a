//! The AT engine: sends command lines, reads response lines and raw data, and recognises final
//! result codes and URCs. Every wait has a deadline on the caller's [`Clock`].
//!
//! Lines end in `\r\n`; empty lines are skipped, and so is the module's echo of a command (a
//! line starting with `AT`), so the engine works before `ATE0` too. A URC may arrive between
//! any two lines of an answer; [`AtPort::next_line`] hands every line to [`Urcs::note`] first,
//! which records the ones that matter (a lost PDP context, an `+HTTPACTION` result, the MQTT
//! results and received publishes of [`crate::push`]) and says whether the line was a URC, in
//! which case it is not an answer. A received publish announces its topic and payload as raw
//! bytes after their URC line; the engine reads those before any further line, so a publish
//! arriving inside another command's answer (between the lines of an `AT+HTTPREAD`) is kept
//! and the answer read as if it had not been there.

use crate::inbox::PushInbox;
use crate::{Clock, Serial};
use core::fmt::Write as _;

/// The longest line the engine keeps (longer ones are an error: nothing we parse is that long).
pub const MAX_LINE: usize = 128;
/// The longest command line (`AT+HTTPPARA="URL","..."` with a 200-character base URL).
pub const MAX_COMMAND: usize = 400;
const RX_BUF: usize = 256;
/// How long [`AtPort::take_urcs`] waits for the rest of what has started to arrive.
pub const URC_QUIET_MS: u64 = 50;

/// Why a modem request failed. The client treats each as "try again later".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModemError {
    /// Nothing (or not the expected answer) arrived before the deadline: a silent module.
    Timeout(&'static str),
    /// The module answered `ERROR`.
    Error(&'static str),
    /// The module answered `+CME ERROR: n`.
    Cme(u16),
    /// The module reported a network error for the HTTP request (SIM7600: 7xx codes).
    Network(u16),
    /// The PDP context was deactivated (`+CGEV: ... DEACT`, `+HTTP_NONET_EVENT`).
    PdpLost,
    /// The server answered with an HTTP error status.
    Http(u16),
    /// The module's answer did not parse (a line too long, a wrong length, garbage).
    Protocol(&'static str),
    /// A request or an answer does not fit the transport's buffers.
    TooLarge(&'static str),
    /// JSON that did not serialize or parse.
    Json,
    /// The serial port failed.
    Serial,
}

impl ModemError {
    /// Whether the link must be brought up again (probe, PDP context, HTTP service) before the
    /// next request: after a silent module, a lost context, or an answer out of step.
    pub fn needs_restart(&self) -> bool {
        matches!(
            self,
            ModemError::Timeout(_)
                | ModemError::PdpLost
                | ModemError::Network(_)
                | ModemError::Protocol(_)
                | ModemError::Serial
        )
    }
}

impl core::fmt::Display for ModemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ModemError::Timeout(what) => write!(f, "modem timeout waiting for {what}"),
            ModemError::Error(what) => write!(f, "modem ERROR to {what}"),
            ModemError::Cme(n) => write!(f, "modem +CME ERROR: {n}"),
            ModemError::Network(n) => write!(f, "network error {n}"),
            ModemError::PdpLost => f.write_str("PDP context lost"),
            ModemError::Http(s) => write!(f, "HTTP {s}"),
            ModemError::Protocol(what) => write!(f, "modem protocol error: {what}"),
            ModemError::TooLarge(what) => write!(f, "too large: {what}"),
            ModemError::Json => f.write_str("JSON"),
            ModemError::Serial => f.write_str("serial port error"),
        }
    }
}

/// What the URCs seen so far said.
#[derive(Debug, Default)]
pub struct Urcs {
    /// `+HTTPACTION: method,status,len` of the last request, not taken yet.
    pub http_action: Option<(u8, u16, u32)>,
    /// The PDP context went down since the flag was last cleared.
    pub pdp_lost: bool,
    /// URCs seen (all kinds), for the figures.
    pub seen: u32,
    /// The MQTT results, and the commands pushed to the device.
    pub push: PushInbox,
}

fn parse_u32(s: &str) -> Option<u32> {
    s.trim().parse().ok()
}

impl Urcs {
    /// Record `line` if it is a URC; `true` if it was one (and so is not part of an answer).
    pub fn note(&mut self, line: &str) -> bool {
        if self.push.note(line) {
            // Counted below.
        } else if let Some(rest) = line.strip_prefix("+HTTPACTION:") {
            let mut parts = rest.split(',');
            let method = parts.next().and_then(parse_u32);
            let status = parts.next().and_then(parse_u32);
            let len = parts.next().and_then(parse_u32);
            if let (Some(m), Some(s), Some(l)) = (method, status, len) {
                self.http_action = Some((m as u8, s as u16, l));
            }
        } else if line.starts_with("+CGEV:") {
            if line.contains("DEACT") || line.contains("DETACH") {
                self.pdp_lost = true;
            }
        } else if line == "+HTTP_NONET_EVENT" || line == "+HTTP_PEER_CLOSED" {
            self.pdp_lost |= line == "+HTTP_NONET_EVENT";
        } else if !(line == "RING"
            || line.starts_with("+CSQ:")
            || line.starts_with("+CREG:")
            || line.starts_with("+CEREG:")
            || line.starts_with("+CPIN:")
            || line == "RDY"
            || line == "SMS DONE"
            || line == "PB DONE"
            || line.starts_with("+CMTI:"))
        {
            return false;
        }
        self.seen = self.seen.saturating_add(1);
        true
    }
}

/// Counters of the engine's traffic, for the benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkCounters {
    /// Bytes written to the module.
    pub tx: u64,
    /// Bytes read from the module.
    pub rx: u64,
    /// Commands sent.
    pub commands: u32,
}

/// The AT engine over a serial port and a clock.
#[derive(Debug)]
pub struct AtPort<S, C> {
    serial: S,
    clock: C,
    rx: [u8; RX_BUF],
    /// Bytes in `rx` not consumed yet: `rx[start..end]`.
    start: usize,
    end: usize,
    line: heapless::String<MAX_LINE>,
    /// URCs seen.
    pub urcs: Urcs,
    /// Traffic so far.
    pub counters: LinkCounters,
}

/// A final result: `OK`, or the error it stands for.
fn final_result(line: &str, what: &'static str) -> Option<Result<(), ModemError>> {
    if line == "OK" {
        Some(Ok(()))
    } else if line == "ERROR" {
        Some(Err(ModemError::Error(what)))
    } else {
        line.strip_prefix("+CME ERROR:")
            .map(|n| Err(ModemError::Cme(parse_u32(n).unwrap_or(0) as u16)))
    }
}

impl<S: Serial, C: Clock> AtPort<S, C> {
    /// An engine on `serial`, timing with `clock`.
    pub fn new(serial: S, clock: C) -> Self {
        Self {
            serial,
            clock,
            rx: [0; RX_BUF],
            start: 0,
            end: 0,
            line: heapless::String::new(),
            urcs: Urcs::default(),
            counters: LinkCounters::default(),
        }
    }

    /// The clock.
    pub fn clock(&mut self) -> &mut C {
        &mut self.clock
    }

    /// The serial port.
    pub fn serial(&mut self) -> &mut S {
        &mut self.serial
    }

    /// Milliseconds now.
    pub fn now(&mut self) -> u64 {
        self.clock.now_ms()
    }

    /// Drop whatever has arrived and not been read (before a fresh start).
    ///
    /// Complete lines are still looked at first: a command pushed to the device and waiting
    /// there is kept ([`take_urcs`](Self::take_urcs)); the rest is dropped.
    pub fn discard_input(&mut self) {
        self.take_urcs();
        self.urcs.push.reset_partial();
        self.start = 0;
        self.end = 0;
        let mut scratch = [0u8; 64];
        for _ in 0..64 {
            match self.serial.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.counters.rx += n as u64,
            }
        }
    }

    /// Take in what the module sent while nobody was asking (a pushed command, a lost
    /// connection): URCs are recorded, anything else is dropped as out of step. Costs nothing
    /// when nothing has arrived; once something has, it reads on until the line has been quiet
    /// for [`URC_QUIET_MS`] (a UART hands over a byte at a time, the next one only after the
    /// last was read). Returns how many lines that were not URCs were dropped.
    pub fn take_urcs(&mut self) -> u32 {
        if self.start == self.end && self.urcs.push.raw_expected() == 0 {
            match self.fill() {
                Ok(true) => {}
                _ => return 0,
            }
        }
        let mut stray = 0;
        // Bounded: each round consumes a line or a piece of raw bytes, or ends.
        for _ in 0..64 {
            let deadline = self.clock.now_ms() + URC_QUIET_MS;
            match self.poll_line(deadline, "URCs") {
                Ok(true) => stray += 1,
                Ok(false) => {}
                Err(ModemError::Timeout(_)) => break,
                Err(_) => {
                    // Garbage (a line too long, not text): drop what is buffered.
                    self.start = 0;
                    self.end = 0;
                    stray += 1;
                    break;
                }
            }
        }
        stray
    }

    /// Read up to one line by `deadline`: `false` if it was a URC (recorded), `true` if it was
    /// an answer (out of step for whoever waits only for URCs).
    pub fn poll_urc(&mut self, deadline: u64, what: &'static str) -> Result<bool, ModemError> {
        self.poll_line(deadline, what)
    }

    /// Write raw bytes (a request body after `DOWNLOAD`).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ModemError> {
        self.counters.tx += bytes.len() as u64;
        self.serial.write(bytes).map_err(|_| ModemError::Serial)
    }

    /// Send one command line (`AT...`), terminated with `\r`.
    pub fn send(&mut self, args: core::fmt::Arguments<'_>) -> Result<(), ModemError> {
        let mut line = heapless::String::<MAX_COMMAND>::new();
        line.write_fmt(args)
            .and_then(|()| line.push('\r').map_err(|_| core::fmt::Error))
            .map_err(|_| ModemError::TooLarge("AT command"))?;
        self.counters.commands += 1;
        self.write_raw(line.as_bytes())
    }

    /// Fill `rx` with whatever the port has; `false` if nothing came.
    fn fill(&mut self) -> Result<bool, ModemError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == RX_BUF {
            self.rx.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == RX_BUF {
            return Ok(false);
        }
        let n = self
            .serial
            .read(&mut self.rx[self.end..])
            .map_err(|_| ModemError::Serial)?;
        self.end += n;
        self.counters.rx += n as u64;
        Ok(n > 0)
    }

    /// The next line that is not empty, not an echo and not a URC, by `deadline`. URCs are
    /// recorded on the way ([`Urcs::note`]).
    pub fn next_line(&mut self, deadline: u64, what: &'static str) -> Result<&str, ModemError> {
        loop {
            if self.poll_line(deadline, what)? {
                return Ok(self.line.as_str());
            }
        }
    }

    /// Read up to one line by `deadline`: `true` with the line in `self.line` if it is an
    /// answer, `false` if it was a URC (recorded in [`Urcs`]).
    fn poll_line(&mut self, deadline: u64, what: &'static str) -> Result<bool, ModemError> {
        loop {
            // The raw topic or payload bytes a publish URC announced come before any line.
            // Each piece taken counts as a URC (`false`): the caller asks again.
            let raw = self.urcs.push.raw_expected();
            if raw > 0 {
                let have = (self.end - self.start).min(raw);
                if have > 0 {
                    self.urcs.push.raw(&self.rx[self.start..self.start + have]);
                    self.start += have;
                    return Ok(false);
                }
                if !self.fill()? {
                    if self.clock.now_ms() >= deadline {
                        return Err(ModemError::Timeout(what));
                    }
                    self.clock.idle();
                }
                continue;
            }
            // Take a complete line from the buffer if there is one.
            if let Some(pos) = self.rx[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let bytes = &self.rx[self.start..self.start + pos];
                self.start += pos + 2;
                if bytes.len() > MAX_LINE {
                    return Err(ModemError::Protocol("line too long"));
                }
                let text =
                    core::str::from_utf8(bytes).map_err(|_| ModemError::Protocol("not text"))?;
                let text = text.trim();
                if text.is_empty() || text.starts_with("AT") {
                    continue;
                }
                if self.urcs.note(text) {
                    return Ok(false);
                }
                self.line.clear();
                // Cannot fail: checked against MAX_LINE above.
                let _ = self.line.push_str(text);
                return Ok(true);
            }
            if self.end - self.start >= RX_BUF {
                return Err(ModemError::Protocol("line too long"));
            }
            if !self.fill()? {
                if self.clock.now_ms() >= deadline {
                    return Err(ModemError::Timeout(what));
                }
                self.clock.idle();
            }
        }
    }

    /// Wait for the final result of a command (`OK`, `ERROR`, `+CME ERROR`); other lines
    /// (intermediate results) are skipped.
    pub fn expect_ok(&mut self, timeout_ms: u32, what: &'static str) -> Result<(), ModemError> {
        let deadline = self.now() + u64::from(timeout_ms);
        loop {
            let line = self.next_line(deadline, what)?;
            if let Some(result) = final_result(line, what) {
                return result;
            }
        }
    }

    /// Send a command and wait for its final result.
    pub fn command(
        &mut self,
        timeout_ms: u32,
        what: &'static str,
        args: core::fmt::Arguments<'_>,
    ) -> Result<(), ModemError> {
        self.send(args)?;
        self.expect_ok(timeout_ms, what)
    }

    /// Wait for the `DOWNLOAD` (or `>`) prompt that asks for a request body. URCs before it
    /// (a publish received just then) are taken in on the way.
    pub fn expect_prompt(&mut self, timeout_ms: u32, what: &'static str) -> Result<(), ModemError> {
        let deadline = self.now() + u64::from(timeout_ms);
        loop {
            let raw = self.urcs.push.raw_expected() > 0;
            if !raw {
                // A `>` prompt has no line end: it is the first thing after the line ends.
                while self.start < self.end && self.rx[self.start].is_ascii_whitespace() {
                    self.start += 1;
                }
                if self.start < self.end && self.rx[self.start] == b'>' {
                    self.start += 1;
                    return Ok(());
                }
            }
            if raw
                || self.rx[self.start..self.end]
                    .windows(2)
                    .any(|w| w == b"\r\n")
            {
                if !self.poll_line(deadline, what)? {
                    continue;
                }
                if self.line == "DOWNLOAD" {
                    return Ok(());
                }
                if let Some(result) = final_result(&self.line, what) {
                    result?;
                    return Err(ModemError::Protocol("OK instead of a prompt"));
                }
                continue;
            }
            if !self.fill()? {
                if self.now() >= deadline {
                    return Err(ModemError::Timeout(what));
                }
                self.clock.idle();
            }
        }
    }

    /// Wait for the `+HTTPACTION` URC (method, status, length), noting other URCs on the way.
    pub fn expect_http_action(&mut self, timeout_ms: u32) -> Result<(u8, u16, u32), ModemError> {
        let deadline = self.now() + u64::from(timeout_ms);
        loop {
            if let Some(action) = self.urcs.http_action.take() {
                return Ok(action);
            }
            if self.urcs.pdp_lost {
                return Err(ModemError::PdpLost);
            }
            // Only URCs are expected here; an answer line is out of step.
            if self.poll_line(deadline, "+HTTPACTION")? {
                return Err(ModemError::Protocol("unexpected line before +HTTPACTION"));
            }
        }
    }

    /// Read exactly `buf.len()` raw bytes (announced data), by `deadline`.
    pub fn read_exact(
        &mut self,
        buf: &mut [u8],
        deadline: u64,
        what: &'static str,
    ) -> Result<(), ModemError> {
        let mut got = 0;
        while got < buf.len() {
            let have = (self.end - self.start).min(buf.len() - got);
            if have > 0 {
                buf[got..got + have].copy_from_slice(&self.rx[self.start..self.start + have]);
                self.start += have;
                got += have;
                continue;
            }
            if !self.fill()? {
                if self.now() >= deadline {
                    return Err(ModemError::Timeout(what));
                }
                self.clock.idle();
            }
        }
        Ok(())
    }
}
