//! Virtual fota devices, for end-to-end tests, the demo and load tests.
//!
//! Each virtual device runs the real `fota-boot` logic and the real `fota-ota-client` on a
//! simulated STM32F429 flash, against a real `fota serve` over HTTP. A device "boots" by running
//! the bootloader's [`fota_boot::boot`] on its flash, "runs" the image found there (whether it is
//! built to confirm, fault, hang or crash is written in its signed payload: [`app`]), checks in,
//! downloads into its inactive slot, reboots into the trial and confirms or is reverted. Thousands
//! of them in one process exercise the server's rollouts: canary stages, health gates, halts and
//! fleet rollback ([`fleet`]).
//!
//! - Two-stage devices ([`factory_flash_two_stage`]): at every reset the real stage-0
//!   ([`fota_boot::stage0::boot_stage1`]) picks and verifies a stage-1 first; a simulated stage-1
//!   build boots the application or hangs ([`Stage1Behaviour`]), so a bootloader release rolls
//!   out to the virtual fleet and a bad one is reverted by stage-0.
//! - [`flash::SimFlash`]: the F429's flash with NOR's rules enforced, every operation counted, and
//!   power cuts between or inside any write or erase. The sweeps that use it
//!   (`tests/power_cut.rs`) run the real `fota-boot` through install, trial, confirm, revert and
//!   journal compaction with a cut at every step. Like MCUboot's simulator it cuts power at step
//!   N for every N; unlike it did for years (mcuboot#1966), it also tears a write in half.
//! - [`fleet_flash::FleetFlash`]: the same rules, sparse and deduplicated, so 100,000 devices
//!   that wrote the same release hold one copy of it.
//! - [`link`]: the client's transport over HTTP, with dropped links on demand.
//! - [`device`]: one virtual device; [`fleet`]: many, on a few threads.
//! - [`mqtt`]: each device's MQTT session (its own broker account and command topic), for the
//!   server's pushed nudges and stops; [`relay`]: those sessions' sockets held by relay
//!   processes, for more sessions than one process may open files.
#![warn(missing_docs)]

pub mod app;
pub mod device;
pub mod flash;
pub mod fleet;
pub mod fleet_flash;
pub mod link;
pub mod mqtt;
pub mod relay;

pub use app::{AppBehaviour, Stage1Behaviour};
pub use device::{Device, DeviceStatus, Faults, Timing};
pub use fleet::{
    factory_flash, factory_flash_two_stage, DeviceSpec, Fleet, FleetConfig, FleetSummary,
};
pub use mqtt::{MqttConfig, MqttStats};
pub use relay::RelayCommand;
