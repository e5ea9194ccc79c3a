//! What the OTA client keeps across resets, and the stores that keep it.
//!
//! RAM is never trusted across a reset (the field incident), so every fact the client needs
//! after one is a [`Change`] written to a [`Persist`] store before the client acts on it:
//!
//! - the event-id counter (ids are unique per device, forever: the server stores each once);
//! - the events the server has not acknowledged yet (a reset between an event and its report
//!   loses nothing);
//! - the image installed and not yet reported on (component, slot, rollout, version), so the
//!   trial boot and a revert (by the bootloader, or by stage-0 for a stage-1) are reported
//!   against the right rollout;
//! - the download in progress: its offer, once the slot is erased, and how many of its bytes
//!   are durably in the slot, so a power cut mid-download resumes from there; when it is
//!   rebuilt from a delta patch, the patch and the applier's last checkpoint
//!   ([`SavedCheckpoint`], its [`CHECKPOINT_LEN`]-byte record kept by the store), so a power cut
//!   mid-patch resumes the patch;
//! - what is running and for how long (recorded at boot and every few minutes), so that the next
//!   boot can report a reset with the version and the uptime it cut short;
//! - a fault: what the board's hard fault handler appended before it reset (the faulting
//!   image's version and uptime, and the Cortex-M fault registers), until the next boot has
//!   turned it into a `reset` event ([`FaultRecord`]).
//!
//! [`PersistedState::apply`] is the one definition of what a change does; both stores replay
//! changes through it: [`MemPersist`] (feature `std`: the simulator and tests) keeps the
//! state in RAM as a stand-in for flash that survives the simulated resets, and
//! [`FlashPersist`](crate::flash_store::FlashPersist) appends each change as a CRC-protected
//! record to two flash sectors used ping-pong (sectors 10-11 on the board).

pub use fota_delta::CHECKPOINT_LEN;
use fota_protocol::image::ImageVersion;
use fota_protocol::messages::{Component, Event, Offer, PatchOffer, MAX_EVENTS_PER_REPORT};
use fota_protocol::SlotId;

/// Events kept until the server acknowledges them (one report's worth).
pub const EVENT_QUEUE_LEN: usize = MAX_EVENTS_PER_REPORT;

/// An image installed into a slot and marked pending, not yet reported as confirmed or
/// rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Installed {
    /// What it is: an application, or a stage-1 bootloader.
    pub component: Component,
    /// The slot it was written to: an application slot, or a stage-1 slot for a bootloader.
    pub slot: SlotId,
    /// The rollout it belongs to.
    pub rollout_id: u64,
    /// Its version.
    pub version: ImageVersion,
}

/// A download that survives a reset: the offer (recorded once its slot is erased) and the
/// bytes of it durably programmed into the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedDownload {
    /// What is being downloaded.
    pub offer: Offer,
    /// Bytes at the start of the slot that are programmed and were accepted (a multiple of the
    /// flash's write unit, except at the very end).
    pub offset: u32,
    /// When the image is rebuilt from a delta patch: the patch and where its last checkpoint
    /// stands (the record itself is in the store: [`Persist::load_checkpoint`]).
    pub checkpoint: Option<SavedCheckpoint>,
}

/// A delta patch's checkpoint, as the store keeps it beside the download: the patch it belongs
/// to and where the applier stood. Recorded only once the rebuilt bytes up to `written` are
/// durably programmed in the slot but for a tail shorter than a write unit, kept here, so an
/// applier resumed from it goes on exactly where the slot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedCheckpoint {
    /// The patch being applied (its address, size and base).
    pub patch: PatchOffer,
    /// Target bytes rebuilt (`PatchApplier::written`): all programmed but the tail.
    pub written: u32,
    /// Container bytes applied: where the patch's fetch goes on (`PatchApplier::offset`).
    pub fetched: u32,
    /// The last `tail_len` rebuilt bytes, not programmed yet (less than a write unit).
    pub tail: [u8; CHECKPOINT_TAIL],
    /// How many of `tail` are used.
    pub tail_len: u8,
}

/// The most rebuilt bytes a checkpoint keeps that are not programmed yet (the staged tail of
/// a write unit of up to 9 bytes; the F4's is 4).
pub const CHECKPOINT_TAIL: usize = 8;

/// What ran, and for how long, as last recorded: the next boot reports its reset with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The version that ran.
    pub version: ImageVersion,
    /// Seconds it had run since its boot.
    pub uptime_s: u32,
}

/// What the board's hard fault handler records before it resets the chip: the faulting image and
/// how long it had run, and the Cortex-M fault state (ARMv7-M B3.2.15-B3.2.18). Written by the
/// handler with [`FlashPersist::append_fault`](crate::flash_store::FlashPersist::append_fault),
/// read once by the next boot (`OtaClient::boot_reset` reports it and clears it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// The version of the image that faulted (its own header).
    pub version: ImageVersion,
    /// Seconds it had run since its boot.
    pub uptime_s: u32,
    /// The faulting instruction's address (the stacked PC).
    pub pc: u32,
    /// The stacked link register (the caller, when the PC itself is bad).
    pub lr: u32,
    /// SCB CFSR: the MemManage, BusFault and UsageFault status bits.
    pub cfsr: u32,
    /// SCB HFSR: FORCED (a configurable fault escalated), VECTTBL (a vector table read failed).
    pub hfsr: u32,
    /// The faulting data address (MMFAR or BFAR) when CFSR says one is valid, otherwise 0.
    pub address: u32,
}

/// CFSR's status bits, most specific first, with the names ARMv7-M gives them.
const CFSR_BITS: [(u32, &str); 16] = [
    (16, "UNDEFINSTR"),
    (17, "INVSTATE"),
    (18, "INVPC"),
    (19, "NOCP"),
    (24, "UNALIGNED"),
    (25, "DIVBYZERO"),
    (0, "IACCVIOL"),
    (1, "DACCVIOL"),
    (3, "MUNSTKERR"),
    (4, "MSTKERR"),
    (5, "MLSPERR"),
    (8, "IBUSERR"),
    (9, "PRECISERR"),
    (10, "IMPRECISERR"),
    (11, "UNSTKERR"),
    (12, "STKERR"),
];

impl FaultRecord {
    /// CFSR's MMARVALID: MMFAR holds the faulting address.
    pub const MMARVALID: u32 = 1 << 7;
    /// CFSR's BFARVALID: BFAR holds the faulting address.
    pub const BFARVALID: u32 = 1 << 15;
    /// HFSR's VECTTBL: a vector table read failed.
    pub const VECTTBL: u32 = 1 << 1;

    /// The fault's name: the first status bit set in CFSR (usage faults first, then memory
    /// management, then bus), `VECTTBL` for a failed vector read, or `HARDFAULT`.
    pub fn kind(&self) -> &'static str {
        CFSR_BITS
            .iter()
            .find(|(bit, _)| self.cfsr & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .unwrap_or(if self.hfsr & Self::VECTTBL != 0 {
                "VECTTBL"
            } else {
                "HARDFAULT"
            })
    }
}

/// `UNDEFINSTR pc 0x08060f3a lr ...`, most useful first, so that a cut to a `Reason`'s 96 bytes
/// loses the least: kind, pc, faulting address (when valid), lr, cfsr, hfsr.
impl core::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} pc {:#010x}", self.kind(), self.pc)?;
        if self.address != 0 || self.cfsr & (Self::MMARVALID | Self::BFARVALID) != 0 {
            write!(f, " addr {:#010x}", self.address)?;
        }
        write!(
            f,
            " lr {:#010x} cfsr {:#010x} hfsr {:#010x}",
            self.lr, self.cfsr, self.hfsr
        )
    }
}

/// Everything the client persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedState {
    /// The next event id to hand out (at least 1).
    pub next_event_id: u64,
    /// Events not yet acknowledged, oldest first.
    pub events: heapless::Vec<Event, EVENT_QUEUE_LEN>,
    /// The installed image not yet reported on.
    pub installed: Option<Installed>,
    /// The download in progress.
    pub download: Option<SavedDownload>,
    /// What runs now (or ran before the last reset, until the boot after it records anew).
    pub running: Option<Running>,
    /// A fault recorded by the fault handler and not yet reported.
    pub fault: Option<FaultRecord>,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self {
            next_event_id: 1,
            events: heapless::Vec::new(),
            installed: None,
            download: None,
            running: None,
            fault: None,
        }
    }
}

/// One fact to persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// An event was queued; the counter moves past its id. When the queue is full the oldest
    /// event is dropped (as the client drops it).
    Event(&'a Event),
    /// The server acknowledged every event up to and including this id.
    Acked {
        /// The last acknowledged id.
        through: u64,
    },
    /// An image was installed (`Some`) or reported on (`None`).
    Installed(Option<Installed>),
    /// A download started with its slot erased (`Some`), or ended (`None`: installed, given up
    /// or withdrawn).
    Download(Option<&'a Offer>),
    /// The download's bytes up to this offset are in the slot.
    Progress(u32),
    /// A delta patch's checkpoint for the download in progress: `checkpoint` says where it
    /// stands, `record` is `PatchApplier::checkpoint`'s record (the store keeps it until the
    /// next checkpoint or the download's end). It replaces the one before; a store that cannot
    /// keep it whole keeps the one before.
    Checkpoint {
        /// Where the applier stands.
        checkpoint: SavedCheckpoint,
        /// The applier's record.
        record: &'a [u8; CHECKPOINT_LEN],
    },
    /// This version runs, and has run this long.
    Running(Running),
    /// The fault handler recorded a fault (`Some`; on the board it appends this record itself,
    /// [`FlashPersist::append_fault`](crate::flash_store::FlashPersist::append_fault)), or the
    /// next boot took it (`None`): a fault is reported once.
    Fault(Option<FaultRecord>),
}

impl PersistedState {
    /// Apply `change`: the one definition of what each change means.
    pub fn apply(&mut self, change: &Change<'_>) {
        match *change {
            Change::Event(event) => {
                self.next_event_id = self.next_event_id.max(event.id.saturating_add(1));
                if self.events.is_full() {
                    self.events.remove(0);
                }
                // Cannot fail: room was made above.
                let _ = self.events.push(event.clone());
            }
            Change::Acked { through } => self.events.retain(|e| e.id > through),
            Change::Installed(installed) => self.installed = installed,
            Change::Download(offer) => {
                self.download = offer.map(|offer| SavedDownload {
                    offer: offer.clone(),
                    offset: 0,
                    checkpoint: None,
                })
            }
            Change::Progress(offset) => {
                if let Some(download) = &mut self.download {
                    download.offset = offset.min(download.offer.size);
                }
            }
            Change::Checkpoint { checkpoint, .. } => {
                if let Some(download) = &mut self.download {
                    download.checkpoint = Some(checkpoint);
                }
            }
            Change::Running(running) => self.running = Some(running),
            Change::Fault(fault) => self.fault = fault,
        }
    }
}

/// A store of the client's [`PersistedState`] that survives a reset.
pub trait Persist {
    /// Why a write failed.
    type Error: core::fmt::Debug;

    /// The state as of the last successful [`record`](Persist::record), read back (on the board,
    /// replayed from flash). Called once, when the client starts.
    fn load(&mut self) -> PersistedState;

    /// Persist `change`. When this returns `Ok`, the change survives a reset.
    fn record(&mut self, change: &Change<'_>) -> Result<(), Self::Error>;

    /// The record of the download's last checkpoint ([`Change::Checkpoint`]), copied into
    /// `record`; `false` (and `record` unspecified) if the store has none or cannot read it.
    fn load_checkpoint(&mut self, record: &mut [u8; CHECKPOINT_LEN]) -> bool;
}

impl<P: Persist + ?Sized> Persist for &mut P {
    type Error = P::Error;

    fn load(&mut self) -> PersistedState {
        P::load(self)
    }

    fn record(&mut self, change: &Change<'_>) -> Result<(), Self::Error> {
        P::record(self, change)
    }

    fn load_checkpoint(&mut self, record: &mut [u8; CHECKPOINT_LEN]) -> bool {
        P::load_checkpoint(self, record)
    }
}

#[cfg(feature = "std")]
pub use mem::MemPersist;

#[cfg(feature = "std")]
mod mem {
    extern crate std;

    use super::{
        Change, FaultRecord, Installed, Persist, PersistedState, Running, SavedDownload,
        CHECKPOINT_LEN,
    };
    use fota_protocol::messages::Event;
    use std::vec::Vec;

    /// The persisted state in RAM, for the simulator and tests: it stands for flash, so it
    /// survives the simulated resets by being handed from one client to the next. Events live
    /// on the heap, so a quiet device (the usual case in a fleet of 100,000) costs a few bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MemPersist {
        /// The next event id.
        pub next_event_id: u64,
        /// Unacknowledged events, oldest first.
        pub events: Vec<Event>,
        /// The installed image not yet reported on.
        pub installed: Option<Installed>,
        /// The download in progress.
        pub download: Option<SavedDownload>,
        /// What runs, and for how long.
        pub running: Option<Running>,
        /// A fault not yet reported.
        pub fault: Option<FaultRecord>,
        /// The record of the download's last patch checkpoint (on the heap: a download that is
        /// not a patch costs nothing).
        pub checkpoint: Option<Vec<u8>>,
        /// Changes recorded so far.
        pub changes: u64,
    }

    impl Default for MemPersist {
        fn default() -> Self {
            Self {
                next_event_id: 1,
                events: Vec::new(),
                installed: None,
                download: None,
                running: None,
                fault: None,
                checkpoint: None,
                changes: 0,
            }
        }
    }

    impl MemPersist {
        /// A store holding `state`.
        pub fn from_state(state: PersistedState) -> Self {
            Self {
                next_event_id: state.next_event_id,
                events: state.events.into_iter().collect(),
                installed: state.installed,
                download: state.download,
                running: state.running,
                fault: state.fault,
                checkpoint: None,
                changes: 0,
            }
        }
    }

    impl Persist for MemPersist {
        type Error = core::convert::Infallible;

        fn load(&mut self) -> PersistedState {
            let mut events = heapless::Vec::new();
            let skip = self.events.len().saturating_sub(events.capacity());
            for e in &self.events[skip..] {
                // Cannot fail: at most `capacity` are taken.
                let _ = events.push(e.clone());
            }
            PersistedState {
                next_event_id: self.next_event_id,
                events,
                installed: self.installed,
                download: self.download.clone(),
                running: self.running,
                fault: self.fault,
            }
        }

        fn record(&mut self, change: &Change<'_>) -> Result<(), Self::Error> {
            // The same rule as every store: apply through PersistedState, keep the heap copy.
            let mut state = self.load();
            state.apply(change);
            let changes = self.changes + 1;
            // The record goes with its checkpoint: replaced by the next, gone with the download.
            let checkpoint = match *change {
                Change::Checkpoint { record, .. } if state.download.is_some() => {
                    Some(record.to_vec())
                }
                Change::Download(_) => None,
                _ => self.checkpoint.take(),
            };
            *self = Self::from_state(state);
            self.checkpoint = checkpoint;
            self.changes = changes;
            Ok(())
        }

        fn load_checkpoint(&mut self, record: &mut [u8; CHECKPOINT_LEN]) -> bool {
            let kept = self
                .download
                .as_ref()
                .is_some_and(|d| d.checkpoint.is_some());
            match &self.checkpoint {
                Some(bytes) if kept && bytes.len() == CHECKPOINT_LEN => {
                    record.copy_from_slice(bytes);
                    true
                }
                _ => false,
            }
        }
    }
}
