//! STM32F429 board support for fota: the only crate of the firmware with `unsafe` in it.
//!
//! - [`flash`]: the F4 flash interface behind embedded-storage's `NorFlash` (offset 0 is
//!   0x0800_0000, the same convention as `fota_sim::flash::SimFlash`), and the RDP/WRP option
//!   bytes.
//! - [`watchdog`]: the independent watchdog (start, kick).
//! - [`usart`]: the modem's serial port (USART1, RTS/CTS), polled, for `fota-modem`.
//! - [`clock`]: a millisecond clock from SysTick, for timeouts and the trial deadline.
//! - [`reset`]: the reset flags of RCC_CSR, read and cleared once per boot.
//! - [`signal`]: the recovery pin (PB14) stage-0 blinks when no stage-1 verifies.
//! - `fault` (feature `fault-handler`, for applications): the HardFault handler, which records
//!   the fault in the OTA client's state store and resets.
//! - [`boot`]: clock/cache setup and the jump into a slot or a stage-1 slot (VTOR, MSP, reset
//!   vector), which only a
//!   [`boot::BootTarget`] built from a verified image can make.
//!
//! Every `unsafe` block carries a `// SAFETY:` comment. The `qemu` feature skips what
//! qemu-system-arm `-M netduinoplus2` does not model (RCC, flash interface, IWDG read as 0), and
//! serves the journal sectors from a RAM overlay, since QEMU drops flash writes (`overlay`);
//! with a host file `flash.bin` from the harness, writes persist across QEMU restarts
//! (`mirror`).
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod boot;
pub mod clock;
#[cfg(feature = "fault-handler")]
mod fault;
pub mod flash;
#[cfg(feature = "qemu")]
mod mirror;
#[cfg(feature = "qemu")]
mod overlay;
pub mod reset;
#[cfg_attr(feature = "qemu", allow(dead_code))]
pub mod signal;
pub mod usart;
#[cfg_attr(feature = "qemu", allow(dead_code))]
pub mod watchdog;

pub use stm32f4::stm32f429 as pac;
