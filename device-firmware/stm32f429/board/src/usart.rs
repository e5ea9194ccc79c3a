//! The modem's serial port: USART1 (PA9 TX, PA10 RX, PA11 CTS, PA12 RTS, alternate function 7)
//! at 115200 baud 8N1 with hardware flow control, polled, behind [`fota_modem::Serial`].
//!
//! Reads never wait: they take what the receive register holds (one byte per RXNE). The MCU
//! polls between AT commands and while waiting for answers, and RTS/CTS flow control makes
//! the module hold its bytes while the MCU is busy elsewhere (erasing a flash sector stalls
//! the CPU for a second or more), so a polled port loses nothing. Under QEMU (`qemu` feature)
//! RCC and GPIO are not modeled and the chardev backend waits for the guest to read each byte,
//! so only the USART itself is set up.
//!
//! USART2 (PA2 TX, PA3 RX) exists for the QEMU field-incident build, which drives the wrong
//! port on purpose: nothing is attached there, so that image never reaches the server.

use crate::pac;
use pac::usart1::RegisterBlock;

// SR bits.
const SR_ORE: u16 = 1 << 3;
const SR_RXNE: u16 = 1 << 5;
const SR_TXE: u16 = 1 << 7;

/// BRR for 115200 baud from the 16 MHz HSI (APB1 and APB2 undivided): 16e6 / 115200 = 138.9.
const BRR_115200_AT_16MHZ: u16 = 139;

/// Which USART.
#[derive(Debug)]
enum Port {
    One(pac::USART1),
    Two(pac::USART2),
}

/// A polled USART. Owning the peripheral makes it the only user of its registers.
#[derive(Debug)]
pub struct Usart {
    port: Port,
    /// Receive overruns seen (bytes lost: only possible without flow control).
    pub overruns: u32,
}

/// The port never fails (errors are counted, not returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsartError {}

impl Usart {
    /// USART1 on PA9/PA10 with RTS/CTS on PA12/PA11: the modem's port.
    pub fn usart1(usart: pac::USART1, rcc: &pac::RCC, gpioa: &pac::GPIOA) -> Self {
        #[cfg(not(feature = "qemu"))]
        {
            rcc.ahb1enr().modify(|_, w| w.gpioaen().set_bit());
            rcc.apb2enr().modify(|_, w| w.usart1en().set_bit());
            alternate_function_7(gpioa, &[9, 10, 11, 12]);
        }
        #[cfg(feature = "qemu")]
        let _ = (rcc, gpioa);
        let port = Self {
            port: Port::One(usart),
            overruns: 0,
        };
        port.enable(true);
        port
    }

    /// USART2 on PA2/PA3, without flow control (the QEMU field-incident build's wrong port).
    pub fn usart2(usart: pac::USART2, rcc: &pac::RCC, gpioa: &pac::GPIOA) -> Self {
        #[cfg(not(feature = "qemu"))]
        {
            rcc.ahb1enr().modify(|_, w| w.gpioaen().set_bit());
            rcc.apb1enr().modify(|_, w| w.usart2en().set_bit());
            alternate_function_7(gpioa, &[2, 3]);
        }
        #[cfg(feature = "qemu")]
        let _ = (rcc, gpioa);
        let port = Self {
            port: Port::Two(usart),
            overruns: 0,
        };
        port.enable(false);
        port
    }

    fn regs(&self) -> &RegisterBlock {
        match &self.port {
            Port::One(p) => p,
            Port::Two(p) => p,
        }
    }

    fn enable(&self, flow_control: bool) {
        let regs = self.regs();
        // SAFETY: BRR takes any 16-bit divider; 139 is 115200 baud from 16 MHz.
        regs.brr().write(|w| unsafe { w.bits(BRR_115200_AT_16MHZ) });
        if flow_control {
            regs.cr3().write(|w| w.rtse().set_bit().ctse().set_bit());
        }
        regs.cr1()
            .write(|w| w.ue().set_bit().te().set_bit().re().set_bit());
    }
}

/// Put `pins` of port A in alternate function 7 (USART1-3).
#[cfg(not(feature = "qemu"))]
fn alternate_function_7(gpioa: &pac::GPIOA, pins: &[u32]) {
    for &pin in pins {
        let shift = pin * 2;
        // SAFETY: MODER is two bits per pin; 0b10 selects the alternate function for this pin
        // only, the others are written back unchanged.
        gpioa
            .moder()
            .modify(|r, w| unsafe { w.bits((r.bits() & !(0b11 << shift)) | (0b10 << shift)) });
        let afr_shift = (pin % 8) * 4;
        if pin < 8 {
            // SAFETY: AFRL is four bits per pin 0-7; 7 is USART1-3; other pins unchanged.
            gpioa.afrl().modify(|r, w| unsafe {
                w.bits((r.bits() & !(0xF << afr_shift)) | (7 << afr_shift))
            });
        } else {
            // SAFETY: AFRH is four bits per pin 8-15; 7 is USART1-3; other pins unchanged.
            gpioa.afrh().modify(|r, w| unsafe {
                w.bits((r.bits() & !(0xF << afr_shift)) | (7 << afr_shift))
            });
        }
    }
}

impl fota_modem::Serial for Usart {
    type Error = UsartError;

    fn write(&mut self, bytes: &[u8]) -> Result<(), UsartError> {
        let regs = self.regs();
        for &b in bytes {
            while regs.sr().read().bits() & SR_TXE == 0 {}
            regs.dr().write(|w| w.dr().set(u16::from(b)));
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UsartError> {
        let mut n = 0;
        while n < buf.len() {
            let sr = self.regs().sr().read().bits();
            if sr & SR_ORE != 0 {
                // Reading SR then DR clears the overrun; the byte in DR is still good.
                self.overruns = self.overruns.saturating_add(1);
            }
            if sr & SR_RXNE == 0 {
                break;
            }
            buf[n] = self.regs().dr().read().dr().bits() as u8;
            n += 1;
        }
        Ok(n)
    }
}
