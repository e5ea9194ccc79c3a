//! The virtual device's link to a real `fota serve`: the OTA client's [`Transport`] over HTTP,
//! with the faults of a 4G link on demand.
//!
//! Requests are the device API's: `POST /v1/devices/{id}/check-in` and `.../reports` with the
//! device's bearer token and JSON bodies, and `GET /v1/artifacts/{sha256}` with a `Range`
//! header, exactly what a modem's HTTP stack sends. Connections are kept alive in a pool shared
//! by the devices of one simulator thread.

use fota_ota_client::transport::Transport;
use fota_protocol::image::Digest;
use fota_protocol::messages::{CheckIn, CheckInResponse, Report, ReportAck};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The simulated link is down (a fault the simulator injected).
    #[error("link down")]
    Down,
    /// No connection, a timeout, a broken answer.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("HTTP {0}")]
    Status(u16),
}

/// Where the server is, shared by every device.
#[derive(Debug, Clone)]
pub struct Server {
    base: Arc<str>,
    agent: ureq::Agent,
}

impl Server {
    /// A pool of up to `connections` keep-alive connections to `base` (e.g.
    /// `http://127.0.0.1:8080`).
    pub fn new(base: &str, connections: usize) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .max_idle_connections(connections)
            .max_idle_connections_per_host(connections)
            .no_delay(true)
            .build();
        Self {
            base: base.trim_end_matches('/').into(),
            agent,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// What the link did, for the tests' and the demo's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Check-ins answered.
    pub check_ins: u64,
    /// Reports acknowledged.
    pub reports: u64,
    /// Artifact bytes received.
    pub bytes_fetched: u64,
    /// Of which delta patch bytes (fetches of a patch an offer named).
    pub patch_bytes_fetched: u64,
    /// Check-in answers whose offer carried a delta patch.
    pub patch_offers: u64,
    /// Requests that failed (link down, server error).
    pub failures: u64,
    /// Times the link dropped mid-download.
    pub drops: u32,
    /// The offset the first fetch after the last drop asked for: a resumed download asks for
    /// where it stopped, a restarted one for 0.
    pub resumed_at: Option<u32>,
}

/// One device's link.
#[derive(Debug)]
pub struct Link {
    server: Server,
    id: Box<str>,
    auth: Box<str>,
    /// Drop the link when a fetch reaches this offset (once).
    drop_at: Option<u32>,
    /// Requests still to fail after a drop.
    down_for: u8,
    /// How many requests fail when the drop happens.
    down_requests: u8,
    /// The next successful fetch is the first after a drop.
    after_drop: bool,
    /// The last request failed.
    last_failed: bool,
    /// The delta patch of the last offer received, if it carried one.
    patch: Option<Digest>,
    stats: LinkStats,
}

impl Link {
    /// The link of device `id`, authenticating with its `token`.
    pub fn new(server: Server, id: &str, token: &str) -> Self {
        Self {
            server,
            id: id.into(),
            auth: format!("Bearer {token}").into(),
            drop_at: None,
            down_for: 0,
            down_requests: 0,
            after_drop: false,
            last_failed: false,
            patch: None,
            stats: LinkStats::default(),
        }
    }

    /// Drop the link once, when a download reaches `offset`; it stays down for `requests`
    /// requests, then comes back.
    pub fn drop_at(&mut self, offset: u32, requests: u8) {
        self.drop_at = Some(offset);
        self.down_for = 0;
        self.after_drop = false;
        self.down_requests = requests;
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether the last request failed (the device backs off).
    pub fn last_failed(&self) -> bool {
        self.last_failed
    }

    fn down(&mut self) -> Result<(), LinkError> {
        if self.down_for > 0 {
            self.down_for -= 1;
            return Err(LinkError::Down);
        }
        Ok(())
    }

    fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &mut self,
        what: &str,
        body: &B,
    ) -> Result<R, LinkError> {
        self.down()?;
        let json = serde_json::to_vec(body).map_err(|e| LinkError::Transport(e.to_string()))?;
        let url = format!("{}/v1/devices/{}/{what}", self.server.base, self.id);
        let response = self
            .server
            .agent
            .post(&url)
            .set("authorization", &self.auth)
            .set("content-type", "application/json")
            .send_bytes(&json)
            .map_err(map_error)?;
        let mut bytes = Vec::with_capacity(256);
        response
            .into_reader()
            .take(64 * 1024)
            .read_to_end(&mut bytes)
            .map_err(|e| LinkError::Transport(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| LinkError::Transport(e.to_string()))
    }

    fn record<T>(&mut self, result: Result<T, LinkError>) -> Result<T, LinkError> {
        self.last_failed = result.is_err();
        if result.is_err() {
            self.stats.failures += 1;
        }
        result
    }
}

/// Read (and drop) a response's body, so its connection goes back to the pool.
fn discard(response: ureq::Response) {
    let _ = response
        .into_reader()
        .take(64 * 1024)
        .read_to_end(&mut Vec::new());
}

fn map_error(e: ureq::Error) -> LinkError {
    match e {
        ureq::Error::Status(code, response) => {
            discard(response);
            LinkError::Status(code)
        }
        ureq::Error::Transport(t) => LinkError::Transport(t.to_string()),
    }
}

impl Transport for Link {
    type Error = LinkError;

    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, Self::Error> {
        let result: Result<CheckInResponse, _> = self.post("check-in", check_in);
        let result = self.record(result);
        if let Ok(response) = &result {
            self.stats.check_ins += 1;
            if let Some(patch) = response.offer.as_ref().and_then(|o| o.patch) {
                self.stats.patch_offers += 1;
                self.patch = Some(patch.sha256);
            }
        }
        result
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, Self::Error> {
        let result = self.post("reports", report);
        let result = self.record(result);
        if result.is_ok() {
            self.stats.reports += 1;
        }
        result
    }

    fn fetch_range(
        &mut self,
        sha256: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error> {
        if self.drop_at.is_some_and(|at| offset >= at) {
            self.drop_at = None;
            self.down_for = self.down_requests;
            self.after_drop = true;
            self.stats.drops += 1;
        }
        let result = self.fetch(sha256, offset, buf);
        let result = self.record(result);
        if let Ok(n) = result {
            self.stats.bytes_fetched += n as u64;
            if self.patch == Some(*sha256) {
                self.stats.patch_bytes_fetched += n as u64;
            }
            if self.after_drop {
                self.after_drop = false;
                self.stats.resumed_at = Some(offset);
            }
        }
        result
    }
}

impl Link {
    fn fetch(&mut self, sha256: &Digest, offset: u32, buf: &mut [u8]) -> Result<usize, LinkError> {
        self.down()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let url = format!("{}/v1/artifacts/{sha256}", self.server.base);
        let last = u64::from(offset) + buf.len() as u64 - 1;
        let response = self
            .server
            .agent
            .get(&url)
            .set("range", &format!("bytes={offset}-{last}"))
            .call();
        let response = match response {
            Ok(r) => r,
            // At or past the end: nothing left.
            Err(ureq::Error::Status(416, r)) => {
                discard(r);
                return Ok(0);
            }
            Err(e) => return Err(map_error(e)),
        };
        if response.status() != 206 {
            let status = response.status();
            discard(response);
            return Err(LinkError::Status(status));
        }
        let mut reader = response.into_reader();
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(LinkError::Transport(e.to_string())),
            }
        }
        // Drain anything beyond (a server ignoring the range's end) so the connection is reused.
        let _ = reader.read_to_end(&mut Vec::new());
        Ok(n)
    }
}
