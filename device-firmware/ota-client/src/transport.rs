//! How the OTA client reaches the server: check in, report events, fetch byte ranges of an
//! artifact.
//!
//! The trait is blocking and request/response on purpose: that is what a 4G modem's AT HTTP
//! stack offers, and a blocking client is easy to drive from the simulator's threads. Every
//! message type is a v1 protocol type from [`fota_protocol::messages`], so the client never
//! depends on how they travel (JSON over HTTP, MQTT, or a test double).

use fota_protocol::image::Digest;
use fota_protocol::messages::{CheckIn, CheckInResponse, Command, Report, ReportAck};

/// The client's link to the fota server.
///
/// Errors are the transport's own (link down, timeout, HTTP status); the client treats every one
/// as "try again later", so it only needs to print them.
pub trait Transport {
    /// Why a request failed.
    type Error: core::fmt::Debug;

    /// Say who we are and what we run; the answer may carry an offer.
    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, Self::Error>;

    /// Send a batch of events. Events carry per-device ids, so resending a batch whose
    /// acknowledgement was lost is harmless.
    fn report(&mut self, report: &Report) -> Result<ReportAck, Self::Error>;

    /// Read the artifact with content address `sha256` from byte `offset` into `buf`, and return
    /// how many bytes were read: at least 1 and at most `buf.len()` while there are bytes left
    /// (short reads are allowed), 0 once `offset` is at or past the end. Artifacts are immutable,
    /// so a dropped link resumes by asking again from the first byte not yet received.
    fn fetch_range(
        &mut self,
        sha256: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error>;

    /// The next command pushed to the device (MQTT, `fota/d/{id}/cmd`) not taken yet, if any.
    /// The runtime calls it between its steps, idle or not; a transport with a push path may
    /// do a bounded amount of link work here (read what arrived, reconnect to the broker when
    /// its backoff allows). The default has no push path: the device only polls.
    fn take_command(&mut self) -> Option<Command> {
        None
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    type Error = T::Error;

    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, Self::Error> {
        T::check_in(self, check_in)
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, Self::Error> {
        T::report(self, report)
    }

    fn fetch_range(
        &mut self,
        sha256: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error> {
        T::fetch_range(self, sha256, offset, buf)
    }

    fn take_command(&mut self) -> Option<Command> {
        T::take_command(self)
    }
}
