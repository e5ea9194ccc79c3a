//! A millisecond clock from SysTick, for timeouts, backoff and the trial deadline.
//!
//! [`start`] programs SysTick for a 1 ms period from the core clock (16 MHz HSI on the board,
//! which the bootloader leaves as it is; QEMU's netduinoplus2 runs its core clock at 168 MHz),
//! and the application's `SysTick` exception handler calls [`tick`]. [`Clock`] extends the
//! 32-bit count to 64 bits and implements [`fota_modem::Clock`]; its idle hook kicks the
//! watchdog, so a long wait for the modem never starves it.

use crate::watchdog::Watchdog;
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;

/// Core clock cycles per millisecond.
#[cfg(not(feature = "qemu"))]
const CYCLES_PER_MS: u32 = 16_000;
#[cfg(feature = "qemu")]
const CYCLES_PER_MS: u32 = 168_000;

static MILLIS: AtomicU32 = AtomicU32::new(0);

/// Start SysTick at 1 ms with its interrupt.
pub fn start(syst: &mut SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_MS - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Count one millisecond: call from the `SysTick` exception handler.
pub fn tick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Milliseconds counted so far (wraps after 49 days).
pub fn millis() -> u32 {
    MILLIS.load(Ordering::Relaxed)
}

/// The clock the OTA runtime and the modem transport use.
#[derive(Debug)]
pub struct Clock {
    watchdog: Watchdog,
    high: u64,
    last: u32,
}

impl Clock {
    /// A clock that kicks `watchdog` while the transport waits.
    pub fn new(watchdog: Watchdog) -> Self {
        Self {
            watchdog,
            high: 0,
            last: millis(),
        }
    }

    /// Milliseconds since boot, 64-bit.
    pub fn now(&mut self) -> u64 {
        let now = millis();
        if now < self.last {
            self.high += 1 << 32;
        }
        self.last = now;
        self.high | u64::from(now)
    }

    /// Kick the watchdog.
    pub fn kick(&mut self) {
        self.watchdog.kick();
    }
}

impl fota_modem::Clock for Clock {
    fn now_ms(&mut self) -> u64 {
        self.now()
    }

    fn idle(&mut self) {
        self.watchdog.kick();
    }
}
