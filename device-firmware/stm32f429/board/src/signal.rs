//! The recovery signal: stage-0 and the bootloader, with nothing they may boot, blink PB14 (the
//! Nucleo-F429ZI's red LED LD3; on another board, a test point) so a technician sees the state
//! without a debugger. With the `qemu` feature nothing is touched (QEMU models neither RCC nor
//! the GPIO ports of the netduinoplus2).

use crate::pac;

/// PB14 as a push-pull output.
#[derive(Debug)]
pub struct RecoveryPin {
    #[cfg_attr(feature = "qemu", allow(dead_code))]
    gpiob: pac::GPIOB,
}

impl RecoveryPin {
    /// Clock GPIOB and make PB14 an output (low).
    pub fn new(rcc: &pac::RCC, gpiob: pac::GPIOB) -> Self {
        #[cfg(not(feature = "qemu"))]
        {
            let enable = rcc.ahb1enr();
            // SAFETY: AHB1ENR bit 1 is GPIOBEN (RM0090 6.3.10); the other bits are kept.
            enable.modify(|r, w| unsafe { w.bits(r.bits() | (1 << 1)) });
            // Two AHB cycles before the port answers (RM0090 6.3.10, note).
            cortex_m::asm::dsb();
            let moder = gpiob.moder();
            // SAFETY: MODER14 (bits 29:28) = 0b01, general-purpose output; other pins kept.
            moder.modify(|r, w| unsafe { w.bits((r.bits() & !(0b11 << 28)) | (0b01 << 28)) });
        }
        #[cfg(feature = "qemu")]
        let _ = rcc;
        Self { gpiob }
    }

    /// Invert PB14.
    pub fn toggle(&mut self) {
        #[cfg(not(feature = "qemu"))]
        {
            let odr = self.gpiob.odr();
            // SAFETY: ODR bit 14 drives PB14, an output since `new`; other pins kept.
            odr.modify(|r, w| unsafe { w.bits(r.bits() ^ (1 << 14)) });
        }
    }
}
