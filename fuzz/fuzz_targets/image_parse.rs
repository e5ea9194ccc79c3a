//! Fuzz the image parser and verifier: arbitrary bytes, streamed in arbitrary chunks, must never
//! panic, and the streamed verdict must equal the whole-slice verdict.
#![no_main]

use fota_protocol::image::{verify, StreamVerifier, TrustedKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, image)) = data.split_first() else {
        return;
    };
    // A fixed, valid key: the fuzzer explores everything up to the signature check.
    let key = TrustedKey::from_bytes(&[
        0x63, 0x58, 0x5a, 0xc5, 0x95, 0x8f, 0x0b, 0x82, 0x5b, 0x16, 0xbd, 0x65, 0x9b, 0xf3, 0x3b,
        0xd9, 0xc8, 0x0e, 0x1d, 0xea, 0x54, 0x1b, 0x17, 0x42, 0x25, 0xc4, 0xfb, 0xfd, 0xab, 0x90,
        0xa9, 0x3c,
    ])
    .expect("valid key");
    let keys = [key];
    let whole = verify(image, &keys).map(|v| v.digest);

    let mut stream = StreamVerifier::new(256 * 1024);
    let streamed = image
        .chunks(usize::from(chunk).max(1))
        .try_for_each(|c| stream.update(c))
        .and_then(|()| stream.finish())
        .and_then(|parsed| {
            // Exercise the inspection accessors too.
            parsed.tlvs().for_each(drop);
            parsed.protected_tlvs().for_each(drop);
            parsed.verify(&keys)
        })
        .map(|v| v.digest);
    // The stream refuses images over 256 KB that the slice path takes; below that they agree.
    if image.len() <= 256 * 1024 {
        assert_eq!(whole.ok(), streamed.ok());
    }
});
