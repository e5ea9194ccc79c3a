//! The MQTT path to devices, through a real broker (Mosquitto here; anything MQTT 3.1.1 at
//! scale): the push half of the device protocol. HTTP stays the device's way in (check-in,
//! download) and keeps working whether or not the broker answers; MQTT adds what HTTP polling
//! cannot do:
//!
//! - **nudges**: when a stage opens, "check in now" ([`Command::check_in`]) to exactly the
//!   devices newly inside it, paced at a configured rate, with a jitter the device applies;
//! - **stop**: when a rollout halts, pauses or is aborted, [`Command::stop`] to the devices whose
//!   download is in flight;
//! - **reports**: a device may publish its report on `fota/d/{id}/report` (QoS 1). The server
//!   stores it exactly as the HTTP path does ([`crate::api::device::reports`]), then answers on
//!   the device's command topic ([`Command::report_ack`]) and only then acknowledges the
//!   publish to the broker, so a report the server did not store is delivered again.
//!   Replicas share the subscription (`$share/fota/...`): each report is handled by one.
//!
//! The link reconnects with backoff and resubscribes on every connection (the client library
//! does not). Its state is on `/readyz` (`mqtt`) and `/metrics` (`fota_mqtt_connected`).
//! Per-device broker accounts are [`dynsec`]'s.

pub mod dynsec;
mod push;

use crate::api::state::{AppState, Broker};
pub use crate::config::MqttSettings;
use fota_protocol::messages::{topics, Command, Report};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The largest report payload accepted over MQTT (16 events fit in a few KB); larger ones are
/// dropped, counted and logged. Bound it at the broker too (`message_size_limit`).
pub const MAX_REPORT_PAYLOAD: usize = 16 * 1024;

/// The shared subscription every replica takes for device reports.
pub const REPORT_SUBSCRIPTION: &str = "$share/fota/fota/d/+/report";

/// The link to the broker.
#[derive(Debug)]
pub struct Mqtt {
    client: AsyncClient,
    up: AtomicBool,
    /// Connections so far (a late timer knows whether its connection is still the one).
    connections: AtomicU64,
    settings: MqttSettings,
    dynsec: dynsec::Pending,
}

impl Mqtt {
    /// Whether the broker connection is up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Publish `command` to device `id` (QoS 1). Fails at once, without queueing, when the link
    /// is down or its queue is full: a nudge is a hint, the device's poll still comes.
    pub fn send(&self, id: &str, command: &Command) -> Result<(), String> {
        if !self.is_up() {
            return Err("the MQTT link is down".into());
        }
        let payload = serde_json::to_vec(command).map_err(|e| e.to_string())?;
        self.client
            .try_publish(command_topic(id), QoS::AtLeastOnce, false, payload)
            .map_err(|e| e.to_string())
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &MqttSettings {
        &self.settings
    }
}

impl Broker for Mqtt {
    fn is_up(&self) -> bool {
        Mqtt::is_up(self)
    }

    fn provisions(&self) -> bool {
        self.settings.provision
    }

    fn create_accounts<'a>(
        &'a self,
        devices: &'a [(String, String)],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(dynsec::create_devices(self, devices))
    }

    fn delete_account<'a>(
        &'a self,
        id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move { dynsec::delete_devices(self, &[id.to_string()]).await })
    }
}

/// `fota/d/{id}/cmd`.
pub fn command_topic(id: &str) -> String {
    format!("{}{id}{}", topics::PREFIX, topics::COMMAND_SUFFIX)
}

/// `fota/d/{id}/report`.
pub fn report_topic(id: &str) -> String {
    format!("{}{id}{}", topics::PREFIX, topics::REPORT_SUFFIX)
}

/// The device a report topic belongs to, if it is one.
fn device_of_report_topic(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(topics::PREFIX)?
        .strip_suffix(topics::REPORT_SUFFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Connect (in the background) and run the link, the report handler and the push worker until
/// `stop` flips. Returns at once: the broker may be down; HTTP does not wait for it.
pub fn start(
    settings: MqttSettings,
    state: Arc<AppState>,
    stop: watch::Receiver<bool>,
) -> (Arc<Mqtt>, JoinHandle<()>) {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(false)
        .set_manual_acks(true)
        // Larger than any payload a device may send, so one oversized publish is dropped by the
        // handler (and acknowledged) rather than failing the connection over and over.
        .set_max_packet_size(1024 * 1024, 1024 * 1024);
    if let Some(user) = &settings.username {
        options.set_credentials(user, settings.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let mqtt = Arc::new(Mqtt {
        client,
        up: AtomicBool::new(false),
        connections: AtomicU64::new(0),
        settings,
        dynsec: dynsec::Pending::default(),
    });
    let changes = state.engine.watch_changes();
    let task = {
        let mqtt = mqtt.clone();
        tokio::spawn(async move {
            let pusher = tokio::spawn(push::run(
                mqtt.clone(),
                state.clone(),
                changes,
                stop.clone(),
            ));
            run_link(mqtt, state, eventloop, stop).await;
            pusher.abort();
            let _ = pusher.await;
        })
    };
    (mqtt, task)
}

async fn run_link(
    mqtt: Arc<Mqtt>,
    state: Arc<AppState>,
    mut eventloop: EventLoop,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                // Subscriptions are not restored by the client library after a reconnect, and
                // the broker keeps them only if it kept the session: subscribe every time.
                if let Err(e) = subscribe(&mqtt).await {
                    tracing::warn!(error = %e, "MQTT subscribe failed");
                }
                if mqtt.settings.provision {
                    // Up once the broker says the server's role is settled (see
                    // `dynsec::prepare_server_role`).
                    if let Err(e) = dynsec::prepare_server_role(&mqtt).await {
                        tracing::warn!(error = %e, "MQTT: cannot set up the server's broker role");
                    }
                    // A broker that never answers (the account is no dynamic-security admin)
                    // still gets nudges and reports; only provisioning will fail.
                    let connection = mqtt.connections.fetch_add(1, Ordering::AcqRel) + 1;
                    let (mqtt, state) = (mqtt.clone(), state.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(dynsec::CONFIRM_TIMEOUT).await;
                        if mqtt.connections.load(Ordering::Acquire) == connection && !mqtt.is_up() {
                            tracing::warn!("MQTT: the broker did not answer dynamic-security commands: device accounts cannot be created (is the user its admin?)");
                            link_up(&mqtt, &state);
                        }
                    });
                } else {
                    link_up(&mqtt, &state);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.topic.starts_with(dynsec::RESPONSE_TOPIC) {
                    match mqtt.dynsec.answer(&publish.payload) {
                        Some(true) => link_up(&mqtt, &state),
                        Some(false) => tracing::info!(
                            "MQTT: gave the server's account its role; the broker reconnects it"
                        ),
                        None => {}
                    }
                    let _ = mqtt.client.try_ack(&publish);
                } else {
                    let (mqtt, state) = (mqtt.clone(), state.clone());
                    tokio::spawn(async move { handle_report(&mqtt, &state, publish).await });
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack)))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
            {
                // The broker's rules refuse the server's subscription (reports, or the
                // dynamic-security answers): say so, loudly; nudges and stops still go out.
                tracing::error!(
                    topic = REPORT_SUBSCRIPTION,
                    "MQTT: the broker refused a subscription of the server's account; reports over MQTT will not arrive (its role needs subscribeLiteral {REPORT_SUBSCRIPTION}, see dynsec::server_acls)"
                );
            }
            Ok(_) => {}
            Err(e) => {
                mqtt.connections.fetch_add(1, Ordering::AcqRel);
                if mqtt.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(error = %e, "MQTT link down; HTTP polling continues");
                } else {
                    tracing::debug!(error = %e, "MQTT connect failed");
                }
                state.metrics.mqtt_connected.set(0);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    mqtt.up.store(false, Ordering::Release);
    state.metrics.mqtt_connected.set(0);
    let _ = mqtt.client.try_disconnect();
}

fn link_up(mqtt: &Mqtt, state: &AppState) {
    mqtt.up.store(true, Ordering::Release);
    state.metrics.mqtt_connected.set(1);
    tracing::info!(host = %mqtt.settings.host, port = mqtt.settings.port, "MQTT link up");
}

async fn subscribe(mqtt: &Mqtt) -> Result<(), rumqttc::ClientError> {
    mqtt.client
        .subscribe(REPORT_SUBSCRIPTION, QoS::AtLeastOnce)
        .await?;
    if mqtt.settings.provision {
        mqtt.client
            .subscribe(dynsec::RESPONSE_TOPIC, QoS::AtLeastOnce)
            .await?;
    }
    Ok(())
}

/// One report from the broker: stored, answered, then acknowledged to the broker. A publish
/// that cannot be a report (wrong topic, too big, malformed, an unknown device) is dropped,
/// counted and logged, and acknowledged so the broker does not deliver it again; one whose
/// storing failed (the database is away) is not acknowledged: the broker delivers it again.
async fn handle_report(mqtt: &Mqtt, state: &AppState, publish: Publish) {
    let dropped = |why: &'static str| {
        state
            .metrics
            .mqtt_dropped
            .get_or_create(&crate::metrics::DropLabels { reason: why })
            .inc();
    };
    let Some(id) = device_of_report_topic(&publish.topic) else {
        dropped("topic");
        tracing::info!(topic = %publish.topic, "MQTT: dropped a publish on an unknown topic");
        let _ = mqtt.client.ack(&publish).await;
        return;
    };
    if crate::domain::names::device_id(id).is_err() {
        dropped("topic");
        let _ = mqtt.client.ack(&publish).await;
        return;
    }
    if publish.payload.len() > MAX_REPORT_PAYLOAD {
        dropped("too_large");
        tracing::info!(device = %id, bytes = publish.payload.len(), "MQTT: dropped an oversized report");
        let _ = mqtt.client.ack(&publish).await;
        return;
    }
    let report: Report = match serde_json::from_slice(&publish.payload) {
        Ok(r) => r,
        Err(e) => {
            dropped("malformed");
            tracing::info!(device = %id, error = %e, "MQTT: dropped a malformed report");
            let _ = mqtt.client.ack(&publish).await;
            return;
        }
    };
    // The broker's rules let only device `id` publish here; a device revoked since (or never
    // registered here) is not taken. (Its credentials as HTTP requests read them: cached.)
    match state.credentials.get(&state.store, id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            dropped("unknown_device");
            tracing::info!(device = %id, "MQTT: dropped a report from an unknown device");
            let _ = mqtt.client.ack(&publish).await;
            return;
        }
        Err(e) => {
            tracing::warn!(device = %id, error = %e, "MQTT: report not stored; the broker redelivers it");
            return;
        }
    }
    match crate::api::device::reports::ingest(state, id, &report).await {
        Ok(ack) => {
            state.metrics.mqtt_reports.inc();
            let last = report.events.last().map_or(0, |e| e.id);
            if let Err(e) = mqtt.send(id, &Command::report_ack(ack, last)) {
                tracing::debug!(device = %id, error = %e, "MQTT: cannot answer a report");
            }
            let _ = mqtt.client.ack(&publish).await;
        }
        Err(e) => {
            // Not acknowledged: the broker delivers it again (to this or another replica).
            tracing::warn!(device = %id, code = e.code, "MQTT: report not stored; the broker redelivers it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let s =
            MqttSettings::from_url("mqtt://fota:s3cret@broker.internal:8883", "c".into()).unwrap();
        assert_eq!(
            (
                s.host.as_str(),
                s.port,
                s.username.as_deref(),
                s.password.as_deref()
            ),
            ("broker.internal", 8883, Some("fota"), Some("s3cret"))
        );
        let s = MqttSettings::from_url("mqtt://localhost", "c".into()).unwrap();
        assert_eq!((s.port, s.username), (1883, None));
        assert!(MqttSettings::from_url("http://localhost", "c".into()).is_err());
        assert!(MqttSettings::from_url("mqtt://:1883", "c".into()).is_err());
        assert!(MqttSettings::from_url("mqtt://h:port", "c".into()).is_err());
    }

    #[test]
    fn report_topics_name_one_device() {
        assert_eq!(device_of_report_topic("fota/d/SL-1/report"), Some("SL-1"));
        assert_eq!(device_of_report_topic("fota/d//report"), None);
        assert_eq!(device_of_report_topic("fota/d/a/b/report"), None);
        assert_eq!(device_of_report_topic("fota/d/SL-1/cmd"), None);
        assert_eq!(report_topic("SL-1"), "fota/d/SL-1/report");
        assert_eq!(command_topic("SL-1"), "fota/d/SL-1/cmd");
    }
}
