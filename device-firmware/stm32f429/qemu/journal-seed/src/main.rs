//! `fota-journal-seed OUT [RECORD ...]`: write the two boot-journal sectors (32 KB, to load at
//! 0x0800_8000) holding RECORDs, appended in order with `fota_boot::BootJournal` over an
//! in-memory flash, exactly as a device would have appended them.
//!
//! RECORD is `pending:a|b`, `attempt:a|b`, `confirmed:a|b`, `reverted:a|b`, `rejected:a|b` or
//! `counter:N` (SecurityCounter). No RECORD: an erased journal (all 0xFF), the factory state.
//! The replayed state is printed to stderr.

use fota_boot::journal::{BootJournal, JournalRegion, RecordKind};
use fota_boot::testing::MemFlash;
use fota_protocol::SlotId;
use std::process::ExitCode;

const SECTOR: u32 = 16 * 1024;

fn parse(arg: &str) -> Option<RecordKind> {
    let (kind, value) = arg.split_once(':')?;
    let slot = match value {
        "a" | "A" => Some(SlotId::A),
        "b" | "B" => Some(SlotId::B),
        _ => None,
    };
    Some(match kind {
        "pending" => RecordKind::Pending { slot: slot? },
        "attempt" => RecordKind::Attempt { slot: slot? },
        "confirmed" => RecordKind::Confirmed { slot: slot? },
        "reverted" => RecordKind::Reverted { slot: slot? },
        "rejected" => RecordKind::Rejected { slot: slot? },
        "counter" => RecordKind::SecurityCounter {
            value: value.parse().ok()?,
        },
        "s1pending" => RecordKind::Stage1Pending { slot: slot? },
        "s1attempt" => RecordKind::Stage1Attempt { slot: slot? },
        "s1confirmed" => RecordKind::Stage1Confirmed { slot: slot? },
        "s1reverted" => RecordKind::Stage1Reverted { slot: slot? },
        "s1rejected" => RecordKind::Stage1Rejected { slot: slot? },
        "s1floor" => RecordKind::Stage1Floor {
            value: value.parse().ok()?,
        },
        _ => return None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, records)) = args.split_first() else {
        eprintln!("usage: fota-journal-seed OUT [[s1]pending|attempt|confirmed|reverted|rejected:a|b | counter:N | s1floor:N] ...");
        return ExitCode::from(2);
    };
    // The F429's journal: sectors 2 and 3, here at offsets 0 and 16 KB of a 32 KB image.
    let region = JournalRegion {
        sectors: [0, SECTOR],
        sector_size: SECTOR,
    };
    assert_eq!(
        region.sector_size,
        JournalRegion::STM32F429.sector_size,
        "the board's journal sectors changed size"
    );
    let flash = MemFlash::with_size(2 * SECTOR as usize);
    let mut journal = match BootJournal::open(flash, region) {
        Ok(journal) => journal,
        Err(e) => {
            eprintln!("fota-journal-seed: {e}");
            return ExitCode::FAILURE;
        }
    };
    for arg in records {
        let Some(kind) = parse(arg) else {
            eprintln!("fota-journal-seed: not a record: {arg:?}");
            return ExitCode::from(2);
        };
        if let Err(e) = journal.append(kind) {
            eprintln!("fota-journal-seed: appending {kind:?}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let bytes = journal.into_flash().bytes;
    // Read it back as the bootloader will.
    let mut back = MemFlash::with_size(bytes.len());
    back.bytes.clone_from(&bytes);
    let state = match BootJournal::open(back, region) {
        Ok(journal) => *journal.state(),
        Err(e) => {
            eprintln!("fota-journal-seed: reading back: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "journal seed {out}: confirmed {:?}, pending {:?}, attempts {}, security counter {}",
        state.confirmed(),
        state.pending(),
        state.attempts(),
        state.security_counter()
    );
    if let Err(e) = std::fs::write(out, &bytes) {
        eprintln!("fota-journal-seed: {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
