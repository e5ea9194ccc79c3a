//! The Ed25519 backend: the one place that knows which implementation checks signatures.
//!
//! - feature `dalek`: ed25519-dalek's `verify_strict` (server, CLI, host tools).
//! - feature `salty`: salty (the bootloader: half the flash), plus the checks that make its
//!   verdict equal to `verify_strict`: no small-order public key or R (in any encoding, canonical
//!   or not), and a canonical `s` (`s < l`). salty alone checks only the cofactorless equation
//!   `[s]B = R + [k]A` with `R` compared byte for byte, so it would accept `s + l` and signatures
//!   under small-order keys or with a small-order `R`.
//!
//! With both features, [`verify_strict`] and [`key_check`] use dalek, and the modules `dalek` and
//! `salty` are both reachable so that `tests/ed25519_backends.rs` can hold them side by side.

#[cfg(not(any(feature = "dalek", feature = "salty")))]
compile_error!(
    "fota-protocol needs an Ed25519 backend: enable feature `dalek` (server, CLI, host tools) \
     or `salty` (bootloader, smaller code), e.g. `--no-default-features --features salty`"
);

use super::KeyError;

/// The signature does not verify (the backends do not say why: the verdict is all that counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

#[cfg(feature = "dalek")]
use dalek as backend;
#[cfg(all(feature = "salty", not(feature = "dalek")))]
use salty as backend;

/// [`key_check`]: the key decodes to a curve point ([`KeyError::Invalid`] if not) that is not
/// of small order ([`KeyError::SmallOrder`]).
pub use backend::key_check;

/// Verify a signature over a 32-byte digest with ed25519-dalek's `verify_strict` semantics, in
/// the backend chosen above. With `std`, in a process that turned it on ([`remember_verified`]),
/// a (key, digest, signature) that verified before is not checked again.
pub fn verify_strict(
    public_key: &[u8; 32],
    digest: &[u8; 32],
    sig: &[u8; 64],
) -> Result<(), Rejected> {
    #[cfg(feature = "std")]
    if remembered::knows(public_key, digest, sig) {
        return Ok(());
    }
    backend::verify_strict(public_key, digest, sig)?;
    #[cfg(feature = "std")]
    remembered::learn(public_key, digest, sig);
    Ok(())
}

/// Remember signatures that verified, for the rest of the process (`on`), or stop and forget
/// them. Off unless turned on.
///
/// For a host process that checks the same signed images over and over: the virtual fleet,
/// where 100,000 simulated devices run the real boot code, which verifies every image at every
/// boot of every device. What is remembered is the triple (public key, digest, signature), byte
/// for byte, and only after the backend accepted it, so a remembered verdict is the backend's
/// own for exactly those bytes: Ed25519 verification is a pure function of them. The digest is
/// still computed from the image and compared with its SHA-256 TLV before this is asked, so a
/// corrupted or different image fails as it would; only the curve arithmetic of a signature
/// already checked is skipped. The server, the CLI and the bootloader never turn it on.
#[cfg(feature = "std")]
pub fn remember_verified(on: bool) {
    remembered::set(on);
}

/// How many signatures [`remember_verified`] holds now.
#[cfg(feature = "std")]
pub fn remembered_count() -> usize {
    remembered::count()
}

/// The memo behind [`remember_verified`]: at most [`remembered::CAPACITY`] triples, forgotten
/// all at once when full (a fleet has a handful of releases).
#[cfg(feature = "std")]
mod remembered {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::RwLock;

    /// Triples kept at most.
    pub(super) const CAPACITY: usize = 1024;

    static ON: AtomicBool = AtomicBool::new(false);
    static SEEN: RwLock<Option<HashSet<[u8; 128]>>> = RwLock::new(None);

    fn triple(key: &[u8; 32], digest: &[u8; 32], sig: &[u8; 64]) -> [u8; 128] {
        let mut t = [0u8; 128];
        t[..32].copy_from_slice(key);
        t[32..64].copy_from_slice(digest);
        t[64..].copy_from_slice(sig);
        t
    }

    pub(super) fn set(on: bool) {
        ON.store(on, Ordering::SeqCst);
        if !on {
            *SEEN.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    pub(super) fn knows(key: &[u8; 32], digest: &[u8; 32], sig: &[u8; 64]) -> bool {
        ON.load(Ordering::Relaxed)
            && SEEN
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|seen| seen.contains(&triple(key, digest, sig)))
    }

    pub(super) fn count() -> usize {
        SEEN.read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, HashSet::len)
    }

    pub(super) fn learn(key: &[u8; 32], digest: &[u8; 32], sig: &[u8; 64]) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        let mut seen = SEEN.write().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(HashSet::new);
        if seen.len() >= CAPACITY {
            seen.clear();
        }
        seen.insert(triple(key, digest, sig));
    }
}

/// Without a backend only the `compile_error!` above should be reported, not every caller.
#[cfg(not(any(feature = "dalek", feature = "salty")))]
mod backend {
    use super::{KeyError, Rejected};

    pub fn verify_strict(_: &[u8; 32], _: &[u8; 32], _: &[u8; 64]) -> Result<(), Rejected> {
        Err(Rejected)
    }

    pub fn key_check(_: &[u8; 32]) -> Result<(), KeyError> {
        Err(KeyError::Invalid)
    }
}

/// The ed25519-dalek backend.
#[cfg(feature = "dalek")]
pub mod dalek {
    use super::{KeyError, Rejected};
    use ed25519_dalek::{Signature, VerifyingKey};

    /// `VerifyingKey::verify_strict`.
    pub fn verify_strict(
        public_key: &[u8; 32],
        msg: &[u8; 32],
        sig: &[u8; 64],
    ) -> Result<(), Rejected> {
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| Rejected)?;
        key.verify_strict(msg, &Signature::from_bytes(sig))
            .map_err(|_| Rejected)
    }

    /// `VerifyingKey::from_bytes`, then `is_weak`.
    pub fn key_check(public_key: &[u8; 32]) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::Invalid)?;
        if key.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        Ok(())
    }
}

/// The salty backend, with the checks that give it `verify_strict`'s verdicts.
#[cfg(feature = "salty")]
pub mod salty {
    use super::{KeyError, Rejected};

    /// The group order l = 2^252 + 27742317777372353535851937790883648493, little endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// Every y coordinate (little endian, sign bit clear) whose points have small order, in every
    /// 255-bit encoding: 0 and p (order 4), 1 and p + 1 (identity), p - 1 (order 2), and the two
    /// y of the order-8 points. With the sign bit either way these are the 14 encodings (8 points,
    /// 6 of them also non-canonically) that decode to a small-order point; y >= p is possible
    /// only for y < 19, so no other encoding of these points exists.
    const SMALL_ORDER_Y: [[u8; 32]; 7] = [
        // 0: (±sqrt(-1), 0), order 4
        [0; 32],
        // 1: the identity
        [
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ],
        // p - 1: (0, -1), order 2
        [
            0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p: non-canonical 0, order 4
        [
            0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // p + 1: non-canonical 1, the identity
        [
            0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x7f,
        ],
        // order 8
        [
            0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef,
            0x98, 0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88,
            0x6d, 0x53, 0xfc, 0x05,
        ],
        // order 8, the other y (p minus the one above)
        [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ],
    ];

    /// Whether `encoding` (a point that decodes, or not) would decode to a small-order point.
    /// Decides on the y coordinate alone: the sign bit only chooses between x and -x, and a
    /// point has small order exactly when its negation does.
    pub fn is_small_order_encoding(encoding: &[u8; 32]) -> bool {
        let mut y = *encoding;
        y[31] &= 0x7f;
        SMALL_ORDER_Y.contains(&y)
    }

    /// Whether the little-endian scalar `s` is below the group order l.
    pub fn is_canonical_scalar(s: &[u8; 32]) -> bool {
        for (a, b) in s.iter().zip(L.iter()).rev() {
            if a != b {
                return a < b;
            }
        }
        false // s == l
    }

    /// salty's verify, after refusing non-canonical `s` and small-order key or R, exactly as
    /// `verify_strict` does.
    pub fn verify_strict(
        public_key: &[u8; 32],
        msg: &[u8; 32],
        sig: &[u8; 64],
    ) -> Result<(), Rejected> {
        let (r, s) = sig.split_at(32);
        let r: &[u8; 32] = r.try_into().map_err(|_| Rejected)?;
        let s: &[u8; 32] = s.try_into().map_err(|_| Rejected)?;
        if !is_canonical_scalar(s) {
            return Err(Rejected);
        }
        // dalek also refuses an R that does not decode; salty then finds no match (its recomputed
        // R is always a canonical point encoding), so the verdict is the same.
        if is_small_order_encoding(r) || is_small_order_encoding(public_key) {
            return Err(Rejected);
        }
        let key = ::salty::PublicKey::try_from(public_key).map_err(|_| Rejected)?;
        key.verify(msg, &::salty::Signature::from(sig))
            .map_err(|_| Rejected)
    }

    /// The key decodes (salty's `PublicKey::try_from`) and is not of small order.
    pub fn key_check(public_key: &[u8; 32]) -> Result<(), KeyError> {
        ::salty::PublicKey::try_from(public_key).map_err(|_| KeyError::Invalid)?;
        if is_small_order_encoding(public_key) {
            return Err(KeyError::SmallOrder);
        }
        Ok(())
    }
}
