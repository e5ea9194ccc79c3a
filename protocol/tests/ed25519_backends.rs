//! The two Ed25519 backends side by side (DESIGN.md "Image format"): the bootloader's salty, with
//! its explicit small-order and canonical-s checks, gives ed25519-dalek's `verify_strict` verdict
//! on valid signatures, every one-bit corruption of them, and the malicious vectors: small-order
//! keys and R in every encoding (the ZIP-215 grid), s + n*l, mixed-order keys and R, non-canonical
//! A and R, and the "Taming the many EdDSAs" vectors (novifinancial/ed25519-speccheck).
//!
//! Run with `cargo test -p fota-protocol --features dalek,salty`; without both features this file
//! is empty.
#![cfg(all(feature = "dalek", feature = "salty"))]
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::{Signer, SigningKey};
use fota_protocol::image::ed25519::{dalek, salty};
use fota_protocol::image::KeyError;
use sha2::{Digest as _, Sha512};

/// The group order l, little endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Deterministic bytes: SHA-512 of a label and a counter.
fn bytes<const N: usize>(label: &str, i: u64) -> [u8; N] {
    let h = Sha512::new()
        .chain_update(label.as_bytes())
        .chain_update(i.to_le_bytes())
        .finalize();
    h[..N].try_into().unwrap()
}

fn scalar(label: &str, i: u64) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&bytes::<64>(label, i))
}

/// The Ed25519 challenge k = SHA-512(R || A || M) mod l.
fn challenge(r: &[u8; 32], a: &[u8; 32], m: &[u8; 32]) -> Scalar {
    let h = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(m)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h);
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn signature(r: &[u8; 32], s: &[u8; 32]) -> [u8; 64] {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s);
    sig
}

/// a + b as 256-bit little-endian integers, None on overflow.
fn add_le(a: &[u8; 32], b: &[u8; 32]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        let v = u16::from(*x) + u16::from(*y) + carry;
        *o = v as u8;
        carry = v >> 8;
    }
    (carry == 0).then_some(out)
}

/// p + y for small y: the non-canonical encoding of the field element y (sign bit clear).
fn non_canonical(y: u8) -> [u8; 32] {
    assert!(y < 19);
    let mut b = [0xff; 32];
    b[0] = 0xed + y;
    b[31] = 0x7f;
    b
}

fn hex32(b: &[u8]) -> String {
    hex::encode(b)
}

/// Runs cases through both backends; collects every disagreement instead of stopping at one.
#[derive(Default)]
struct SideBySide {
    cases: usize,
    accepted: usize,
    mismatches: Vec<String>,
}

impl SideBySide {
    /// Both verdicts; returns dalek's (true = accepted).
    fn verify(&mut self, what: &str, key: &[u8; 32], msg: &[u8; 32], sig: &[u8; 64]) -> bool {
        let d = dalek::verify_strict(key, msg, sig).is_ok();
        let s = salty::verify_strict(key, msg, sig).is_ok();
        self.cases += 1;
        self.accepted += usize::from(d);
        if d != s {
            self.mismatches.push(format!(
                "{what}: dalek {d}, salty {s}; key {} msg {} sig {}",
                hex32(key),
                hex32(msg),
                hex32(sig)
            ));
        }
        d
    }

    fn key(&mut self, what: &str, key: &[u8; 32]) -> Result<(), KeyError> {
        let d = dalek::key_check(key);
        let s = salty::key_check(key);
        self.cases += 1;
        self.accepted += usize::from(d.is_ok());
        if d != s {
            self.mismatches.push(format!(
                "{what}: key_check dalek {d:?}, salty {s:?}; key {}",
                hex32(key)
            ));
        }
        d
    }

    fn finish(self, name: &str) -> (usize, usize) {
        eprintln!(
            "{name}: {} cases, {} accepted (verified, or key valid) by both, {} mismatches",
            self.cases,
            self.accepted,
            self.mismatches.len()
        );
        assert!(
            self.mismatches.is_empty(),
            "{name}: the backends disagree on {} of {} cases:\n{}",
            self.mismatches.len(),
            self.cases,
            self.mismatches.join("\n")
        );
        (self.cases, self.accepted)
    }
}

/// Every 32-byte string that decodes to a small-order point, found with curve25519-dalek: the 8
/// canonical encodings, the sign bit set on the two points with x = 0, and y + p for y = 0, 1.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut candidates = Vec::new();
    for t in EIGHT_TORSION {
        let e = t.compress().to_bytes();
        candidates.push(e);
        let mut neg = e;
        neg[31] ^= 0x80;
        candidates.push(neg);
    }
    for y in 0..19 {
        for sign in [0, 0x80] {
            let mut e = non_canonical(y);
            e[31] |= sign;
            candidates.push(e);
        }
    }
    let mut out: Vec<[u8; 32]> = candidates
        .into_iter()
        .filter(|e| {
            CompressedEdwardsY(*e)
                .decompress()
                .is_some_and(|p| p.is_small_order())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn small_order_table_is_exactly_the_small_order_encodings() {
    let encodings = small_order_encodings();
    assert_eq!(encodings.len(), 14, "8 points, 6 non-canonical encodings");
    for e in &encodings {
        assert!(salty::is_small_order_encoding(e), "{}", hex32(e));
    }
    // Anything else salty's table matches must be something dalek cannot decode.
    let mut checked = 0;
    for i in 0..20_000u64 {
        let e: [u8; 32] = bytes("any encoding", i);
        let dalek_small = CompressedEdwardsY(e)
            .decompress()
            .is_some_and(|p| p.is_small_order());
        if CompressedEdwardsY(e).decompress().is_some() {
            assert_eq!(salty::is_small_order_encoding(&e), dalek_small);
            checked += 1;
        }
    }
    assert!(checked > 5_000);
}

#[test]
fn canonical_scalar_bound_is_l() {
    let mut below = L;
    below[0] -= 1;
    assert!(salty::is_canonical_scalar(&below));
    assert!(!salty::is_canonical_scalar(&L));
    assert!(salty::is_canonical_scalar(&[0; 32]));
    assert!(!salty::is_canonical_scalar(&[0xff; 32]));
    let mut above = L;
    above[0] += 1;
    assert!(!salty::is_canonical_scalar(&above));
    let mut two_252 = [0u8; 32];
    two_252[31] = 0x10;
    assert!(salty::is_canonical_scalar(&two_252)); // 2^252 < l
}

#[test]
fn key_checks_agree() {
    let mut t = SideBySide::default();
    for e in small_order_encodings() {
        assert_eq!(t.key("small-order key", &e), Err(KeyError::SmallOrder));
    }
    for y in 0..19u8 {
        for sign in [0, 0x80] {
            let mut canonical = [0u8; 32];
            canonical[0] = y;
            canonical[31] |= sign;
            let _ = t.key("small canonical y", &canonical);
            let mut nc = non_canonical(y);
            nc[31] |= sign;
            let _ = t.key("non-canonical y", &nc);
        }
    }
    let (mut ok, mut invalid) = (0, 0);
    for i in 0..4_000u64 {
        match t.key("random bytes", &bytes("key bytes", i)) {
            Ok(()) => ok += 1,
            Err(KeyError::Invalid) => invalid += 1,
            Err(KeyError::SmallOrder) => {}
        }
    }
    for i in 0..64u64 {
        let a = scalar("mixed key", i);
        for tp in EIGHT_TORSION {
            let key = (ED25519_BASEPOINT_POINT * a + tp).compress().to_bytes();
            assert_eq!(t.key("mixed-order key", &key), Ok(()));
        }
    }
    assert!(
        ok > 1_000 && invalid > 1_000,
        "{ok} valid, {invalid} invalid"
    );
    t.finish("key_check");
}

#[test]
fn valid_signatures_and_every_one_bit_corruption() {
    let mut t = SideBySide::default();
    for i in 0..200u64 {
        let key = SigningKey::from_bytes(&bytes("signing key", i));
        let msg: [u8; 32] = bytes("message", i);
        let sig = key.sign(&msg).to_bytes();
        let public = key.verifying_key().to_bytes();
        assert!(
            t.verify("valid", &public, &msg, &sig),
            "valid signature {i}"
        );
        if i < 4 {
            for bit in 0..512 {
                let mut bad = sig;
                bad[bit / 8] ^= 1 << (bit % 8);
                t.verify("signature bit flip", &public, &msg, &bad);
            }
            for bit in 0..256 {
                let mut bad = public;
                bad[bit / 8] ^= 1 << (bit % 8);
                t.verify("key bit flip", &bad, &msg, &sig);
                let mut bad_msg = msg;
                bad_msg[bit / 8] ^= 1 << (bit % 8);
                t.verify("message bit flip", &public, &bad_msg, &sig);
            }
        }
    }
    let (cases, accepted) = t.finish("valid and corrupted");
    assert_eq!(accepted, 200, "only the untouched signatures verify");
    assert_eq!(cases, 200 + 4 * (512 + 256 + 256));
}

#[test]
fn non_canonical_s_is_refused() {
    let mut t = SideBySide::default();
    let mut raw_salty_accepts = 0;
    for i in 0..32u64 {
        let key = SigningKey::from_bytes(&bytes("s+l key", i));
        let public = key.verifying_key().to_bytes();
        let msg: [u8; 32] = bytes("s+l message", i);
        let sig = key.sign(&msg).to_bytes();
        let r: [u8; 32] = sig[..32].try_into().unwrap();
        let mut s: [u8; 32] = sig[32..].try_into().unwrap();
        // s + l, s + 2l, ... while it fits in 256 bits: the same point [s]B, a different encoding.
        while let Some(next) = add_le(&s, &L) {
            s = next;
            let bad = signature(&r, &s);
            assert!(!t.verify("s + n*l", &public, &msg, &bad));
            raw_salty_accepts += usize::from(raw_salty(&public, &msg, &bad));
        }
        // s with bit 255 set, and s = l exactly.
        let mut high: [u8; 32] = sig[32..].try_into().unwrap();
        high[31] |= 0x80;
        t.verify("s + 2^255", &public, &msg, &signature(&r, &high));
        t.verify("s = l", &public, &msg, &signature(&r, &L));
    }
    t.finish("non-canonical s");
    eprintln!("non-canonical s: salty without fota's checks accepts {raw_salty_accepts}");
    // Without the explicit check salty would take them: the check is what makes the verdicts equal.
    assert!(raw_salty_accepts > 0);
}

/// salty's own verify, without fota's checks.
fn raw_salty(key: &[u8; 32], msg: &[u8; 32], sig: &[u8; 64]) -> bool {
    ::salty::PublicKey::try_from(key)
        .is_ok_and(|k| k.verify(msg, &::salty::Signature::from(sig)).is_ok())
}

#[test]
fn small_order_keys_and_r_zip215_grid() {
    // Every (A, R) pair of small-order encodings, s = 0: the ZIP-215 grid (14 x 14 = 196). The
    // cofactorless equation holds for many of them; verify_strict refuses them all.
    let encodings = small_order_encodings();
    let mut t = SideBySide::default();
    let mut raw_salty_accepts = 0;
    for (i, a) in encodings.iter().enumerate() {
        for r in &encodings {
            let msg: [u8; 32] = bytes("zip215", i as u64);
            let sig = signature(r, &[0; 32]);
            assert!(!t.verify("small-order A and R, s = 0", a, &msg, &sig));
            raw_salty_accepts += usize::from(raw_salty(a, &msg, &sig));
        }
    }
    let (cases, _) = t.finish("ZIP-215 grid");
    eprintln!("ZIP-215 grid: salty without fota\'s checks accepts {raw_salty_accepts}");
    assert_eq!(cases, 196);
    assert!(raw_salty_accepts > 0);
}

#[test]
fn small_order_key_with_forged_signatures() {
    // A = T of small order, R = [r]B, s = r: valid under the cofactorless equation when [k]T = 0.
    let mut t = SideBySide::default();
    let mut raw_salty_accepts = 0;
    for a in small_order_encodings() {
        for i in 0..16u64 {
            let r = scalar("forge r", i);
            let rb = (ED25519_BASEPOINT_POINT * r).compress().to_bytes();
            let msg: [u8; 32] = bytes("forge message", i);
            let sig = signature(&rb, r.as_bytes());
            assert!(!t.verify("small-order A, R = rB, s = r", &a, &msg, &sig));
            raw_salty_accepts += usize::from(raw_salty(&a, &msg, &sig));
        }
    }
    t.finish("small-order key forgeries");
    eprintln!("small-order key forgeries: salty without fota's checks accepts {raw_salty_accepts}");
    assert!(raw_salty_accepts > 0);
}

#[test]
fn small_order_and_mixed_order_r_under_a_good_key() {
    let mut t = SideBySide::default();
    let mut raw_salty_accepts = 0;
    for i in 0..16u64 {
        let a = scalar("good key", i);
        let public = (ED25519_BASEPOINT_POINT * a).compress().to_bytes();
        let msg: [u8; 32] = bytes("good key message", i);
        // R small order, s = k*a: [s]B = R + [k]A holds exactly when R is the identity (0100..00).
        for r in small_order_encodings() {
            let k = challenge(&r, &public, &msg);
            let sig = signature(&r, (k * a).as_bytes());
            assert!(!t.verify("small-order R", &public, &msg, &sig));
            raw_salty_accepts += usize::from(raw_salty(&public, &msg, &sig));
        }
        // R = [r]B + T, s = r + k*a: the cofactorless equation fails unless T = 0.
        for (j, tp) in EIGHT_TORSION.iter().enumerate() {
            let r = scalar("mixed r", i * 8 + j as u64);
            let rb = (ED25519_BASEPOINT_POINT * r + tp).compress().to_bytes();
            let k = challenge(&rb, &public, &msg);
            let sig = signature(&rb, (r + k * a).as_bytes());
            let ok = t.verify("mixed-order R", &public, &msg, &sig);
            assert_eq!(ok, j == 0);
        }
    }
    t.finish("small- and mixed-order R");
    eprintln!("small- and mixed-order R: salty without fota's checks accepts {raw_salty_accepts}");
    assert!(raw_salty_accepts > 0);
}

#[test]
fn mixed_order_keys() {
    // A = [a]B + T1, R = [r]B + T2, s = r + k*a: valid (for both, cofactorless) iff T2 + [k]T1 = 0.
    let mut t = SideBySide::default();
    let mut expected_accepts = 0;
    for (j1, t1) in EIGHT_TORSION.iter().enumerate() {
        for (j2, t2) in EIGHT_TORSION.iter().enumerate() {
            for i in 0..8u64 {
                let n = (j1 * 8 + j2) as u64 * 8 + i;
                let a = scalar("mixed A", n);
                let public = (ED25519_BASEPOINT_POINT * a + t1).compress().to_bytes();
                let r = scalar("mixed A r", n);
                let rb = (ED25519_BASEPOINT_POINT * r + t2).compress().to_bytes();
                let msg: [u8; 32] = bytes("mixed A message", n);
                let k = challenge(&rb, &public, &msg);
                let sig = signature(&rb, (r + k * a).as_bytes());
                let holds = (t2 + k * t1).is_identity();
                expected_accepts += usize::from(holds);
                let ok = t.verify("mixed-order A and R", &public, &msg, &sig);
                // verify_strict only refuses small-order A and R, which these are not.
                let small = EdwardsPoint::is_small_order;
                let a_small = small(&(ED25519_BASEPOINT_POINT * a + t1));
                assert_eq!(ok, holds && !a_small, "case {n}");
            }
        }
    }
    let (cases, accepted) = t.finish("mixed-order keys");
    assert_eq!(cases, 512);
    assert!(accepted > 16 && accepted == expected_accepts, "{accepted}");
}

#[test]
fn non_canonical_keys() {
    // y + p for the y < 19 that are on the curve but not of small order: both backends decode
    // them (to the same point, as the key checks show) and hash the bytes as given.
    let mut t = SideBySide::default();
    let mut decoded = 0;
    for y in 2..19u8 {
        for sign in [0, 0x80] {
            let mut key = non_canonical(y);
            key[31] |= sign;
            if t.key("non-canonical key", &key).is_ok() {
                decoded += 1;
                for i in 0..8u64 {
                    let msg: [u8; 32] = bytes("nc key message", i);
                    let sig: [u8; 64] = bytes("nc key signature", i);
                    t.verify("non-canonical key, random signature", &key, &msg, &sig);
                }
            }
        }
    }
    t.finish("non-canonical keys");
    assert!(decoded > 0);
}

/// "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko 2020), the cases.json of
/// https://github.com/novifinancial/ed25519-speccheck (15 vectors, commit d2b2ba5): message,
/// public key, signature. verify_strict accepts only case 6 (case 3 of the paper's 12: mixed-order
/// A and R, where the cofactorless equation holds).
const SPECCHECK: [(&str, &str, &str); 15] = [
    ("2a66241a42a9ee12994d8068dcf1bb7dfc6637b45450acd43711f637fa5080fc", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000"),
    ("8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000"),
    ("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04"),
    ("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04"),
    ("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa182ef1a5b928da07fec769cc8a12db6bcf70dab3f3227fa315e9d5e3e01a3405"),
    ("aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e"),
    ("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009"),
    ("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed5125ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09"),
    ("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405"),
    ("85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40", "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623", "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514"),
    ("85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40", "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623", "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa19427e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22"),
    ("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f"),
    ("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908"),
    ("e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04"),
    ("39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04"),
];

#[test]
fn taming_the_many_eddsas_vectors() {
    let mut t = SideBySide::default();
    let mut accepted = Vec::new();
    let mut raw_salty_accepts = 0;
    for (i, (msg, key, sig)) in SPECCHECK.iter().enumerate() {
        let msg: [u8; 32] = hex::decode(msg).unwrap().try_into().unwrap();
        let key: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
        let sig: [u8; 64] = hex::decode(sig).unwrap().try_into().unwrap();
        if t.verify(&format!("speccheck case {i}"), &key, &msg, &sig) {
            accepted.push(i);
        }
        raw_salty_accepts += usize::from(raw_salty(&key, &msg, &sig));
    }
    t.finish("speccheck");
    eprintln!("speccheck: salty without fota's checks accepts {raw_salty_accepts}");
    assert_eq!(
        accepted,
        [6],
        "verify_strict accepts only case 6 (mixed-order A and R)"
    );
}
