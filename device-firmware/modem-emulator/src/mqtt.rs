//! The module's MQTT client, made real: one broker connection (`rumqttc`, on a thread of its
//! own) per `AT+CMQTTCONNECT`, whose events go to the device as the SIM7600's URCs.
//!
//! - The connection accepted: `+CMQTTCONNECT: 0,0`; refused by the broker:
//!   `+CMQTTCONNECT: 0,<27 + return code - 1>` (27 protocol version ... 30 bad user name or
//!   password, 31 not authorized, as the manual numbers them); no broker there:
//!   `+CMQTTCONNECT: 0,3` (socket connect failed).
//! - A subscription acknowledged: `+CMQTTSUB: 0,0`, refused: `+CMQTTSUB: 0,1`.
//! - A publish received: `+CMQTTRXSTART`, `+CMQTTRXTOPIC` and the topic, `+CMQTTRXPAYLOAD`
//!   and the payload, `+CMQTTRXEND`, as one frame on the line (QoS 1 publishes are acknowledged
//!   to the broker by the client, as the module does).
//! - The connection dropped after it was up: `+CMQTTCONNLOST: 0,1` (closed by the peer), and
//!   the thread ends; the device connects again with `AT+CMQTTCONNECT`.

use crate::Faults;
use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the URCs go: the line to the device.
pub(crate) trait Sink: Send {
    /// Send one whole frame of URCs.
    fn urc(&self, bytes: &[u8]);
}

/// What `AT+CMQTTCONNECT` asked for.
pub(crate) struct Options {
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keepalive: Duration,
    pub clean: bool,
    pub credentials: Option<(String, String)>,
    pub verbose: bool,
}

/// One broker connection.
pub(crate) struct MqttClient {
    client: Client,
    connected: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
}

/// A received publish as the SIM7600 reports it.
pub fn publish_urcs(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = format!(
        "\r\n+CMQTTRXSTART: 0,{},{}\r\n\r\n+CMQTTRXTOPIC: 0,{}\r\n{topic}\r\n+CMQTTRXPAYLOAD: 0,{}\r\n",
        topic.len(),
        payload.len(),
        topic.len(),
        payload.len()
    )
    .into_bytes();
    frame.extend_from_slice(payload);
    frame.extend_from_slice(b"\r\n+CMQTTRXEND: 0\r\n");
    frame
}

fn refused_code(code: ConnectReturnCode) -> u32 {
    match code {
        ConnectReturnCode::Success => 0,
        ConnectReturnCode::RefusedProtocolVersion => 27,
        ConnectReturnCode::BadClientId => 28,
        ConnectReturnCode::ServiceUnavailable => 29,
        ConnectReturnCode::BadUserNamePassword => 30,
        ConnectReturnCode::NotAuthorized => 31,
    }
}

impl MqttClient {
    /// Connect as `options` say; the outcome comes to `sink` as `+CMQTTCONNECT`.
    pub(crate) fn connect(options: Options, sink: Box<dyn Sink>, faults: Faults) -> Self {
        let mut mqtt = MqttOptions::new(&options.client_id, &options.host, options.port);
        mqtt.set_keep_alive(options.keepalive)
            .set_clean_session(options.clean);
        if let Some((user, password)) = &options.credentials {
            mqtt.set_credentials(user, password);
        }
        let (client, mut connection) = Client::new(mqtt, 16);
        let connected = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        let (up, stop) = (connected.clone(), closing.clone());
        let verbose = options.verbose;
        std::thread::spawn(move || {
            for event in connection.iter() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up.store(true, Ordering::SeqCst);
                        faults.with_both(|_, s| s.mqtt_connects += 1);
                        sink.urc(b"\r\n+CMQTTCONNECT: 0,0\r\n");
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let ok = matches!(
                            ack.return_codes.first(),
                            Some(rumqttc::SubscribeReasonCode::Success(_))
                        );
                        sink.urc(format!("\r\n+CMQTTSUB: 0,{}\r\n", u8::from(!ok)).as_bytes());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if verbose {
                            eprintln!(
                                "modem: mqtt publish on {}: {}",
                                p.topic,
                                String::from_utf8_lossy(&p.payload)
                            );
                        }
                        faults.with_both(|_, s| s.mqtt_publishes += 1);
                        sink.urc(&publish_urcs(&p.topic, &p.payload));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        if up.swap(false, Ordering::SeqCst) {
                            if verbose {
                                eprintln!("modem: mqtt connection lost: {e}");
                            }
                            faults.with_both(|_, s| s.mqtt_lost += 1);
                            sink.urc(b"\r\n+CMQTTCONNLOST: 0,1\r\n");
                        } else {
                            let code = match e {
                                ConnectionError::ConnectionRefused(code) => refused_code(code),
                                _ => 3,
                            };
                            if verbose {
                                eprintln!("modem: mqtt connect failed: {e}");
                            }
                            sink.urc(format!("\r\n+CMQTTCONNECT: 0,{code}\r\n").as_bytes());
                        }
                        break;
                    }
                }
            }
        });
        Self {
            client,
            connected,
            closing,
        }
    }

    /// Whether the broker accepted the connection and it has not dropped since.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Subscribe; `false` if the connection is gone.
    pub(crate) fn subscribe(&self, topic: &str, qos: u8) -> bool {
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        self.client.try_subscribe(topic, qos).is_ok()
    }

    /// Disconnect (the device asked, or the module powers off): no URC follows.
    pub(crate) fn close(self) {
        self.closing.store(true, Ordering::SeqCst);
        self.connected.store(false, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}
