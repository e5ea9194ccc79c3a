//! [`AppState`]: what every handler shares, the device credentials cache included.

use super::credentials::CredentialCache;
use crate::artifacts::ArtifactStore;
use crate::config::ServeConfig;
use crate::facts::FactsBuffer;
use crate::metrics::Metrics;
use crate::store::{now_ms, Store};
use std::sync::Arc;

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Resolved configuration.
    pub config: ServeConfig,
    /// Image files.
    pub artifacts: ArtifactStore,
    /// Check-in facts waiting for the flusher.
    pub facts: FactsBuffer,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Device credentials seen so far, and the revocation feed that keeps them current.
    pub credentials: CredentialCache,
    /// The rollout engine.
    pub engine: crate::rollout::Engine,
    /// The MQTT link, once `fota serve` started it (never, without `--mqtt-url`).
    pub mqtt: std::sync::OnceLock<Arc<dyn Broker>>,
    /// Flips to true when the server starts shutting down: long-lived answers (the dashboard's
    /// event streams) end then, so the graceful shutdown does not wait for their clients.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The statuses of the rollouts the dashboard watches live, one follower per rollout.
    pub live: crate::api::live::LiveStatuses,
}

impl AppState {
    /// State over an open store.
    pub fn new(store: Store, config: ServeConfig) -> std::io::Result<Self> {
        let artifacts = ArtifactStore::open(config.data_dir.join("artifacts"))?;
        let facts = FactsBuffer::new(FactsBuffer::resolution_for(config.poll_interval));
        let engine = crate::rollout::Engine::new(crate::rollout::DeltaPolicy {
            max_percent: config.delta_max_percent,
        });
        Ok(Self {
            store,
            config,
            artifacts,
            facts,
            metrics: Metrics::new(),
            credentials: CredentialCache::default(),
            engine,
            mqtt: std::sync::OnceLock::new(),
            stopping: tokio::sync::watch::Sender::new(false),
            live: Default::default(),
        })
    }

    /// Devices not heard from since this instant (Unix ms) count as silent.
    pub fn stale_before(&self) -> i64 {
        let two_polls = i64::try_from(self.config.poll_interval.as_millis().saturating_mul(2))
            .unwrap_or(i64::MAX);
        now_ms().saturating_sub(two_polls)
    }
}

/// What handlers need of the MQTT link ([`crate::api::mqtt::Mqtt`]): whether it is up, and
/// the devices' broker accounts.
pub trait Broker: std::fmt::Debug + Send + Sync {
    /// Whether the broker connection is up.
    fn is_up(&self) -> bool;
    /// Whether registering devices creates their broker accounts.
    fn provisions(&self) -> bool;
    /// Create the broker accounts of `devices` (id, token); done once the broker confirmed.
    fn create_accounts<'a>(
        &'a self,
        devices: &'a [(String, String)],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
    /// Delete device `id`'s broker account.
    fn delete_account<'a>(
        &'a self,
        id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}
