//! Per-device broker accounts through Mosquitto's dynamic-security plugin (`$CONTROL`).
//!
//! Each device gets a broker client named by its id, with its device token as password (one
//! secret per device, for HTTP and MQTT alike; the broker stores it salted and hashed), and a
//! role of its own, `fota-device-{id}`, that allows exactly: publishing to `fota/d/{id}/report`,
//! subscribing to and receiving `fota/d/{id}/cmd`. Nothing else (dynamic security denies
//! publishing and subscribing by default), so a device can neither read another's topics nor
//! publish as another. Mosquitto's dynamic security has no `%u` patterns, hence one role each.
//!
//! Accounts are created when devices are registered; the registration answers only once the
//! broker confirmed every account (or refuses with 503 and registers nothing). The server's
//! own account is the dynamic-security admin; it gives itself the `fota-server` role (publish
//! to every device's command topic) on every connection.

use super::Mqtt;
use dashmap::DashMap;
use rumqttc::QoS;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::oneshot;

/// Where commands go.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where their answers come.
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The role of the server's own account.
pub const SERVER_ROLE: &str = "fota-server";
/// How long the broker may take to confirm a batch of accounts.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The correlation data of the server's own `addClientRole` (see [`prepare_server_role`]).
const PREPARE: &str = "fota-server-role";

/// Commands waiting for the broker's answer, by correlation data.
#[derive(Debug, Default)]
pub struct Pending {
    waiting: DashMap<String, oneshot::Sender<Option<String>>>,
}

impl Pending {
    /// A response message from the broker: wake whoever waits for each answer. Returns
    /// `Some(true)` when it answers the server's own role setup and the account is settled
    /// (it already had the role), `Some(false)` when the role was added just now (the broker
    /// then disconnects the account's sessions to enforce it, and the next connection
    /// settles).
    pub fn answer(&self, payload: &[u8]) -> Option<bool> {
        let v = serde_json::from_slice::<Value>(payload).ok()?;
        let mut settled = None;
        for r in v["responses"].as_array().into_iter().flatten() {
            let Some(id) = r["correlationData"].as_str() else {
                continue;
            };
            if id == PREPARE {
                settled = Some(!r["error"].is_null());
            } else if let Some((_, tx)) = self.waiting.remove(id) {
                let _ = tx.send(r["error"].as_str().map(str::to_string));
            }
        }
        settled
    }
}

/// The role of device `id`.
pub fn device_role(id: &str) -> String {
    format!("fota-device-{id}")
}

/// The rules of device `id`'s role: publish to its report topic, subscribe to and receive
/// its command topic; nothing else.
pub fn device_acls(id: &str) -> Value {
    let cmd = super::command_topic(id);
    json!([
        {"acltype": "publishClientSend", "topic": super::report_topic(id), "allow": true},
        {"acltype": "subscribeLiteral", "topic": cmd, "allow": true},
        {"acltype": "publishClientReceive", "topic": cmd, "allow": true},
    ])
}

/// The rules of the server's role ([`SERVER_ROLE`]): publish to every device's command topic,
/// take every device's reports. Mosquitto 2.0 checks a subscription's ACL against the whole
/// filter, `$share/...` prefix included, so the shared subscription the server takes
/// ([`super::REPORT_SUBSCRIPTION`]) needs a rule of its own: with only the plain pattern the
/// broker refuses it and reports over MQTT never reach the server.
pub fn server_acls() -> Value {
    json!([
        {"acltype": "publishClientSend", "topic": "fota/d/+/cmd", "allow": true},
        {"acltype": "subscribeLiteral", "topic": super::REPORT_SUBSCRIPTION, "allow": true},
        {"acltype": "subscribePattern", "topic": "fota/d/+/report", "allow": true},
        {"acltype": "publishClientReceive", "topic": "fota/d/+/report", "allow": true},
    ])
}

fn device_commands(id: &str, token: &str) -> Vec<Value> {
    let role = device_role(id);
    vec![
        // A leftover account of this id (a registration whose database half failed) goes first.
        json!({"command": "deleteClient", "username": id}),
        json!({"command": "deleteRole", "rolename": role}),
        json!({
            "command": "createRole",
            "rolename": role,
            "acls": device_acls(id),
        }),
        json!({
            "command": "createClient",
            "username": id,
            "password": token,
            "roles": [{"rolename": role}],
        }),
    ]
}

/// Devices per control message: four commands of about 1 KB for each, well under the 64 KiB
/// `max_packet_size` deploy/mosquitto.conf sets (a larger packet makes the broker drop the
/// server's connection).
const DEVICES_PER_MESSAGE: usize = 32;

/// Create the broker accounts of `devices` (id, token), a few devices per control message;
/// returns once the broker confirmed each, or why not.
///
/// Mosquitto 2.0's plugin rewrites its whole accounts file after every command, so this takes
/// time quadratic in the number of accounts: fine for devices registered in the hundreds, not
/// for a fleet of 100,000 at once (docs/BENCHMARKS.md).
pub async fn create_devices(mqtt: &Mqtt, devices: &[(String, String)]) -> Result<(), String> {
    for chunk in devices.chunks(DEVICES_PER_MESSAGE) {
        let mut commands = Vec::new();
        for (id, token) in chunk {
            commands.extend(device_commands(id, token));
        }
        run(mqtt, commands, |c| {
            matches!(c["command"].as_str(), Some("createRole" | "createClient"))
        })
        .await?;
    }
    Ok(())
}

/// Delete the broker accounts of `ids`.
pub async fn delete_devices(mqtt: &Mqtt, ids: &[String]) -> Result<(), String> {
    for chunk in ids.chunks(DEVICES_PER_MESSAGE) {
        let commands = chunk
            .iter()
            .flat_map(|id| {
                [
                    json!({"command": "deleteClient", "username": id}),
                    json!({"command": "deleteRole", "rolename": device_role(id)}),
                ]
            })
            .collect();
        run(mqtt, commands, |c| c["command"] == "deleteClient").await?;
    }
    Ok(())
}

/// Send `commands` in one message; wait for the answers of those `must_succeed` picks.
async fn run(
    mqtt: &Mqtt,
    mut commands: Vec<Value>,
    must_succeed: impl Fn(&Value) -> bool,
) -> Result<(), String> {
    if !mqtt.is_up() {
        return Err("the MQTT broker is not connected".into());
    }
    let mut answers = Vec::new();
    for c in &mut commands {
        if must_succeed(c) {
            let id = uuid::Uuid::new_v4().to_string();
            let (tx, rx) = oneshot::channel();
            mqtt.dynsec.waiting.insert(id.clone(), tx);
            c["correlationData"] = json!(id);
            answers.push((id, c["command"].clone(), rx));
        }
    }
    let payload =
        serde_json::to_vec(&json!({ "commands": commands })).map_err(|e| e.to_string())?;
    let sent = mqtt
        .client
        .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload)
        .await;
    let result = async {
        sent.map_err(|e| e.to_string())?;
        for (_, command, rx) in &mut answers {
            match tokio::time::timeout_at(tokio::time::Instant::now() + CONFIRM_TIMEOUT, rx).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(error))) => return Err(format!("broker refused {command}: {error}")),
                Ok(Err(_)) | Err(_) => {
                    return Err(format!("the broker did not confirm {command} in time"))
                }
            }
        }
        Ok(())
    }
    .await;
    for (id, ..) in answers {
        mqtt.dynsec.waiting.remove(&id);
    }
    result
}

/// Give the server's own account the right to publish commands to every device (idempotent:
/// "already exists" answers are fine). Sent without waiting: it runs inside the link's loop,
/// which is what reads the answers. Adding a role to an account makes Mosquitto disconnect
/// the account's sessions, so the link counts as up only once the answer says the role was
/// there already ([`Pending::answer`]): a request sent just before that disconnect would be
/// lost.
pub async fn prepare_server_role(mqtt: &Mqtt) -> Result<(), String> {
    let Some(user) = mqtt.settings.username.as_deref() else {
        return Err(
            "provisioning needs the server's broker username (mqtt://user:pass@...)".into(),
        );
    };
    let commands = json!({"commands": [
        {
            "command": "createRole",
            "rolename": SERVER_ROLE,
            "acls": server_acls(),
        },
        // A role created by an earlier version lacks the shared subscription's rule (an
        // "already exists" answer is fine).
        {
            "command": "addRoleACL",
            "rolename": SERVER_ROLE,
            "acltype": "subscribeLiteral",
            "topic": super::REPORT_SUBSCRIPTION,
            "allow": true,
        },
        {"command": "addClientRole", "username": user, "rolename": SERVER_ROLE, "correlationData": PREPARE},
    ]});
    mqtt.client
        .try_publish(
            CONTROL_TOPIC,
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&commands).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())
}
