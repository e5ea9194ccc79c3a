//! The device's OTA client, free of hardware and of any particular network stack so it can be
//! tested on the host and run in the simulator.
//!
//! - [`transport`]: the [`Transport`](transport::Transport) trait the client talks to the
//!   server through (HTTP over a 4G modem on the board, a real `fota serve` in the simulator).
//! - [`download`]: a resumable, verify-while-streaming download of an offered image into the
//!   inactive slot.
//!
//! The check-in/report state machine that drives them is a later issue. This crate is `no_std`,
//! has no `unsafe` and allocates nothing.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod download;
pub mod transport;
