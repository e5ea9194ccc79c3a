//! Demo application: says which slot it runs from (from its own link address), checks that VTOR
//! points at its own vector table, and waits for SysTick to fire through that table a few times
//! (the field failure was an interrupt going through the bootloader's table). Then it exits
//! QEMU through semihosting.
//!
//! Not yet: boot info, self-test and `mark_confirmed` through `fota-boot` (its API is pending).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use fota_board::pac;
use fota_board::watchdog::Watchdog;
use fota_protocol::SlotId;

static TICKS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Where this code was linked: its own address says which slot it is in.
fn here() -> u32 {
    here as fn() -> u32 as usize as u32
}

#[entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        fail("peripherals taken twice")
    };
    // The bootloader started the IWDG (not under QEMU); keep it fed.
    let mut watchdog = Watchdog::new(dp.IWDG);
    watchdog.kick();

    let Some(slot) = SlotId::containing(here()) else {
        fail("not running from a slot")
    };
    let own_table = slot.partition().start + 0x200;
    let vtor = cp.SCB.vtor.read();
    hprintln!("app running from slot {} (VTOR {:#010x})", slot, vtor);
    if vtor != own_table {
        hprintln!("VTOR is not this image's table {:#010x}", own_table);
    }

    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(16_000 - 1); // 1 ms at the 16 MHz HSI
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();

    let mut spins: u32 = 0;
    while TICKS.load(Ordering::Relaxed) < 5 {
        spins += 1;
        if spins == 50_000_000 {
            fail("SysTick never fired through this image's vector table");
        }
        if spins % 1_000_000 == 0 {
            watchdog.kick();
        }
    }
    cp.SYST.disable_counter();
    hprintln!("systick ok ({} ticks)", TICKS.load(Ordering::Relaxed));
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        watchdog.kick();
    }
}

fn fail(why: &str) -> ! {
    hprintln!("app FAILED: {}", why);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::nop();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    fail("panic")
}
