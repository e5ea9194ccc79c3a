//! The independent watchdog (IWDG, clocked by the ~32 kHz LSI): once started it cannot be stopped,
//! and it survives the jump into the application, so a trial image that hangs resets into the
//! bootloader (DESIGN.md, "Boot state machine"). With the `qemu` feature nothing is touched:
//! QEMU does not model the IWDG.

use crate::pac;

/// Prescaler /64 and reload 4095: 4096 * 64 / 32 kHz, about 8 s (LSI varies 17-47 kHz: 5.6-15 s).
const PR_DIV64: u16 = 4;
const RELOAD: u16 = 0x0FFF;

const KEY_START: u16 = 0xCCCC;
const KEY_UNLOCK: u16 = 0x5555;
const KEY_KICK: u16 = 0xAAAA;

/// The IWDG. Owning the peripheral makes it the only writer of its registers.
#[derive(Debug)]
pub struct Watchdog {
    #[cfg_attr(feature = "qemu", allow(dead_code))]
    regs: pac::IWDG,
}

impl Watchdog {
    /// Take the IWDG.
    pub fn new(regs: pac::IWDG) -> Self {
        Self { regs }
    }

    /// Start it with a timeout of about 8 s. Irreversible until the next reset.
    pub fn start(&mut self) {
        #[cfg(not(feature = "qemu"))]
        {
            // SAFETY: KR takes only these keys (RM0090 21.3.2): start, then unlock PR/RLR.
            self.regs.kr().write(|w| unsafe { w.bits(KEY_START) });
            // SAFETY: as above.
            self.regs.kr().write(|w| unsafe { w.bits(KEY_UNLOCK) });
            // SAFETY: PR is 3 bits and 4 (/64) is valid; RLR is 12 bits and 0xFFF is valid.
            self.regs.pr().write(|w| unsafe { w.bits(PR_DIV64) });
            // SAFETY: as above.
            self.regs.rlr().write(|w| unsafe { w.bits(RELOAD) });
            // PVU/RVU clear once the new values reached the LSI domain.
            while self.regs.sr().read().bits() & 0b11 != 0 {}
        }
        self.kick();
    }

    /// Reload the counter.
    pub fn kick(&mut self) {
        #[cfg(not(feature = "qemu"))]
        // SAFETY: 0xAAAA is the reload key; it has no other effect.
        self.regs.kr().write(|w| unsafe { w.bits(KEY_KICK) });
    }
}
