//! The push path's inbox: the `+CMQTTRX...` URCs (and the session's own result codes) the AT
//! engine hands over wherever they arrive, assembled into the [`Command`]s they carry and kept in
//! a small bounded queue for the runtime to take. See [`crate::push`] for the session and the
//! module's MQTT dialect; this part depends on neither, so the AT engine can feed it.

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
}
