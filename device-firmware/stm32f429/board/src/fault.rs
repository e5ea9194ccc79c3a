//! The hard fault handler (feature `fault-handler`, for applications: the bootloader keeps
//! cortex-m-rt's default): it records why the image faulted in the OTA client's state store
//! (sectors 10-11), then resets, so the next boot reports a `reset` event with cause `fault`, the
//! faulting image's version and uptime, and PC, LR, CFSR, HFSR and the faulting address.
//!
//! MemManage, BusFault and UsageFault are left disabled (SHCSR, the reset value), so every
//! configurable fault escalates to HardFault (HFSR.FORCED) and lands here with its own status
//! bits in CFSR: one handler sees them all.
//!
//! What the handler trusts: nothing in RAM but its own stack. It reads the image's version from
//! the image's header in flash, the store's end from the store's log in flash
//! ([`FlashPersist::append_fault`]), and drives the flash interface through a driver of its own
//! after waiting out any operation the faulting code left in progress. It only appends one
//! record where the log ends cleanly and the record fits; it never erases or compacts (seconds,
//! in a fault handler, and a rewrite of state it cannot trust). When it cannot record (nothing
//! committed yet, a torn end, a full sector, a flash error), it does not reset by itself: it
//! waits for the independent watchdog, whose reset is reported as `independent_watchdog`,
//! unexpected all the same. (Under QEMU, which has no watchdog, it resets at once.)
//!
//! A fault inside this handler locks the core up; the watchdog resets it from there too.

use crate::flash::Flash;
use crate::pac;
use cortex_m::peripheral::SCB;
use cortex_m_rt::{exception, ExceptionFrame};
use embedded_storage::nor_flash::ReadNorFlash;
use fota_ota_client::{FaultRecord, FlashPersist, StoreRegion};
use fota_protocol::image::{ImageHeader, ImageVersion};
use fota_protocol::layout::FLASH_BASE;
use fota_protocol::SlotId;

/// Say what the handler did (QEMU: over semihosting; a device has no one to tell).
fn log(recorded: bool, fault: &FaultRecord) {
    #[cfg(feature = "qemu")]
    {
        if recorded {
            cortex_m_semihosting::hprintln!("fault: {} recorded, resetting", FaultLine(fault));
        } else {
            cortex_m_semihosting::hprintln!(
                "fault: {} not recorded, waiting for the watchdog",
                FaultLine(fault)
            );
        }
    }
    #[cfg(not(feature = "qemu"))]
    let _ = (recorded, fault);
}

#[cfg(feature = "qemu")]
struct FaultLine<'a>(&'a FaultRecord);

#[cfg(feature = "qemu")]
impl core::fmt::Display for FaultLine<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} after {} s: {}",
            self.0.version, self.0.uptime_s, self.0
        )
    }
}

/// The version in the header of the slot this code runs from (0.0.0 if unreadable).
fn own_version(flash: &mut Flash) -> ImageVersion {
    let here = own_version as fn(&mut Flash) -> ImageVersion as usize as u32;
    let mut header = [0u8; 32];
    SlotId::containing(here)
        .and_then(|slot| {
            flash
                .read(slot.partition().start - FLASH_BASE, &mut header)
                .ok()?;
            ImageHeader::parse(&header).ok().map(|h| h.version)
        })
        .unwrap_or(ImageVersion::new(0, 0, 0, 0))
}

/// The HardFault handler: record the fault in the OTA client's store, then reset.
///
/// cortex-m-rt's trampoline passes the frame the core stacked on entry (from MSP or PSP).
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    // SAFETY: SCB is always present; these are reads of status and address registers, which
    // have no side effects, from the only code that runs now (every other context is
    // interrupted for good: this handler never returns).
    let scb = unsafe { &*SCB::PTR };
    let cfsr = scb.cfsr.read();
    let hfsr = scb.hfsr.read();
    let address = if cfsr & FaultRecord::BFARVALID != 0 {
        scb.bfar.read()
    } else if cfsr & FaultRecord::MMARVALID != 0 {
        scb.mmfar.read()
    } else {
        0
    };
    // SAFETY: the faulting code owned FLASH (through the application's `Flash`, perhaps in the
    // middle of an operation); it never runs again, since this handler ends in a reset or
    // waits for the watchdog's, so taking the peripheral a second time leaves one user of the
    // registers. The driver waits for BSY, clears the error flags and unlocks only if locked
    // before it programs, so an operation the faulting code left behind is waited out, not
    // broken into.
    let regs = unsafe { pac::Peripherals::steal() }.FLASH;
    let mut flash = Flash::new(regs);
    let fault = FaultRecord {
        version: own_version(&mut flash),
        uptime_s: crate::clock::millis() / 1000,
        pc: frame.pc(),
        lr: frame.lr(),
        cfsr,
        hfsr,
        address,
    };
    let region = StoreRegion::STM32F429;
    let recorded = FlashPersist::append_fault(&mut flash, region, &fault).is_ok();
    log(recorded, &fault);
    if recorded || cfg!(feature = "qemu") {
        SCB::sys_reset()
    }
    // Not recorded: a software reset would read as an expected one. Let the watchdog, which
    // nothing kicks any more, reset the chip.
    loop {
        cortex_m::asm::wfi();
    }
}
