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

pub use crate::inbox::{PushInbox, PushStats, MAX_PAYLOAD, MAX_TOPIC, PUSH_QUEUE};

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
