//! Delta patches in offers (issue 19): which offer carries one, and making each patch once.
//!
//! An application offer carries a patch from the image the device runs to the offered image
//! when all of these hold, and otherwise the full image alone (what every offer was before):
//! - the device applies the format the server generates (its check-in's `delta_format`);
//! - the server knows its base: a release of the model with the version the device runs has an
//!   image for the slot it runs from, its bytes in the database;
//! - the patch is smaller than [`DeltaPolicy::max_percent`] of the full image;
//! - the device has not given up this rollout's patch for the full image before (a
//!   `verify_failed` whose reason says so, recorded by the report that carried it).
//!
//! Patches are made lazily: the first offer that can use a (base, target) pair makes it
//! ([`fota_delta::generate`], which applies it back before returning it), stores its bytes as an
//! artifact and the pair's row; every later offer, on any replica, reads the row (kept in memory
//! as long as the active rollouts are, so at most one read per pair per
//! [`super::engine::ACTIVE_CACHE_TTL`]). Concurrent offers for one pair on one replica wait for
//! the one that makes it.

use crate::store::{now_ms, Store, StoreError};
use dashmap::DashMap;
use fota_protocol::image::Digest;
use fota_protocol::messages::{Component, Offer, PatchOffer};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// When offers carry patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaPolicy {
    /// A patch is offered only when it is smaller than this share of the full image, in
    /// percent; 0 offers none.
    pub max_percent: u8,
}

impl DeltaPolicy {
    /// The default share: a patch must save at least half of the link.
    pub const DEFAULT_MAX_PERCENT: u8 = 50;

    /// Whether a patch of `patch` bytes is worth offering instead of `full` bytes.
    pub fn worth_it(&self, patch: u64, full: u64) -> bool {
        patch.saturating_mul(100) < full.saturating_mul(u64::from(self.max_percent))
    }
}

impl Default for DeltaPolicy {
    fn default() -> Self {
        Self {
            max_percent: Self::DEFAULT_MAX_PERCENT,
        }
    }
}

/// A patch as offers name it: its content address and length.
type Made = Option<(Digest, u32)>;

/// The patches this replica made or looked up, by (base, target).
#[derive(Debug, Default)]
pub struct Patches {
    policy: DeltaPolicy,
    made: DashMap<(Digest, Digest), Arc<OnceCell<Made>>>,
}

impl Patches {
    /// Patches offered under `policy`.
    pub fn new(policy: DeltaPolicy) -> Self {
        Self {
            policy,
            made: DashMap::new(),
        }
    }

    /// Forget what was looked up: called whenever the active rollouts are read again, so a
    /// patch deleted with its base release (on any replica) is not offered for longer than the
    /// rollouts cache lives.
    pub fn forget(&self) {
        self.made.clear();
    }

    /// The patch `offer` carries, if any (see the module doc), to `device`, which applies
    /// patches of `delta_format` and runs the image `base` (`None`: not an image the server
    /// has a release of). Whether the device gave this rollout's patch up is asked only if it
    /// `may_have_fallen_back`: a first offer has nothing to ask about.
    pub async fn for_offer(
        &self,
        store: &Store,
        device: &str,
        delta_format: Option<u8>,
        base: Option<Digest>,
        offer: &Offer,
        may_have_fallen_back: bool,
    ) -> Result<Option<PatchOffer>, StoreError> {
        if self.policy.max_percent == 0
            || offer.component != Component::Application
            || delta_format != Some(fota_delta::header::FORMAT_VERSION)
        {
            return Ok(None);
        }
        let Some(base) = base else {
            return Ok(None);
        };
        if base == offer.sha256 {
            return Ok(None);
        }
        let Some((sha256, size)) = self.made(store, base, offer.sha256).await? else {
            return Ok(None);
        };
        let rollout = i64::try_from(offer.rollout_id).unwrap_or(i64::MAX);
        if !self.policy.worth_it(u64::from(size), u64::from(offer.size))
            || (may_have_fallen_back && store.patch_fell_back(rollout, device).await?)
        {
            return Ok(None);
        }
        Ok(Some(PatchOffer {
            sha256,
            size,
            base_sha256: base,
        }))
    }

    /// The patch from `base` to `target`: stored already, or made now (once per pair however
    /// many offers ask at once). `None` when none can be made (an image's bytes are not in the
    /// database, or the generator refused): offers then carry the full image alone.
    async fn made(&self, store: &Store, base: Digest, target: Digest) -> Result<Made, StoreError> {
        let cell = self.made.entry((base, target)).or_default().clone();
        cell.get_or_try_init(|| make(store, base, target))
            .await
            .copied()
    }
}

async fn make(store: &Store, base: Digest, target: Digest) -> Result<Made, StoreError> {
    let (base_hex, target_hex) = (base.to_string(), target.to_string());
    if let Some(stored) = store.patch(&base_hex, &target_hex).await? {
        return Ok(named(&stored.sha256, stored.size));
    }
    let (Some(base_bytes), Some(target_bytes)) = (
        store.artifact_bytes(&base_hex).await?,
        store.artifact_bytes(&target_hex).await?,
    ) else {
        tracing::info!(base = %base_hex, target = %target_hex, "no patch: an image's bytes are not in the database");
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let made =
        tokio::task::spawn_blocking(move || fota_delta::generate(&base_bytes, &target_bytes))
            .await
            .map_err(|e| StoreError::Corrupt(format!("patch generation panicked: {e}")))?;
    let bytes = match made {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(base = %base_hex, target = %target_hex, error = %e, "no patch");
            return Ok(None);
        }
    };
    let sha256 = Digest::of(&bytes);
    let stored = store
        .put_patch(
            &base_hex,
            &target_hex,
            &sha256.to_string(),
            &bytes,
            now_ms(),
        )
        .await?;
    tracing::info!(
        base = %base_hex,
        target = %target_hex,
        patch = %stored.sha256,
        size = stored.size,
        ms = started.elapsed().as_millis() as u64,
        "patch made"
    );
    Ok(named(&stored.sha256, stored.size))
}

fn named(sha256: &str, size: i64) -> Made {
    Some((Digest::from_hex(sha256)?, u32::try_from(size).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_is_worth_offering_only_below_the_share() {
        let half = DeltaPolicy::default();
        assert!(half.worth_it(49, 100));
        assert!(!half.worth_it(50, 100));
        assert!(!half.worth_it(120, 100));
        let none = DeltaPolicy { max_percent: 0 };
        assert!(!none.worth_it(0, 100));
        let all = DeltaPolicy { max_percent: 100 };
        assert!(all.worth_it(99, 100));
        assert!(!all.worth_it(100, 100));
        assert!(!half.worth_it(u64::MAX, u64::MAX));
    }
}
