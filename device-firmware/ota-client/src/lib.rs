//! The device's OTA client, free of hardware and of any particular network stack so it can be
//! tested on the host and run in the simulator.
//!
//! - [`transport`]: the [`Transport`](transport::Transport) trait the client talks to the
//!   server through (HTTP over a 4G modem on the board, a real `fota serve` in the simulator).
//! - [`download`]: a resumable, verify-while-streaming download of an offered image into the
//!   inactive slot.
//! - [`patch`]: applying an offer's delta patch (issue 19) from the running slot instead,
//!   its rebuilt bytes going through the same download.
//! - [`client`]: [`OtaClient`](client::OtaClient), the state machine that drives them: check in,
//!   download into the inactive slot through the boot journal's flash, mark pending, confirm
//!   after a trial boot, report.
//! - [`persist`]: what the client keeps across resets and the [`Persist`] trait;
//!   [`flash_store`]: the store in flash the board uses (sectors 10-11); [`shared`]: one flash
//!   driver for the journal and that store.
//!
//! This crate is `no_std`, has no `unsafe` and allocates nothing.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

pub mod client;
pub mod download;
pub mod flash_store;
pub mod patch;
pub mod persist;
pub mod shared;
pub mod transport;

pub use client::{
    AfterBoot, CheckInOutcome, ClientError, Config, DeviceInfo, OtaClient, Pushed, RunningStage1,
    Step, CHECKPOINT_EVERY, MAX_QUEUED_RESETS, UPTIME_RECORD_EVERY_S,
};
pub use flash_store::{FaultAppendError, FlashPersist, StoreRegion};
#[cfg(feature = "std")]
pub use persist::MemPersist;
pub use persist::{
    Change, FaultRecord, Installed, Persist, PersistedState, Running, SavedCheckpoint,
    SavedDownload, CHECKPOINT_TAIL,
};
pub use shared::SharedFlash;
