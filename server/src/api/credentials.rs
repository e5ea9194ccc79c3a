//! Device credentials as the API keeps them: [`CredentialCache`], read from the database once
//! per device and then trusted while [the revocation feed](CredentialCache::run_feed) says
//! nothing was revoked (a device's token, model and tags are fixed when it is registered; only
//! a revocation changes them).

use crate::store::{now_ms, Store, StoreError};
use dashmap::DashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A device's stored credentials, cached.
#[derive(Debug)]
pub struct DeviceCredentials {
    /// SHA-256 of its token.
    pub token_hash: Vec<u8>,
    /// Its provisioned model.
    pub model: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// When the read that found them began.
    pub cached_at: Instant,
}

/// How long cached credentials are trusted before the database is asked again, unless the
/// revocation feed vouches for them: bounds how long a device revoked through another replica
/// still authenticates here when this replica cannot read the feed.
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(30);

/// How long cached credentials are trusted while the revocation feed is fresh: only bounds the
/// memory of devices gone quiet. Asking the database every [`CREDENTIALS_TTL`] instead was one
/// statement for every device every 30 s: 11% of the database's time in the 100,000-device
/// demo.
pub const CREDENTIALS_TTL_WITH_FEED: Duration = Duration::from_secs(600);

/// How often each replica reads the devices revoked lately: a device revoked through another
/// replica is refused here about this soon.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);

/// The feed vouches for cached credentials while its last successful read began this recently.
const FEED_FRESH: Duration = Duration::from_secs(5);

/// Each read asks for revocations since this long before the previous read began: another
/// replica's clock, which stamped the revocation, may be behind this one's.
const REVOCATION_OVERLAP_MS: i64 = 60_000;

/// Device credentials seen so far (id -> token hash, model, tags), so that check-ins skip the
/// database; and the devices revoked lately, as this replica learned them from the database
/// (whichever replica revoked them).
#[derive(Debug, Default)]
pub struct CredentialCache {
    entries: DashMap<String, Arc<DeviceCredentials>>,
    /// When the feed's last successful read began (instant, Unix ms).
    read_at: Mutex<Option<(Instant, i64)>>,
    /// Revoked ids, with when this replica learned of each: their cached credentials are never
    /// used, even ones a request read from the database just before the revocation and cached
    /// just after the feed removed them. Kept as long as such credentials could be trusted.
    revoked: DashMap<String, Instant>,
}

impl CredentialCache {
    /// Device `id`'s credentials (HTTP requests and MQTT reports): from the cache while it is
    /// trusted, otherwise from the database (and cached). `None`: unknown, or revoked. While the
    /// database is away, credentials cached before are used however old (check-ins are answered
    /// from memory during an outage).
    pub async fn get(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Option<Arc<DeviceCredentials>>, StoreError> {
        let cached = if self.revoked.contains_key(id) {
            None
        } else {
            self.entries.get(id).map(|c| c.clone())
        };
        match cached {
            Some(c) if self.trusts(c.cached_at.elapsed()) => Ok(Some(c)),
            stale => {
                // Taken before the read: what the credentials' age is measured from.
                let read_at = Instant::now();
                match store.device_credentials(id).await {
                    Ok(Some((hash, model, tags))) => {
                        let creds = Arc::new(DeviceCredentials {
                            token_hash: hash,
                            model,
                            tags,
                            cached_at: read_at,
                        });
                        self.entries.insert(id.to_string(), creds.clone());
                        Ok(Some(creds))
                    }
                    Ok(None) => {
                        // Unknown, or revoked (on this replica or another).
                        self.entries.remove(id);
                        Ok(None)
                    }
                    Err(e @ StoreError::Unavailable(_)) => match stale {
                        Some(c) => Ok(Some(c)),
                        None => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Whether device `id`'s credentials are cached.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Whether cached credentials read `age` ago are still trusted.
    fn trusts(&self, age: Duration) -> bool {
        let read_at = *self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        trusted(age, read_at.map(|(at, _)| at.elapsed()))
    }

    /// Learn that device `id` is revoked (this replica revoked it, or the feed said so).
    pub fn revoked(&self, id: &str) {
        self.revoked.insert(id.to_string(), Instant::now());
        self.entries.remove(id);
    }

    /// Read the revocations since the previous read (with [`REVOCATION_OVERLAP_MS`]) once.
    pub async fn read_feed(&self, store: &Store) -> Result<(), StoreError> {
        let began = Instant::now();
        let began_ms = now_ms();
        let since = self
            .read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(began_ms, |(_, ms)| ms)
            - REVOCATION_OVERLAP_MS;
        for id in store.revoked_since(since).await? {
            self.revoked(&id);
        }
        self.revoked
            .retain(|_, learned| learned.elapsed() < CREDENTIALS_TTL_WITH_FEED + FEED_FRESH);
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = Some((began, began_ms));
        Ok(())
    }

    /// Read the revocation feed every [`REVOCATION_POLL`] until `stop` flips. The first read
    /// covers the last [`REVOCATION_OVERLAP_MS`]; nothing is cached before the server starts.
    pub async fn run_feed(&self, store: &Store, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            match self.read_feed(store).await {
                Ok(()) => {}
                // Cached credentials fall back to CREDENTIALS_TTL until the feed reads again.
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::debug!(error = %e, "revocation feed waits for the database")
                }
                Err(e) => tracing::warn!(error = %e, "revocation feed failed; will retry"),
            }
        }
    }
}

/// Whether cached credentials read `age` ago are trusted when the revocation feed's last
/// successful read began `feed_age` ago (never, if `None`).
fn trusted(age: Duration, feed_age: Option<Duration>) -> bool {
    age < CREDENTIALS_TTL
        || (age < CREDENTIALS_TTL_WITH_FEED && feed_age.is_some_and(|f| f < FEED_FRESH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_credentials_outlive_the_short_ttl_only_while_the_feed_is_fresh() {
        let s = Duration::from_secs;
        assert!(trusted(s(29), None));
        assert!(!trusted(s(31), None), "no feed read yet");
        assert!(trusted(s(31), Some(s(1))));
        assert!(!trusted(s(31), Some(s(6))), "the feed stalled");
        assert!(trusted(s(599), Some(s(0))));
        assert!(!trusted(s(601), Some(s(0))), "the long TTL still ends");
    }
}
