//! Short names for what the boot log prints, instead of `{:?}`: the derived `Debug` of the
//! protocol's error enums (with their fields, string escaping and unicode tables) costs about
//! 12 KB of flash, and the QEMU build, which logs, must fit the same 32 KB as the device build.
//! Only the variant names are printed ("Image(HashMismatch)"); the host tools give the details.

use fota_board::flash::FlashError;
use fota_boot::journal::RecordKind;
use fota_boot::{BootError, JournalError};
use fota_protocol::image::SlotError;
use fota_protocol::ImageError;

/// `BootError` as `(outer, inner)`, printed as "outer(inner)".
pub fn boot_error(e: &BootError) -> (&'static str, &'static str) {
    match e {
        BootError::Flash(_) => ("Flash", "read failed"),
        BootError::Image(e) => ("Image", image_error(e)),
        BootError::Slot(e) => ("Slot", slot_error(e)),
        BootError::SecurityCounter { .. } => ("SecurityCounter", "below the floor"),
    }
}

fn image_error(e: &ImageError) -> &'static str {
    match e {
        ImageError::Truncated(_) => "Truncated",
        ImageError::BadMagic(_) => "BadMagic",
        ImageError::HeaderSizeTooSmall(_) => "HeaderSizeTooSmall",
        ImageError::LengthOverflow => "LengthOverflow",
        ImageError::TooLarge { .. } => "TooLarge",
        ImageError::BadTlvMagic { .. } => "BadTlvMagic",
        ImageError::ProtectedSizeMismatch { .. } => "ProtectedSizeMismatch",
        ImageError::TlvTotalTooSmall(_) => "TlvTotalTooSmall",
        ImageError::TlvAreaTooLarge { .. } => "TlvAreaTooLarge",
        ImageError::TlvOverrun { .. } => "TlvOverrun",
        ImageError::BadTlvLength { .. } => "BadTlvLength",
        ImageError::DuplicateTlv(_) => "DuplicateTlv",
        ImageError::MissingTlv(_) => "MissingTlv",
        ImageError::MisplacedTlv(_) => "MisplacedTlv",
        ImageError::BadComponent(_) => "BadComponent",
        ImageError::Unsupported(_) => "Unsupported",
        ImageError::HashMismatch => "HashMismatch",
        ImageError::UntrustedKey => "UntrustedKey",
        ImageError::WeakKey => "WeakKey",
        ImageError::BadSignature => "BadSignature",
    }
}

/// `SlotError`'s variant name.
pub fn slot_error(e: &SlotError) -> &'static str {
    match e {
        SlotError::TooLarge { .. } => "TooLarge",
        SlotError::WrongLoadAddress { .. } => "WrongLoadAddress",
        SlotError::MisalignedVectorTable(_) => "MisalignedVectorTable",
        SlotError::NoVectorTable => "NoVectorTable",
        SlotError::StackOutsideRam(_) => "StackOutsideRam",
        SlotError::ResetOutsideSlot { .. } => "ResetOutsideSlot",
        SlotError::ResetNotThumb(_) => "ResetNotThumb",
        SlotError::Unsupported(_) => "Unsupported",
        SlotError::NotAnApplication => "NotAnApplication",
        SlotError::NotAStage1 => "NotAStage1",
        SlotError::Stage1ForOtherSlot { .. } => "Stage1ForOtherSlot",
    }
}

/// `JournalError`'s variant name (and the flash driver's, for `Flash`).
pub fn journal_error(e: &JournalError<FlashError>) -> &'static str {
    match e {
        JournalError::Flash(e) => match e {
            FlashError::OutOfBounds => "Flash(OutOfBounds)",
            FlashError::NotAligned => "Flash(NotAligned)",
            FlashError::NotSectorBoundary => "Flash(NotSectorBoundary)",
            FlashError::Bootloader => "Flash(Bootloader)",
            FlashError::NeedsErase => "Flash(NeedsErase)",
            FlashError::WriteProtected => "Flash(WriteProtected)",
            FlashError::Programming(_) => "Flash(Programming)",
            FlashError::Operation(_) => "Flash(Operation)",
            FlashError::Verify => "Flash(Verify)",
        },
        JournalError::BadRegion => "BadRegion",
        JournalError::ReadBack { .. } => "ReadBack",
        JournalError::SnapshotTooLarge { .. } => "SnapshotTooLarge",
        JournalError::SequenceExhausted => "SequenceExhausted",
    }
}

/// A record kind's name, and its slot (`Ok`) or security counter (`Err`).
pub fn record(kind: &RecordKind) -> (&'static str, Result<&'static str, u32>) {
    match *kind {
        RecordKind::Pending { slot: s } => ("Pending", Ok(slot(Some(s)))),
        RecordKind::Attempt { slot: s } => ("Attempt", Ok(slot(Some(s)))),
        RecordKind::Confirmed { slot: s } => ("Confirmed", Ok(slot(Some(s)))),
        RecordKind::Reverted { slot: s } => ("Reverted", Ok(slot(Some(s)))),
        RecordKind::Rejected { slot: s } => ("Rejected", Ok(slot(Some(s)))),
        RecordKind::SecurityCounter { value } => ("SecurityCounter", Err(value)),
        RecordKind::Stage1Pending { slot: s } => ("Stage1Pending", Ok(slot(Some(s)))),
        RecordKind::Stage1Attempt { slot: s } => ("Stage1Attempt", Ok(slot(Some(s)))),
        RecordKind::Stage1Confirmed { slot: s } => ("Stage1Confirmed", Ok(slot(Some(s)))),
        RecordKind::Stage1Reverted { slot: s } => ("Stage1Reverted", Ok(slot(Some(s)))),
        RecordKind::Stage1Rejected { slot: s } => ("Stage1Rejected", Ok(slot(Some(s)))),
        RecordKind::Stage1Floor { value } => ("Stage1Floor", Err(value)),
    }
}

/// An optional slot as "A", "B" or "-".
pub fn slot(slot: Option<fota_protocol::SlotId>) -> &'static str {
    match slot {
        Some(fota_protocol::SlotId::A) => "A",
        Some(fota_protocol::SlotId::B) => "B",
        None => "-",
    }
}
