//! fota's stage-0: the immutable first stage (sectors 0-1, write-protected at the factory, never
//! updated). At every reset, with nothing kept from before, [`fota_boot::boot_stage1`] over the
//! board's flash driver: replay the journal (sectors 2-3), pick a stage-1 slot (a pending
//! stage-1 on trial with its `Stage1Attempt` recorded *before* the jump, a revert after 3
//! attempts, the confirmed stage-1, the other one), verify it with the compiled-in key
//! (SHA-256, key hash, Ed25519 through salty, stage-1 mark for this slot, vector table inside
//! it, security counter not below the stage-1 floor), start the IWDG, set VTOR and MSP, jump.
//! Nothing verifies: the recovery state, never a halt and never a jump into anything else.
//!
//! With the `semihosting` feature (implied by `qemu`) it logs the journal's stage-1 state, the
//! record it appended, every refusal, and what it boots; the QEMU tests assert on that.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use cortex_m_rt::entry;
use fota_board::boot::BootTarget;
use fota_board::flash::Flash;
use fota_board::pac;
use fota_board::signal::RecoveryPin;
use fota_board::watchdog::Watchdog;
use fota_boot::{BootAction, FlashLayout};
use fota_protocol::{SlotId, TrustedKey};

// Shared with the bootloader; `journal_error` is not used here.
#[allow(dead_code)]
#[path = "../../bootloader/src/describe.rs"]
mod describe;
#[path = "../../bootloader/src/log.rs"]
mod log;

use log::Hex;

include!(concat!(env!("OUT_DIR"), "/trusted_key.rs"));

/// One line of boot log over semihosting when the feature is on; nothing otherwise.
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
    let pin = RecoveryPin::new(&dp.RCC, dp.GPIOB);
    log!("fota stage-0");

    let Some(key) = TRUSTED_KEY.and_then(|k| TrustedKey::from_bytes(&k).ok()) else {
        log!("no valid trusted key compiled in");
        recovery(&mut watchdog, pin)
    };
    let outcome = fota_boot::boot_stage1(&mut flash, &FlashLayout::STM32F429, &[key]);

    let state = outcome.state.stage1();
    log!(
        "stage-0 journal: stage-1 confirmed ",
        describe::slot(state.confirmed()),
        ", pending ",
        describe::slot(state.pending()),
        ", attempts ",
        state.attempts(),
        ", floor ",
        state.floor()
    );
    if let Some(record) = outcome.appended {
        match describe::record(&record.kind) {
            (kind, Ok(slot)) => log!("stage-0: appended ", kind, "(", slot, ")"),
            (kind, Err(value)) => log!("stage-0: appended ", kind, "(", value, ")"),
        }
    }
    if outcome.journal_error.is_some() {
        // Without the error's name: stage-0's QEMU build must fit the same 32 KB - 512 B as
        // its device build, and the name table costs flash (the host tests cover the errors).
        log!("stage-0 journal error");
    }
    for slot in SlotId::ALL {
        if let Some(why) = outcome.refused.get(slot) {
            let (outer, inner) = describe::boot_error(&why);
            log!("stage-1 ", slot, " refused: ", outer, "(", inner, ")");
        }
    }

    if let BootAction::Jump(target) = outcome.action {
        // verify_stage1 already checked the stage-1 fit its slot; BootTarget checks it again
        // from the same verified image, since it is what makes the jump.
        match BootTarget::stage1(target.slot(), &target.image.image) {
            Ok(jump) => {
                let mode = target.mode.label();
                log!(
                    "booting stage-1 ",
                    jump.slot(),
                    " (",
                    mode,
                    ") VTOR ",
                    Hex(jump.vector_table(), 8)
                );
                // A stage-1 that hangs is reset by the watchdog and counted at the next reset.
                watchdog.start();
                jump.jump(cp.SCB)
            }
            Err(why) => log!(
                "stage-1 ",
                target.slot(),
                " refused: Slot(",
                describe::slot_error(&why),
                ")"
            ),
        }
    }
    recovery(&mut watchdog, pin)
}

/// No stage-1 verifies. The defined recovery state: say so once, then keep the watchdog fed
/// and blink the recovery pin forever (about 1 Hz at the reset clock). Never a fault, never a
/// reset loop, never a jump: whatever flash holds, the device stays here until a technician
/// reprograms a stage-1 (or power cycles it, which decides again from flash).
fn recovery(watchdog: &mut Watchdog, mut pin: RecoveryPin) -> ! {
    log!("stage-0 recovery: no stage-1 verifies");
    watchdog.start();
    loop {
        watchdog.kick();
        pin.toggle();
        cortex_m::asm::delay(8_000_000);
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    log!("stage-0 panic: resetting");
    cortex_m::peripheral::SCB::sys_reset()
}
