//! The OTA client's transport over a cellular module's AT commands on a serial port.
//!
//! The device reaches the fota server through a 4G module (SIMCom SIM7600 here) that runs the
//! TCP/IP and HTTP stack itself; the MCU drives it with AT commands over a USART. This crate
//! turns [`fota_ota_client::transport::Transport`]'s three requests into the module's HTTP AT
//! dialect:
//!
//! - [`at`]: the AT engine: command lines out, response lines and raw data in, `OK` /
//!   `ERROR` / `+CME ERROR: n`, unsolicited result codes (URCs) recognised wherever they
//!   arrive, every wait bounded by a timeout on the caller's [`Clock`].
//! - [`dialect`]: what differs between module families, behind [`dialect::HttpDialect`];
//!   [`dialect::Sim7600`] implements SIMCom's `AT+HTTPINIT`, `AT+HTTPPARA` (URL, and a
//!   `USERDATA` header for the bearer token and the `Range`), `AT+HTTPDATA`, `AT+HTTPACTION`,
//!   `AT+HTTPREAD`. A Quectel EC2x implementation (`AT+QHTTPURL`, `AT+QHTTPGET` with a
//!   `Range` header, `AT+QHTTPREAD`) fits the same trait.
//! - [`transport`]: [`ModemTransport`], the client's `Transport`: JSON check-ins and reports,
//!   and artifact downloads in ranged segments no larger than the module buffers, read out in
//!   pieces no larger than the client's buffer.
//!
//! - [`push`]: commands the server pushes over MQTT, through the module's own MQTT client
//!   (`AT+CMQTT...`): the session; [`inbox`]: the received publishes, kept wherever their URCs
//!   arrive (the AT engine feeds it).
//!
//! Every failure is a [`ModemError`] the client treats as "try again later" (with its
//! backoff): a timeout (a silent module), `ERROR` / `+CME ERROR`, a network error code from the
//! module, a dropped PDP context (the `+CGEV: ... DEACT` or `+HTTP_NONET_EVENT` URC), an HTTP
//! error status. After a timeout or a lost context the transport brings the link up again
//! (probe, echo off, PDP context, HTTP service) before the next request. Nothing waits without
//! a deadline, so a dead module costs the main loop a bounded time per request, never a hang.
//!
//! Why not the `atat` crate: its client waits on a response slot that an ingress task fills
//! concurrently (an interrupt or an async executor, with an `embassy-time` driver), and its
//! digester is line-oriented; `AT+HTTPREAD` answers with raw binary of announced length that
//! may contain any byte, `\r\nOK\r\n` included, which needs a length-aware reader. The
//! firmware's main loop is blocking and single-threaded (it also kicks the watchdog and
//! enforces the trial deadline), so a small engine that reads lines and raw bytes from the port
//! on demand fits it better than atat plus a custom digester plus an executor.
//!
//! The crate is `no_std`, allocates nothing and has no `unsafe`; the serial port and the clock
//! come from the board ([`Serial`], [`Clock`]), or from the host modem emulator in tests.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod at;
pub mod dialect;
pub mod inbox;
pub mod push;
pub mod transport;

pub use at::{AtPort, ModemError};
pub use dialect::{HttpDialect, Sim7600};
pub use push::{MqttDialect, PushConfig, PushStats};
pub use transport::{ModemConfig, ModemTransport};

/// The serial port the module is on (a USART on the board, a byte pipe or socket on the host).
pub trait Serial {
    /// Why the port failed.
    type Error: core::fmt::Debug;

    /// Write all of `bytes` (blocking until they are handed to the hardware).
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Read what has arrived into `buf` without waiting: 0 when nothing is there yet.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Time, for timeouts and backoff.
pub trait Clock {
    /// Milliseconds since some fixed point (boot).
    fn now_ms(&mut self) -> u64;

    /// Called while waiting for the module: kick the watchdog, sleep until the next interrupt,
    /// yield a thread. Must return soon.
    fn idle(&mut self) {}
}

impl<S: Serial + ?Sized> Serial for &mut S {
    type Error = S::Error;

    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        S::write(self, bytes)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        S::read(self, buf)
    }
}

impl<C: Clock + ?Sized> Clock for &mut C {
    fn now_ms(&mut self) -> u64 {
        C::now_ms(self)
    }

    fn idle(&mut self) {
        C::idle(self)
    }
}
