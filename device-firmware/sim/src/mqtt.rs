//! The virtual devices' MQTT sessions: one broker connection per device, with the device's own
//! credentials (its id and device token, the account `fota serve` or the demo provisioned), on
//! its own command topic `fota/d/{id}/cmd`.
//!
//! A fleet of 100,000 devices means 100,000 connections (in one process, or spread over relay
//! processes: [`crate::relay`]), so this is not a
//! general MQTT client: it is the part of MQTT 3.1.1 a device needs (CONNECT/CONNACK,
//! SUBSCRIBE/SUBACK at QoS 1, incoming PUBLISH at QoS 0 or 1 answered by PUBACK, its own report
//! published at QoS 1, PINGREQ/PINGRESP), one small task per device on a runtime of a few threads. A
//! session costs a task, a socket and a read buffer of a few hundred bytes; `rumqttc` per
//! device would cost an event loop, request channels and its 10 KiB read buffer each (see
//! docs/BENCHMARKS.md). Connection setup is paced (a bounded number of CONNECTs in flight), as
//! the broker checks each device's password (PBKDF2) on CONNECT.
//!
//! What arrives is handed, parsed, to the device's inbox ([`Deliver`]); the fleet applies it
//! through the OTA client's [`command`](fota_ota_client::OtaClient::command) at the device's next
//! turn, which the delivery brings forward to now. A session that breaks reconnects with a
//! backoff; commands published while it was away are lost (clean session), as on a device
//! whose modem lost the network: its poll still comes.
//!
//! A device that reports over MQTT posts its report to its [`Outbox`]; the session publishes it
//! on `fota/d/{id}/report` at QoS 1 (at once, or as soon as it is connected again). The report
//! is settled only by the server's `report_ack` on the command topic, which says it is stored;
//! the broker's PUBACK only says the broker has it. Until then the device's events stay queued
//! (and in its flash), and the device posts them again after a while: a publish lost with a
//! broken connection costs a resend, never an event (the server stores each event id once).

use crate::relay::{Relay, RelayCommand};
use fota_protocol::messages::{topics, Command};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

/// How the devices reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// The brokers, `host:port`: usually one; with more, the devices are dealt out over them
    /// in turn (the i-th device's session goes to `brokers[i % len]`), as a fleet larger than
    /// one broker process can hold is spread over several bridged brokers.
    pub brokers: Vec<String>,
    /// Hold the sessions' sockets in relay processes, one per broker, instead of in this
    /// process ([`crate::relay`]): for more sessions than this process may open files.
    pub relay: Option<RelayCommand>,
    /// Seconds between PINGREQs when nothing else is heard (the broker drops a session silent
    /// for 1.5 times this).
    pub keep_alive: Duration,
    /// CONNECTs in flight at once (the broker hashes a password for each).
    pub connects_in_flight: usize,
    /// Runtime threads for all the sessions.
    pub threads: usize,
    /// The devices publish their reports through their sessions (and wait for the server's
    /// `report_ack`) instead of posting them over HTTP; a report due right before a reset still
    /// goes over HTTP (see [`crate::device`]).
    pub reports: bool,
}

impl MqttConfig {
    /// Sessions to `broker` with a five-minute keep-alive, 32 CONNECTs in flight and one
    /// thread, the devices reporting through them.
    pub fn new(broker: impl Into<String>) -> Self {
        Self {
            brokers: vec![broker.into()],
            relay: None,
            keep_alive: Duration::from_secs(300),
            connects_in_flight: 32,
            threads: 1,
            reports: true,
        }
    }
}

/// Hands a command to its device.
pub type Deliver = Box<dyn Fn(Command) + Send + Sync>;

/// A device's report waiting for its session to publish it: the latest one posted replaces one
/// not yet published (it holds the same oldest events and perhaps more).
#[derive(Debug, Default)]
pub struct Outbox {
    report: Mutex<Option<Vec<u8>>>,
    ready: Notify,
}

impl Outbox {
    /// Publish `payload` (a JSON `Report`) on the device's report topic as soon as the session
    /// can.
    pub fn post(&self, payload: Vec<u8>) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// One device's session: its id, token, where its commands go, and (if it reports over MQTT)
/// its outbox.
pub struct DeviceSession {
    /// The device id (client id and username).
    pub id: String,
    /// Its device token (password).
    pub token: String,
    /// Where its commands go.
    pub deliver: Deliver,
    /// Its reports, when it publishes them.
    pub outbox: Option<Arc<Outbox>>,
}

impl std::fmt::Debug for DeviceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("id", &self.id)
            .field("reports", &self.outbox.is_some())
            .finish_non_exhaustive()
    }
}

/// The sessions' counters.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicUsize,
    connects: AtomicU64,
    refused: AtomicU64,
    failures: AtomicU64,
    commands: AtomicU64,
    malformed: AtomicU64,
    reports_published: AtomicU64,
}

/// What the sessions did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// Sessions connected and subscribed now.
    pub connected: usize,
    /// Successful connections (subscribed) so far, reconnections included.
    pub connects: u64,
    /// Connections the broker refused (bad credentials, subscription denied).
    pub refused: u64,
    /// Connections that failed or broke (network, timeouts, protocol errors).
    pub failures: u64,
    /// Commands received and handed to their device.
    pub commands: u64,
    /// Publishes that were not a command (dropped).
    pub malformed: u64,
    /// Reports published (resends included).
    pub reports_published: u64,
}

/// Every device's session, on a runtime of their own; dropping it closes them all.
#[derive(Debug)]
pub struct MqttSessions {
    runtime: Option<tokio::runtime::Runtime>,
    counters: Arc<Counters>,
    relay_pids: Vec<u32>,
}

impl MqttSessions {
    /// Start one session per device (and the relay processes, if the config asks for them).
    pub fn start(config: &MqttConfig, devices: Vec<DeviceSession>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("fleet-mqtt")
            .thread_stack_size(512 * 1024)
            .enable_all()
            .build()?;
        let counters = Arc::new(Counters::default());
        if config.brokers.is_empty() {
            return Err(std::io::Error::other("no MQTT broker to connect to"));
        }
        let routes = {
            let _runtime = runtime.enter();
            config
                .brokers
                .iter()
                .map(|broker| {
                    Ok(Route {
                        broker: broker.clone(),
                        relay: config.relay.as_ref().map(Relay::spawn).transpose()?,
                    })
                })
                .collect::<std::io::Result<Vec<_>>>()?
        };
        let relay_pids = routes
            .iter()
            .filter_map(|r| r.relay.as_ref()?.pid())
            .collect();
        let shared = Arc::new(Shared {
            routes,
            keep_alive: config.keep_alive.max(Duration::from_secs(1)),
            gate: Semaphore::new(config.connects_in_flight.max(1)),
            counters: Arc::clone(&counters),
        });
        for (
            i,
            DeviceSession {
                id,
                token,
                deliver,
                outbox,
            },
        ) in devices.into_iter().enumerate()
        {
            let shared = Arc::clone(&shared);
            runtime.spawn(async move {
                let device = Session {
                    topic: format!("{}{id}{}", topics::PREFIX, topics::COMMAND_SUFFIX)
                        .into_boxed_str(),
                    id: id.into_boxed_str(),
                    token: token.into_boxed_str(),
                    route: i % shared.routes.len(),
                    deliver,
                    outbox,
                };
                device.run(&shared).await;
            });
        }
        Ok(Self {
            runtime: Some(runtime),
            counters,
            relay_pids,
        })
    }

    /// The process ids of the relays holding the sessions' sockets (none without
    /// [`MqttConfig::relay`]).
    pub fn relay_pids(&self) -> &[u32] {
        &self.relay_pids
    }

    /// The sessions' counters.
    pub fn stats(&self) -> MqttStats {
        let c = &self.counters;
        MqttStats {
            connected: c.connected.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            reports_published: c.reports_published.load(Ordering::Relaxed),
        }
    }
}

impl Drop for MqttSessions {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A session's connection: straight to its broker, or through a relay process.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type Conn = Box<dyn Stream>;

/// A broker and the relay that holds the sockets of its sessions, if any.
struct Route {
    broker: String,
    relay: Option<Arc<Relay>>,
}

impl Route {
    async fn connect(&self) -> Result<Conn, End> {
        Ok(match &self.relay {
            Some(relay) => Box::new(relay.open(&self.broker)),
            None => {
                let stream =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(&self.broker))
                        .await??;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
        })
    }
}

struct Shared {
    routes: Vec<Route>,
    keep_alive: Duration,
    gate: Semaphore,
    counters: Arc<Counters>,
}

struct Session {
    id: Box<str>,
    token: Box<str>,
    topic: Box<str>,
    /// Its broker, in [`Shared::routes`].
    route: usize,
    deliver: Deliver,
    outbox: Option<Arc<Outbox>>,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The broker said no (CONNACK return code, or SUBACK failure).
    Refused,
    /// Anything else.
    Broken,
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> Self {
        End::Broken
    }
}

impl From<tokio::time::error::Elapsed> for End {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        End::Broken
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Larger packets end the session (a command is a hundred bytes).
const MAX_PACKET: usize = 16 * 1024;

impl Session {
    async fn run(self, shared: &Shared) {
        let mut backoff = Duration::from_secs(1);
        let mut rng = self.id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) | 1;
        loop {
            let connected = {
                let Ok(_permit) = shared.gate.acquire().await else {
                    return;
                };
                self.connect(shared).await
            };
            let end = match connected {
                Ok((stream, buf)) => {
                    shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                    shared.counters.connected.fetch_add(1, Ordering::Relaxed);
                    backoff = Duration::from_secs(1);
                    let end = self.serve(shared, stream, buf).await;
                    shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
                    end
                }
                Err(end) => end,
            };
            match end {
                End::Refused => shared.counters.refused.fetch_add(1, Ordering::Relaxed),
                End::Broken => shared.counters.failures.fetch_add(1, Ordering::Relaxed),
            };
            // Up to half the backoff again, so a broker that comes back is not hit by every
            // device in the same millisecond.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let spread = backoff.as_millis() as u64 / 2 + 1;
            tokio::time::sleep(backoff + Duration::from_millis(rng % spread)).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Connect, authenticate and subscribe; returns the stream and whatever was read past the
    /// SUBACK.
    async fn connect(&self, shared: &Shared) -> Result<(Conn, Vec<u8>), End> {
        let mut stream = shared.routes[self.route].connect().await?;
        let keep_alive = u16::try_from(shared.keep_alive.as_secs()).unwrap_or(u16::MAX);
        stream
            .write_all(&connect_packet(&self.id, &self.token, keep_alive))
            .await?;
        let mut buf = Vec::with_capacity(64);
        let (header, body) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, next_packet(&mut stream, &mut buf)).await??;
        if header != 0x20 || body.len() != 2 {
            return Err(End::Broken);
        }
        if body[1] != 0 {
            return Err(End::Refused);
        }
        stream.write_all(&subscribe_packet(1, &self.topic)).await?;
        let (header, body) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, next_packet(&mut stream, &mut buf)).await??;
        if header != 0x90 || body.len() != 3 || body[..2] != [0, 1] {
            return Err(End::Broken);
        }
        if body[2] & 0x80 != 0 {
            return Err(End::Refused);
        }
        Ok((stream, buf))
    }

    /// Read commands, and publish the device's reports, until the connection breaks.
    async fn serve(&self, shared: &Shared, mut stream: Conn, mut buf: Vec<u8>) -> End {
        let mut ping_at = tokio::time::Instant::now() + shared.keep_alive;
        let mut awaiting_pong = false;
        let report_topic = self
            .outbox
            .is_some()
            .then(|| format!("{}{}{}", topics::PREFIX, self.id, topics::REPORT_SUFFIX));
        let mut packet_id: u16 = 1;
        loop {
            // A report posted while the session was away, or since the last one.
            if let (Some(outbox), Some(topic)) = (&self.outbox, &report_topic) {
                if let Some(report) = outbox.take() {
                    packet_id = packet_id.checked_add(1).unwrap_or(2);
                    if stream
                        .write_all(&publish_packet(topic, packet_id, &report))
                        .await
                        .is_err()
                    {
                        // Posted again by the device when no acknowledgement comes.
                        return End::Broken;
                    }
                    shared
                        .counters
                        .reports_published
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            // Whole packets already read.
            while let Some(parsed) = split_packet(&buf) {
                let Ok((header, start, end)) = parsed else {
                    return End::Broken;
                };
                let reply = self.handle(shared, header, &buf[start..end], &mut awaiting_pong);
                buf.drain(..end);
                if let Some(reply) = reply {
                    if stream.write_all(&reply).await.is_err() {
                        return End::Broken;
                    }
                }
            }
            if buf.capacity() - buf.len() < 128 {
                buf.reserve(256);
            }
            let posted = async {
                match &self.outbox {
                    Some(outbox) => outbox.ready.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = posted => {}
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return End::Broken,
                    Ok(_) => ping_at = tokio::time::Instant::now() + shared.keep_alive,
                },
                () = tokio::time::sleep_until(ping_at) => {
                    if awaiting_pong {
                        return End::Broken;
                    }
                    if stream.write_all(&[0xC0, 0]).await.is_err() {
                        return End::Broken;
                    }
                    awaiting_pong = true;
                    ping_at = tokio::time::Instant::now() + shared.keep_alive;
                }
            }
        }
    }

    /// One packet from the broker; returns what to answer.
    fn handle(
        &self,
        shared: &Shared,
        header: u8,
        body: &[u8],
        awaiting_pong: &mut bool,
    ) -> Option<[u8; 4]> {
        match header >> 4 {
            // PUBLISH
            3 => {
                let qos = (header >> 1) & 3;
                let (topic, rest) = split_string(body)?;
                let (packet_id, payload) = if qos > 0 {
                    if rest.len() < 2 {
                        return None;
                    }
                    (Some([rest[0], rest[1]]), &rest[2..])
                } else {
                    (None, rest)
                };
                match serde_json::from_slice::<Command>(payload) {
                    Ok(command) if topic == self.topic.as_bytes() => {
                        shared.counters.commands.fetch_add(1, Ordering::Relaxed);
                        (self.deliver)(command);
                    }
                    _ => {
                        shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // PUBACK (a QoS 2 delivery cannot come: the subscription is QoS 1).
                packet_id.map(|[hi, lo]| [0x40, 2, hi, lo])
            }
            // PINGRESP
            13 => {
                *awaiting_pong = false;
                None
            }
            _ => None,
        }
    }
}

/// Read until `buf` holds a whole packet; returns its first byte and body (and removes it).
async fn next_packet(stream: &mut Conn, buf: &mut Vec<u8>) -> Result<(u8, Vec<u8>), End> {
    loop {
        if let Some(parsed) = split_packet(buf) {
            let (header, start, end) = parsed.map_err(|()| End::Broken)?;
            let body = buf[start..end].to_vec();
            buf.drain(..end);
            return Ok((header, body));
        }
        buf.reserve(128);
        if stream.read_buf(buf).await? == 0 {
            return Err(End::Broken);
        }
    }
}

/// The first packet in `buf`: `None` while incomplete, else its first byte and where its body
/// starts and ends; `Err` for a length no broker sends to a device.
fn split_packet(buf: &[u8]) -> Option<Result<(u8, usize, usize), ()>> {
    let header = *buf.first()?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if len > MAX_PACKET {
                return Some(Err(()));
            }
            let start = 2 + i;
            return (buf.len() >= start + len).then_some(Ok((header, start, start + len)));
        }
    }
    Some(Err(()))
}

/// A length-prefixed string and what follows it.
fn split_string(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let rest = body.get(2..)?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// A fixed header `first` and the remaining length of `body`, then `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// CONNECT, MQTT 3.1.1, clean session, client id = username = the device id.
fn connect_packet(id: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + 2 * id.len() + password.len());
    put_string(&mut body, "MQTT");
    body.push(4);
    // Username, password, clean session.
    body.push(0x80 | 0x40 | 0x02);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_string(&mut body, id);
    put_string(&mut body, id);
    put_string(&mut body, password);
    packet(0x10, &body)
}

/// PUBLISH `payload` on `topic` at QoS 1 with `packet_id`.
fn publish_packet(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + 4 + payload.len());
    put_string(&mut body, topic);
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// SUBSCRIBE to one topic at QoS 1.
fn subscribe_packet(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + 5);
    body.extend_from_slice(&packet_id.to_be_bytes());
    put_string(&mut body, topic);
    body.push(1);
    packet(0x82, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_framed_and_split() {
        let connect = connect_packet("SL-1", "tok", 300);
        assert_eq!(connect[0], 0x10);
        assert_eq!(usize::from(connect[1]), connect.len() - 2);
        assert_eq!(&connect[2..8], b"\0\x04MQTT");
        assert_eq!(connect[8..12], [4, 0xC2, 1, 44]);
        let sub = subscribe_packet(1, "fota/d/SL-1/cmd");
        assert_eq!(split_packet(&sub), Some(Ok((0x82, 2, sub.len()))));
        assert_eq!(split_packet(&sub[..sub.len() - 1]), None);
        // A two-byte remaining length.
        let big = packet(0x30, &[0; 200]);
        assert_eq!(big[1..3], [0xC8, 0x01]);
        assert_eq!(split_packet(&big), Some(Ok((0x30, 3, 203))));
        // Longer than any command: refused, not buffered.
        assert_eq!(split_packet(&[0x30, 0xFF, 0xFF, 0x7F]), Some(Err(())));
        assert_eq!(split_packet(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]), Some(Err(())));
        assert_eq!(split_string(b"\0\x02ab!"), Some((&b"ab"[..], &b"!"[..])));
        // A report: QoS 1, the topic, the packet id, the payload as it is.
        let publish = publish_packet("fota/d/SL-1/report", 7, b"{}");
        assert_eq!(publish[0], 0x32);
        assert_eq!(usize::from(publish[1]), publish.len() - 2);
        let (topic, rest) = split_string(&publish[2..]).unwrap();
        assert_eq!(
            (topic, rest),
            (&b"fota/d/SL-1/report"[..], &b"\0\x07{}"[..])
        );
        assert_eq!(split_string(b"\0\x05ab"), None);
    }
}
