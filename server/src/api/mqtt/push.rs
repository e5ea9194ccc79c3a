//! The push worker: hears of every rollout this replica changed (the engine's changes are
//! conditional, so exactly one replica hears of each) and tells the devices concerned:
//! "check in now" to the targets a newly opened stage reaches, "stop" to the devices whose
//! download is in flight when a rollout halts, pauses or is aborted. Nudges are paced at the
//! configured rate, so 100,000 of them neither flood the broker nor the check-in endpoint (the
//! jitter each device applies spreads the check-ins further).

use super::Mqtt;
use crate::api::state::AppState;
use crate::domain::RolloutState;
use crate::rollout::engine::ACTIVE_CACHE_TTL;
use fota_protocol::messages::Command;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub(super) async fn run(
    mqtt: Arc<Mqtt>,
    state: Arc<AppState>,
    mut changes: mpsc::UnboundedReceiver<i64>,
    stop: watch::Receiver<bool>,
) {
    // Devices already nudged, per rollout: a later stage nudges only the devices it adds.
    let mut nudged: HashSet<(i64, String)> = HashSet::new();
    while let Some(id) = changes.recv().await {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = push_for(&mqtt, &state, id, &mut nudged).await {
            tracing::warn!(rollout = id, error = %e, "MQTT push skipped; devices still poll");
        }
    }
}

async fn push_for(
    mqtt: &Mqtt,
    state: &AppState,
    id: i64,
    nudged: &mut HashSet<(i64, String)>,
) -> Result<(), crate::store::StoreError> {
    let Some(r) = state.store.rollout(id).await? else {
        return Ok(());
    };
    match r.state {
        RolloutState::Active => {
            // Another replica may still answer check-ins from a cache read before the stage
            // opened, for up to its TTL; a device nudged now and answered from it would be told
            // "no offer" and, nudged once a stage, wait for its next poll. Let those expire.
            tokio::time::sleep(ACTIVE_CACHE_TTL).await;
            let targets = state
                .store
                .targets_to_nudge(id, r.current_threshold)
                .await?;
            let fresh: Vec<String> = targets
                .into_iter()
                .filter(|d| nudged.insert((id, d.clone())))
                .collect();
            let sent = paced(
                mqtt,
                state,
                &fresh,
                &Command::check_in(mqtt.settings.jitter_s),
            )
            .await;
            tracing::info!(
                rollout = id,
                stage = r.current_stage + 1,
                devices = fresh.len(),
                sent,
                "nudged the devices a stage reaches"
            );
        }
        RolloutState::Halted | RolloutState::Paused | RolloutState::Aborted => {
            let in_flight = state.store.downloads_in_flight(id).await?;
            let command = Command::stop(u64::try_from(id).unwrap_or_default());
            let sent = paced(mqtt, state, &in_flight, &command).await;
            tracing::info!(
                rollout = id,
                state = r.state.as_str(),
                devices = in_flight.len(),
                sent,
                "told in-flight downloads to stop"
            );
        }
        RolloutState::Completed => {
            nudged.retain(|(rollout, _)| *rollout != id);
        }
    }
    Ok(())
}

/// Send `command` to each of `devices`, at most the configured rate per second; returns how
/// many went out (a link that is down sends none: the devices still poll).
async fn paced(mqtt: &Mqtt, state: &AppState, devices: &[String], command: &Command) -> usize {
    // Slices of about 10 ms' worth, each followed by the pause that keeps to the rate.
    let rate = mqtt.settings.nudge_rate.max(1);
    let per_slice = (rate as usize / 100).max(1);
    let pause = Duration::from_secs_f64(per_slice as f64 / f64::from(rate));
    let mut sent = 0;
    for slice in devices.chunks(per_slice) {
        for id in slice {
            match mqtt.send(id, command) {
                Ok(()) => {
                    sent += 1;
                    state.metrics.mqtt_commands.inc();
                }
                Err(e) => {
                    tracing::debug!(device = %id, error = %e, "MQTT command not sent");
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    sent
}
