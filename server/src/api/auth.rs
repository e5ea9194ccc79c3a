//! Who is calling: the bearer token of a request, the [`Admin`] extractor (a live admin token
//! and its role), and [`Device`] (a device's own token, bound to the id in the
//! path). The secrets, their hashes and the roles are [`crate::domain::auth`]'s.

use super::error::ApiError;
use super::state::{AppState, DeviceCredentials};
use crate::domain::auth::{hashes_equal, token_hash, Role, ADMIN_TOKEN_PREFIX};
use crate::domain::names;
use crate::store::now_ms;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then_some(token)
}

/// An authenticated operator. Extracting it requires a live admin token; handlers then call
/// [`require`](Self::require) with the role they need.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The token's name (recorded as the actor in releases and the audit log).
    pub name: String,
    /// The token's role.
    pub role: Role,
}

impl Admin {
    /// Refuse with 403 unless the token's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<&Self, ApiError> {
        self.role.require(role)?;
        Ok(self)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        if !token.starts_with(ADMIN_TOKEN_PREFIX) {
            return Err(ApiError::unauthorized());
        }
        let record = state
            .store
            .admin_token(&token_hash(token))
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Admin {
            name: record.name,
            role: record.role,
        })
    }
}

/// A device that proved it is the one in the path (`/v1/devices/{id}/...`). As an extractor
/// it runs before the body is read: a stranger's body is never read, whatever its size (401,
/// not 413, and no memory held for it).
#[derive(Debug, Clone)]
pub struct Device {
    /// Its id, from the path.
    pub id: String,
    /// Its cached credentials (model, tags).
    pub creds: Arc<DeviceCredentials>,
}

impl FromRequestParts<Arc<AppState>> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let super::error::ApiPath(id) =
            super::error::ApiPath::<String>::from_request_parts(parts, state).await?;
        let creds = authenticate_device(state, &id, &parts.headers).await?;
        Ok(Self { id, creds })
    }
}

/// How long cached credentials are trusted before the database is asked again, unless the
/// revocation feed vouches for them: bounds how long a device revoked through another replica
/// still authenticates here when this replica cannot read the feed.
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(30);

/// How long cached credentials are trusted while the revocation feed is fresh. A device's
/// credentials change only by revocation (its token, model and tags are fixed when it is
/// registered), which the feed reports, so this only bounds the memory of devices gone quiet.
/// Asking the database every [`CREDENTIALS_TTL`] instead was one statement for every device
/// every 30 s: 11% of the database's time in the 100,000-device demo.
pub const CREDENTIALS_TTL_WITH_FEED: Duration = Duration::from_secs(600);

/// How often each replica reads the devices revoked lately ([`run_revocation_feed`]): a device
/// revoked through another replica is refused here about this soon.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);

/// The feed vouches for cached credentials while its last successful read began this recently.
const FEED_FRESH: Duration = Duration::from_secs(5);

/// Each read asks for revocations since this long before the previous read began: another
/// replica's clock, which stamped the revocation, may be behind this one's.
const REVOCATION_OVERLAP_MS: i64 = 60_000;

/// Devices revoked lately, as this replica learned them from the database (whichever replica
/// revoked them), and when it last did so successfully.
#[derive(Debug, Default)]
pub struct RevocationFeed {
    /// When the last successful read began.
    read_at: std::sync::Mutex<Option<(Instant, i64)>>,
    /// Revoked ids, with when this replica learned of each: their cached credentials are never
    /// used, even ones a request read from the database just before the revocation and cached
    /// just after the feed removed them. Kept as long as such credentials could be trusted.
    revoked: DashMap<String, Instant>,
}

impl RevocationFeed {
    /// Whether cached credentials read `age` ago are still trusted.
    fn trusts(&self, age: Duration) -> bool {
        let read_at = *self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        trusted(age, read_at.map(|(at, _)| at.elapsed()))
    }

    /// Whether device `id` was revoked lately.
    fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// Learn that device `id` is revoked (this replica revoked it, or the feed said so).
    pub fn revoked(&self, state: &AppState, id: &str) {
        self.revoked.insert(id.to_string(), Instant::now());
        state.device_cache.remove(id);
    }

    /// Read the revocations since the previous read (with [`REVOCATION_OVERLAP_MS`]) once.
    pub async fn read(&self, state: &AppState) -> Result<(), crate::store::StoreError> {
        let began = Instant::now();
        let began_ms = now_ms();
        let since = self
            .read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(began_ms, |(_, ms)| ms)
            - REVOCATION_OVERLAP_MS;
        for id in state.store.revoked_since(since).await? {
            self.revoked(state, &id);
        }
        self.revoked
            .retain(|_, learned| learned.elapsed() < CREDENTIALS_TTL_WITH_FEED + FEED_FRESH);
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = Some((began, began_ms));
        Ok(())
    }
}

/// Whether cached credentials read `age` ago are trusted when the revocation feed's last
/// successful read began `feed_age` ago (never, if `None`).
fn trusted(age: Duration, feed_age: Option<Duration>) -> bool {
    age < CREDENTIALS_TTL
        || (age < CREDENTIALS_TTL_WITH_FEED && feed_age.is_some_and(|f| f < FEED_FRESH))
}

/// Read the revocation feed every [`REVOCATION_POLL`] until `stop` flips. The first read covers
/// the last [`REVOCATION_OVERLAP_MS`]; nothing is cached before the server starts.
pub async fn run_revocation_feed(
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REVOCATION_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        match state.revocations.read(&state).await {
            Ok(()) => {}
            // Cached credentials fall back to CREDENTIALS_TTL until the feed reads again.
            Err(e @ crate::store::StoreError::Unavailable(_)) => {
                tracing::debug!(error = %e, "revocation feed waits for the database")
            }
            Err(e) => tracing::warn!(error = %e, "revocation feed failed; will retry"),
        }
    }
}

/// Check the bearer token against device `id`'s; the same 401 for unknown devices and wrong
/// tokens, so the endpoint does not reveal which ids exist. Credentials are cached after the
/// first check-in, so a check-in reads no database.
async fn authenticate_device(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<Arc<DeviceCredentials>, ApiError> {
    names::device_id(id)?;
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let creds = device_credentials(state, id)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if !hashes_equal(&creds.token_hash, &token_hash(token)) {
        return Err(ApiError::unauthorized());
    }
    Ok(creds)
}

/// Device `id`'s credentials (HTTP requests and MQTT reports): from the cache while it is
/// trusted, otherwise from the database (and cached). `None`: unknown, or revoked. While the
/// database is away, credentials cached before are used however old (check-ins are answered
/// from memory during an outage).
pub async fn device_credentials(
    state: &AppState,
    id: &str,
) -> Result<Option<Arc<DeviceCredentials>>, crate::store::StoreError> {
    let cached = if state.revocations.is_revoked(id) {
        None
    } else {
        state.device_cache.get(id).map(|c| c.clone())
    };
    match cached {
        Some(c) if state.revocations.trusts(c.cached_at.elapsed()) => Ok(Some(c)),
        stale => {
            // Taken before the read: what the credentials' age is measured from.
            let read_at = Instant::now();
            match state.store.device_credentials(id).await {
                Ok(Some((hash, model, tags))) => {
                    let creds = Arc::new(DeviceCredentials {
                        token_hash: hash,
                        model,
                        tags,
                        cached_at: read_at,
                    });
                    state.device_cache.insert(id.to_string(), creds.clone());
                    Ok(Some(creds))
                }
                Ok(None) => {
                    // Unknown, or revoked (on this replica or another).
                    state.device_cache.remove(id);
                    Ok(None)
                }
                Err(e @ crate::store::StoreError::Unavailable(_)) => match stale {
                    Some(c) => Ok(Some(c)),
                    None => Err(e),
                },
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

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

    #[test]
    fn roles_are_ordered() {
        let viewer = Admin {
            name: "v".into(),
            role: Role::Viewer,
        };
        assert!(viewer.require(Role::Viewer).is_ok());
        assert_eq!(viewer.require(Role::Operator).unwrap_err().status, 403);
        let admin = Admin {
            name: "a".into(),
            role: Role::Admin,
        };
        assert!(admin.require(Role::Operator).is_ok());
    }
}
