//! The fota bootloader, stage-1: linked for stage-1 slot A or B (features `stage1-a` /
//! `stage1-b`), started by stage-0 (`fota-stage0`) once it verified it. Then, with nothing kept
//! from before, [`fota_boot::boot`] over
//! the board's flash driver: replay the boot-state journal (sectors 2-3), decide which slot runs
//! and how (a pending slot on trial, with its `Attempt` recorded *before* the jump; a revert after
//! 3 attempts; the confirmed slot; the other slot; see DESIGN.md "Boot state machine"), verifying
//! each candidate with the compiled-in trusted key (SHA-256, key hash, Ed25519 `verify_strict`
//! through `fota-protocol`'s salty backend, vector table inside the slot, security counter not
//! below the journal's floor). Then start the IWDG, set VTOR and MSP, and jump. Nothing
//! verifies: recovery mode, never a halt.
//!
//! With the `semihosting` feature (implied by `qemu`) it logs the journal's state, the record it
//! appended, every refusal, and which slot it boots in which mode; the QEMU tests assert on that.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use cortex_m_rt::entry;
use fota_board::boot::BootTarget;
use fota_board::flash::Flash;
use fota_board::pac;
use fota_board::watchdog::Watchdog;
use fota_boot::{BootAction, FlashLayout};
use fota_protocol::{SlotId, TrustedKey};

mod describe;
mod log;

use log::Hex;

include!(concat!(env!("OUT_DIR"), "/trusted_key.rs"));

/// The stage-1 slot this build is linked for.
#[cfg(feature = "stage1-b")]
const STAGE1_SLOT: SlotId = SlotId::B;
/// The stage-1 slot this build is linked for.
#[cfg(not(feature = "stage1-b"))]
const STAGE1_SLOT: SlotId = SlotId::A;

/// One line of boot log over semihosting when the feature is on (see [`log`]); nothing
/// otherwise. Arguments are `&str`s, `u32`/`u8`s (decimal), [`log::Hex`] and `SlotId`s.
macro_rules! log {
    ($($part:expr),+ $(,)?) => {{
        #[cfg(feature = "semihosting")]
        crate::log::line(&[$(&$part),+]);
        #[cfg(not(feature = "semihosting"))]
        { $(let _ = $part;)+ }
    }};
}

#[entry]
fn main() -> ! {
    let (Some(dp), Some(cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        // Only reachable if `take` ran before, which nothing here does.
        cortex_m::peripheral::SCB::sys_reset();
    };
    let mut flash = Flash::new(dp.FLASH);
    flash.enable_accelerator();
    let mut watchdog = Watchdog::new(dp.IWDG);
    let protection = flash.protection();
    if cfg!(feature = "test-hang") {
        log!("fota stage-1 ", STAGE1_SLOT, ": hanging (test-hang build)");
        loop {
            cortex_m::asm::nop();
        }
    }
    log!(
        "fota stage-1 ",
        STAGE1_SLOT,
        ": RDP level ",
        protection.rdp_level,
        " WRP mask ",
        Hex(u32::from(protection.wrp_mask), 3)
    );

    let Some(key) = TRUSTED_KEY.and_then(|k| TrustedKey::from_bytes(&k).ok()) else {
        // A build that forgot its key: boot nothing, and leave the journal alone (it would
        // reject every pending image for a fault of this build, not of the image).
        log!("no valid trusted key compiled in");
        recovery(&mut watchdog)
    };
    let outcome = fota_boot::boot(&mut flash, &FlashLayout::STM32F429, &[key]);

    let state = &outcome.state;
    log!(
        "journal: confirmed ",
        describe::slot(state.confirmed()),
        ", pending ",
        describe::slot(state.pending()),
        ", attempts ",
        state.attempts(),
        ", security counter ",
        state.security_counter()
    );
    if let Some(record) = outcome.appended {
        match describe::record(&record.kind) {
            (kind, Ok(slot)) => log!("journal: appended ", kind, "(", slot, ")"),
            (kind, Err(value)) => log!("journal: appended ", kind, "(", value, ")"),
        }
    }
    if let Some(error) = &outcome.journal_error {
        log!("journal error: ", describe::journal_error(error));
    }
    for slot in SlotId::ALL {
        if let Some(why) = outcome.refused.get(slot) {
            let (outer, inner) = describe::boot_error(&why);
            log!("slot ", slot, " refused: ", outer, "(", inner, ")");
        }
    }

    match outcome.action {
        BootAction::Jump(target) => {
            // verify_slot already checked the slot fit; BootTarget checks it again from the same
            // verified image, since it is what makes the jump.
            match BootTarget::new(target.slot(), &target.image.image) {
                Ok(jump) => {
                    let mode = target.mode.label();
                    log!(
                        "booting slot ",
                        jump.slot(),
                        " (",
                        mode,
                        ") VTOR ",
                        Hex(jump.vector_table(), 8)
                    );
                    watchdog.start();
                    jump.jump(cp.SCB)
                }
                Err(why) => log!(
                    "slot ",
                    target.slot(),
                    " refused: Slot(",
                    describe::slot_error(&why),
                    ")"
                ),
            }
        }
        BootAction::Recovery => {}
    }
    recovery(&mut watchdog)
}

/// Nothing bootable. The full recovery mode (keep the modem link, ask the server for an image)
/// comes with the OTA client; until then: say so and keep the watchdog fed, never halt.
fn recovery(watchdog: &mut Watchdog) -> ! {
    log!("recovery: no slot verifies");
    watchdog.start();
    loop {
        watchdog.kick();
        cortex_m::asm::delay(1_000_000);
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    log!("bootloader panic: resetting");
    cortex_m::peripheral::SCB::sys_reset()
}
