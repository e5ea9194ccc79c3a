//! [`FlashPersist`]: the client's [`PersistedState`] in two flash sectors, as an append-only
//! log of CRC-protected records, power-cut safe by the same commit rule as the boot journal.
//!
//! Each [`Change`] is one record appended after the last one:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0F 7A` |
//! | 2 | 1 | kind: 1 Commit, 2 Event, 3 Acked, 4 Installed, 5 NotInstalled, 6 Download, 7 NoDownload, 8 Progress, 9 NextEventId, 10 Running, 11 Fault, 12 FaultTaken, 13 CheckpointPart, 14 Checkpoint |
//! | 3 | 1 | payload length n |
//! | 4 | n, padded to 4 | payload (little-endian integers) |
//! | 4 + pad(n) | 4 | CRC-32 (ISO-HDLC) of everything before it |
//!
//! `Installed` and `Download` name their component by one trailing payload byte, 1 =
//! bootloader, written only for a bootloader: a record without it (every record written before
//! stage-1 installs existed) is an application's, so older logs replay unchanged.
//!
//! **A delta patch's checkpoint** (`fota_delta`'s 1,317-byte record, [`Change::Checkpoint`]) is
//! longer than a record's payload, so it is an entry of [`CHECKPOINT_PARTS`] `CheckpointPart`
//! records (payload: the part's index, then the next [`CHECKPOINT_PART`] bytes of the record,
//! the last part shorter), written in order, then one `Checkpoint` record that commits them
//! (payload: the patch's address, size and base digest, the target bytes written, the
//! container bytes applied, and the rebuilt bytes not yet programmed, less than a write unit:
//! a length and 8 bytes; 85 bytes). Replay takes a checkpoint only at its `Checkpoint`
//! record, and only if the parts right before it are all there, in order; until then the
//! checkpoint before stands (a cut in the middle of an entry leaves a torn part, which ends the
//! replay like any torn record, and the next write compacts). The checkpoint belongs to the
//! download: a `Download` or `NoDownload` record drops it. The bytes stay in flash (the client
//! reads them with [`Persist::load_checkpoint`] when it resumes); a compaction copies the last
//! entry's records into the new sector. Logs written before checkpoints existed have neither
//! kind and replay as before.
//!
//! Records are whole 32-bit words, programmed in order, so a power cut leaves at most the last
//! record torn; a torn record fails its CRC and ends the replay, and the next write compacts
//! (nothing is ever appended after a record that did not verify).
//!
//! **Commit rule.** The first record of each sector is its commit record (kind 1, payload: the
//! sector's generation); a sector counts only if that record is valid, and the state is the
//! replay of the committed sector with the higher generation. To compact (the active sector is
//! full, or ends in a torn record), the store erases the other sector, writes the whole state
//! as records after the commit slot, reads them back, and writes the commit record last. Until
//! that last write lands, the old sector is the newest committed one; after it, the new one
//! replays to the same state plus the change being recorded.
//!
//! On the board the two sectors are 10 and 11 (2 x 128 KB, [`OTA_STATE`]): a full state is
//! about 2.5 KB (4 KB with a patch's checkpoint), a download writes one `Progress` record (12
//! bytes) per few KB and a patch a checkpoint entry (1,544 bytes) per 4 KB of patch, so a
//! sector takes several updates between erases.
//!
//! **Faults.** The board's hard fault handler appends a `Fault` record (32 bytes of payload:
//! the faulting image's version and uptime, PC, LR, CFSR, HFSR and the faulting address) with
//! [`FlashPersist::append_fault`]: it finds the end of the active sector by reading the log (it
//! trusts nothing in RAM), and only appends, after a clean end and where the record fits; it
//! never erases or compacts, which would take seconds in a fault handler and rewrite state it
//! cannot trust. Otherwise it writes nothing, and the handler leaves the reset to the watchdog
//! (reported as a watchdog reset: still unexpected). The next boot reports the fault and
//! appends `FaultTaken`, so it is reported once; compaction keeps a fault not yet taken.
//!
//! [`OTA_STATE`]: fota_protocol::layout::OTA_STATE

use crate::persist::{
    Change, FaultRecord, Installed, Persist, PersistedState, Running, SavedCheckpoint,
    CHECKPOINT_LEN, CHECKPOINT_TAIL,
};
use embedded_storage::nor_flash::NorFlash;
use fota_protocol::image::{Digest, ImageVersion};
use fota_protocol::layout::{FLASH_BASE, OTA_STATE};
use fota_protocol::messages::{
    Component, Event, EventKind, Offer, PatchOffer, Reason, ResetCause, ResetInfo,
};
use fota_protocol::SlotId;

const MAGIC: [u8; 2] = [0x0F, 0x7A];
const HEADER: usize = 4;
const CRC_LEN: usize = 4;
/// The largest payload (an event with the longest reason and a reset's detail).
const MAX_PAYLOAD: usize = 8 + 1 + 1 + 8 + 8 + 1 + 96 + 5;
const MAX_RECORD: usize = HEADER + MAX_PAYLOAD.next_multiple_of(4) + CRC_LEN;
/// The commit record: header, generation, CRC.
const COMMIT_LEN: u32 = (HEADER + 4 + CRC_LEN) as u32;
/// Bytes of a patch checkpoint's record in each `CheckpointPart` record (after its index byte).
pub const CHECKPOINT_PART: usize = 120;
/// `CheckpointPart` records in a checkpoint entry.
pub const CHECKPOINT_PARTS: usize = CHECKPOINT_LEN.div_ceil(CHECKPOINT_PART);
/// A `Checkpoint` record's payload: patch address, size, base digest, written, fetched, the
/// tail's length and the tail (8 bytes, zero past its length).
const CHECKPOINT_SUMMARY: usize = 32 + 4 + 32 + 4 + 4 + 1 + CHECKPOINT_TAIL;
// A part's index byte and its bytes, and a commit, each fit one record.
const _: () = assert!(CHECKPOINT_PART < MAX_PAYLOAD && CHECKPOINT_SUMMARY <= MAX_PAYLOAD);

const CRC32: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

mod kind {
    pub const COMMIT: u8 = 1;
    pub const EVENT: u8 = 2;
    pub const ACKED: u8 = 3;
    pub const INSTALLED: u8 = 4;
    pub const NOT_INSTALLED: u8 = 5;
    pub const DOWNLOAD: u8 = 6;
    pub const NO_DOWNLOAD: u8 = 7;
    pub const PROGRESS: u8 = 8;
    pub const NEXT_EVENT_ID: u8 = 9;
    pub const RUNNING: u8 = 10;
    pub const FAULT: u8 = 11;
    pub const FAULT_TAKEN: u8 = 12;
    pub const CHECKPOINT_PART: u8 = 13;
    pub const CHECKPOINT: u8 = 14;
}

/// Where the store's two sectors are, in the flash driver's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreRegion {
    /// Offset of the first sector; the second follows it.
    pub start: u32,
    /// Size of each sector (a whole erase unit of the flash).
    pub sector_size: u32,
}

impl StoreRegion {
    /// Sectors 10-11 of the STM32F429, as offsets from 0x0800_0000.
    pub const STM32F429: StoreRegion = StoreRegion {
        start: OTA_STATE.start - FLASH_BASE,
        sector_size: OTA_STATE.size / 2,
    };

    fn sector(&self, index: usize) -> u32 {
        self.start + index as u32 * self.sector_size
    }
}

/// Why [`FlashPersist::append_fault`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAppendError<E> {
    /// No sector is committed yet (a device that never recorded anything).
    NoLog,
    /// The log ends in a torn or unreadable record: nothing may be appended after it.
    TornEnd,
    /// The active sector has no room left (only a compaction, which a fault handler does not
    /// do, would make some).
    Full,
    /// The flash driver failed, or the record did not read back.
    Store(StoreError<E>),
}

/// Why the store could not record a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError<E> {
    /// The flash driver failed.
    Flash(E),
    /// What was written did not read back (the record or commit is not in flash).
    Verify,
}

/// The persisted state in flash. See the [module docs](self).
#[derive(Debug)]
pub struct FlashPersist<F> {
    flash: F,
    region: StoreRegion,
    /// The active sector and its generation; `None` while nothing was ever committed.
    active: Option<(usize, u32)>,
    /// Where the next record goes in the active sector.
    end: u32,
    /// The bytes at `end` read as erased (not a torn record): appending there is safe.
    clean: bool,
    /// Where the active sector's last committed checkpoint entry starts (its first part), while
    /// the download it belongs to goes on.
    checkpoint_at: Option<u32>,
    /// The active sector holds checkpoint records (committed or not). When the download ends the
    /// log is compacted without them, so that an image built before they existed, whose replay
    /// stops at a record kind it does not know, reads the whole log after it boots (a fleet
    /// rollback to such a release follows a patch download).
    holds_checkpoints: bool,
}

/// A record's bytes, ready to program.
struct Record {
    bytes: [u8; MAX_RECORD],
    len: usize,
}

impl Record {
    fn new(kind: u8, payload: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_RECORD];
        bytes[..2].copy_from_slice(&MAGIC);
        bytes[2] = kind;
        bytes[3] = payload.len() as u8;
        bytes[HEADER..HEADER + payload.len()].copy_from_slice(payload);
        let body = HEADER + payload.len().next_multiple_of(4);
        let crc = CRC32.checksum(&bytes[..body]);
        bytes[body..body + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        Self {
            bytes,
            len: body + CRC_LEN,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A little-endian payload writer.
struct Payload {
    bytes: [u8; MAX_PAYLOAD],
    len: usize,
}

impl Payload {
    fn new() -> Self {
        Self {
            bytes: [0; MAX_PAYLOAD],
            len: 0,
        }
    }
    fn put(&mut self, b: &[u8]) -> &mut Self {
        self.bytes[self.len..self.len + b.len()].copy_from_slice(b);
        self.len += b.len();
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.put(&[v])
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }
    fn record(&self, kind: u8) -> Record {
        Record::new(kind, &self.bytes[..self.len])
    }
}

/// A little-endian payload reader; `None` once it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
}

fn pack_version(v: ImageVersion) -> u64 {
    u64::from(v.major) << 56
        | u64::from(v.minor) << 48
        | u64::from(v.revision) << 32
        | u64::from(v.build)
}

fn unpack_version(p: u64) -> ImageVersion {
    ImageVersion::new((p >> 56) as u8, (p >> 48) as u8, (p >> 32) as u16, p as u32)
}

fn slot_code(slot: SlotId) -> u8 {
    match slot {
        SlotId::A => 0,
        SlotId::B => 1,
    }
}

fn slot_from(code: u8) -> Option<SlotId> {
    match code {
        0 => Some(SlotId::A),
        1 => Some(SlotId::B),
        _ => None,
    }
}

/// The trailing component byte of `Installed` and `Download`: none for an application (so an
/// application's record is what it was before bootloaders), 1 for a bootloader.
fn put_component(p: &mut Payload, component: Component) -> &mut Payload {
    match component {
        Component::Application => p,
        Component::Bootloader => p.u8(1),
    }
}

/// The inverse of [`put_component`], at the end of a payload: nothing left is an application,
/// one byte 1 a bootloader, anything else does not decode.
fn component_from(r: &mut Reader<'_>) -> Option<Component> {
    match r.0 {
        [] => Some(Component::Application),
        [1] => {
            r.0 = &[];
            Some(Component::Bootloader)
        }
        _ => None,
    }
}

/// A reset cause's code in a record is its index here.
const RESET_CAUSES: [ResetCause; 10] = ResetCause::ALL;

/// An event kind's code in a record is its index here.
const EVENT_KINDS: [EventKind; 10] = EventKind::ALL;

fn event_code(kind: EventKind) -> u8 {
    EVENT_KINDS.iter().position(|&k| k == kind).unwrap_or(0) as u8
}

fn encode(change: &Change<'_>) -> Record {
    let mut p = Payload::new();
    match *change {
        Change::Event(e) => {
            let flags = u8::from(e.rollout_id.is_some())
                | u8::from(e.version.is_some()) << 1
                | u8::from(e.reason.is_some()) << 2
                | u8::from(e.reset.is_some()) << 3;
            p.u64(e.id).u8(event_code(e.kind)).u8(flags);
            if let Some(r) = e.rollout_id {
                p.u64(r);
            }
            if let Some(v) = e.version {
                p.u64(pack_version(v));
            }
            if let Some(reason) = &e.reason {
                p.u8(reason.len() as u8).put(reason.as_bytes());
            }
            if let Some(reset) = e.reset {
                let cause = RESET_CAUSES.iter().position(|&c| c == reset.cause);
                p.u8(cause.unwrap_or(RESET_CAUSES.len() - 1) as u8)
                    .u32(reset.uptime_s);
            }
            p.record(kind::EVENT)
        }
        Change::Acked { through } => p.u64(through).record(kind::ACKED),
        Change::Installed(Some(i)) => {
            p.u8(slot_code(i.slot))
                .u64(i.rollout_id)
                .u64(pack_version(i.version));
            put_component(&mut p, i.component).record(kind::INSTALLED)
        }
        Change::Installed(None) => p.record(kind::NOT_INSTALLED),
        Change::Download(Some(o)) => {
            p.u64(o.rollout_id)
                .u64(pack_version(o.version))
                .u8(slot_code(o.slot))
                .put(&o.sha256.0)
                .u32(o.size)
                .u32(o.security_counter);
            put_component(&mut p, o.component).record(kind::DOWNLOAD)
        }
        Change::Download(None) => p.record(kind::NO_DOWNLOAD),
        Change::Progress(offset) => p.u32(offset).record(kind::PROGRESS),
        Change::Running(r) => p
            .u64(pack_version(r.version))
            .u32(r.uptime_s)
            .record(kind::RUNNING),
        Change::Fault(Some(f)) => p
            .u64(pack_version(f.version))
            .u32(f.uptime_s)
            .u32(f.pc)
            .u32(f.lr)
            .u32(f.cfsr)
            .u32(f.hfsr)
            .u32(f.address)
            .record(kind::FAULT),
        Change::Fault(None) => p.record(kind::FAULT_TAKEN),
        Change::Checkpoint { checkpoint, .. } => checkpoint_commit(&checkpoint),
    }
}

/// The `Checkpoint` record that commits an entry's parts.
fn checkpoint_commit(checkpoint: &SavedCheckpoint) -> Record {
    let mut p = Payload::new();
    p.put(&checkpoint.patch.sha256.0)
        .u32(checkpoint.patch.size)
        .put(&checkpoint.patch.base_sha256.0)
        .u32(checkpoint.written)
        .u32(checkpoint.fetched)
        .u8(checkpoint.tail_len)
        .put(&checkpoint.tail);
    p.record(kind::CHECKPOINT)
}

/// Part `index` of a checkpoint entry: its index, then its share of `record`.
fn checkpoint_part(record: &[u8; CHECKPOINT_LEN], index: usize) -> Record {
    let from = index * CHECKPOINT_PART;
    let to = (from + CHECKPOINT_PART).min(CHECKPOINT_LEN);
    let mut p = Payload::new();
    p.u8(index as u8).put(&record[from..to]);
    p.record(kind::CHECKPOINT_PART)
}

/// The length of part `index`'s share of the record.
fn part_len(index: usize) -> usize {
    CHECKPOINT_PART.min(CHECKPOINT_LEN - index * CHECKPOINT_PART)
}

/// A `Checkpoint` record's payload.
fn decode_checkpoint(payload: &[u8]) -> Option<SavedCheckpoint> {
    let mut r = Reader(payload);
    let sha256 = Digest(r.take(32)?.try_into().ok()?);
    let size = r.u32()?;
    let base_sha256 = Digest(r.take(32)?.try_into().ok()?);
    let checkpoint = SavedCheckpoint {
        patch: PatchOffer {
            sha256,
            size,
            base_sha256,
        },
        written: r.u32()?,
        fetched: r.u32()?,
        tail_len: r.u8()?,
        tail: r.take(CHECKPOINT_TAIL)?.try_into().ok()?,
    };
    let fits = usize::from(checkpoint.tail_len) <= CHECKPOINT_TAIL
        && u32::from(checkpoint.tail_len) <= checkpoint.written;
    (r.0.is_empty() && fits).then_some(checkpoint)
}

/// Apply `change` to `state` when there is one (a scan for the log's end has none).
fn apply(state: &mut Option<&mut PersistedState>, change: &Change<'_>) {
    if let Some(state) = state {
        state.apply(change);
    }
}

/// Apply a decoded record to `state` (if any); `false` if its payload does not decode (then
/// replay stops).
fn apply_record(mut state: Option<&mut PersistedState>, kind: u8, payload: &[u8]) -> bool {
    let mut r = Reader(payload);
    let ok = (|| {
        match kind {
            kind::EVENT => {
                let id = r.u64()?;
                let event_kind = *EVENT_KINDS.get(usize::from(r.u8()?))?;
                let flags = r.u8()?;
                let rollout_id = if flags & 1 != 0 { Some(r.u64()?) } else { None };
                let version = if flags & 2 != 0 {
                    Some(unpack_version(r.u64()?))
                } else {
                    None
                };
                let reason = if flags & 4 != 0 {
                    let n = usize::from(r.u8()?);
                    let text = core::str::from_utf8(r.take(n)?).ok()?;
                    Some(Reason::try_from(text).ok()?)
                } else {
                    None
                };
                let reset = if flags & 8 != 0 {
                    Some(ResetInfo {
                        cause: *RESET_CAUSES.get(usize::from(r.u8()?))?,
                        uptime_s: r.u32()?,
                    })
                } else {
                    None
                };
                let event = Event {
                    id,
                    kind: event_kind,
                    rollout_id,
                    version,
                    reason,
                    reset,
                };
                apply(&mut state, &Change::Event(&event));
            }
            kind::ACKED => apply(&mut state, &Change::Acked { through: r.u64()? }),
            kind::INSTALLED => {
                let slot = slot_from(r.u8()?)?;
                let rollout_id = r.u64()?;
                let version = unpack_version(r.u64()?);
                let installed = Installed {
                    component: component_from(&mut r)?,
                    slot,
                    rollout_id,
                    version,
                };
                apply(&mut state, &Change::Installed(Some(installed)));
            }
            kind::NOT_INSTALLED => apply(&mut state, &Change::Installed(None)),
            kind::DOWNLOAD => {
                let rollout_id = r.u64()?;
                let version = unpack_version(r.u64()?);
                let slot = slot_from(r.u8()?)?;
                let sha256 = Digest(r.take(32)?.try_into().ok()?);
                let size = r.u32()?;
                let security_counter = r.u32()?;
                let offer = Offer {
                    rollout_id,
                    version,
                    component: component_from(&mut r)?,
                    slot,
                    sha256,
                    size,
                    security_counter,
                    patch: None,
                };
                apply(&mut state, &Change::Download(Some(&offer)));
            }
            kind::NO_DOWNLOAD => apply(&mut state, &Change::Download(None)),
            kind::PROGRESS => apply(&mut state, &Change::Progress(r.u32()?)),
            kind::NEXT_EVENT_ID => {
                let next = r.u64()?;
                if let Some(state) = &mut state {
                    state.next_event_id = state.next_event_id.max(next);
                }
            }
            kind::RUNNING => apply(
                &mut state,
                &Change::Running(Running {
                    version: unpack_version(r.u64()?),
                    uptime_s: r.u32()?,
                }),
            ),
            kind::FAULT => {
                let fault = FaultRecord {
                    version: unpack_version(r.u64()?),
                    uptime_s: r.u32()?,
                    pc: r.u32()?,
                    lr: r.u32()?,
                    cfsr: r.u32()?,
                    hfsr: r.u32()?,
                    address: r.u32()?,
                };
                apply(&mut state, &Change::Fault(Some(fault)));
            }
            kind::FAULT_TAKEN => apply(&mut state, &Change::Fault(None)),
            kind::CHECKPOINT_PART => {
                let index = usize::from(r.u8()?);
                if index >= CHECKPOINT_PARTS || r.0.len() != part_len(index) {
                    return None;
                }
            }
            // Taken by the replay, which knows whether its parts are all there (the same rule
            // as `PersistedState::apply`, without the record's bytes, which stay in flash).
            kind::CHECKPOINT => {
                let checkpoint = decode_checkpoint(r.0)?;
                if let Some(download) = state.as_deref_mut().and_then(|s| s.download.as_mut()) {
                    download.checkpoint = Some(checkpoint);
                }
            }
            _ => return None,
        }
        Some(())
    })();
    ok.is_some()
}

/// What reading one record at an offset found.
enum Read {
    /// A valid record: kind, payload length, total length.
    Valid { kind: u8, len: usize, total: u32 },
    /// Erased (the end of the log).
    Erased,
    /// Anything else: a torn or damaged record.
    Torn,
}

impl<F: NorFlash> FlashPersist<F> {
    /// Open the store in `region` of `flash`: find the committed sector with the highest
    /// generation and the end of its log. Reads only; nothing is written until the first
    /// change.
    pub fn open(flash: F, region: StoreRegion) -> Self {
        let mut store = Self {
            flash,
            region,
            active: None,
            end: 0,
            clean: false,
            checkpoint_at: None,
            holds_checkpoints: false,
        };
        for index in 0..2 {
            if let Some(generation) = store.commit_of(index) {
                if store.active.is_none_or(|(_, g)| generation > g) {
                    store.active = Some((index, generation));
                }
            }
        }
        store.replay(None);
        store
    }

    /// For the board's hard fault handler: append `fault` to the log in `region` of `flash`,
    /// found by reading the flash alone (nothing in RAM is trusted after a fault, and the state
    /// is not loaded: a few hundred bytes of stack). Only appends after a clean end of the
    /// active sector where the record fits, never erases or compacts; see the
    /// [module docs](self). `Ok` means the record is in flash and reads back.
    pub fn append_fault(
        flash: F,
        region: StoreRegion,
        fault: &FaultRecord,
    ) -> Result<(), FaultAppendError<F::Error>> {
        let mut store = Self::open(flash, region);
        let Some((index, _)) = store.active else {
            return Err(FaultAppendError::NoLog);
        };
        let record = encode(&Change::Fault(Some(*fault)));
        let sector_end = store.region.sector(index) + store.region.sector_size;
        if !store.clean {
            return Err(FaultAppendError::TornEnd);
        }
        if store.end + record.len as u32 > sector_end {
            return Err(FaultAppendError::Full);
        }
        if !store.erased(store.end, record.len) {
            return Err(FaultAppendError::TornEnd);
        }
        let at = store.end;
        store
            .program(at, record.as_bytes())
            .map_err(FaultAppendError::Store)
    }

    /// Where the next record goes, in the flash driver's offsets (for tests and diagnostics).
    pub fn log_end(&self) -> u32 {
        self.end
    }

    /// The flash, back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// The flash.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Read the record at `at` in the sector starting at `sector`.
    fn read_record(&mut self, sector: u32, at: u32, buf: &mut [u8; MAX_RECORD]) -> Read {
        let room = (sector + self.region.sector_size).saturating_sub(at) as usize;
        if room < HEADER + CRC_LEN {
            return Read::Erased;
        }
        if self.flash.read(at, &mut buf[..HEADER]).is_err() {
            return Read::Torn;
        }
        if buf[..HEADER] == [0xFF; HEADER] {
            return Read::Erased;
        }
        if buf[..2] != MAGIC {
            return Read::Torn;
        }
        let len = usize::from(buf[3]);
        let total = HEADER + len.next_multiple_of(4) + CRC_LEN;
        if len > MAX_PAYLOAD || total > room {
            return Read::Torn;
        }
        if self.flash.read(at, &mut buf[..total]).is_err() {
            return Read::Torn;
        }
        let body = total - CRC_LEN;
        let crc = u32::from_le_bytes([buf[body], buf[body + 1], buf[body + 2], buf[body + 3]]);
        if CRC32.checksum(&buf[..body]) != crc {
            return Read::Torn;
        }
        Read::Valid {
            kind: buf[2],
            len,
            total: total as u32,
        }
    }

    /// The generation of sector `index` if its commit record is valid.
    fn commit_of(&mut self, index: usize) -> Option<u32> {
        let mut buf = [0u8; MAX_RECORD];
        let at = self.region.sector(index);
        match self.read_record(at, at, &mut buf) {
            Read::Valid {
                kind: kind::COMMIT,
                len: 4,
                ..
            } => Some(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]])),
            _ => None,
        }
    }

    /// Replay the active sector into `state` (or only find its end, with `None`); sets `end`
    /// and `clean`.
    fn replay(&mut self, mut state: Option<&mut PersistedState>) {
        let Some((index, _)) = self.active else {
            return;
        };
        let mut buf = [0u8; MAX_RECORD];
        let sector = self.region.sector(index);
        let mut at = sector + COMMIT_LEN;
        // The checkpoint entry being read (where its first part is, the next part's index) and
        // the last one committed.
        let mut parts: Option<(u32, usize)> = None;
        self.checkpoint_at = None;
        self.holds_checkpoints = false;
        loop {
            match self.read_record(sector, at, &mut buf) {
                Read::Valid { kind, len, total } => {
                    let payload = &buf[HEADER..HEADER + len];
                    self.holds_checkpoints |=
                        matches!(kind, kind::CHECKPOINT | kind::CHECKPOINT_PART);
                    let complete = parts.filter(|&(_, next)| next == CHECKPOINT_PARTS);
                    // A commit without all its parts right before it is skipped: the checkpoint
                    // before it stands.
                    let skip = kind == kind::CHECKPOINT && complete.is_none();
                    if !skip && !apply_record(state.as_deref_mut(), kind, payload) {
                        self.clean = false;
                        break;
                    }
                    parts = match (kind, parts) {
                        (kind::CHECKPOINT_PART, _) if payload[0] == 0 => Some((at, 1)),
                        (kind::CHECKPOINT_PART, Some((first, next)))
                            if usize::from(payload[0]) == next =>
                        {
                            Some((first, next + 1))
                        }
                        _ => None,
                    };
                    match kind {
                        kind::CHECKPOINT => {
                            if let Some((first, _)) = complete {
                                self.checkpoint_at = Some(first);
                            }
                        }
                        kind::DOWNLOAD | kind::NO_DOWNLOAD => self.checkpoint_at = None,
                        _ => {}
                    }
                    at += total;
                }
                Read::Erased => {
                    self.clean = true;
                    break;
                }
                Read::Torn => {
                    self.clean = false;
                    break;
                }
            }
        }
        self.end = at;
    }

    /// Program `bytes` at `at` and read them back.
    fn program(&mut self, at: u32, bytes: &[u8]) -> Result<(), StoreError<F::Error>> {
        self.flash.write(at, bytes).map_err(StoreError::Flash)?;
        let mut back = [0u8; MAX_RECORD];
        for (i, chunk) in bytes.chunks(MAX_RECORD).enumerate() {
            let at = at + (i * MAX_RECORD) as u32;
            self.flash
                .read(at, &mut back[..chunk.len()])
                .map_err(StoreError::Flash)?;
            if back[..chunk.len()] != *chunk {
                return Err(StoreError::Verify);
            }
        }
        Ok(())
    }

    /// Whether `len` bytes at `at` read as erased.
    fn erased(&mut self, at: u32, len: usize) -> bool {
        let mut buf = [0u8; MAX_RECORD];
        self.flash.read(at, &mut buf[..len]).is_ok() && buf[..len].iter().all(|&b| b == 0xFF)
    }

    /// Write `state` into the other sector and commit it. The download's checkpoint entry is
    /// `record` when one is given (a checkpoint being recorded), otherwise copied record by
    /// record from the active sector's last entry.
    fn compact(
        &mut self,
        state: &PersistedState,
        record: Option<&[u8; CHECKPOINT_LEN]>,
    ) -> Result<(), StoreError<F::Error>> {
        let (target, generation) = match self.active {
            Some((index, generation)) => (1 - index, generation.wrapping_add(1)),
            None => (0, 1),
        };
        let start = self.region.sector(target);
        self.flash
            .erase(start, start + self.region.sector_size)
            .map_err(StoreError::Flash)?;
        let mut at = start + COMMIT_LEN;
        let mut checkpoint_at = None;
        let mut next = Payload::new();
        next.u64(state.next_event_id);
        self.put(&mut at, next.record(kind::NEXT_EVENT_ID))?;
        for event in &state.events {
            self.put(&mut at, encode(&Change::Event(event)))?;
        }
        if state.installed.is_some() {
            self.put(&mut at, encode(&Change::Installed(state.installed)))?;
        }
        if let Some(download) = &state.download {
            self.put(&mut at, encode(&Change::Download(Some(&download.offer))))?;
            if download.offset > 0 {
                self.put(&mut at, encode(&Change::Progress(download.offset)))?;
            }
            if let Some(checkpoint) = &download.checkpoint {
                let first = at;
                let copied = match record {
                    Some(record) => {
                        for index in 0..CHECKPOINT_PARTS {
                            self.put(&mut at, checkpoint_part(record, index))?;
                        }
                        true
                    }
                    None => self.copy_checkpoint(&mut at)?,
                };
                // An entry that cannot be read back from the old sector is left out: the
                // download then resumes as if it had no checkpoint.
                if copied {
                    self.put(&mut at, checkpoint_commit(checkpoint))?;
                    checkpoint_at = Some(first);
                }
            }
        }
        if let Some(running) = state.running {
            self.put(&mut at, encode(&Change::Running(running)))?;
        }
        if state.fault.is_some() {
            self.put(&mut at, encode(&Change::Fault(state.fault)))?;
        }
        let mut commit = Payload::new();
        commit.u32(generation);
        self.program(start, commit.record(kind::COMMIT).as_bytes())?;
        self.active = Some((target, generation));
        self.end = at;
        self.clean = true;
        self.checkpoint_at = checkpoint_at;
        self.holds_checkpoints = checkpoint_at.is_some();
        Ok(())
    }

    /// Program `record` at `*at` (read back) and move `*at` past it.
    fn put(&mut self, at: &mut u32, record: Record) -> Result<(), StoreError<F::Error>> {
        self.program(*at, record.as_bytes())?;
        *at += record.len as u32;
        Ok(())
    }

    /// Copy the active sector's last checkpoint entry's parts to `*at`, record by record (no
    /// buffer of the whole checkpoint); `false` (nothing written) if there is none or its
    /// parts no longer read back.
    fn copy_checkpoint(&mut self, at: &mut u32) -> Result<bool, StoreError<F::Error>> {
        let (Some(from), Some((index, _))) = (self.checkpoint_at, self.active) else {
            return Ok(false);
        };
        if !self.read_parts(index, from, None) {
            return Ok(false);
        }
        let sector = self.region.sector(index);
        let mut buf = [0u8; MAX_RECORD];
        let mut from = from;
        for _ in 0..CHECKPOINT_PARTS {
            let Read::Valid { total, .. } = self.read_record(sector, from, &mut buf) else {
                return Ok(false);
            };
            self.program(*at, &buf[..total as usize])?;
            *at += total;
            from += total;
        }
        Ok(true)
    }

    /// Read the checkpoint entry at `from` in sector `index`: every part valid and in order,
    /// their bytes copied into `record` when given.
    fn read_parts(
        &mut self,
        index: usize,
        mut from: u32,
        mut record: Option<&mut [u8; CHECKPOINT_LEN]>,
    ) -> bool {
        let sector = self.region.sector(index);
        let mut buf = [0u8; MAX_RECORD];
        for part in 0..CHECKPOINT_PARTS {
            let Read::Valid { kind, len, total } = self.read_record(sector, from, &mut buf) else {
                return false;
            };
            let share = part_len(part);
            if kind != kind::CHECKPOINT_PART || usize::from(buf[HEADER]) != part || len != 1 + share
            {
                return false;
            }
            if let Some(record) = record.as_deref_mut() {
                let to = part * CHECKPOINT_PART;
                record[to..to + share].copy_from_slice(&buf[HEADER + 1..HEADER + 1 + share]);
            }
            from += total;
        }
        true
    }

    /// Append a checkpoint entry (its parts, then its commit) after the log, or compact with it
    /// when it does not fit or a write fails.
    fn record_checkpoint(
        &mut self,
        change: &Change<'_>,
        checkpoint: &SavedCheckpoint,
        record: &[u8; CHECKPOINT_LEN],
    ) -> Result<(), StoreError<F::Error>> {
        if let Some((index, _)) = self.active {
            let sector_end = self.region.sector(index) + self.region.sector_size;
            let last = part_len(CHECKPOINT_PARTS - 1);
            let len = (CHECKPOINT_PARTS - 1) as u32 * record_len(1 + CHECKPOINT_PART)
                + record_len(1 + last)
                + record_len(CHECKPOINT_SUMMARY);
            if self.clean && self.end + len <= sector_end {
                let first = self.end;
                let mut ok = true;
                self.holds_checkpoints = true;
                for part in 0..=CHECKPOINT_PARTS {
                    let r = if part < CHECKPOINT_PARTS {
                        checkpoint_part(record, part)
                    } else {
                        checkpoint_commit(checkpoint)
                    };
                    let at = self.end;
                    if !self.erased(at, r.len) || self.program(at, r.as_bytes()).is_err() {
                        // Whatever landed there is now a torn record: compact below.
                        ok = false;
                        self.clean = false;
                        break;
                    }
                    self.end += r.len as u32;
                }
                if ok {
                    self.checkpoint_at = Some(first);
                    return Ok(());
                }
            }
        }
        let mut state = PersistedState::default();
        self.replay(Some(&mut state));
        state.apply(change);
        self.compact(&state, Some(record))
    }
}

/// A record's length in flash for a payload of `payload` bytes.
const fn record_len(payload: usize) -> u32 {
    (HEADER + payload.next_multiple_of(4) + CRC_LEN) as u32
}

impl<F: NorFlash> Persist for FlashPersist<F> {
    type Error = StoreError<F::Error>;

    fn load(&mut self) -> PersistedState {
        let mut state = PersistedState::default();
        self.replay(Some(&mut state));
        state
    }

    fn record(&mut self, change: &Change<'_>) -> Result<(), Self::Error> {
        if let Change::Checkpoint { checkpoint, record } = change {
            return self.record_checkpoint(change, checkpoint, record);
        }
        if let Change::Download(_) = change {
            // A new download, or none: the checkpoint before is not its.
            self.checkpoint_at = None;
        }
        // The download is over: rewrite the log without its checkpoint records (see
        // `holds_checkpoints`) rather than append.
        let drop_checkpoints = matches!(change, Change::Download(None)) && self.holds_checkpoints;
        let record = encode(change);
        if let Some((index, _)) = self.active.filter(|_| !drop_checkpoints) {
            let sector_end = self.region.sector(index) + self.region.sector_size;
            let fits = self.end + record.len as u32 <= sector_end;
            if self.clean && fits && self.erased(self.end, record.len) {
                let at = self.end;
                match self.program(at, record.as_bytes()) {
                    Ok(()) => {
                        self.end += record.len as u32;
                        return Ok(());
                    }
                    // Whatever landed there is now a torn record: compact below.
                    Err(_) => self.clean = false,
                }
            }
        }
        let mut state = PersistedState::default();
        self.replay(Some(&mut state));
        state.apply(change);
        self.compact(&state, None)
    }

    fn load_checkpoint(&mut self, record: &mut [u8; CHECKPOINT_LEN]) -> bool {
        match (self.checkpoint_at, self.active) {
            (Some(from), Some((index, _))) => self.read_parts(index, from, Some(record)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fota_boot::testing::MemFlash;

    const REGION: StoreRegion = StoreRegion {
        start: 0,
        sector_size: 16 * 1024,
    };

    fn event(id: u64, reason: Option<&str>) -> Event {
        Event {
            id,
            kind: EventKind::RolledBack,
            rollout_id: Some(9),
            version: Some(ImageVersion::new(1, 5, 0, 2)),
            reason: reason.map(|r| Reason::try_from(r).unwrap()),
            reset: None,
        }
    }

    fn offer() -> Offer {
        Offer {
            rollout_id: 9,
            version: ImageVersion::new(2, 0, 0, 0),
            component: Component::Application,
            slot: SlotId::B,
            sha256: Digest([0xab; 32]),
            size: 100_000,
            security_counter: 3,
            patch: None,
        }
    }

    /// Record `changes` through a FlashPersist and through the in-RAM state: the two agree after
    /// every change, and after reopening the flash.
    fn agree(flash: MemFlash, changes: &[Change<'_>]) -> MemFlash {
        let mut store = FlashPersist::open(flash, REGION);
        let mut expected = store.load();
        for change in changes {
            store.record(change).unwrap();
            expected.apply(change);
            assert_eq!(store.load(), expected, "after {change:?}");
        }
        let flash = store.into_flash();
        let mut reopened = FlashPersist::open(flash, REGION);
        assert_eq!(reopened.load(), expected, "after reopening");
        reopened.into_flash()
    }

    #[test]
    fn every_change_replays_after_a_reset() {
        let long = "r".repeat(96);
        let (e1, e2) = (event(1, None), event(2, Some("3 failed trials")));
        // The largest event there is: the longest reason and a reset's detail.
        let e3 = Event {
            kind: EventKind::Reset,
            reset: Some(ResetInfo {
                cause: ResetCause::Fault,
                uptime_s: u32::MAX,
            }),
            ..event(3, Some(&long))
        };
        let running = |uptime_s| Running {
            version: ImageVersion::new(2, 0, 0, 0),
            uptime_s,
        };
        let offer = offer();
        let installed = Installed {
            component: Component::Application,
            slot: SlotId::B,
            rollout_id: 9,
            version: ImageVersion::new(2, 0, 0, 0),
        };
        let flash = agree(
            MemFlash::new(),
            &[
                Change::Event(&e1),
                Change::Event(&e2),
                Change::Download(Some(&offer)),
                Change::Progress(4096),
                Change::Progress(8192),
                Change::Acked { through: 1 },
                Change::Installed(Some(installed)),
                Change::Download(None),
                Change::Running(running(0)),
                Change::Event(&e3),
                Change::Running(running(600)),
            ],
        );
        let state = FlashPersist::open(flash, REGION).load();
        assert_eq!(state.next_event_id, 4);
        assert_eq!(state.events.len(), 2);
        assert_eq!(state.events[1], e3);
        assert_eq!(state.installed, Some(installed));
        assert_eq!(state.download, None);
        assert_eq!(state.running, Some(running(600)));
    }

    #[test]
    fn a_bootloader_download_and_install_replay_as_a_bootloader_and_an_application_record_is_unchanged(
    ) {
        let stage1 = Offer {
            component: Component::Bootloader,
            slot: SlotId::A,
            ..offer()
        };
        let installed = Installed {
            component: Component::Bootloader,
            slot: SlotId::A,
            rollout_id: 9,
            version: ImageVersion::new(2, 0, 0, 0),
        };
        let flash = agree(
            MemFlash::new(),
            &[
                Change::Download(Some(&stage1)),
                Change::Progress(4096),
                Change::Installed(Some(installed)),
            ],
        );
        let state = FlashPersist::open(flash, REGION).load();
        assert_eq!(state.download.unwrap().offer, stage1);
        assert_eq!(state.installed, Some(installed));

        // An application's records are byte for byte the format before components: one byte
        // shorter than a bootloader's, and a log written then replays as applications.
        let app = offer();
        let app_installed = Installed {
            component: Component::Application,
            ..installed
        };
        // The payload's length, in the record's header.
        let len = |change: &Change<'_>| encode(change).bytes[3];
        assert_eq!(
            len(&Change::Download(Some(&app))) + 1,
            len(&Change::Download(Some(&stage1)))
        );
        assert_eq!(
            len(&Change::Installed(Some(app_installed))) + 1,
            len(&Change::Installed(Some(installed)))
        );
        // Any other trailing byte does not decode.
        let mut payload = [0u8; 18];
        payload[17] = 2;
        assert!(!apply_record(None, kind::INSTALLED, &payload));
        payload[17] = 1;
        assert!(apply_record(None, kind::INSTALLED, &payload));
        assert!(apply_record(None, kind::INSTALLED, &payload[..17]));
    }

    #[test]
    fn a_full_sector_compacts_into_the_other_and_keeps_the_counter() {
        let offer = offer();
        let mut changes = vec![];
        for i in 0..3000u32 {
            changes.push(Change::Progress(i * 4));
        }
        let mut flash = MemFlash::new();
        {
            let mut store = FlashPersist::open(&mut flash, REGION);
            store.record(&Change::Download(Some(&offer))).unwrap();
            let e = event(41, None);
            store.record(&Change::Event(&e)).unwrap();
            store.record(&Change::Acked { through: 41 }).unwrap();
            store
                .record(&Change::Running(Running {
                    version: ImageVersion::new(1, 5, 0, 2),
                    uptime_s: 900,
                }))
                .unwrap();
        }
        let flash = agree(flash, &changes);
        // 3000 records of 12 bytes do not fit one 16 KB sector: it compacted at least twice.
        assert!(flash.erases.len() >= 2, "{:?}", flash.erases);
        let state = FlashPersist::open(flash, REGION).load();
        // The acknowledged event is gone, its id is not reused.
        assert!(state.events.is_empty());
        assert_eq!(state.next_event_id, 42);
        assert_eq!(state.download.unwrap().offset, 2999 * 4);
        // What runs survives every compaction.
        assert_eq!(
            state.running.map(|r| (r.version, r.uptime_s)),
            Some((ImageVersion::new(1, 5, 0, 2), 900))
        );
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_the_next_change_compacts() {
        let (e1, e2) = (event(1, None), event(2, Some("torn")));
        let mut flash = agree(MemFlash::new(), &[Change::Event(&e1)]);
        let before = FlashPersist::open(&mut flash, REGION).load();
        // Cut power in the middle of the second record: only its first word is programmed.
        let end = {
            let mut store = FlashPersist::open(&mut flash, REGION);
            store.load();
            store.end
        };
        let record = encode(&Change::Event(&e2));
        flash.bytes[end as usize..end as usize + 4].copy_from_slice(&record.as_bytes()[..4]);
        let mut store = FlashPersist::open(&mut flash, REGION);
        assert_eq!(store.load(), before, "the torn record must not count");
        assert!(!store.clean);
        store.record(&Change::Event(&e2)).unwrap();
        let mut expected = before;
        expected.apply(&Change::Event(&e2));
        assert_eq!(store.load(), expected);
        // It went into the other sector, committed there.
        assert_eq!(store.active.map(|(i, _)| i), Some(1));
        assert_eq!(FlashPersist::open(&mut flash, REGION).load(), expected);
    }

    #[test]
    fn a_cut_at_every_write_of_a_compaction_leaves_the_old_or_the_new_state() {
        // Fill the first sector with progress records so the next change compacts, then fail
        // the flash after n writes for every n: the state read back is always either the state
        // before the change or the state after it, never a mix or nothing.
        let offer = offer();
        let events: Vec<Event> = (1..=5).map(|i| event(i, Some("x"))).collect();
        let mut base = MemFlash::new();
        {
            let mut store = FlashPersist::open(&mut base, REGION);
            store.record(&Change::Download(Some(&offer))).unwrap();
            for e in &events {
                store.record(&Change::Event(e)).unwrap();
            }
            let mut i = 0;
            while store.end + 12 <= REGION.sector_size {
                store.record(&Change::Progress(i)).unwrap();
                i += 4;
            }
        }
        let before = FlashPersist::open(base.clone(), REGION).load();
        let change = Change::Acked { through: 3 };
        let mut after = before.clone();
        after.apply(&change);
        for n in 0..20 {
            let mut flash = base.clone();
            flash.fail_writes_after = Some(n);
            let result = FlashPersist::open(&mut flash, REGION).record(&change);
            flash.fail_writes_after = None;
            let state = FlashPersist::open(&mut flash, REGION).load();
            if result.is_ok() {
                assert_eq!(state, after, "cut after {n} writes");
            } else {
                assert!(
                    state == before || state == after,
                    "cut after {n} writes: {state:?}"
                );
            }
        }
    }

    fn fault() -> FaultRecord {
        FaultRecord {
            version: ImageVersion::new(2, 0, 0, 7),
            uptime_s: 3_600,
            pc: 0x0806_1a2c,
            lr: 0xFFFF_FFF9,
            cfsr: FaultRecord::BFARVALID | 1 << 9,
            hfsr: 1 << 30,
            address: 0x4002_3c00,
        }
    }

    #[test]
    fn a_fault_record_round_trips_and_is_taken_once() {
        let f = fault();
        let e = event(1, None);
        let flash = agree(
            MemFlash::new(),
            &[
                Change::Event(&e),
                Change::Fault(Some(f)),
                Change::Running(Running {
                    version: f.version,
                    uptime_s: 0,
                }),
            ],
        );
        assert_eq!(
            FlashPersist::open(flash.clone(), REGION).load().fault,
            Some(f)
        );
        let flash = agree(flash, &[Change::Fault(None)]);
        assert_eq!(FlashPersist::open(flash, REGION).load().fault, None);
        // Every field survives: a record with each field distinct decodes to itself.
        let record = encode(&Change::Fault(Some(f)));
        assert_eq!(record.len, HEADER + 32 + CRC_LEN);
        let mut state = PersistedState::default();
        assert!(apply_record(
            Some(&mut state),
            kind::FAULT,
            &record.as_bytes()[HEADER..HEADER + 32]
        ));
        assert_eq!(state.fault, Some(f));
        // A short payload does not decode.
        assert!(!apply_record(
            Some(&mut state),
            kind::FAULT,
            &record.as_bytes()[HEADER..HEADER + 28]
        ));
        assert_eq!(
            f.to_string(),
            "PRECISERR pc 0x08061a2c addr 0x40023c00 lr 0xfffffff9 cfsr 0x00008200 hfsr 0x40000000"
        );
    }

    #[test]
    fn the_fault_handler_appends_after_the_log_and_never_erases() {
        let f = fault();
        let e = event(1, Some("before the fault"));
        // Nothing committed yet: nowhere to append.
        let mut empty = MemFlash::new();
        assert_eq!(
            FlashPersist::append_fault(&mut empty, REGION, &f),
            Err(FaultAppendError::NoLog)
        );
        assert_eq!(empty.writes, 0);

        let mut flash = agree(MemFlash::new(), &[Change::Event(&e)]);
        let mut expected = FlashPersist::open(&mut flash, REGION).load();
        let erases = flash.erases.len();
        FlashPersist::append_fault(&mut flash, REGION, &f).unwrap();
        assert_eq!(flash.erases.len(), erases, "no erase from a fault handler");
        expected.apply(&Change::Fault(Some(f)));
        assert_eq!(FlashPersist::open(&mut flash, REGION).load(), expected);
        // Compaction keeps a fault not yet taken.
        let mut store = FlashPersist::open(&mut flash, REGION);
        let state = store.load();
        store.compact(&state, None).unwrap();
        assert_eq!(FlashPersist::open(&mut flash, REGION).load().fault, Some(f));

        // A torn last record: nothing may follow it.
        let mut torn = agree(MemFlash::new(), &[Change::Event(&e)]);
        let end = {
            let mut store = FlashPersist::open(&mut torn, REGION);
            store.load();
            store.end
        };
        let next = encode(&Change::Acked { through: 1 });
        torn.bytes[end as usize..end as usize + 4].copy_from_slice(&next.as_bytes()[..4]);
        let writes = torn.writes;
        assert_eq!(
            FlashPersist::append_fault(&mut torn, REGION, &f),
            Err(FaultAppendError::TornEnd)
        );
        assert_eq!(torn.writes, writes);

        // A full sector: only a compaction would make room, and a fault handler does not
        // compact.
        let mut full = MemFlash::new();
        {
            let mut store = FlashPersist::open(&mut full, REGION);
            let mut i = 0;
            store.record(&Change::Progress(i)).unwrap();
            while store.end + 12 <= REGION.sector_size {
                i += 4;
                store.record(&Change::Progress(i)).unwrap();
            }
        }
        let erases = full.erases.len();
        assert_eq!(
            FlashPersist::append_fault(&mut full, REGION, &f),
            Err(FaultAppendError::Full)
        );
        assert_eq!(full.erases.len(), erases);
    }

    /// A checkpoint and a record standing for the applier's (the store does not read it).
    fn checkpoint(seed: u8) -> (SavedCheckpoint, [u8; CHECKPOINT_LEN]) {
        let mut record = [0u8; CHECKPOINT_LEN];
        for (i, b) in record.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(seed);
        }
        let checkpoint = SavedCheckpoint {
            patch: PatchOffer {
                sha256: Digest([0x5a; 32]),
                size: 20_000,
                base_sha256: Digest([0xa5; 32]),
            },
            written: 4096 * u32::from(seed) + 3,
            fetched: 1000 * u32::from(seed),
            tail: [seed, 1, 2, 0, 0, 0, 0, 0],
            tail_len: 3,
        };
        (checkpoint, record)
    }

    /// The store's checkpoint as it loads, with its record.
    fn loaded(flash: &mut MemFlash) -> Option<(SavedCheckpoint, [u8; CHECKPOINT_LEN])> {
        let mut store = FlashPersist::open(flash, REGION);
        let checkpoint = store.load().download?.checkpoint;
        let mut record = [0u8; CHECKPOINT_LEN];
        let read = store.load_checkpoint(&mut record);
        assert_eq!(
            read,
            checkpoint.is_some(),
            "the record and its commit go together"
        );
        checkpoint.map(|c| (c, record))
    }

    #[test]
    fn a_checkpoint_round_trips_survives_compaction_and_goes_with_its_download() {
        let offer = offer();
        let (c1, r1) = checkpoint(1);
        let (c2, r2) = checkpoint(2);
        let mut flash = agree(
            MemFlash::new(),
            &[
                Change::Download(Some(&offer)),
                Change::Progress(4096),
                Change::Checkpoint {
                    checkpoint: c1,
                    record: &r1,
                },
            ],
        );
        assert_eq!(loaded(&mut flash), Some((c1, r1)));
        // The next one replaces it; progress after it leaves it.
        let mut flash = agree(
            flash,
            &[
                Change::Checkpoint {
                    checkpoint: c2,
                    record: &r2,
                },
                Change::Progress(8192),
            ],
        );
        assert_eq!(loaded(&mut flash), Some((c2, r2)));
        // Compactions copy it, record by record, however often.
        let erases = flash.erases.len();
        let mut changes = vec![];
        for i in 0..3000u32 {
            changes.push(Change::Progress(i * 4));
        }
        let mut flash = agree(flash, &changes);
        assert!(flash.erases.len() >= erases + 2, "{:?}", flash.erases);
        assert_eq!(loaded(&mut flash), Some((c2, r2)));
        // Another one after them.
        let mut flash = agree(
            flash,
            &[Change::Checkpoint {
                checkpoint: c1,
                record: &r1,
            }],
        );
        assert_eq!(loaded(&mut flash), Some((c1, r1)));
        // The download's end drops it, and so does a new download.
        let mut ended = agree(flash.clone(), &[Change::Download(None)]);
        assert_eq!(loaded(&mut ended), None);
        assert!(!FlashPersist::open(&mut ended, REGION).load_checkpoint(&mut [0; CHECKPOINT_LEN]));
        let mut again = agree(flash, &[Change::Download(Some(&offer))]);
        assert_eq!(loaded(&mut again), None);
        let mut store = FlashPersist::open(&mut again, REGION);
        let state = store.load();
        store.compact(&state, None).unwrap();
        assert_eq!(loaded(&mut again), None);
    }

    /// The kinds of the records in the active sector's log, in order.
    fn kinds_in_log(flash: &mut MemFlash) -> Vec<u8> {
        let mut store = FlashPersist::open(flash, REGION);
        let Some((index, _)) = store.active else {
            return Vec::new();
        };
        let sector = store.region.sector(index);
        let mut at = sector + COMMIT_LEN;
        let mut buf = [0u8; MAX_RECORD];
        let mut kinds = Vec::new();
        while let Read::Valid { kind, total, .. } = store.read_record(sector, at, &mut buf) {
            kinds.push(kind);
            at += total;
        }
        kinds
    }

    /// Firmware built before checkpoints stops its replay at their records: once the download
    /// is over none is left for it, whatever comes next (here, the image being installed).
    #[test]
    fn the_end_of_a_download_leaves_no_checkpoint_record_for_older_firmware() {
        let offer = offer();
        let (c1, r1) = checkpoint(1);
        let is_checkpoint = |k: &u8| *k == kind::CHECKPOINT || *k == kind::CHECKPOINT_PART;
        let mut flash = agree(
            MemFlash::new(),
            &[
                Change::Download(Some(&offer)),
                Change::Progress(4096),
                Change::Checkpoint {
                    checkpoint: c1,
                    record: &r1,
                },
                Change::Progress(8192),
            ],
        );
        assert!(kinds_in_log(&mut flash).iter().any(is_checkpoint));
        let mut flash = agree(
            flash,
            &[
                Change::Download(None),
                Change::Installed(Some(Installed {
                    component: Component::Application,
                    slot: SlotId::B,
                    rollout_id: 9,
                    version: ImageVersion::new(2, 0, 0, 0),
                })),
            ],
        );
        let kinds = kinds_in_log(&mut flash);
        assert!(!kinds.iter().any(is_checkpoint), "{kinds:?}");
        assert!(kinds.contains(&kind::INSTALLED), "{kinds:?}");
        // A download without checkpoints ends with an append, as before (no sector erased).
        let erases = flash.erases.len();
        let flash = agree(
            flash,
            &[Change::Download(Some(&offer)), Change::Download(None)],
        );
        assert_eq!(flash.erases.len(), erases);
    }

    #[test]
    fn a_checkpoint_torn_at_any_word_leaves_the_one_before() {
        let offer = offer();
        let (c1, r1) = checkpoint(1);
        let (c2, r2) = checkpoint(2);
        let mut flash = agree(
            MemFlash::new(),
            &[
                Change::Download(Some(&offer)),
                Change::Checkpoint {
                    checkpoint: c1,
                    record: &r1,
                },
                Change::Progress(4096),
            ],
        );
        let start = FlashPersist::open(&mut flash, REGION).log_end() as usize;
        let full = agree(
            flash.clone(),
            &[Change::Checkpoint {
                checkpoint: c2,
                record: &r2,
            }],
        );
        let end = FlashPersist::open(full.clone(), REGION).log_end() as usize;
        // Ten parts of 132 bytes, the last of 128, the commit of 96.
        assert_eq!(end - start, (CHECKPOINT_PARTS - 1) * 132 + 128 + 96);
        // A cut at every word of the entry: the words before it programmed, the rest erased.
        for at in (start..end).step_by(4) {
            let mut torn = full.clone();
            torn.bytes[at..end].fill(0xFF);
            assert_eq!(loaded(&mut torn), Some((c1, r1)), "cut at {at}");
            // The next change compacts, and keeps the checkpoint before.
            let mut store = FlashPersist::open(&mut torn, REGION);
            store.load();
            store.record(&Change::Progress(8192)).unwrap();
            assert_eq!(loaded(&mut torn), Some((c1, r1)), "cut at {at}, compacted");
        }
        // And a half-programmed word (some of its bits cleared) anywhere in the entry.
        for at in (start..end).step_by(52) {
            let mut torn = full.clone();
            torn.bytes[at + 4..end].fill(0xFF);
            if let Some(b) = torn.bytes[at..at + 4].iter_mut().find(|b| **b != 0) {
                *b &= *b - 1;
            }
            assert_eq!(loaded(&mut torn), Some((c1, r1)), "torn at {at}");
        }
        // A write failing at every step of recording it: the one before, or the new one.
        for n in 0..16 {
            let mut flash = flash.clone();
            flash.fail_writes_after = Some(n);
            let result = FlashPersist::open(&mut flash, REGION).record(&Change::Checkpoint {
                checkpoint: c2,
                record: &r2,
            });
            flash.fail_writes_after = None;
            let got = loaded(&mut flash);
            match result {
                Ok(()) => assert_eq!(got, Some((c2, r2)), "fail after {n}"),
                Err(_) => assert!(
                    got == Some((c1, r1)) || got == Some((c2, r2)),
                    "fail after {n}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn the_board_region_is_sectors_10_and_11() {
        assert_eq!(StoreRegion::STM32F429.start, 0x000C_0000);
        assert_eq!(StoreRegion::STM32F429.sector_size, 128 * 1024);
    }
}
