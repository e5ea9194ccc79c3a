//! The device's OTA client, free of hardware and of any particular network stack so it can be
//! tested on the host and run in the simulator.
//!
//! - [`transport`]: the [`Transport`](transport::Transport) trait the client talks to the
//!   server through (HTTP over a 4G modem on the board, a real `fota serve` in the simulator).
//! - [`download`]: a resumable, verify-while-streaming download of an offered image into the
//!   inactive slot.
//!
//! - [`client`]: [`OtaClient`](client::OtaClient), the state machine that drives them: check in,
//!   download into the inactive slot through the boot journal's flash, mark pending, confirm
//!   after a trial boot, report.
//!
//! This crate is `no_std`, has no `unsafe` and allocates nothing.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod client;
pub mod download;
pub mod transport;

pub use client::{
    AfterBoot, CheckInOutcome, ClientError, Config, DeviceInfo, OtaClient, Persist, PersistKey,
    Step,
};
