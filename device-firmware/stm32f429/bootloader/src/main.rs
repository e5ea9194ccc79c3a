//! The fota bootloader, first layer: verify slot A, else slot B, with the compiled-in trusted
//! key (SHA-256, key hash, Ed25519 `verify_strict` through `fota-protocol`), check that the image
//! executes in place from that slot (`check_verified_for_slot`), start the IWDG and jump.
//! Nothing verifies: recovery mode (here: report and keep kicking the watchdog), never a halt.
//!
//! Not yet: the boot-state journal of `fota-boot` (pending/confirmed slot, attempts, revert,
//! security counter). Until its API lands, A is preferred over B.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use cortex_m_rt::entry;
use embedded_storage::nor_flash::ReadNorFlash;
use fota_board::boot::BootTarget;
use fota_board::flash::{Flash, FlashError};
use fota_board::pac;
use fota_board::watchdog::Watchdog;
use fota_protocol::image::StreamVerifier;
use fota_protocol::layout::{SlotError, FLASH_BASE};
use fota_protocol::{ImageError, SlotId, TrustedKey};

include!(concat!(env!("OUT_DIR"), "/trusted_key.rs"));

/// Print over semihosting when the feature is on; nothing otherwise.
macro_rules! log {
    ($($arg:tt)*) => {{
        #[cfg(feature = "semihosting")]
        cortex_m_semihosting::hprintln!($($arg)*);
        #[cfg(not(feature = "semihosting"))]
        { let _ = format_args!($($arg)*); }
    }};
}

/// Why a slot is not booted.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug when logging
enum Refusal {
    Flash(FlashError),
    Image(ImageError),
    Slot(SlotError),
}

/// How much flash is read and hashed per step.
const CHUNK: usize = 1024;

fn verify_slot(flash: &mut Flash, slot: SlotId, keys: &[TrustedKey]) -> Result<BootTarget, Refusal> {
    let part = slot.partition();
    let mut verifier = StreamVerifier::new(part.size);
    let mut buf = [0u8; CHUNK];
    let mut offset = part.start - FLASH_BASE;
    let end = part.end() - FLASH_BASE;
    while offset < end {
        if verifier
            .total_len()
            .is_some_and(|total| verifier.position() >= total)
        {
            break; // the rest of the slot is padding
        }
        flash.read(offset, &mut buf).map_err(Refusal::Flash)?;
        verifier.update(&buf).map_err(Refusal::Image)?;
        offset += CHUNK as u32;
    }
    let image = verifier
        .finish()
        .and_then(|parsed| parsed.verify(keys))
        .map_err(Refusal::Image)?;
    BootTarget::new(slot, &image).map_err(Refusal::Slot)
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
    log!(
        "fota bootloader: RDP level {} WRP mask {:#05x}",
        protection.rdp_level,
        protection.wrp_mask
    );

    let key = TRUSTED_KEY.and_then(|k| TrustedKey::from_bytes(&k).ok());
    match key {
        None => log!("no valid trusted key compiled in"),
        Some(key) => {
            let keys = [key];
            for slot in SlotId::ALL {
                match verify_slot(&mut flash, slot, &keys) {
                    Ok(target) => {
                        log!(
                            "booting slot {} (VTOR {:#010x})",
                            target.slot(),
                            target.vector_table()
                        );
                        watchdog.start();
                        target.jump(cp.SCB);
                    }
                    Err(why) => log!("slot {} refused: {:?}", slot, why),
                }
            }
        }
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
