//! Application builds as `fota sign` takes them: a raw binary (vector table first) or an ELF,
//! flattened the way `objcopy -O binary` does it.
//!
//! For an ELF, every `PT_LOAD` segment with file contents is placed at its physical (load)
//! address; gaps between segments are filled with 0xFF (erased flash), and the payload starts
//! at the lowest such address, which must be where the slot's payload starts.
//!
//! When the ELF has section headers, each segment is trimmed to the part its allocated
//! sections (`SHF_ALLOC`, not `SHT_NOBITS`) occupy, as `objcopy -O binary` (which works by
//! sections) would. This matters when the linker maps the ELF and program headers themselves
//! into the first `PT_LOAD`, below the vector table (e.g. at the slot base): those bytes are
//! not part of the application and must not become the start of the payload.

use object::elf::{FileHeader32, PT_LOAD, SHF_ALLOC, SHT_NOBITS, SHT_NULL};
use object::read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _};
use object::Endianness;

/// The ELF magic, `\x7fELF`.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Why an application build could not be turned into a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirmwareError {
    /// An ELF whose headers do not parse.
    #[error("is not a valid ELF file ({0})")]
    BadElf(String),
    /// A 64-bit ELF (fota images are for 32-bit Cortex-M).
    #[error("is a 64-bit ELF; expected a 32-bit ARM ELF")]
    Elf64,
    /// A big-endian ELF.
    #[error("is a big-endian ELF; expected a little-endian ARM ELF")]
    BigEndian,
    /// An ELF for another architecture.
    #[error("is an ELF for machine {0}, not ARM (40)")]
    NotArm(u16),
    /// An ELF without any loadable bytes.
    #[error("has no loadable segments (no PT_LOAD with file contents in an allocated section)")]
    NoLoadableSegments,
    /// Loadable segments overlap.
    #[error("has overlapping loadable segments at {0:#010x}")]
    Overlap(u32),
    /// A segment runs past the end of the 32-bit address space.
    #[error("has a segment at {0:#010x} that runs past the 32-bit address space")]
    AddressOverflow(u32),
    /// The flattened payload would be larger than allowed.
    #[error("is too large: its loadable segments span {start:#010x}..{end:#010x} ({len} bytes), more than the {max} bytes that fit")]
    TooLarge {
        /// Lowest load address.
        start: u32,
        /// One past the highest loaded byte.
        end: u64,
        /// `end - start`.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// One application build, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// The bytes to sign, vector table first.
    pub payload: Vec<u8>,
    /// For an ELF, the address the payload is linked to start at (the lowest load address).
    pub load_address: Option<u32>,
}

/// Whether `bytes` start with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(&ELF_MAGIC)
}

/// Turn a raw binary or an ELF into a payload of at most `max_len` bytes.
pub fn load(bytes: &[u8], max_len: u64) -> Result<Firmware, FirmwareError> {
    if is_elf(bytes) {
        flatten_elf(bytes, max_len)
    } else {
        Ok(Firmware {
            payload: bytes.to_vec(),
            load_address: None,
        })
    }
}

/// Flatten an ELF32 little-endian ARM file like `objcopy -O binary`, by segments.
pub fn flatten_elf(data: &[u8], max_len: u64) -> Result<Firmware, FirmwareError> {
    // e_ident[EI_CLASS] and [EI_DATA], checked first for clearer errors than a generic one.
    match data.get(4) {
        Some(1) => {}
        Some(2) => return Err(FirmwareError::Elf64),
        _ => return Err(FirmwareError::BadElf("unknown ELF class".to_owned())),
    }
    if data.get(5) == Some(&2) {
        return Err(FirmwareError::BigEndian);
    }
    let bad = |e: object::read::Error| FirmwareError::BadElf(e.to_string());
    let header = FileHeader32::<Endianness>::parse(data).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    if endian != Endianness::Little {
        return Err(FirmwareError::BigEndian);
    }
    let machine = header.e_machine(endian);
    if machine != object::elf::EM_ARM {
        return Err(FirmwareError::NotArm(machine));
    }
    // File ranges of the allocated sections with contents, if the ELF has section headers.
    let sections: Vec<(u64, u64)> = header
        .section_headers(endian, data)
        .map_err(bad)?
        .iter()
        .filter(|sh| {
            let kind = sh.sh_type(endian);
            kind != SHT_NULL
                && kind != SHT_NOBITS
                && sh.sh_flags(endian) & SHF_ALLOC != 0
                && sh.sh_size(endian) > 0
        })
        .map(|sh| {
            let start = u64::from(sh.sh_offset(endian));
            (start, start + u64::from(sh.sh_size(endian)))
        })
        .collect();
    let have_sections = header.e_shnum(endian) > 0;
    let mut segments: Vec<(u32, &[u8])> = Vec::new();
    for ph in header.program_headers(endian, data).map_err(bad)? {
        if ph.p_type(endian) != PT_LOAD || ph.p_filesz(endian) == 0 {
            continue;
        }
        let paddr = ph.p_paddr(endian);
        let bytes = ph.data(endian, data).map_err(|()| {
            FirmwareError::BadElf(format!(
                "segment at {paddr:#010x} runs past the end of the file"
            ))
        })?;
        if !have_sections {
            segments.push((paddr, bytes));
            continue;
        }
        // Trim to the allocated sections inside this segment; skip it if it holds none.
        let seg_start = u64::from(ph.p_offset(endian));
        let seg_end = seg_start + bytes.len() as u64;
        let inside = sections
            .iter()
            .filter(|(start, end)| *start >= seg_start && *end <= seg_end);
        let (Some(first), Some(last)) = (
            inside.clone().map(|(start, _)| *start).min(),
            inside.map(|(_, end)| *end).max(),
        ) else {
            continue;
        };
        let (from, to) = ((first - seg_start) as usize, (last - seg_start) as usize);
        let addr = u64::from(paddr) + (first - seg_start);
        let addr = u32::try_from(addr).map_err(|_| FirmwareError::AddressOverflow(paddr))?;
        segments.push((addr, &bytes[from..to]));
    }
    segments.sort_by_key(|(addr, _)| *addr);
    let (start, end) = match (segments.first(), segments.iter().map(seg_end).max()) {
        (Some((start, _)), Some(end)) => (*start, end),
        _ => return Err(FirmwareError::NoLoadableSegments),
    };
    if end > 1 << 32 {
        let (addr, _) = segments
            .iter()
            .find(|s| seg_end(s) > 1 << 32)
            .copied()
            .unwrap_or((start, &[]));
        return Err(FirmwareError::AddressOverflow(addr));
    }
    let len = end - u64::from(start);
    if len > max_len {
        return Err(FirmwareError::TooLarge {
            start,
            end,
            len,
            max: max_len,
        });
    }
    let mut payload = vec![0xFF; len as usize];
    let mut filled_to = u64::from(start);
    for (addr, bytes) in &segments {
        if u64::from(*addr) < filled_to {
            return Err(FirmwareError::Overlap(*addr));
        }
        let at = (u64::from(*addr) - u64::from(start)) as usize;
        payload[at..at + bytes.len()].copy_from_slice(bytes);
        filled_to = seg_end(&(*addr, bytes));
    }
    Ok(Firmware {
        payload,
        load_address: Some(start),
    })
}

fn seg_end((addr, bytes): &(u32, &[u8])) -> u64 {
    u64::from(*addr) + bytes.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF32 little-endian ARM executable with one PT_LOAD per `(paddr, bytes)`.
    fn elf(segments: &[(u32, &[u8])], machine: u16) -> Vec<u8> {
        let phoff = 52u32;
        let data_start = phoff + 32 * segments.len() as u32;
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&2u16.to_le_bytes()); // e_type EXEC
        out.extend_from_slice(&machine.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // e_version
        out.extend_from_slice(&segments.first().map_or(0, |s| s.0 + 4).to_le_bytes());
        out.extend_from_slice(&phoff.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0x0500_0200u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&52u16.to_le_bytes()); // e_ehsize
        out.extend_from_slice(&32u16.to_le_bytes()); // e_phentsize
        out.extend_from_slice(&(segments.len() as u16).to_le_bytes());
        out.extend_from_slice(&40u16.to_le_bytes()); // e_shentsize
        out.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
        out.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
        let mut offset = data_start;
        for (paddr, bytes) in segments {
            for word in [
                PT_LOAD,
                offset,
                paddr.wrapping_add(0x1000_0000), // p_vaddr differs: paddr must win
                *paddr,
                bytes.len() as u32,
                bytes.len() as u32 + 16,
                5,
                4,
            ] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            offset += bytes.len() as u32;
        }
        for (_, bytes) in segments {
            out.extend_from_slice(bytes);
        }
        out
    }

    /// An ELF as a linker may lay it out: one PT_LOAD at `base` from file offset 0, so the ELF
    /// and program headers are mapped too, with `.text` at `base + 0x200`; plus `.bss` and a
    /// non-allocated `.comment` section.
    pub(crate) fn elf_with_mapped_headers(base: u32, text: &[u8]) -> Vec<u8> {
        let text_off = 0x200u32;
        let comment = b"rustc version 1.85";
        let shoff = (text_off + text.len() as u32 + comment.len() as u32 + 3) & !3;
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&40u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(base + text_off + 1).to_le_bytes());
        out.extend_from_slice(&52u32.to_le_bytes()); // e_phoff
        out.extend_from_slice(&shoff.to_le_bytes());
        out.extend_from_slice(&0x0500_0400u32.to_le_bytes());
        out.extend_from_slice(&52u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
        out.extend_from_slice(&40u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes()); // e_shnum
        out.extend_from_slice(&0u16.to_le_bytes());
        let filesz = text_off + text.len() as u32;
        for word in [PT_LOAD, 0, base, base, filesz, filesz, 5, 0x1000] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.resize(text_off as usize, 0);
        out.extend_from_slice(text);
        out.extend_from_slice(comment);
        out.resize(shoff as usize, 0);
        let sections: [[u32; 10]; 4] = [
            [0; 10],
            // name, type PROGBITS, flags ALLOC|EXECINSTR, addr, offset, size, link, info, align, entsize
            [
                0,
                1,
                6,
                base + text_off,
                text_off,
                text.len() as u32,
                0,
                0,
                4,
                0,
            ],
            // .bss: NOBITS, ALLOC|WRITE, in RAM
            [0, SHT_NOBITS, 3, 0x2000_0000, filesz, 0x400, 0, 0, 4, 0],
            // .comment: PROGBITS, not allocated
            [0, 1, 0x30, 0, filesz, comment.len() as u32, 0, 0, 1, 1],
        ];
        for sh in sections {
            for word in sh {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn headers_mapped_below_the_vector_table_are_not_payload() {
        let text: Vec<u8> = (0..100u8).collect();
        let fw = load(&elf_with_mapped_headers(0x0802_0000, &text), 1024).unwrap();
        assert_eq!(fw.load_address, Some(0x0802_0200));
        assert_eq!(fw.payload, text);
    }

    #[test]
    fn raw_binaries_pass_through() {
        let fw = load(&[1, 2, 3, 4, 5, 6, 7, 8], 100).unwrap();
        assert_eq!(fw.payload, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(fw.load_address, None);
    }

    #[test]
    fn segments_are_placed_by_physical_address_with_ff_gaps() {
        let file = elf(&[(0x0802_0210, &[3, 4]), (0x0802_0200, &[1, 2])], 40);
        let fw = load(&file, 1024).unwrap();
        assert_eq!(fw.load_address, Some(0x0802_0200));
        let mut expected = vec![1, 2];
        expected.extend_from_slice(&[0xFF; 14]);
        expected.extend_from_slice(&[3, 4]);
        assert_eq!(fw.payload, expected);
    }

    #[test]
    fn refuses_what_cannot_be_flattened() {
        assert_eq!(
            load(&elf(&[], 40), 1024),
            Err(FirmwareError::NoLoadableSegments)
        );
        assert_eq!(
            load(&elf(&[(0x0802_0200, &[1])], 62), 1024),
            Err(FirmwareError::NotArm(62))
        );
        assert!(matches!(
            load(
                &elf(&[(0x0802_0200, &[1]), (0x2000_0000, &[2])], 40),
                0x4_0000
            ),
            Err(FirmwareError::TooLarge { .. })
        ));
        assert_eq!(
            load(
                &elf(&[(0x0802_0200, &[1, 2, 3]), (0x0802_0201, &[2])], 40),
                1024
            ),
            Err(FirmwareError::Overlap(0x0802_0201))
        );
        assert!(matches!(
            load(b"\x7fELF\x01\x01", 1024),
            Err(FirmwareError::BadElf(_))
        ));
        let mut elf64 = elf(&[(0x0802_0200, &[1])], 40);
        elf64[4] = 2;
        assert_eq!(load(&elf64, 1024), Err(FirmwareError::Elf64));
        // A segment whose bytes are not in the file.
        let mut truncated = elf(&[(0x0802_0200, &[1, 2, 3, 4])], 40);
        truncated.truncate(truncated.len() - 2);
        assert!(matches!(
            load(&truncated, 1024),
            Err(FirmwareError::BadElf(_))
        ));
    }
}
