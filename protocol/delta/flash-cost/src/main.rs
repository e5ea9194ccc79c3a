//! The flash-cost harness (see Cargo.toml): with the `applier` feature the reset handler runs a
//! patch through `PatchApplier`, takes a checkpoint and resumes from it, on inputs hidden from
//! the optimiser (`black_box`), so everything a device links is linked; without it the handler
//! only loops. No `unsafe`: the reset vector is a `#[used]` static the linker script keeps.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

#[cfg(feature = "applier")]
use core::hint::black_box;
use core::panic::PanicInfo;

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[used]
static RESET_VECTOR: extern "C" fn() -> ! = reset;

extern "C" fn reset() -> ! {
    #[cfg(feature = "applier")]
    apply();
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(feature = "applier")]
static BASE: [u8; 256] = [0x5a; 256];
#[cfg(feature = "applier")]
static CONTAINER: [u8; 256] = [0xa5; 256];

/// What the OTA client does with a patch segment: feed it, checkpoint, and (after a power cut)
/// resume, on a base in flash and a sink that writes the inactive slot.
#[cfg(feature = "applier")]
fn apply() {
    use fota_delta::{PatchApplier, CHECKPOINT_LEN};

    struct Flash<'a>(&'a [u8]);
    impl fota_delta::Base for Flash<'_> {
        type Error = ();
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ()> {
            let at = usize::try_from(offset).map_err(|_| ())?;
            let src = self.0.get(at..at + buf.len()).ok_or(())?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    let mut base = Flash(black_box(&BASE[..]));
    let mut sink = |bytes: &[u8]| -> Result<(), ()> {
        black_box(bytes);
        Ok(())
    };
    let mut applier = PatchApplier::new(black_box(0x6_0000));
    let container = black_box(&CONTAINER[..]);
    let _ = black_box(applier.feed(container, &mut base, &mut sink));
    let mut record = [0u8; CHECKPOINT_LEN];
    applier.checkpoint(&mut record);
    if let Ok(mut resumed) = PatchApplier::resume(black_box(&record)) {
        let _ = black_box(resumed.feed(container, &mut base, &mut sink));
        let _ = black_box(resumed.finish::<(), ()>());
    }
}
/// The applier's RAM on the device: its state (the stack buffers of `feed` add 128 bytes, a
/// checkpoint record being written 1,317).
#[cfg(feature = "applier")]
const _: () = assert!(core::mem::size_of::<fota_delta::PatchApplier>() == 1_400);
