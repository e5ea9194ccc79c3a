//! Why the chip reset: RCC_CSR's reset flags (RM0090 6.3.21), read once per boot by the
//! application and then cleared (RMVF), so each boot sees the flags of its own reset only. The
//! bootloader leaves them alone. `fota_protocol::messages::ResetCause::from_rcc_csr` decodes
//! them; the OTA client reports the cause with what ran before it.
//!
//! With the `qemu` feature nothing is read: QEMU does not model the RCC (its registers read as
//! 0, which decodes as an unknown cause, which the client does not report).

use crate::pac;

/// The reset flags (bits 24-31) of RCC_CSR, cleared afterwards.
pub fn take_flags(rcc: &pac::RCC) -> u32 {
    #[cfg(not(feature = "qemu"))]
    {
        let flags = rcc.csr().read().bits() & 0xFF00_0000;
        // RMVF clears every reset flag; the LSI bits (0-1) are kept as they are.
        rcc.csr().modify(|_, w| w.rmvf().set_bit());
        flags
    }
    #[cfg(feature = "qemu")]
    {
        let _ = rcc;
        0
    }
}
