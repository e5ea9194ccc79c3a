//! Image parsing and verification: imgtool's own images, every way an image can be malformed,
//! streaming equal to whole-slice verification, and random mutations never accepted.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::SigningKey;
use fota_protocol::image::{check_verified_for_slot, SlotError};
use fota_protocol::image::{
    tlv_type, verify, Digest, ImageBuilder, ImageError, ImageFlags, ImageHeader, ImageVersion,
    KeyError, ParsedImage, Region, StreamVerifier, TrustedKey,
};
use fota_protocol::testing::{app_for, image_for, signed_for, test_key};
use fota_protocol::SlotId;
use proptest::prelude::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!("{VECTORS}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn imgtool_key() -> TrustedKey {
    let hex = std::fs::read_to_string(format!("{VECTORS}/imgtool_ed25519.pub.hex")).unwrap();
    let bytes: [u8; 32] = hex::decode(hex.trim()).unwrap().try_into().unwrap();
    TrustedKey::from_bytes(&bytes).unwrap()
}

fn imgtool_signing_key() -> SigningKey {
    let pem = std::fs::read_to_string(format!("{VECTORS}/imgtool_ed25519.pem")).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap()
}

fn trusted(key: &SigningKey) -> TrustedKey {
    TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()
}

/// The tests' usual image: a 4 KB payload for `slot`, version 2.1.0+5, security counter 3.
fn signed(slot: SlotId, key: &SigningKey) -> Vec<u8> {
    signed_for(slot, 4096, ImageVersion::new(2, 1, 0, 5), 3, key)
}

/// Verify by streaming in chunks of `chunk` bytes.
fn verify_stream(bytes: &[u8], keys: &[TrustedKey], chunk: usize) -> Result<Digest, ImageError> {
    let mut v = StreamVerifier::new(u32::MAX);
    for c in bytes.chunks(chunk.max(1)) {
        v.update(c)?;
    }
    Ok(v.finish()?.verify(keys)?.digest)
}

/// Offset of the unprotected TLV area.
fn tlv_start(image: &[u8]) -> usize {
    let h = ImageHeader::parse(image).unwrap();
    usize::from(h.hdr_size) + h.img_size as usize + usize::from(h.protect_tlv_size)
}

/// A TLV entry: type and value.
type Tlv = (u16, Vec<u8>);

/// Replace the unprotected TLV area with the given entries.
fn with_tlvs(image: &[u8], tlvs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = image[..tlv_start(image)].to_vec();
    let body_len: usize = tlvs.iter().map(|(_, v)| 4 + v.len()).sum();
    out.extend_from_slice(&0x6907u16.to_le_bytes());
    out.extend_from_slice(&((4 + body_len) as u16).to_le_bytes());
    for (t, v) in tlvs {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// Entries of the unprotected TLV area of a valid image.
fn tlvs_of(image: &[u8]) -> Vec<(u16, Vec<u8>)> {
    ParsedImage::parse(image)
        .unwrap()
        .tlvs()
        .map(|e| {
            let e = e.unwrap();
            (e.tlv_type, e.value.to_vec())
        })
        .collect()
}

#[test]
fn imgtool_images_verify_and_check_out_for_their_slot() {
    let keys = [imgtool_key()];
    for (file, slot) in [
        ("imgtool_signed_a.bin", SlotId::A),
        ("imgtool_signed_b.bin", SlotId::B),
    ] {
        let image = vector(file);
        let v = verify(&image, &keys).unwrap();
        assert_eq!(v.header.version, ImageVersion::new(1, 2, 3, 4));
        assert_eq!(v.security_counter, 7);
        assert_eq!(v.key_index, 0);
        assert_eq!(v.total_len as usize, image.len());
        assert!(v.header.flags.contains(ImageFlags::ROM_FIXED));
        assert_eq!(check_verified_for_slot(&v, slot), Ok(()));
        assert!(matches!(
            check_verified_for_slot(&v, slot.other()),
            Err(SlotError::WrongLoadAddress { .. })
        ));
        for chunk in [1, 7, 64, 512, 4096] {
            assert_eq!(verify_stream(&image, &keys, chunk), Ok(v.digest));
        }
    }
}

#[test]
fn imgtool_digest_matches_what_imgtool_printed() {
    // `imgtool verify` printed this digest for imgtool_signed_a.bin when the vector was made.
    let v = verify(&vector("imgtool_signed_a.bin"), &[imgtool_key()]).unwrap();
    assert_eq!(
        v.digest.to_string(),
        "5e007682796fd9bcb06e6c8b0159e0c72e7a10f5e27a19735f85a68a0e49ac4d"
    );
}

#[test]
fn builder_output_is_byte_identical_to_imgtool() {
    // Same key, payload and options as `imgtool sign -k imgtool_ed25519.pem --header-size 0x200
    // --pad-header --rom-fixed 0x08020000 -S 0x40000 -v 1.2.3+4 -s 7 app_a.bin`; Ed25519 is
    // deterministic, so the bytes must match exactly.
    let ours = ImageBuilder::new(vector("app_a.bin"), "1.2.3+4".parse().unwrap())
        .security_counter(7)
        .rom_fixed(0x0802_0000)
        .sign(&imgtool_signing_key())
        .unwrap();
    let theirs = vector("imgtool_signed_a.bin");
    let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(first_difference, None);
    assert_eq!(ours.len(), theirs.len());
}

#[test]
fn imgtool_full_public_key_format_is_accepted() {
    let v = verify(&vector("imgtool_signed_fullkey_a.bin"), &[imgtool_key()]).unwrap();
    assert_eq!(
        v.security_counter, 0,
        "no -s: MCUboot reads a missing counter as 0"
    );
    let parsed = ParsedImage::parse(&vector("imgtool_signed_fullkey_a.bin")).unwrap();
    assert!(parsed.fields().public_key.is_some());
    assert!(parsed.fields().key_hash.is_none());
}

#[test]
fn imgtool_unsigned_and_foreign_images_are_refused() {
    let keys = [imgtool_key()];
    assert_eq!(
        verify(&vector("imgtool_unsigned_a.bin"), &keys),
        Err(ImageError::MissingTlv(tlv_type::ED25519))
    );
    assert_eq!(
        verify(&vector("imgtool_other_key_a.bin"), &keys),
        Err(ImageError::UntrustedKey)
    );
    assert_eq!(
        verify(&vector("imgtool_signed_a.bin"), &[]),
        Err(ImageError::UntrustedKey)
    );
}

#[test]
fn signed_images_verify_with_the_right_key_only() {
    let (k1, k2) = (test_key(1), test_key(2));
    let image = signed(SlotId::B, &k1);
    let v = verify(&image, &[trusted(&k2), trusted(&k1)]).unwrap();
    assert_eq!(v.key_index, 1);
    assert_eq!(v.security_counter, 3);
    assert_eq!(v.header.version.to_string(), "2.1.0+5");
    assert_eq!(check_verified_for_slot(&v, SlotId::B), Ok(()));
    assert_eq!(
        verify(&image, &[trusted(&k2)]),
        Err(ImageError::UntrustedKey)
    );
}

#[test]
fn trailing_bytes_after_the_image_are_ignored() {
    // A slot read whole: the image, then erased flash.
    let key = test_key(1);
    let mut slot = signed(SlotId::A, &key);
    let len = slot.len();
    slot.resize(64 * 1024, 0xff);
    let v = verify(&slot, &[trusted(&key)]).unwrap();
    assert_eq!(v.total_len as usize, len);
}

#[test]
fn one_flipped_payload_bit_is_a_hash_mismatch() {
    let key = test_key(1);
    let mut image = signed(SlotId::A, &key);
    image[0x200 + 1000] ^= 0x10;
    assert_eq!(
        verify(&image, &[trusted(&key)]),
        Err(ImageError::HashMismatch)
    );
}

#[test]
fn truncation_anywhere_names_the_region() {
    let key = test_key(1);
    let image = signed(SlotId::A, &key);
    let keys = [trusted(&key)];
    let start = tlv_start(&image);
    let cases = [
        (0, Region::Header),
        (31, Region::Header),
        (32, Region::Payload),
        (0x200 + 4095, Region::Payload),
        (0x200 + 4096, Region::ProtectedTlvs),
        (start - 1, Region::ProtectedTlvs),
        (start, Region::Tlvs),
        (start + 3, Region::Tlvs),
        (image.len() - 1, Region::Tlvs),
    ];
    for (len, region) in cases {
        assert_eq!(
            verify(&image[..len], &keys),
            Err(ImageError::Truncated(region)),
            "cut at {len}"
        );
    }
}

#[test]
fn header_errors() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    let image = signed(SlotId::A, &key);

    let mut bad = image.clone();
    bad[0] = 0;
    assert!(matches!(verify(&bad, &keys), Err(ImageError::BadMagic(_))));

    let mut bad = image.clone();
    bad[8..10].copy_from_slice(&16u16.to_le_bytes());
    assert_eq!(verify(&bad, &keys), Err(ImageError::HeaderSizeTooSmall(16)));

    // hdr_size + img_size past u32::MAX.
    let mut bad = image.clone();
    bad[12..16].copy_from_slice(&(u32::MAX - 0x100).to_le_bytes());
    assert_eq!(verify(&bad, &keys), Err(ImageError::LengthOverflow));

    // Fits u32 but not the slot: refused from the header alone, before any download.
    let mut bad = image.clone();
    bad[12..16].copy_from_slice(&(1024u32 * 1024).to_le_bytes());
    let mut v = StreamVerifier::new(256 * 1024);
    assert!(matches!(
        v.update(&bad[..32]),
        Err(ImageError::TooLarge { max: 262_144, .. })
    ));
    // ...and the error is sticky.
    assert!(v.update(&bad[32..64]).is_err());
    assert!(matches!(v.finish(), Err(ImageError::TooLarge { .. })));

    // An encrypted image's hash would be over the plaintext: refused, not misread.
    let mut bad = image.clone();
    bad[16] |= ImageFlags::ENCRYPTED_AES128 as u8;
    assert!(matches!(
        verify(&bad, &keys),
        Err(ImageError::Unsupported(_))
    ));
}

#[test]
fn protected_tlv_errors() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    let image = signed(SlotId::A, &key);
    let prot = 0x200 + 4096;

    let mut bad = image.clone();
    bad[prot] = 0x07; // 0x6907 instead of 0x6908
    assert!(matches!(
        verify(&bad, &keys),
        Err(ImageError::BadTlvMagic {
            region: Region::ProtectedTlvs,
            ..
        })
    ));

    let mut bad = image.clone();
    bad[prot + 2] = 16; // protected info says 16, header says 12
    assert_eq!(
        verify(&bad, &keys),
        Err(ImageError::ProtectedSizeMismatch {
            header: 12,
            tlv_tot: 16
        })
    );

    // Header claims a protected area larger than the verifier buffers.
    let mut bad = image.clone();
    bad[10..12].copy_from_slice(&4000u16.to_le_bytes());
    assert!(matches!(
        verify(&bad, &keys),
        Err(ImageError::TlvAreaTooLarge {
            region: Region::ProtectedTlvs,
            ..
        })
    ));

    // SEC_CNT with a 2-byte value (fix the header so only that is wrong).
    let mut bad = image[..prot].to_vec();
    bad[10..12].copy_from_slice(&10u16.to_le_bytes());
    bad.extend_from_slice(&[0x08, 0x69, 10, 0, 0x50, 0, 2, 0, 7, 0]);
    let tlvs = tlvs_of(&image);
    let bad = with_tlvs(&bad, &tlvs);
    assert_eq!(
        verify(&bad, &keys),
        Err(ImageError::BadTlvLength {
            tlv_type: tlv_type::SEC_CNT,
            len: 2,
            expected: 4
        })
    );
}

/// An image whose protected area holds `entries`, re-signed so only the TLV content is at issue.
fn with_protected(key: &SigningKey, entries: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let base = image_for(SlotId::A, 1024, ImageVersion::new(1, 0, 0, 0))
        .sign(key)
        .unwrap();
    let body_len: usize = entries.iter().map(|(_, v)| 4 + v.len()).sum();
    let mut out = base[..0x200 + 1024].to_vec();
    out[10..12].copy_from_slice(&((4 + body_len) as u16).to_le_bytes());
    out.extend_from_slice(&0x6908u16.to_le_bytes());
    out.extend_from_slice(&((4 + body_len) as u16).to_le_bytes());
    for (t, v) in entries {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }
    resign(&out, key)
}

/// Append SHA256, KEYHASH and ED25519 TLVs for the hashed part `hashed`.
fn resign(hashed: &[u8], key: &SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let digest = Digest::of(hashed);
    let tlvs = [
        (tlv_type::SHA256, digest.0.to_vec()),
        (
            tlv_type::KEYHASH,
            fota_protocol::image::key_hash(&key.verifying_key().to_bytes())
                .0
                .to_vec(),
        ),
        (tlv_type::ED25519, key.sign(&digest.0).to_bytes().to_vec()),
    ];
    let mut with_info = hashed.to_vec();
    // with_tlvs cuts at tlv_start, which is the end of `hashed`.
    with_info.extend_from_slice(&[0; 4]);
    with_tlvs(&with_info, &tlvs)
}

#[test]
fn protected_tlv_content_rules() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    // Sanity: the helper makes valid images.
    let ok = with_protected(&key, &[(tlv_type::SEC_CNT, 9u32.to_le_bytes().to_vec())]);
    assert_eq!(verify(&ok, &keys).unwrap().security_counter, 9);
    // Unknown protected TLVs are hashed and otherwise ignored.
    let ok = with_protected(&key, &[(0x74, vec![0; 16])]);
    assert_eq!(verify(&ok, &keys).unwrap().security_counter, 0);

    let dup = with_protected(
        &key,
        &[
            (tlv_type::SEC_CNT, 1u32.to_le_bytes().to_vec()),
            (tlv_type::SEC_CNT, 9u32.to_le_bytes().to_vec()),
        ],
    );
    assert_eq!(
        verify(&dup, &keys),
        Err(ImageError::DuplicateTlv(tlv_type::SEC_CNT))
    );
    let misplaced = with_protected(&key, &[(tlv_type::SHA256, vec![0; 32])]);
    assert_eq!(
        verify(&misplaced, &keys),
        Err(ImageError::MisplacedTlv(tlv_type::SHA256))
    );
}

#[test]
fn unprotected_tlv_errors() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    let image = signed(SlotId::A, &key);
    let tlvs = tlvs_of(&image);
    let [sha, keyhash, sig] = [tlvs[0].clone(), tlvs[1].clone(), tlvs[2].clone()];
    assert_eq!(sha.0, tlv_type::SHA256);
    assert_eq!(keyhash.0, tlv_type::KEYHASH);
    assert_eq!(sig.0, tlv_type::ED25519);

    let cases: Vec<(Vec<Tlv>, ImageError)> = vec![
        (
            vec![keyhash.clone(), sig.clone()],
            ImageError::MissingTlv(tlv_type::SHA256),
        ),
        (
            vec![sha.clone(), sig.clone()],
            ImageError::MissingTlv(tlv_type::KEYHASH),
        ),
        (
            vec![sha.clone(), keyhash.clone()],
            ImageError::MissingTlv(tlv_type::ED25519),
        ),
        (
            vec![sha.clone(), sha.clone(), keyhash.clone(), sig.clone()],
            ImageError::DuplicateTlv(tlv_type::SHA256),
        ),
        (
            vec![sha.clone(), keyhash.clone(), sig.clone(), sig.clone()],
            ImageError::DuplicateTlv(tlv_type::ED25519),
        ),
        (
            vec![
                sha.clone(),
                keyhash.clone(),
                (tlv_type::ED25519, vec![0; 63]),
            ],
            ImageError::BadTlvLength {
                tlv_type: tlv_type::ED25519,
                len: 63,
                expected: 64,
            },
        ),
        (
            vec![
                sha.clone(),
                keyhash.clone(),
                sig.clone(),
                (tlv_type::SEC_CNT, 99u32.to_le_bytes().to_vec()),
            ],
            ImageError::MisplacedTlv(tlv_type::SEC_CNT),
        ),
        (
            vec![
                (tlv_type::SHA384, vec![0; 48]),
                keyhash.clone(),
                sig.clone(),
            ],
            ImageError::Unsupported("SHA-384/512 image hash"),
        ),
        (
            vec![sha.clone(), (tlv_type::SIG_PURE, vec![1]), sig.clone()],
            ImageError::Unsupported("pure signature"),
        ),
        (
            vec![
                sha.clone(),
                (tlv_type::KEYHASH, vec![0xaa; 32]),
                sig.clone(),
            ],
            ImageError::UntrustedKey,
        ),
    ];
    for (entries, expected) in cases {
        let bad = with_tlvs(&image, &entries);
        assert_eq!(verify(&bad, &keys), Err(expected), "{entries:?}");
        // The stream path gives the same verdict.
        assert_eq!(verify_stream(&bad, &keys, 5), Err(expected));
    }
    // Unknown unprotected TLVs are ignored, as MCUboot does.
    let extra = with_tlvs(
        &image,
        &[
            sha.clone(),
            (0xa1, vec![1, 2, 3]),
            keyhash.clone(),
            sig.clone(),
        ],
    );
    assert!(verify(&extra, &keys).is_ok());
    // Except the component mark, which anyone could add there: it must be protected.
    let moved = with_tlvs(
        &image,
        &[sha, (tlv_type::COMPONENT, vec![1, 0]), keyhash, sig],
    );
    assert_eq!(
        verify(&moved, &keys),
        Err(ImageError::MisplacedTlv(tlv_type::COMPONENT))
    );
}

/// A stage-1 image: its protected COMPONENT TLV names the stage-1 slot; stage-0's check wants
/// the mark for the very slot, the stage-1 slot's address and budget; the application check
/// refuses it, and the stage-1 check refuses an application.
#[test]
fn stage1_images_are_marked_and_checked_for_their_slot() {
    use fota_protocol::image::check_verified_for_stage1;
    use fota_protocol::image::Component;
    use fota_protocol::layout::STAGE1_IMAGE_MAX;
    let key = test_key(1);
    let keys = [trusted(&key)];
    let stage1 = |slot: SlotId, marked: SlotId, len: usize| {
        let base = slot.stage1_partition().start;
        let mut payload = vec![0x5a; len];
        payload[0..4].copy_from_slice(&0x2002_0000u32.to_le_bytes());
        payload[4..8].copy_from_slice(&((base + 0x201) | 1).to_le_bytes());
        ImageBuilder::new(payload, ImageVersion::new(1, 0, 0, 0))
            .security_counter(4)
            .rom_fixed(base)
            .component(Component::Stage1 { slot: marked })
            .sign(&key)
            .unwrap()
    };
    for slot in SlotId::ALL {
        let image = verify(&stage1(slot, slot, 2048), &keys).unwrap();
        assert_eq!(image.component, Component::Stage1 { slot });
        assert_eq!(image.security_counter, 4);
        assert_eq!(check_verified_for_stage1(&image, slot), Ok(()));
        assert!(matches!(
            check_verified_for_stage1(&image, slot.other()),
            Err(SlotError::Stage1ForOtherSlot { .. })
        ));
        assert_eq!(
            check_verified_for_slot(&image, slot),
            Err(SlotError::NotAnApplication)
        );
        // Marked for the other slot, linked for this one.
        let wrong = verify(&stage1(slot, slot.other(), 2048), &keys).unwrap();
        assert_eq!(
            check_verified_for_stage1(&wrong, slot),
            Err(SlotError::Stage1ForOtherSlot {
                slot,
                marked: slot.other()
            })
        );
        // Over the 64 KB budget, even in stage-1 B's 128 KB sector.
        let big = verify(&stage1(slot, slot, STAGE1_IMAGE_MAX as usize), &keys).unwrap();
        assert!(matches!(
            check_verified_for_stage1(&big, slot),
            Err(SlotError::TooLarge { .. })
        ));
        // An application is not a stage-1.
        let app = verify(&signed(slot, &key), &keys).unwrap();
        assert_eq!(app.component, Component::Application);
        assert_eq!(
            check_verified_for_stage1(&app, slot),
            Err(SlotError::NotAStage1)
        );
    }
    // The TLV's value: component 1, slot 0 or 1; anything else is refused by the parser.
    assert_eq!(
        Component::Stage1 { slot: SlotId::B }.tlv_value(),
        Some([1, 1])
    );
    assert_eq!(Component::Application.tlv_value(), None);
    for bad in [[0, 0], [1, 2], [2, 0], [0xff, 0xff]] {
        assert_eq!(Component::from_tlv_value(bad), None, "{bad:?}");
    }
}

#[test]
fn tlv_area_framing_errors() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    let image = signed(SlotId::A, &key);
    let start = tlv_start(&image);

    let mut bad = image.clone();
    bad[start] = 0x08;
    assert!(matches!(
        verify(&bad, &keys),
        Err(ImageError::BadTlvMagic {
            region: Region::Tlvs,
            ..
        })
    ));
    let mut bad = image.clone();
    bad[start + 2..start + 4].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        verify(&bad, &keys),
        Err(ImageError::TlvTotalTooSmall(Region::Tlvs))
    );
    let mut bad = image.clone();
    bad[start + 2..start + 4].copy_from_slice(&60000u16.to_le_bytes());
    assert!(matches!(
        verify(&bad, &keys),
        Err(ImageError::TlvAreaTooLarge {
            region: Region::Tlvs,
            ..
        })
    ));
    // An entry whose length runs past the area's end.
    let mut bad = image.clone();
    let first_len = start + 4 + 2;
    bad[first_len..first_len + 2].copy_from_slice(&400u16.to_le_bytes());
    assert_eq!(
        verify(&bad, &keys),
        Err(ImageError::TlvOverrun {
            region: Region::Tlvs,
            tlv_type: tlv_type::SHA256
        })
    );
    // The area's total cuts the last entry header short.
    let mut bad = image.clone();
    let total = u16::from_le_bytes([bad[start + 2], bad[start + 3]]);
    bad[start + 2..start + 4].copy_from_slice(&(total + 2).to_le_bytes());
    bad.extend_from_slice(&[0xa0, 0x00]);
    assert!(matches!(
        verify(&bad, &keys),
        Err(ImageError::TlvOverrun { .. })
    ));
}

#[test]
fn signature_errors() {
    let key = test_key(1);
    let keys = [trusted(&key)];
    let image = signed(SlotId::A, &key);
    let tlvs = tlvs_of(&image);

    // One flipped signature bit.
    let mut sig = tlvs[2].1.clone();
    sig[5] ^= 1;
    let bad = with_tlvs(&image, &[tlvs[0].clone(), tlvs[1].clone(), (0x24, sig)]);
    assert_eq!(verify(&bad, &keys), Err(ImageError::BadSignature));

    // Non-canonical s (s + l): plain verify would accept it, verify_strict does not.
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut sig = tlvs[2].1.clone();
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
        sig[32 + i] = s as u8;
        carry = s >> 8;
    }
    let bad = with_tlvs(&image, &[tlvs[0].clone(), tlvs[1].clone(), (0x24, sig)]);
    assert_eq!(verify(&bad, &keys), Err(ImageError::BadSignature));
}

#[test]
fn small_order_keys_are_never_trusted() {
    // The identity point and a point of order 8 (from the Ed25519 small-order list).
    let identity = {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    };
    let order8: [u8; 32] =
        hex::decode("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
            .unwrap()
            .try_into()
            .unwrap();
    for k in [identity, order8] {
        assert_eq!(TrustedKey::from_bytes(&k), Err(KeyError::SmallOrder));
    }
    // Some y coordinate with no curve point: not a key at all.
    let off_curve = (2u8..=255)
        .map(|y| {
            let mut k = [0u8; 32];
            k[0] = y;
            k
        })
        .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
        .expect("half of all y have no point");
    assert_eq!(
        TrustedKey::from_bytes(&off_curve).map(|_| ()),
        Err(KeyError::Invalid)
    );

    // An image carrying a small-order key in full (PUBKEY TLV) with a signature that a
    // non-strict verifier accepts for any message under that key: R = identity, s = 0.
    let key = test_key(1);
    let image = signed(SlotId::A, &key);
    let tlvs = tlvs_of(&image);
    let mut forged_sig = vec![0u8; 64];
    forged_sig[0] = 1;
    let bad = with_tlvs(
        &image,
        &[
            tlvs[0].clone(),
            (
                tlv_type::PUBKEY,
                fota_protocol::image::spki_der(&identity).to_vec(),
            ),
            (tlv_type::ED25519, forged_sig),
        ],
    );
    assert_eq!(verify(&bad, &[trusted(&key)]), Err(ImageError::WeakKey));
}

#[test]
fn spki_round_trip() {
    let key = test_key(7);
    let t = trusted(&key);
    let der = fota_protocol::image::spki_der(&t.to_bytes());
    assert_eq!(TrustedKey::from_spki_der(&der).unwrap(), t);
    assert_eq!(
        TrustedKey::from_spki_der(&der[1..]).map(|_| ()),
        Err(KeyError::Invalid)
    );
}

/// One way to damage an image.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    SetByte { at: usize, value: u8 },
    Truncate { len: usize },
    Insert { at: usize, value: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Offsets are fractions of the image length (in 1/65536ths), so every region gets hit.
    let at = 0usize..65536;
    prop_oneof![
        (at.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (at.clone(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        at.clone().prop_map(|len| Mutation::Truncate { len }),
        (at.clone(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        at.prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(image: &[u8], m: &Mutation) -> Option<Vec<u8>> {
    let pos = |f: usize| f * image.len() / 65536;
    // An earlier mutation may have truncated everything: only an insertion still applies.
    if image.is_empty() && !matches!(m, Mutation::Insert { .. }) {
        return None;
    }
    let mut out = image.to_vec();
    match *m {
        Mutation::FlipBit { at, bit } => out[pos(at)] ^= 1 << bit,
        Mutation::SetByte { at, value } => {
            if out[pos(at)] == value {
                return None;
            }
            out[pos(at)] = value;
        }
        Mutation::Truncate { len } => out.truncate(pos(len)),
        Mutation::Insert { at, value } => out.insert(pos(at), value),
        Mutation::Remove { at } => {
            out.remove(pos(at));
        }
    }
    Some(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// No mutation inside an image is ever accepted, and parsing never panics; streaming in
    /// arbitrary chunks gives the same verdict as the whole slice.
    #[test]
    fn mutated_images_are_never_accepted(
        mutations in proptest::collection::vec(mutation(), 1..4),
        chunk in 1usize..700,
        which in 0usize..2,
    ) {
        let key = test_key(1);
        let keys = [trusted(&key)];
        let image = if which == 0 { signed(SlotId::A, &key) } else { vector("imgtool_signed_b.bin") };
        let keys = if which == 0 { keys } else { [imgtool_key()] };
        let mut bad = image.clone();
        for m in &mutations {
            if let Some(next) = apply(&bad, m) {
                bad = next;
            }
        }
        prop_assume!(bad != image);
        let whole = verify(&bad, &keys).map(|v| v.digest);
        prop_assert_eq!(whole, verify_stream(&bad, &keys, chunk));
        // Only an image that ends up exactly the original, plus trailing bytes, may verify.
        if whole.is_ok() {
            prop_assert!(bad.len() > image.len() && bad.starts_with(&image), "accepted a mutated image");
        }
    }

    /// Arbitrary bytes never panic either path.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
        let keys = [trusted(&test_key(1))];
        let whole = verify(&bytes, &keys).map(|v| v.digest);
        prop_assert!(whole.is_err());
        prop_assert_eq!(whole, verify_stream(&bytes, &keys, chunk));
    }

    /// Valid images stream to the same digest whatever the chunking.
    #[test]
    fn chunking_never_changes_a_valid_verdict(chunk in 1usize..5000, len in 8usize..20_000) {
        let key = test_key(3);
        let image = ImageBuilder::new(app_for(SlotId::B, len), ImageVersion::new(0, 1, 0, 0))
            .security_counter(1)
            .sign(&key)
            .unwrap();
        let keys = [trusted(&key)];
        prop_assert_eq!(verify_stream(&image, &keys, chunk), Ok(verify(&image, &keys).unwrap().digest));
    }
}
