//! The STM32F429 flash map (1 MB, single bank), one table ([`MAP`]) that the constants below,
//! the board's linker scripts (their `build.rs` files generate `memory.x` from it) and the tests
//! are all checked against. Whether an image was linked for the slot it is about to run from is
//! `crate::image`'s check, against this map (`image::placement`).
//!
//! | sectors | address     | size            | use                                              |
//! |---------|-------------|-----------------|--------------------------------------------------|
//! | 0-1     | 0x0800_0000 | 32 KB - 512 B   | stage-0 (WRP at the factory, never updated)      |
//! | 1       | 0x0800_7E00 | 512 B           | identity: id, token, server URL (factory only)   |
//! | 2-3     | 0x0800_8000 | 2 x 16 KB       | boot-state journal (ping-pong)                   |
//! | 4       | 0x0801_0000 | 64 KB           | stage-1 slot A                                   |
//! | 5-6     | 0x0802_0000 | 256 KB          | slot A                                           |
//! | 7-8     | 0x0806_0000 | 256 KB          | slot B                                           |
//! | 9       | 0x080A_0000 | 128 KB          | stage-1 slot B (a 64 KB image budget, like A)    |
//! | 10-11   | 0x080C_0000 | 2 x 128 KB      | OTA client state (ping-pong log)                 |

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

/// One row of the flash map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// The name the constants, the linker scripts and the docs use.
    pub name: &'static str,
    /// Where it is.
    pub part: Partition,
    /// First and last erase sector it lies in.
    pub sectors: [u8; 2],
}

/// The flash map: every byte of flash belongs to exactly one row, in address order. The
/// constants below are its rows; `build.rs` of each board binary writes its `memory.x` from the
/// row it links into (through [`linker_origin`]), and the tests check the rows tile flash on the
/// sector boundaries each one needs.
pub const MAP: [MapEntry; 8] = [
    MapEntry {
        name: "stage0",
        part: Partition {
            start: 0x0800_0000,
            size: 32 * KB - IDENTITY_SIZE,
        },
        sectors: [0, 1],
    },
    MapEntry {
        name: "identity",
        part: Partition {
            start: 0x0800_8000 - IDENTITY_SIZE,
            size: IDENTITY_SIZE,
        },
        sectors: [1, 1],
    },
    MapEntry {
        name: "journal",
        part: Partition {
            start: 0x0800_8000,
            size: 32 * KB,
        },
        sectors: [2, 3],
    },
    MapEntry {
        name: "stage1_a",
        part: Partition {
            start: 0x0801_0000,
            size: 64 * KB,
        },
        sectors: [4, 4],
    },
    MapEntry {
        name: "slot_a",
        part: Partition {
            start: 0x0802_0000,
            size: 256 * KB,
        },
        sectors: [5, 6],
    },
    MapEntry {
        name: "slot_b",
        part: Partition {
            start: 0x0806_0000,
            size: 256 * KB,
        },
        sectors: [7, 8],
    },
    MapEntry {
        name: "stage1_b",
        part: Partition {
            start: 0x080A_0000,
            size: 128 * KB,
        },
        sectors: [9, 9],
    },
    MapEntry {
        name: "ota_state",
        part: Partition {
            start: 0x080C_0000,
            size: 256 * KB,
        },
        sectors: [10, 11],
    },
];

/// The identity record's area: the last 512 bytes of sector 1.
const IDENTITY_SIZE: u32 = 512;

/// Sectors 0-1 less the identity: stage-0, written and write-protected (WRP) at the factory,
/// never updated.
pub const STAGE0: Partition = MAP[0].part;
/// The last 512 bytes of sector 1: identity, credentials and server URL, written at the factory
/// with stage-0 before WRP goes on; OTA never writes it.
pub const IDENTITY: Partition = MAP[1].part;
/// Sectors 0-1 whole (stage-0 and the identity): what WRP protects at the factory, and what the
/// board's flash driver refuses to program or erase.
pub const FACTORY: Partition = Partition {
    start: STAGE0.start,
    size: 32 * KB,
};
/// Sectors 2-3: the boot-state journal, two 16 KB halves used ping-pong. It also holds
/// stage-0's records about the stage-1 slots.
pub const JOURNAL: Partition = MAP[2].part;
/// Sector 4: stage-1 slot A.
pub const STAGE1_A: Partition = MAP[3].part;
/// Sectors 5-6: slot A.
pub const SLOT_A: Partition = MAP[4].part;
/// Sectors 7-8: slot B.
pub const SLOT_B: Partition = MAP[5].part;
/// Sector 9: stage-1 slot B (128 KB erased as one, holding an image of at most
/// [`STAGE1_IMAGE_MAX`] like slot A).
pub const STAGE1_B: Partition = MAP[6].part;
/// Sectors 10-11: the OTA client's state (event counter, unacknowledged events, the download
/// in progress and its offset), a log in two 128 KB sectors used ping-pong like the journal.
pub const OTA_STATE: Partition = MAP[7].part;

/// The image header every slot's image starts with (imgtool `--header-size 0x200
/// --pad-header`): the vector table follows it, so VTOR's 512-byte alignment holds.
pub const IMAGE_HEADER_SIZE: u16 = 0x200;

/// The largest stage-1 image (header, code and TLVs): stage-1 slot A's sector. Stage-1 B's
/// sector is larger, but one release carries a build for each slot and both must fit.
pub const STAGE1_IMAGE_MAX: u32 = 64 * KB;

/// The origin and length a binary linked into map row `name` gets in its `memory.x`: stage-0
/// at the row's start and size; a stage-1 or an application after its 0x200-byte image header,
/// up to the end of its image budget. `None` for a row nothing is linked into.
pub fn linker_origin(name: &str) -> Option<(u32, u32)> {
    let header = u32::from(IMAGE_HEADER_SIZE);
    let row = MAP.iter().find(|row| row.name == name)?;
    let p = row.part;
    match name {
        "stage0" => Some((p.start, p.size)),
        "stage1_a" | "stage1_b" => Some((p.start + header, STAGE1_IMAGE_MAX - header)),
        "slot_a" | "slot_b" => Some((p.start + header, p.size - header)),
        _ => None,
    }
}

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

    /// Its stage-1 partition: the same letter names a stage-1 slot (stage-1 A in sector 4,
    /// stage-1 B in sector 9) in stage-0's records and in the COMPONENT TLV.
    pub const fn stage1_partition(self) -> Partition {
        match self {
            SlotId::A => STAGE1_A,
            SlotId::B => STAGE1_B,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_map_tiles_flash_on_sector_boundaries() {
        let mut at = FLASH_BASE;
        for row in MAP {
            let p = row.part;
            assert_eq!(p.start, at, "gap or overlap before {row:?}");
            let [first, last] = row.sectors;
            assert_eq!(sector_at(p.start).map(|s| s.index), Some(first), "{row:?}");
            assert_eq!(
                sector_at(p.end() - 1).map(|s| s.index),
                Some(last),
                "{row:?}"
            );
            at = p.end();
        }
        assert_eq!(at, FLASH_BASE + FLASH_SIZE);
        // Everything OTA erases is whole sectors of its own: each stage-1 slot, each application
        // slot, the journal and the OTA state can be erased without touching anything else.
        for p in [STAGE1_A, STAGE1_B, SLOT_A, SLOT_B, JOURNAL, OTA_STATE] {
            assert_eq!(sector_at(p.start).map(|s| s.start), Some(p.start));
            assert_eq!(
                sector_at(p.end()).map_or(FLASH_BASE + FLASH_SIZE, |s| s.start),
                p.end()
            );
        }
        // Stage-0 and the identity share sectors 0-1, which only the factory writes.
        assert_eq!(FACTORY.sector_mask(), 0b11);
        assert_eq!(STAGE0.sector_mask(), 0b11);
        assert_eq!(IDENTITY.start, 0x0800_7E00);
        assert!(FACTORY.contains(IDENTITY.start) && FACTORY.end() == IDENTITY.end());
        assert_eq!(STAGE1_A.sector_mask(), 0b1_0000);
        assert_eq!(STAGE1_B.sector_mask(), 0b10_0000_0000);
        assert_eq!(SLOT_A.sector_mask(), 0b0110_0000);
        assert_eq!(SLOT_B.sector_mask(), 0b1_1000_0000);
        assert_eq!(OTA_STATE.sector_mask(), 0b1100_0000_0000);
        // The application slots stay where the fleet's images are linked.
        assert_eq!((SLOT_A.start, SLOT_B.start), (0x0802_0000, 0x0806_0000));
        // Both stage-1 slots hold the same largest image.
        const { assert!(STAGE1_IMAGE_MAX <= STAGE1_A.size && STAGE1_IMAGE_MAX <= STAGE1_B.size) };
        // The largest identity record (protocol/src/identity.rs) fits its 512 bytes.
        const { assert!(crate::identity::MAX_RECORD_LEN <= IDENTITY.size as usize) };
        assert_eq!(sector_at(0x0810_0000), None);
        assert_eq!(sector_at(0x0807_ffff).map(|s| s.index), Some(7));
    }

    #[test]
    fn slot_ids_parse_and_print() {
        assert_eq!("a".parse(), Ok(SlotId::A));
        assert_eq!("B".parse(), Ok(SlotId::B));
        assert_eq!("c".parse::<SlotId>(), Err(SlotParseError));
        assert_eq!(SlotId::A.other(), SlotId::B);
        assert_eq!(SlotId::containing(0x0806_0200), Some(SlotId::B));
        assert_eq!(SlotId::containing(0x0801_0000), None);
        assert_eq!(SlotId::B.stage1_partition().start, 0x080A_0000);
    }

    /// Every `memory*.x` of the board's binaries links where [`linker_origin`] says for the map
    /// row it names in its first line, and no longer than that row's budget.
    #[test]
    fn linker_scripts_match_the_map() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../device-firmware/stm32f429");
        let scripts = [
            ("stage0", "stage0/memory.x"),
            ("stage1_a", "bootloader/memory-stage1-a.x"),
            ("stage1_b", "bootloader/memory-stage1-b.x"),
            ("slot_a", "app/memory-slot-a.x"),
            ("slot_b", "app/memory-slot-b.x"),
            ("slot_a", "demo-app/memory-slot-a.x"),
            ("slot_b", "demo-app/memory-slot-b.x"),
        ];
        for (row, file) in scripts {
            let path = format!("{dir}/{file}");
            let Ok(text) = std::fs::read_to_string(&path) else {
                panic!("{path} is missing");
            };
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with("FLASH"))
                .unwrap_or_else(|| panic!("{path}: no FLASH line"));
            let origin = field(line, "ORIGIN");
            let length = field(line, "LENGTH");
            let (want_origin, budget) = linker_origin(row).unwrap();
            assert_eq!(origin, want_origin, "{path}: ORIGIN");
            assert!(length <= budget, "{path}: LENGTH {length} over {budget}");
            assert!(
                length + 1024 >= budget,
                "{path}: LENGTH {length} far below {budget}"
            );
        }
        assert_eq!(linker_origin("identity"), None);
    }

    /// `ORIGIN = 0x08000000` or `LENGTH = 32K - 0x200 - 1K` evaluated.
    fn field(line: &str, name: &str) -> u32 {
        let rest = &line[line.find(name).unwrap() + name.len()..];
        let expr = rest.trim_start().trim_start_matches('=');
        let expr = expr.split(',').next().unwrap();
        let mut total: i64 = 0;
        let mut sign = 1;
        for tok in expr.split_whitespace() {
            match tok {
                "+" => sign = 1,
                "-" => sign = -1,
                t => {
                    let v = if let Some(h) = t.strip_prefix("0x") {
                        i64::from_str_radix(h, 16).unwrap()
                    } else if let Some(k) = t.strip_suffix('K') {
                        k.parse::<i64>().unwrap() * 1024
                    } else {
                        t.parse().unwrap()
                    };
                    total += sign * v;
                }
            }
        }
        u32::try_from(total).unwrap()
    }
}
