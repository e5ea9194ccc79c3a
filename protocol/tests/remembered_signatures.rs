//! The memo of verified signatures (`ed25519::remember_verified`, for the virtual fleet): off by
//! default; when on, only a triple the backend accepted is remembered, and any other key, digest
//! or signature is still checked and refused. One test in its own binary: the memo is global to
//! the process.
#![cfg(feature = "std")]
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::{Signer, SigningKey};
use fota_protocol::image::ed25519::{remember_verified, remembered_count, verify_strict, Rejected};

fn signed(seed: u8, digest: &[u8; 32]) -> ([u8; 32], [u8; 64]) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    (key.verifying_key().to_bytes(), key.sign(digest).to_bytes())
}

#[test]
fn only_an_accepted_triple_is_remembered_and_nothing_else_passes_for_it() {
    let digest = [7u8; 32];
    let (key, sig) = signed(1, &digest);
    let (other_key, other_sig) = signed(2, &digest);
    let mut flipped = sig;
    flipped[10] ^= 0x01;
    let other_digest = [8u8; 32];

    // Off by default: verdicts are computed, nothing is kept.
    assert_eq!(verify_strict(&key, &digest, &sig), Ok(()));
    assert_eq!(remembered_count(), 0);

    remember_verified(true);
    // Refused triples are never remembered.
    assert_eq!(verify_strict(&key, &digest, &flipped), Err(Rejected));
    assert_eq!(verify_strict(&other_key, &digest, &sig), Err(Rejected));
    assert_eq!(remembered_count(), 0);
    // An accepted one is, once.
    assert_eq!(verify_strict(&key, &digest, &sig), Ok(()));
    assert_eq!(verify_strict(&key, &digest, &sig), Ok(()));
    assert_eq!(remembered_count(), 1);
    // Nothing that differs from it in any byte passes for it.
    assert_eq!(verify_strict(&key, &digest, &flipped), Err(Rejected));
    assert_eq!(verify_strict(&key, &other_digest, &sig), Err(Rejected));
    assert_eq!(verify_strict(&other_key, &digest, &sig), Err(Rejected));
    assert_eq!(verify_strict(&key, &digest, &other_sig), Err(Rejected));
    assert_eq!(verify_strict(&other_key, &digest, &other_sig), Ok(()));
    assert_eq!(remembered_count(), 2);

    // Off again: forgotten.
    remember_verified(false);
    assert_eq!(remembered_count(), 0);
    assert_eq!(verify_strict(&key, &digest, &sig), Ok(()));
    assert_eq!(remembered_count(), 0);
}
