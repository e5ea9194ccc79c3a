//! Demo application: what a real application does after the bootloader's jump, minus the modem.
//!
//! 1. Says which slot it runs from (from its own link address) and checks that VTOR points at
//!    its own vector table.
//! 2. Reads how it was booted from the boot-state journal, through `fota-boot`'s `BootControl`
//!    over the board's flash driver (never from RAM: the field incident): trial (and which
//!    attempt), confirmed, or unconfirmed.
//! 3. Self-test: SysTick must fire a few times through this image's own vector table (the field
//!    failure was an interrupt going through the bootloader's table).
//! 4. With the self-test passed: which stage-1 booted it (stage-0's choice, from the journal),
//!    and `confirm_stage1` if that one is on trial or unconfirmed (the stage-1's proof).
//! 5. On trial (or unconfirmed) and with the self-test passed: `mark_confirmed`, then reads the
//!    journal again to show the result. A real application also waits until it has reached the
//!    server before confirming.
//!
//! Then it exits QEMU through semihosting (on a board, it needs a debugger attached).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use fota_board::flash::Flash;
use fota_board::pac;
use fota_board::watchdog::Watchdog;
use fota_boot::{BootControl, BootInfo, BootMode, FlashLayout};
use fota_protocol::{SlotId, TrustedKey};

include!(concat!(env!("OUT_DIR"), "/trusted_key.rs"));

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
    let vtor_ok = vtor == own_table;
    if !vtor_ok {
        hprintln!("VTOR is not this image's table {:#010x}", own_table);
    }

    let mut control = match BootControl::open(Flash::new(dp.FLASH), FlashLayout::STM32F429, slot) {
        Ok(control) => control,
        Err(e) => {
            hprintln!("boot journal unreadable: {:?}", e);
            fail("boot journal unreadable")
        }
    };
    let info = control.info();
    report(&info);

    if !(vtor_ok && systick_fires(&mut cp.SYST, &mut watchdog)) {
        fail("self-test failed: not confirming");
    }
    hprintln!(
        "self-test ok: systick fired through this image's table ({} ticks)",
        TICKS.load(Ordering::Relaxed)
    );

    let Some(key) = TRUSTED_KEY.and_then(|k| TrustedKey::from_bytes(&k).ok()) else {
        fail("no trusted key compiled in: cannot confirm")
    };
    let keys = [key];
    // Which stage-1 booted this run (stage-0's choice, read back from the journal), and its
    // proof: an application it booted passed its self-test.
    match control.running_stage1(&keys) {
        Some((stage1, mode)) => {
            report_stage1(stage1, mode, control.journal().state().stage1().floor());
            if mode != BootMode::Confirmed {
                match control.confirm_stage1(&keys) {
                    Ok(Some(slot)) => hprintln!("confirm_stage1: ok, stage-1 {} confirmed", slot),
                    Ok(None) => hprintln!("confirm_stage1: nothing to confirm"),
                    Err(e) => {
                        hprintln!("confirm_stage1 failed: {:?}", e);
                        fail("confirm_stage1 failed")
                    }
                }
                let floor = control.journal().state().stage1().floor();
                if let Some((stage1, mode)) = control.running_stage1(&keys) {
                    report_stage1(stage1, mode, floor);
                }
            }
        }
        None => hprintln!("boot info: no stage-1 verifies (started without stage-0?)"),
    }

    if info.mode != BootMode::Confirmed {
        match control.mark_confirmed(&keys) {
            Ok(()) => hprintln!("mark_confirmed: ok"),
            Err(e) => {
                hprintln!("mark_confirmed failed: {:?}", e);
                fail("mark_confirmed failed")
            }
        }
        // Read the journal again from flash, as the next boot will.
        let flash = control.into_flash();
        match BootControl::open(flash, FlashLayout::STM32F429, slot) {
            Ok(control) => report(&control.info()),
            Err(e) => {
                hprintln!("boot journal unreadable: {:?}", e);
                fail("boot journal unreadable after confirming")
            }
        }
    }
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        watchdog.kick();
    }
}

/// Print the boot state the journal gives for this slot.
fn report(info: &BootInfo) {
    match info.mode {
        BootMode::Trial { attempt } => hprintln!(
            "boot info: slot {} trial (attempt {}), security counter {}",
            info.slot,
            attempt,
            info.security_counter
        ),
        BootMode::Confirmed => hprintln!(
            "boot info: slot {} confirmed, security counter {}",
            info.slot,
            info.security_counter
        ),
        BootMode::Unconfirmed => hprintln!(
            "boot info: slot {} unconfirmed, security counter {}",
            info.slot,
            info.security_counter
        ),
    }
}

/// Print the stage-1 that booted this run.
fn report_stage1(slot: SlotId, mode: BootMode, floor: u32) {
    match mode {
        BootMode::Trial { attempt } => hprintln!(
            "boot info: stage-1 {} trial (attempt {}), floor {}",
            slot,
            attempt,
            floor
        ),
        BootMode::Confirmed => hprintln!("boot info: stage-1 {} confirmed, floor {}", slot, floor),
        BootMode::Unconfirmed => {
            hprintln!("boot info: stage-1 {} unconfirmed, floor {}", slot, floor)
        }
    }
}

/// The self-test: SysTick at 1 ms must fire 5 times through this image's vector table.
fn systick_fires(syst: &mut SYST, watchdog: &mut Watchdog) -> bool {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(16_000 - 1); // 1 ms at the 16 MHz HSI
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    let mut spins: u32 = 0;
    while TICKS.load(Ordering::Relaxed) < 5 {
        spins += 1;
        if spins == 50_000_000 {
            hprintln!("SysTick never fired through this image's vector table");
            syst.disable_counter();
            return false;
        }
        if spins % 1_000_000 == 0 {
            watchdog.kick();
        }
    }
    syst.disable_counter();
    syst.disable_interrupt();
    true
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
