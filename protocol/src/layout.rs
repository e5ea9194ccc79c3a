//! The STM32F429 flash map (1 MB, single bank) of DESIGN.md, and the check that an image was
//! linked for the slot it is about to run from.
//!
//! | sectors | address     | size        | use                                      |
//! |---------|-------------|-------------|------------------------------------------|
//! | 0-1     | 0x0800_0000 | 32 KB       | bootloader (write-protected)             |
//! | 2-3     | 0x0800_8000 | 2 x 16 KB   | boot-state journal (ping-pong)           |
//! | 4       | 0x0801_0000 | 64 KB       | identity, credentials, server URL        |
//! | 5-6     | 0x0802_0000 | 256 KB      | slot A                                   |
//! | 7-8     | 0x0806_0000 | 256 KB      | slot B                                   |
//! | 9       | 0x080A_0000 | 128 KB      | application data                         |
//! | 10-11   | 0x080C_0000 | 2 x 128 KB  | OTA client state (ping-pong log)         |

use crate::image::{ImageFlags, ImageHeader, VerifiedImage};
use core::fmt;
use core::str::FromStr;

/// Start of internal flash.
pub const FLASH_BASE: u32 = 0x0800_0000;
/// Size of internal flash on the 1 MB parts.
pub const FLASH_SIZE: u32 = 1024 * 1024;

/// One erase sector of the F4's mixed-size flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sector {
    /// Sector number (what FLASH_CR.SNB takes).
    pub index: u8,
    /// Absolute start address.
    pub start: u32,
    /// Size in bytes: 16, 64 or 128 KB.
    pub size: u32,
}

const KB: u32 = 1024;

/// The twelve sectors of bank 1: four of 16 KB, one of 64 KB, seven of 128 KB.
pub const SECTORS: [Sector; 12] = {
    let mut sectors = [Sector {
        index: 0,
        start: FLASH_BASE,
        size: 16 * KB,
    }; 12];
    let mut i = 1;
    while i < 12 {
        let prev = sectors[i - 1];
        sectors[i] = Sector {
            index: i as u8,
            start: prev.start + prev.size,
            size: if i < 4 {
                16 * KB
            } else if i == 4 {
                64 * KB
            } else {
                128 * KB
            },
        };
        i += 1;
    }
    sectors
};

/// The sector holding `addr`, if it is in flash.
pub fn sector_at(addr: u32) -> Option<Sector> {
    SECTORS
        .iter()
        .copied()
        .find(|s| addr >= s.start && addr - s.start < s.size)
}

/// A named range of flash made of whole sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Absolute start address.
    pub start: u32,
    /// Size in bytes.
    pub size: u32,
}

impl Partition {
    /// One past the last address.
    pub const fn end(&self) -> u32 {
        self.start + self.size
    }

    /// Whether `addr` lies inside.
    pub const fn contains(&self, addr: u32) -> bool {
        addr >= self.start && addr < self.end()
    }

    /// Bit mask of the sectors it covers (bit i = sector i), as in [`wrp_mask`](crate::messages).
    pub fn sector_mask(&self) -> u32 {
        SECTORS
            .iter()
            .filter(|s| s.start >= self.start && s.start < self.end())
            .fold(0, |mask, s| mask | 1 << s.index)
    }
}

/// Sectors 0-1: the bootloader.
pub const BOOTLOADER: Partition = Partition {
    start: 0x0800_0000,
    size: 32 * KB,
};
/// Sectors 2-3: the boot-state journal, two 16 KB halves used ping-pong.
pub const JOURNAL: Partition = Partition {
    start: 0x0800_8000,
    size: 32 * KB,
};
/// Sector 4: identity, credentials and server URL; OTA never writes it.
pub const IDENTITY: Partition = Partition {
    start: 0x0801_0000,
    size: 64 * KB,
};
/// Sectors 5-6: slot A.
pub const SLOT_A: Partition = Partition {
    start: 0x0802_0000,
    size: 256 * KB,
};
/// Sectors 7-8: slot B.
pub const SLOT_B: Partition = Partition {
    start: 0x0806_0000,
    size: 256 * KB,
};
/// Sector 9: application data (the application's own; fota never writes it).
pub const APP_DATA: Partition = Partition {
    start: 0x080A_0000,
    size: 128 * KB,
};
/// Sectors 10-11: the OTA client's state (event counter, unacknowledged events, the download
/// in progress and its offset), a log in two 128 KB sectors used ping-pong like the journal.
pub const OTA_STATE: Partition = Partition {
    start: 0x080C_0000,
    size: 256 * KB,
};

/// SRAM1+SRAM2+SRAM3 of the F429 (112 + 16 + 64 KB, contiguous).
pub const SRAM: Partition = Partition {
    start: 0x2000_0000,
    size: 192 * KB,
};
/// Core-coupled memory (64 KB, data only).
pub const CCM_RAM: Partition = Partition {
    start: 0x1000_0000,
    size: 64 * KB,
};

/// One of the two application slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum SlotId {
    /// 0x0802_0000.
    A,
    /// 0x0806_0000.
    B,
}

impl SlotId {
    /// Both slots, A first.
    pub const ALL: [SlotId; 2] = [SlotId::A, SlotId::B];

    /// Its partition.
    pub const fn partition(self) -> Partition {
        match self {
            SlotId::A => SLOT_A,
            SlotId::B => SLOT_B,
        }
    }

    /// The other slot.
    pub const fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }

    /// The slot whose partition holds `addr`.
    pub fn containing(addr: u32) -> Option<SlotId> {
        Self::ALL.into_iter().find(|s| s.partition().contains(addr))
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotId::A => "A",
            SlotId::B => "B",
        })
    }
}

/// Not `a` or `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid slot (expected a or b)")]
pub struct SlotParseError;

impl FromStr for SlotId {
    type Err = SlotParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" | "A" => Ok(SlotId::A),
            "b" | "B" => Ok(SlotId::B),
            _ => Err(SlotParseError),
        }
    }
}

/// Why an image may not run from a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The image is larger than the slot.
    #[error("image is {len} bytes, larger than slot {slot} ({size} bytes)")]
    TooLarge {
        /// The slot.
        slot: SlotId,
        /// Image length.
        len: u32,
        /// Slot size.
        size: u32,
    },
    /// The header says the image is linked for another address (ROM_FIXED load_addr).
    #[error("image is linked for {load_addr:#010x}, not slot {slot} at {slot_start:#010x}")]
    WrongLoadAddress {
        /// The slot.
        slot: SlotId,
        /// Its start.
        slot_start: u32,
        /// `ih_load_addr`.
        load_addr: u32,
    },
    /// The vector table would not sit on a 512-byte boundary, so VTOR could not point at it.
    #[error("header size {0:#x} leaves the vector table off VTOR's 512-byte alignment")]
    MisalignedVectorTable(u16),
    /// The payload is too short to hold a vector table.
    #[error("payload too short for a vector table")]
    NoVectorTable,
    /// The initial stack pointer is not in RAM.
    #[error("initial stack pointer {0:#010x} is not in RAM")]
    StackOutsideRam(u32),
    /// The reset vector points outside the slot's payload.
    #[error("reset vector {reset:#010x} is outside slot {slot}")]
    ResetOutsideSlot {
        /// The slot.
        slot: SlotId,
        /// The reset vector.
        reset: u32,
    },
    /// The reset vector lacks the Thumb bit: jumping there would hard-fault.
    #[error("reset vector {0:#010x} lacks the Thumb bit")]
    ResetNotThumb(u32),
    /// The image needs a feature XIP from a slot cannot provide.
    #[error("unsupported image: {0}")]
    Unsupported(&'static str),
}

/// VTOR on a Cortex-M4 with the F429's 107 vectors needs 512-byte alignment.
pub const VTOR_ALIGN: u32 = 512;

/// Check that an image can execute in place from `slot`: it fits, its header is not for another
/// address, and its vector table (at `slot + hdr_size`) has an initial SP in RAM and a Thumb reset
/// handler inside the slot's payload. The bootloader runs this before every jump; the server and
/// `fota sign` run it so a mislinked build never ships.
pub fn check_image_for_slot(
    header: &ImageHeader,
    total_len: u32,
    vector_table: Option<[u32; 2]>,
    slot: SlotId,
) -> Result<(), SlotError> {
    let part = slot.partition();
    if total_len > part.size {
        return Err(SlotError::TooLarge {
            slot,
            len: total_len,
            size: part.size,
        });
    }
    if let Some(what) = header.flags.unsupported() {
        return Err(SlotError::Unsupported(what));
    }
    if header.flags.contains(ImageFlags::ROM_FIXED) && header.load_addr != part.start {
        return Err(SlotError::WrongLoadAddress {
            slot,
            slot_start: part.start,
            load_addr: header.load_addr,
        });
    }
    if u32::from(header.hdr_size) % VTOR_ALIGN != 0 {
        return Err(SlotError::MisalignedVectorTable(header.hdr_size));
    }
    let [sp, reset] = vector_table.ok_or(SlotError::NoVectorTable)?;
    // The stack grows down from the initial SP, so its first push lands below it: the top of RAM
    // itself (one past the end) is the usual value.
    let sp_ok = |r: Partition| sp > r.start && sp <= r.end();
    if !(sp_ok(SRAM) || sp_ok(CCM_RAM)) || sp % 4 != 0 {
        return Err(SlotError::StackOutsideRam(sp));
    }
    if reset & 1 == 0 {
        return Err(SlotError::ResetNotThumb(reset));
    }
    let entry = reset & !1;
    let payload_start = part.start + u32::from(header.hdr_size);
    let payload_end = payload_start.saturating_add(header.img_size);
    if entry < payload_start || entry >= payload_end || entry >= part.end() {
        return Err(SlotError::ResetOutsideSlot { slot, reset });
    }
    Ok(())
}

/// [`check_image_for_slot`] for a verified image.
pub fn check_verified_for_slot(image: &VerifiedImage, slot: SlotId) -> Result<(), SlotError> {
    check_image_for_slot(&image.header, image.total_len, image.vector_table, slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageVersion;

    #[test]
    fn sector_map_matches_the_f429_reference_manual() {
        assert_eq!(SECTORS[4].start, 0x0801_0000);
        assert_eq!(SECTORS[5].start, 0x0802_0000);
        assert_eq!(SECTORS[7].start, 0x0806_0000);
        assert_eq!(SECTORS[9].start, 0x080A_0000);
        assert_eq!(
            SECTORS[11].start + SECTORS[11].size,
            FLASH_BASE + FLASH_SIZE
        );
        let total: u32 = SECTORS.iter().map(|s| s.size).sum();
        assert_eq!(total, FLASH_SIZE);
    }

    #[test]
    fn partitions_tile_flash_on_sector_boundaries() {
        let parts = [
            BOOTLOADER, JOURNAL, IDENTITY, SLOT_A, SLOT_B, APP_DATA, OTA_STATE,
        ];
        let mut at = FLASH_BASE;
        for p in parts {
            assert_eq!(p.start, at, "gap or overlap before {p:?}");
            assert_eq!(sector_at(p.start).map(|s| s.start), Some(p.start));
            at = p.end();
        }
        assert_eq!(at, FLASH_BASE + FLASH_SIZE);
        assert_eq!(SLOT_A.sector_mask(), 0b0110_0000);
        assert_eq!(SLOT_B.sector_mask(), 0b1_1000_0000);
        assert_eq!(BOOTLOADER.sector_mask(), 0b11);
        assert_eq!(OTA_STATE.sector_mask(), 0b1100_0000_0000);
        assert_eq!(sector_at(0x0810_0000), None);
        assert_eq!(sector_at(0x0807_ffff).map(|s| s.index), Some(7));
    }

    fn header(slot: SlotId) -> ImageHeader {
        ImageHeader {
            load_addr: slot.partition().start,
            hdr_size: 0x200,
            protect_tlv_size: 0,
            img_size: 4096,
            flags: ImageFlags(ImageFlags::ROM_FIXED),
            version: ImageVersion::new(1, 0, 0, 0),
        }
    }

    #[test]
    fn vector_table_must_point_into_its_slot() {
        let a = header(SlotId::A);
        let ok = Some([0x2003_0000, 0x0802_0201 + 0x100]);
        assert_eq!(check_image_for_slot(&a, 5000, ok, SlotId::A), Ok(()));
        // The same build run from B: the header says A.
        assert!(matches!(
            check_image_for_slot(&a, 5000, ok, SlotId::B),
            Err(SlotError::WrongLoadAddress { .. })
        ));
        // Without ROM_FIXED, the reset vector still gives it away.
        let mut loose = a;
        loose.flags = ImageFlags(0);
        loose.load_addr = 0;
        assert!(matches!(
            check_image_for_slot(&loose, 5000, ok, SlotId::B),
            Err(SlotError::ResetOutsideSlot { .. })
        ));
        assert_eq!(
            check_image_for_slot(&a, 5000, Some([0x0800_0000, 0x0802_0301]), SlotId::A),
            Err(SlotError::StackOutsideRam(0x0800_0000))
        );
        assert_eq!(
            check_image_for_slot(&a, 5000, Some([0x2000_1000, 0x0802_0300]), SlotId::A),
            Err(SlotError::ResetNotThumb(0x0802_0300))
        );
        // Reset into the header, or past the payload.
        for reset in [0x0802_0101, 0x0802_0200 + 4096 + 1] {
            assert!(matches!(
                check_image_for_slot(&a, 5000, Some([0x2000_1000, reset]), SlotId::A),
                Err(SlotError::ResetOutsideSlot { .. })
            ));
        }
        assert_eq!(
            check_image_for_slot(&a, 5000, None, SlotId::A),
            Err(SlotError::NoVectorTable)
        );
        assert!(matches!(
            check_image_for_slot(&a, 256 * 1024 + 1, ok, SlotId::A),
            Err(SlotError::TooLarge { .. })
        ));
        let mut small_header = a;
        small_header.hdr_size = 0x20;
        assert_eq!(
            check_image_for_slot(&small_header, 5000, ok, SlotId::A),
            Err(SlotError::MisalignedVectorTable(0x20))
        );
        let mut encrypted = a;
        encrypted.flags = ImageFlags(ImageFlags::ROM_FIXED | ImageFlags::ENCRYPTED_AES128);
        assert!(matches!(
            check_image_for_slot(&encrypted, 5000, ok, SlotId::A),
            Err(SlotError::Unsupported(_))
        ));
    }

    #[test]
    fn slot_ids_parse_and_print() {
        assert_eq!("a".parse(), Ok(SlotId::A));
        assert_eq!("B".parse(), Ok(SlotId::B));
        assert_eq!("c".parse::<SlotId>(), Err(SlotParseError));
        assert_eq!(SlotId::A.other(), SlotId::B);
        assert_eq!(SlotId::containing(0x0806_0200), Some(SlotId::B));
        assert_eq!(SlotId::containing(0x0801_0000), None);
    }
}
