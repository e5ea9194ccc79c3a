//! Fuzz the device message decoders on both sides of the link: arbitrary bytes go to the
//! device's decoder (`serde-json-core`, no allocator) and the server's (`serde_json`) for every
//! message type. Neither may panic, and whatever either accepts must cross the link intact in
//! the direction it really travels: a check-in or report the device encodes is what the server
//! decodes, and a check-in answer or acknowledgement the server encodes is what the device
//! decodes.
#![no_main]

use fota_protocol::messages::{CheckIn, CheckInResponse, Report, ReportAck};
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// Larger than the largest report (16 events, each reason 96 characters escaped as `\u00XX`).
const DEVICE_BUF: usize = 16 * 1024;

fn decode_both<T: DeserializeOwned>(data: &[u8]) -> impl Iterator<Item = T> {
    let server = serde_json::from_slice::<T>(data).ok();
    let device = serde_json_core::from_slice::<T>(data).ok().map(|(v, _)| v);
    server.into_iter().chain(device)
}

/// Device -> server: the device encodes with serde-json-core, the server decodes.
fn device_to_server<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    for message in decode_both::<T>(data) {
        let mut buf = vec![0u8; DEVICE_BUF];
        let n = serde_json_core::to_slice(&message, &mut buf).expect("the device encodes it");
        let read: T = serde_json::from_slice(&buf[..n]).expect("the server decodes it");
        assert_eq!(read, message);
    }
}

/// Server -> device: the server encodes with serde_json, the device decodes.
fn server_to_device<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    for message in decode_both::<T>(data) {
        let json = serde_json::to_vec(&message).expect("the server encodes it");
        let (read, used) = serde_json_core::from_slice::<T>(&json).expect("the device decodes it");
        assert_eq!(read, message);
        assert_eq!(used, json.len());
    }
}

fuzz_target!(|data: &[u8]| {
    device_to_server::<CheckIn>(data);
    device_to_server::<Report>(data);
    server_to_device::<CheckInResponse>(data);
    server_to_device::<ReportAck>(data);
});
