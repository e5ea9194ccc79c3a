//! The push path: commands the server publishes to the device over MQTT
//! (`fota/d/{id}/cmd`, docs/PROTOCOL.md "MQTT: the push path"), received through the module's
//! own MQTT client.
//!
//! SIMCom SIM7500/SIM7600 (MQTT AT command manual, chapter 2):
//!
//! ```text
//! AT+CMQTTSTART                 -> OK, then +CMQTTSTART: 0          (the MQTT service)
//! AT+CMQTTACCQ=0,"<client id>"  -> OK                               (client 0)
//! AT+CMQTTCONNECT=0,"tcp://host:port",<keepalive s>,<clean session>,"<user>","<password>"
//!                               -> OK, then +CMQTTCONNECT: 0,<err>  (0: connected)
//! AT+CMQTTSUB=0,<topic len>,<qos> -> >, <topic bytes>, OK, then +CMQTTSUB: 0,<err>
//! ```
//!
//! and, at any time, between any two lines of any answer:
//!
//! ```text
//! +CMQTTRXSTART: 0,<topic total len>,<payload total len>
//! +CMQTTRXTOPIC: 0,<n>  \r\n <n topic bytes>      (repeated for a long topic)
//! +CMQTTRXPAYLOAD: 0,<n> \r\n <n payload bytes>   (repeated for a long payload)
//! +CMQTTRXEND: 0
//! +CMQTTCONNLOST: 0,<cause>                        (the broker connection dropped)
//! ```
//!
//! The AT engine hands every such line to [`PushInbox`] (through [`crate::at::Urcs`]) wherever
//! it arrives, reads the announced topic and payload bytes raw, and queues each complete
//! message as a parsed [`Command`] for the runtime to take: a publish that lands in the middle
//! of an `AT+HTTPREAD` answer is kept, never taken for the answer. The queue is small and
//! bounded ([`PUSH_QUEUE`]); when it is full, the oldest nudge (`check_in`) makes room (a
//! nudge is only a hint: the device also polls), then the oldest `report_ack`; a `stop` is
//! dropped only when the queue holds nothing but stops, and every drop is counted in
//! [`PushStats`].
//!
//! The session itself ([`MqttDialect::connect`]) is the device's identity at the broker:
//! client id = username = device id, password = device token, clean session, keep-alive
//! 300 s, subscribed to its command topic at QoS 1. The transport
//! ([`crate::ModemTransport::enable_push`]) connects when it is asked for commands, and after a
//! refusal or a `+CMQTTCONNLOST` again with backoff (2 s doubling to 5 min), never in the
//! middle of an HTTP exchange: HTTP works the same with the broker away.

use crate::at::{AtPort, ModemError};
use crate::dialect::{Sim7600, Timeouts};
use crate::{Clock, Serial};
use fota_protocol::messages::{Command, CommandKind};

/// Commands kept for the runtime: more than it ever has between two of its steps.
pub const PUSH_QUEUE: usize = 8;
/// The longest topic kept (`fota/d/` + a 64-character device id + `/cmd`).
pub const MAX_TOPIC: usize = 80;
/// The longest payload kept: a `Command` is under 150 bytes.
pub const MAX_PAYLOAD: usize = 256;

/// What the push path saw, for the logs and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Complete messages received.
    pub received: u32,
    /// Messages that were not a command (too long, not JSON, not for the command topic).
    pub malformed: u32,
    /// Nudges dropped because the queue was full.
    pub dropped_nudges: u32,
    /// `report_ack`s dropped because the queue was full.
    pub dropped_acks: u32,
    /// Stops dropped because the queue held nothing but stops.
    pub dropped_stops: u32,
    /// Broker connections lost (`+CMQTTCONNLOST`).
    pub connections_lost: u32,
    /// Sessions established (connected and subscribed).
    pub connects: u32,
    /// Connection attempts that failed.
    pub connect_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Topic,
    Payload,
}

/// Receives the `+CMQTTRX...` URCs and keeps the commands they carry. See the
/// [module docs](self).
#[derive(Debug, Default)]
pub struct PushInbox {
    receiving: bool,
    /// Raw bytes still to come for the topic or the payload.
    raw: Option<(Part, usize)>,
    topic: heapless::Vec<u8, MAX_TOPIC>,
    payload: heapless::Vec<u8, MAX_PAYLOAD>,
    overflow: bool,
    queue: heapless::Deque<Command, PUSH_QUEUE>,
    /// `+CMQTTSTART: n` not taken yet.
    pub(crate) started: Option<u16>,
    /// `+CMQTTCONNECT: 0,n` not taken yet.
    pub(crate) connected: Option<u16>,
    /// `+CMQTTSUB: 0,n` not taken yet.
    pub(crate) subscribed: Option<u16>,
    /// The broker connection dropped since the flag was last cleared.
    pub(crate) lost: bool,
    /// What it saw.
    pub stats: PushStats,
}

/// The numbers after `prefix` in `line`, comma-separated, skipping the client index.
fn numbers<const N: usize>(rest: &str) -> Option<[u32; N]> {
    let mut out = [0u32; N];
    let mut parts = rest.split(',').map(|p| p.trim().parse::<u32>());
    for slot in out.iter_mut() {
        *slot = parts.next()?.ok()?;
    }
    Some(out)
}

impl PushInbox {
    /// Record `line` if it is one of the MQTT URCs; `true` if it was.
    pub fn note(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("+CMQTT") else {
            return false;
        };
        if let Some(rest) = rest.strip_prefix("RXSTART:") {
            self.receiving = true;
            self.raw = None;
            self.topic.clear();
            self.payload.clear();
            self.overflow =
                numbers::<3>(rest).is_none_or(|[_, _, payload]| payload as usize > MAX_PAYLOAD);
        } else if let Some(rest) = rest.strip_prefix("RXTOPIC:") {
            match numbers::<2>(rest) {
                Some([_, n]) if self.receiving => self.raw = Some((Part::Topic, n as usize)),
                _ => self.overflow = true,
            }
        } else if let Some(rest) = rest.strip_prefix("RXPAYLOAD:") {
            match numbers::<2>(rest) {
                Some([_, n]) if self.receiving => self.raw = Some((Part::Payload, n as usize)),
                _ => self.overflow = true,
            }
        } else if rest.starts_with("RXEND:") {
            if self.receiving {
                self.receiving = false;
                self.finish();
            }
        } else if rest.starts_with("CONNLOST:") || rest.starts_with("NONET") {
            // The connection dropped, or the network under it.
            self.lost = true;
            self.stats.connections_lost += 1;
        } else if let Some(rest) = rest.strip_prefix("START:") {
            self.started = numbers::<1>(rest).map(|[e]| e as u16);
        } else if let Some(rest) = rest.strip_prefix("CONNECT:") {
            self.connected = Some(numbers::<2>(rest).map_or(u16::MAX, |[_, e]| e as u16));
        } else if let Some(rest) = rest.strip_prefix("SUB:") {
            self.subscribed = Some(numbers::<2>(rest).map_or(u16::MAX, |[_, e]| e as u16));
        } else if !(rest.starts_with("DISC:")
            || rest.starts_with("STOP:")
            || rest.starts_with("UNSUB:")
            || rest.starts_with("PUB:"))
        {
            return false;
        }
        true
    }

    /// How many raw bytes (topic or payload) the engine must hand over next, if any.
    pub fn raw_expected(&self) -> usize {
        self.raw.map_or(0, |(_, n)| n)
    }

    /// The next raw bytes of the topic or payload being received (at most
    /// [`raw_expected`](Self::raw_expected)).
    pub fn raw(&mut self, bytes: &[u8]) {
        let Some((part, left)) = self.raw else {
            return;
        };
        let take = bytes.len().min(left);
        let fits = match part {
            Part::Topic => self.topic.extend_from_slice(&bytes[..take]).is_ok(),
            Part::Payload => self.payload.extend_from_slice(&bytes[..take]).is_ok(),
        };
        self.overflow |= !fits;
        self.raw = (left > take).then_some((part, left - take));
    }

    /// Forget a message half received (the module was restarted, the input discarded).
    pub fn reset_partial(&mut self) {
        self.receiving = false;
        self.raw = None;
        self.topic.clear();
        self.payload.clear();
    }

    fn finish(&mut self) {
        self.stats.received += 1;
        let on_command_topic = self.topic.ends_with(b"/cmd");
        let command = (!self.overflow && on_command_topic)
            .then(|| serde_json_core::from_slice::<Command>(&self.payload).ok())
            .flatten();
        self.topic.clear();
        self.payload.clear();
        self.overflow = false;
        match command {
            Some((command, _)) => self.push(command),
            None => self.stats.malformed += 1,
        }
    }

    /// Queue `command`, making room as the [module docs](self) say when the queue is full.
    pub fn push(&mut self, command: Command) {
        if self.queue.is_full() {
            let oldest = |kind: CommandKind, q: &heapless::Deque<Command, PUSH_QUEUE>| {
                q.iter().position(|c| c.kind == kind)
            };
            if let Some(i) = oldest(CommandKind::CheckIn, &self.queue) {
                self.remove(i);
                self.stats.dropped_nudges += 1;
            } else if command.kind == CommandKind::CheckIn {
                // Nothing but stops and acknowledgements waiting: they matter more.
                self.stats.dropped_nudges += 1;
                return;
            } else if let Some(i) = oldest(CommandKind::ReportAck, &self.queue) {
                self.remove(i);
                self.stats.dropped_acks += 1;
            } else if command.kind == CommandKind::ReportAck {
                self.stats.dropped_acks += 1;
                return;
            } else {
                self.queue.pop_front();
                self.stats.dropped_stops += 1;
            }
        }
        // Cannot fail: room was made above.
        let _ = self.queue.push_back(command);
    }

    fn remove(&mut self, index: usize) {
        let mut kept = heapless::Deque::<Command, PUSH_QUEUE>::new();
        for (i, c) in self.queue.iter().enumerate() {
            if i != index {
                // Cannot fail: one fewer than the queue held.
                let _ = kept.push_back(*c);
            }
        }
        self.queue = kept;
    }

    /// The oldest command not taken yet.
    pub fn take(&mut self) -> Option<Command> {
        self.queue.pop_front()
    }

    /// Commands waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no command waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Where the broker is and how long a session may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushConfig<'a> {
    /// The broker as the module wants it: `tcp://host:port`.
    pub broker: &'a str,
    /// MQTT keep-alive, seconds (the server's sessions use 300).
    pub keepalive_s: u16,
    /// How long the broker may take to accept the connection (`+CMQTTCONNECT`).
    pub connect_timeout_ms: u32,
    /// First pause after a failed attempt or a lost connection; doubles up to
    /// [`retry_max_ms`](Self::retry_max_ms).
    pub retry_min_ms: u64,
    /// The longest pause between attempts.
    pub retry_max_ms: u64,
}

impl<'a> PushConfig<'a> {
    /// A broker URL `mqtt://host:port` or `tcp://host:port` (credentials in it are ignored: the
    /// device's are its id and token); `None` if it is neither.
    pub fn from_url(url: &'a str) -> Option<Self> {
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))?;
        let host_port = rest.rsplit('@').next()?.trim_end_matches('/');
        if host_port.is_empty() || !host_port.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return None;
        }
        // Kept as given after the scheme: the transport writes `tcp://` + this.
        Some(Self {
            broker: host_port,
            keepalive_s: 300,
            connect_timeout_ms: 30_000,
            retry_min_ms: 2_000,
            retry_max_ms: 5 * 60 * 1000,
        })
    }
}

/// The device's identity at the broker.
#[derive(Debug, Clone, Copy)]
pub struct Session<'s> {
    /// `host:port` of the broker.
    pub broker: &'s str,
    /// Client id and user name: the device id.
    pub device_id: &'s str,
    /// The password: the device token.
    pub token: &'s str,
    /// The command topic, `fota/d/{id}/cmd`.
    pub topic: &'s str,
    /// Keep-alive, seconds.
    pub keepalive_s: u16,
    /// How long the broker may take to accept.
    pub connect_timeout_ms: u32,
}

/// A module family's MQTT client commands.
pub trait MqttDialect {
    /// Start the module's MQTT service if `fresh` (or after an error), connect to the broker
    /// as `session` says (clean session) and subscribe to its topic at QoS 1.
    fn connect<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        session: &Session<'_>,
        fresh: bool,
        t: &Timeouts,
    ) -> Result<(), ModemError>;
}

/// Wait for a `+CMQTT...` result URC that `take` finds, by `timeout_ms`.
fn expect_result<S: Serial, C: Clock>(
    at: &mut AtPort<S, C>,
    timeout_ms: u32,
    what: &'static str,
    take: fn(&mut PushInbox) -> Option<u16>,
) -> Result<u16, ModemError> {
    let deadline = at.now() + u64::from(timeout_ms);
    loop {
        if let Some(code) = take(&mut at.urcs.push) {
            return Ok(code);
        }
        if at.poll_urc(deadline, what)? {
            return Err(ModemError::Protocol(
                "unexpected line before an MQTT result",
            ));
        }
    }
}

impl MqttDialect for Sim7600 {
    fn connect<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        session: &Session<'_>,
        fresh: bool,
        t: &Timeouts,
    ) -> Result<(), ModemError> {
        if fresh {
            at.urcs.push.started = None;
            // ERROR with `+CMQTTSTART: 23`: the service runs already (from before a reset of
            // ours, not of the module's). Either way it runs afterwards.
            match at.command(t.command_ms, "AT+CMQTTSTART", format_args!("AT+CMQTTSTART")) {
                Ok(()) => {
                    let code =
                        expect_result(at, t.command_ms, "+CMQTTSTART", |p| p.started.take())?;
                    if code != 0 && code != 23 {
                        return Err(ModemError::Cme(code));
                    }
                }
                Err(ModemError::Error(_)) => {}
                Err(e) => return Err(e),
            }
            let accq = |at: &mut AtPort<S, C>| {
                at.command(
                    t.command_ms,
                    "AT+CMQTTACCQ",
                    format_args!("AT+CMQTTACCQ=0,\"{}\"", session.device_id),
                )
            };
            if accq(at).is_err() {
                // Client 0 held from before: let it go and take it again.
                let _ = at.command(
                    t.command_ms,
                    "AT+CMQTTDISC",
                    format_args!("AT+CMQTTDISC=0,10"),
                );
                let _ = at.command(t.command_ms, "AT+CMQTTREL", format_args!("AT+CMQTTREL=0"));
                accq(at)?;
            }
        }
        at.urcs.push.connected = None;
        at.urcs.push.lost = false;
        at.command(
            t.command_ms,
            "AT+CMQTTCONNECT",
            format_args!(
                "AT+CMQTTCONNECT=0,\"tcp://{}\",{},1,\"{}\",\"{}\"",
                session.broker, session.keepalive_s, session.device_id, session.token
            ),
        )?;
        let code = expect_result(at, session.connect_timeout_ms, "+CMQTTCONNECT", |p| {
            p.connected.take()
        })?;
        if code != 0 {
            return Err(ModemError::Cme(code));
        }
        at.urcs.push.subscribed = None;
        at.send(format_args!("AT+CMQTTSUB=0,{},1", session.topic.len()))?;
        at.expect_prompt(t.command_ms, "AT+CMQTTSUB")?;
        at.write_raw(session.topic.as_bytes())?;
        at.expect_ok(t.command_ms, "AT+CMQTTSUB topic")?;
        let code = expect_result(at, t.command_ms, "+CMQTTSUB", |p| p.subscribed.take())?;
        if code != 0 {
            return Err(ModemError::Cme(code));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nudge() -> Command {
        Command::check_in(30)
    }

    #[test]
    fn a_full_queue_drops_the_oldest_nudge_first_and_keeps_stops() {
        let mut inbox = PushInbox::default();
        inbox.push(nudge());
        for r in 1..PUSH_QUEUE as u64 {
            inbox.push(Command::stop(r));
        }
        inbox.push(Command::stop(100));
        assert_eq!(inbox.stats.dropped_nudges, 1);
        assert_eq!(inbox.stats.dropped_stops, 0);
        // Now only stops: a nudge is the one dropped, then the oldest stop, counted.
        inbox.push(nudge());
        assert_eq!(inbox.stats.dropped_nudges, 2);
        inbox.push(Command::stop(101));
        assert_eq!(inbox.stats.dropped_stops, 1);
        let ids: heapless::Vec<u64, PUSH_QUEUE> = core::iter::from_fn(|| inbox.take())
            .filter_map(|c| c.rollout_id)
            .collect();
        assert_eq!(ids.as_slice(), &[2, 3, 4, 5, 6, 7, 100, 101]);
    }

    #[test]
    fn acknowledgements_make_room_for_a_stop() {
        let mut inbox = PushInbox::default();
        let ack = Command {
            kind: CommandKind::ReportAck,
            last_event_id: Some(3),
            ..Command::stop(0)
        };
        for _ in 0..PUSH_QUEUE {
            inbox.push(ack);
        }
        inbox.push(Command::stop(9));
        assert_eq!(inbox.stats.dropped_acks, 1);
        assert_eq!(inbox.len(), PUSH_QUEUE);
        assert_eq!(
            core::iter::from_fn(|| inbox.take()).last(),
            Some(Command::stop(9))
        );
    }

    #[test]
    fn the_inbox_stays_under_a_kilobyte() {
        assert!(core::mem::size_of::<PushInbox>() < 1024);
    }

    #[test]
    fn broker_urls() {
        let c = PushConfig::from_url("mqtt://u:p@broker.example:1883").unwrap();
        assert_eq!(c.broker, "broker.example:1883");
        assert_eq!(
            PushConfig::from_url("tcp://10.0.0.1:1883").unwrap().broker,
            "10.0.0.1:1883"
        );
        assert!(PushConfig::from_url("http://x:1883").is_none());
        assert!(PushConfig::from_url("mqtt://").is_none());
    }
}
