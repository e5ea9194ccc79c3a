//! Boot logic for fota's STM32F429 bootloader, free of hardware so it can be tested on the host.
//!
//! The bootloader decides, at every reset, which slot to run; DESIGN.md's "Boot state machine"
//! says how. Its only memory across resets is flash, so the decision is made from an
//! append-only journal of CRC-protected records ([`journal`]) that survives a power cut at any
//! instant: a torn record fails its CRC and is skipped.
//!
//! This crate is `no_std`, has no `unsafe` and allocates nothing; the board crate
//! (`device-firmware/stm32f429`) holds the flash driver and the jump.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod journal;
