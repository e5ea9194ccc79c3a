//! Boot logic for fota's STM32F429 bootloader, free of hardware so it can be tested on the host.
//!
//! The bootloader decides, at every reset, which slot to run; DESIGN.md's "Boot state machine"
//! says how. Its only memory across resets is flash, so the decision is made from an
//! append-only journal of CRC-protected records ([`journal`]) that survives a power cut at any
//! instant: a torn record fails its CRC and is skipped.
//!
//! - [`journal`]: the records, their replay into a [`BootState`](journal::BootState), and
//!   [`BootJournal`](journal::BootJournal), the journal in two ping-pong flash sectors.
//! - [`verify`](mod@verify): verifying a slot's image straight from flash.
//! - [`decision`]: [`decide`] which slot runs, and [`boot`], everything between reset and jump.
//! - [`stage0`]: [`boot_stage1`], what the immutable stage-0 does at every reset: pick, verify
//!   and trial-boot one of the two stage-1 slots (the bootloader of [`decision`] is stage-1).
//! - [`control`]: the application's side: [`BootInfo`], `mark_confirmed`, `mark_pending`,
//!   `mark_stage1_pending`, `confirm_stage1`.
//! - [`layout`]: where the journal and the slots are in the flash driver's offsets.
//! - `testing` (feature `testing`): an in-memory NOR flash for tests.
//!
//! This crate is `no_std`, has no `unsafe` and allocates nothing; the board crate
//! (`device-firmware/stm32f429`) holds the flash driver and the jump.
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

pub mod control;
pub mod decision;
pub mod journal;
pub mod layout;
pub mod stage0;
pub mod verify;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use control::{BootControl, BootInfo, ControlError};
pub use decision::{
    boot, decide, decide_for, BootAction, BootMode, BootOutcome, BootTarget, Decision, Refusals,
};
pub use journal::{BootJournal, BootState, JournalError, JournalRegion};
pub use layout::FlashLayout;
pub use stage0::{boot_stage1, Stage0Outcome};
pub use verify::{verify_slot, verify_stage1, BootError, VerifiedSlot};
