//! [`ModemTransport`]: the OTA client's [`Transport`] over a module's HTTP AT dialect.
//!
//! Check-ins and reports are JSON POSTs with the device's bearer token
//! (`/v1/devices/{id}/check-in`, `/v1/devices/{id}/reports`), serialized and parsed with
//! `serde-json-core` in a fixed buffer. Artifacts are GETs of `/v1/artifacts/{sha256}` with a
//! `Range` of at most [`ModemConfig::segment_len`] bytes (no larger than the module buffers);
//! the client's smaller reads are served from the segment the module holds, so one network
//! request feeds several `fetch_range` calls, and a dropped link costs at most one segment.
//!
//! After a failure that leaves the module in an unknown state (a timeout, a lost PDP context, a
//! network error, an answer out of step) the next request first brings the link up again.
//!
//! With a broker ([`ModemTransport::enable_push`]) the transport also holds an MQTT session
//! through the module ([`crate::push`]) and hands the commands the server pushes to
//! [`Transport::take_command`]: it connects (and after a lost connection reconnects, with
//! backoff) only from there, between the client's requests, so HTTP never waits on the broker.

use crate::at::{AtPort, LinkCounters, ModemError};
use crate::dialect::{HttpDialect, Method, Request, Sim7600, Timeouts};
use crate::push::{MqttDialect, PushConfig, PushStats, Session, MAX_TOPIC};
use crate::{Clock, Serial};
use core::fmt::Write as _;
use core::marker::PhantomData;
use fota_ota_client::transport::Transport;
use fota_protocol::image::Digest;
use fota_protocol::messages::{CheckIn, CheckInResponse, Command, Report, ReportAck};

/// The JSON buffer: a full report (16 events with reasons) is about 3.5 KB.
pub const BODY_LEN: usize = 4096;
const URL_LEN: usize = 320;

/// Where the server is and how to reach it.
#[derive(Debug, Clone, Copy)]
pub struct ModemConfig<'a> {
    /// The server's base URL (from the identity sector), without a trailing `/`.
    pub base_url: &'a str,
    /// The device id (from the identity sector).
    pub device_id: &'a str,
    /// The device token (from the identity sector).
    pub token: &'a str,
    /// The operator's access point name.
    pub apn: &'a str,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Bytes asked for per artifact request (capped at the dialect's `MAX_RESPONSE`).
    pub segment_len: u32,
}

impl<'a> ModemConfig<'a> {
    /// Defaults for a 4G link: 5 s per command, 65 s per HTTP request (the module's own network
    /// timeout is 60 s), 20 s per read, 16 KB segments.
    pub fn new(base_url: &'a str, device_id: &'a str, token: &'a str, apn: &'a str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/'),
            device_id,
            token,
            apn,
            timeouts: Timeouts {
                command_ms: 5_000,
                action_ms: 65_000,
                read_ms: 20_000,
            },
            segment_len: 16 * 1024,
        }
    }
}

/// What the transport did, for the figures and the logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportStats {
    /// HTTP requests made through the module.
    pub requests: u32,
    /// Requests (or reads) that failed.
    pub failures: u32,
    /// Times the link was brought up.
    pub bring_ups: u32,
    /// Artifact bytes delivered to the client.
    pub artifact_bytes: u64,
}

/// The artifact range the module holds.
#[derive(Debug, Clone, Copy)]
struct Segment {
    sha256: Digest,
    start: u32,
    len: u32,
}

/// The MQTT session's state.
#[derive(Debug)]
struct Push<'a> {
    config: PushConfig<'a>,
    topic: heapless::String<MAX_TOPIC>,
    /// Connected and subscribed, as far as we know.
    connected: bool,
    /// The module's MQTT service and client must be (re)started first.
    fresh: bool,
    retry_at: u64,
    backoff: u64,
}

/// The client's transport over a modem. See the [module docs](self).
#[derive(Debug)]
pub struct ModemTransport<'a, S, C, D = Sim7600> {
    at: AtPort<S, C>,
    config: ModemConfig<'a>,
    push: Option<Push<'a>>,
    up: bool,
    segment: Option<Segment>,
    body: [u8; BODY_LEN],
    stats: TransportStats,
    last_error: Option<ModemError>,
    dialect: PhantomData<D>,
}

impl<'a, S: Serial, C: Clock, D: HttpDialect> ModemTransport<'a, S, C, D> {
    /// A transport on `serial`, timing with `clock`.
    pub fn new(serial: S, clock: C, mut config: ModemConfig<'a>) -> Self {
        config.segment_len = config.segment_len.clamp(1, D::MAX_RESPONSE);
        Self {
            at: AtPort::new(serial, clock),
            config,
            push: None,
            up: false,
            segment: None,
            body: [0; BODY_LEN],
            stats: TransportStats::default(),
            last_error: None,
            dialect: PhantomData,
        }
    }

    /// Also hold an MQTT session with the broker `push` names (the device id as client id and
    /// user name, its token as password) and take the commands pushed on `fota/d/{id}/cmd`.
    /// Refused (`TooLarge`, nothing changed) if the topic does not fit.
    pub fn enable_push(&mut self, push: PushConfig<'a>) -> Result<(), ModemError> {
        let mut topic = heapless::String::new();
        write!(topic, "fota/d/{}/cmd", self.config.device_id)
            .map_err(|_| ModemError::TooLarge("MQTT topic"))?;
        self.push = Some(Push {
            config: push,
            topic,
            connected: false,
            fresh: true,
            retry_at: 0,
            backoff: 0,
        });
        Ok(())
    }

    /// Whether the MQTT session is up (connected and subscribed); `None` without a broker.
    pub fn push_connected(&self) -> Option<bool> {
        self.push.as_ref().map(|p| p.connected)
    }

    /// What the push path saw so far.
    pub fn push_stats(&self) -> PushStats {
        self.at.urcs.push.stats
    }

    /// The AT engine (its clock, its counters).
    pub fn at(&mut self) -> &mut AtPort<S, C> {
        &mut self.at
    }

    /// What it did so far.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Bytes on the serial link so far, both ways.
    pub fn counters(&self) -> LinkCounters {
        self.at.counters
    }

    /// The last error, if the last request failed.
    pub fn last_error(&self) -> Option<ModemError> {
        self.last_error
    }

    /// Run `f` with the link up; on a failure that leaves the module in an unknown state, mark
    /// the link down so the next request brings it up again.
    fn with_link<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ModemError>,
    ) -> Result<T, ModemError> {
        let result = (|| {
            if !self.up || self.at.urcs.pdp_lost {
                self.up = false;
                self.segment = None;
                self.bring_up()?;
            }
            f(self)
        })();
        match &result {
            Ok(_) => self.last_error = None,
            Err(e) => {
                self.stats.failures += 1;
                self.last_error = Some(*e);
                self.segment = None;
                if e.needs_restart() || self.at.urcs.pdp_lost {
                    self.up = false;
                }
            }
        }
        result
    }

    /// Bring the link up. The module may have restarted (it was silent, or out of step): the
    /// MQTT session, if any, is started again from scratch afterwards.
    fn bring_up(&mut self) -> Result<(), ModemError> {
        self.up = false;
        self.segment = None;
        self.stats.bring_ups += 1;
        if let Some(push) = &mut self.push {
            push.connected = false;
            push.fresh = true;
        }
        D::bring_up(&mut self.at, self.config.apn, &self.config.timeouts)?;
        self.up = true;
        Ok(())
    }

    fn url(&self, args: core::fmt::Arguments<'_>) -> Result<heapless::String<URL_LEN>, ModemError> {
        let mut url = heapless::String::new();
        url.write_str(self.config.base_url)
            .and_then(|()| url.write_fmt(args))
            .map_err(|_| ModemError::TooLarge("URL"))?;
        Ok(url)
    }

    /// POST `body_len` bytes of `self.body` as JSON to `/v1/devices/{id}/{what}`; the answer
    /// is read into `self.body`, and its length returned.
    fn post(&mut self, what: &str, body_len: usize) -> Result<usize, ModemError> {
        let url = self.url(format_args!("/v1/devices/{}/{what}", self.config.device_id))?;
        let token = self.config.token;
        let timeouts = self.config.timeouts;
        self.with_link(|t| {
            t.stats.requests += 1;
            // The answer replaces whatever artifact segment the module held.
            t.segment = None;
            let request = Request {
                method: Method::Post,
                url: &url,
                bearer: Some(token),
                range: None,
                body: &t.body[..body_len],
            };
            let (status, len) = D::request(&mut t.at, &request, &timeouts)?;
            if !(200..300).contains(&status) {
                return Err(ModemError::Http(status));
            }
            let len = len as usize;
            if len > BODY_LEN {
                return Err(ModemError::TooLarge("response body"));
            }
            let mut got = 0;
            while got < len {
                let end = (got + D::MAX_READ).min(len);
                let n = D::read(&mut t.at, got as u32, &mut t.body[got..end], &timeouts)?;
                if n == 0 {
                    return Err(ModemError::Protocol("response shorter than announced"));
                }
                got += n;
            }
            Ok(len)
        })
    }
}

impl<S: Serial, C: Clock, D: HttpDialect + MqttDialect> ModemTransport<'_, S, C, D> {
    /// Keep the MQTT session: note a lost connection, and connect when the backoff allows.
    fn keep_push_session(&mut self) {
        let now = self.at.now();
        let Some(push) = &mut self.push else {
            return;
        };
        if self.at.urcs.push.lost || self.at.urcs.pdp_lost {
            self.at.urcs.push.lost = false;
            if push.connected {
                push.connected = false;
                push.backoff = 0;
                push.retry_at = now;
            }
        }
        if push.connected || now < push.retry_at {
            return;
        }
        let fresh = push.fresh;
        let config = push.config;
        let result = (|| {
            if !self.up || self.at.urcs.pdp_lost {
                self.bring_up()?;
            }
            let Some(push) = &self.push else {
                return Ok(());
            };
            let session = Session {
                broker: config.broker,
                device_id: self.config.device_id,
                token: self.config.token,
                topic: &push.topic,
                keepalive_s: config.keepalive_s,
                connect_timeout_ms: config.connect_timeout_ms,
            };
            // `fresh` may have been set by the bring-up just now.
            let fresh = fresh || push.fresh;
            D::connect(&mut self.at, &session, fresh, &self.config.timeouts)
        })();
        let now = self.at.now();
        let stats = &mut self.at.urcs.push.stats;
        let Some(push) = &mut self.push else {
            return;
        };
        match result {
            Ok(()) => {
                push.connected = true;
                push.fresh = false;
                push.backoff = 0;
                stats.connects += 1;
            }
            Err(e) => {
                stats.connect_failures += 1;
                // A refusal by the broker (a result code) leaves the module's client as it
                // was; anything else starts it over next time. A module out of step or silent
                // needs the link brought up again too, but a broker that does not answer in
                // time is no reason to tear HTTP down.
                push.fresh |= !matches!(e, ModemError::Cme(_));
                let broker_slow = matches!(e, ModemError::Timeout("+CMQTTCONNECT" | "+CMQTTSUB"));
                if e.needs_restart() && !broker_slow {
                    self.up = false;
                }
                push.backoff = if push.backoff == 0 {
                    config.retry_min_ms
                } else {
                    (push.backoff * 2).min(config.retry_max_ms)
                };
                push.retry_at = now + push.backoff;
            }
        }
    }
}

impl<S: Serial, C: Clock, D: HttpDialect + MqttDialect> Transport for ModemTransport<'_, S, C, D> {
    type Error = ModemError;

    fn take_command(&mut self) -> Option<Command> {
        if let Some(command) = self.at.urcs.push.take() {
            return Some(command);
        }
        self.push.as_ref()?;
        self.at.take_urcs();
        self.keep_push_session();
        self.at.urcs.push.take()
    }

    fn check_in(&mut self, check_in: &CheckIn) -> Result<CheckInResponse, ModemError> {
        let n =
            serde_json_core::to_slice(check_in, &mut self.body).map_err(|_| ModemError::Json)?;
        let len = self.post("check-in", n)?;
        serde_json_core::from_slice::<CheckInResponse>(&self.body[..len])
            .map(|(r, _)| r)
            .map_err(|_| ModemError::Json)
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, ModemError> {
        let n = serde_json_core::to_slice(report, &mut self.body)
            .map_err(|_| ModemError::TooLarge("report"))?;
        let len = self.post("reports", n)?;
        serde_json_core::from_slice::<ReportAck>(&self.body[..len])
            .map(|(r, _)| r)
            .map_err(|_| ModemError::Json)
    }

    fn fetch_range(
        &mut self,
        sha256: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, ModemError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let held = self
            .segment
            .filter(|s| s.sha256 == *sha256 && offset >= s.start && offset < s.start + s.len);
        let timeouts = self.config.timeouts;
        let segment_len = self.config.segment_len;
        let url = self.url(format_args!("/v1/artifacts/{sha256}"))?;
        let n = self.with_link(|t| {
            let segment = match held {
                Some(segment) => segment,
                None => {
                    t.stats.requests += 1;
                    let last = offset.saturating_add(segment_len - 1);
                    let request = Request {
                        method: Method::Get,
                        url: &url,
                        bearer: None,
                        range: Some((offset, last)),
                        body: &[],
                    };
                    let (status, len) = D::request(&mut t.at, &request, &timeouts)?;
                    let start = match status {
                        206 => offset,
                        // At or past the end of the artifact: nothing left.
                        416 => return Ok(0),
                        // A server that ignored the range sent the whole artifact: usable only
                        // from its start, and only if the module could hold it.
                        200 if offset == 0 && len <= D::MAX_RESPONSE => 0,
                        _ => return Err(ModemError::Http(status)),
                    };
                    if len > segment_len.max(D::MAX_RESPONSE) {
                        return Err(ModemError::TooLarge("segment"));
                    }
                    let segment = Segment {
                        sha256: *sha256,
                        start,
                        len,
                    };
                    t.segment = Some(segment);
                    if len == 0 {
                        return Ok(0);
                    }
                    segment
                }
            };
            let left = (segment.start + segment.len - offset) as usize;
            let want = buf.len().min(left).min(D::MAX_READ);
            let n = D::read(
                &mut t.at,
                offset - segment.start,
                &mut buf[..want],
                &timeouts,
            )?;
            if n == 0 {
                return Err(ModemError::Protocol("empty read inside a segment"));
            }
            Ok(n)
        })?;
        self.stats.artifact_bytes += n as u64;
        Ok(n)
    }
}
