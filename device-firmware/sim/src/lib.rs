//! Virtual fota devices, for end-to-end tests, the demo and load tests.
//!
//! What this crate will become: each virtual device runs the real `fota-boot` logic and the
//! real `fota-ota-client` on a simulated STM32F429 flash, against a real `fota serve` over
//! HTTP. A device "boots" by replaying its journal and choosing a slot exactly as the
//! bootloader does, "runs" the image found there (its version, and whether it is built to
//! confirm, hang or crash), checks in, downloads into its inactive slot, reboots into the trial
//! and confirms or reverts. Thousands of them in one process exercise the server's rollouts:
//! canary stages, health gates, halts and fleet rollback.
//!
//! Power cuts are where the simulator earns its keep. Like MCUboot's simulator, it counts every
//! flash operation, cuts power at step N and sweeps N over a whole update, checking after each
//! cut that the device still boots a verified image. It also models what MCUboot's simulator
//! long missed (mcuboot#1966): a *torn* write, a record left half programmed.
//!
//! Today it has the foundation: [`flash::SimFlash`], the F429's flash with NOR's rules enforced,
//! every operation counted, and power cuts between or inside any write or erase. The sweeps that
//! use it (`tests/power_cut.rs`) run the real `fota-boot` through install, trial, confirm,
//! revert and journal compaction with a cut at every step.
#![warn(missing_docs)]

pub mod flash;
