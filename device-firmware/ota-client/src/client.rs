//! The OTA client's state machine: check in, download an offer into the inactive slot, hand it
//! to the bootloader, confirm a trial image, and report what happened.
//!
//! [`OtaClient`] does one bounded step per call, so the device's main loop (which also kicks the
//! watchdog) drives it and it never blocks forever or panics:
//!
//! ```text
//! let mut ota = OtaClient::new(transport, boot, persist, device, Config::default());
//! ota.after_boot(|| self_test())?;            // once per boot
//! loop {
//!     if time_to_check_in { ota.check_in()?; }
//!     if ota.download_step()? == Step::Reboot { ota.flush_reports().ok(); reset(); }
//!     ota.flush_reports().ok();
//!     kick_watchdog();
//! }
//! ```
//!
//! # What lives where
//!
//! RAM is never trusted across a reset (the field incident), so everything the client must know
//! after one is either in the boot journal (through [`BootControl`]) or in the [`Persist`] store
//! the caller provides (on the board, [`FlashPersist`](crate::flash_store::FlashPersist) in
//! sectors 10-11): the event-id counter, the events the server has not acknowledged, the image
//! installed and not yet reported on, and the download in progress with the offset of the bytes
//! already in the slot. Each is recorded *before* the client acts on it, so after a reset the
//! client picks up where it was: unacknowledged events are sent again (with their ids, so the
//! server stores them once), and a download resumes from its last recorded offset: the bytes
//! already in the slot are read back through the verifier and the content hash (a bounded
//! amount per step), then fetching goes on from there.
//!
//! # Installing
//!
//! An offer is taken only when the running image is confirmed (an update started from a trial
//! image would leave nothing confirmed to revert to) and the target slot's sectors are not
//! write-protected. The slot's sectors are erased one per step, then each chunk is programmed in
//! whole write units (a chunk's unaligned tail waits in RAM for the next chunk) and only then fed
//! to [`Download::accept`], so [`Download::resume_offset`] always equals the bytes in flash (the
//! offset is recorded every [`PROGRESS_EVERY`] bytes). When
//! every byte is in, [`Download::finish`] checks the content address, hash, signature, slot and
//! version, and [`BootControl::mark_pending`] checks the image again from flash before appending
//! `Pending`: only then does [`download_step`](OtaClient::download_step) return
//! [`Step::Reboot`].
//!
//! # Applying a delta patch
//!
//! An application offer may carry a patch (issue 19) that rebuilds the offered image from the
//! running one: if the running slot verifies and hashes to the patch's base, the container is
//! fetched instead of the image and applied ([`crate::patch`]), the running slot only read, the
//! rebuilt bytes programmed and fed to the same [`Download`] a full image goes through, so it
//! is checked exactly as one. A patch that cannot be used (another base, a refused container, a
//! rebuilt image that is refused or does not verify) is reported as `VerifyFailed` and the full
//! image of the same offer downloaded instead, from an erased slot. After a reset a patch
//! resumes from its last checkpoint ([`Config::checkpoint_every`]; [`Change::Checkpoint`],
//! recorded once the bytes it rebuilt are programmed but for a tail it keeps): the slot's
//! bytes are read back through the verifier, then the patch is fetched from the checkpoint's
//! offset. Without a usable checkpoint the bytes it rebuilt, the image's first bytes recorded
//! like a download's, stay and the full image's download goes on after them.
//!
//! # Installing a stage-1 bootloader
//!
//! An offer whose component is [`Component::Bootloader`] is a stage-1 for the stage-1 slot
//! stage-0 is not running, with the same guarantees as an application: taken only when the
//! application and the running stage-1 are both confirmed (so a failed trial has a stage-1 to
//! fall back to), the stage-1 slot's sector not write-protected, its security counter not below
//! the stage-1 floor; downloaded (resumable, verified while it streams) into that stage-1 slot;
//! then [`Download::finish`] checks that the image is marked as a stage-1 for exactly that slot
//! and passes stage-0's own placement check, and [`BootControl::mark_stage1_pending`] checks it
//! again from flash, as stage-0 will, before it appends `Stage1Pending`. An application offered
//! as a bootloader, a stage-1 offered as an application, or a stage-1 marked for the other
//! stage-1 slot is refused (`VerifyFailed`, the reason says what the image is).
//!
//! After the reset stage-0 boots the new stage-1 on trial, and it boots the (confirmed)
//! application; [`after_boot`](OtaClient::after_boot) then confirms the stage-1
//! ([`BootControl::confirm_stage1`]) only after a check-in and the self-test passed, as for an
//! application on trial; meanwhile [`on_trial`](OtaClient::on_trial) is true, so the runtime's
//! trial deadline resets a stage-1 whose application cannot reach the server. If stage-0 reverts
//! to the old stage-1 (three attempts, or a refusal), the boot through the old one reports
//! `RolledBack`. Events name the stage-1's version.
//!
//! # Stopping
//!
//! A device keeps checking in while it downloads. The server offers an in-flight device its
//! image again at every check-in while the rollout is active; once it halts (or is paused or
//! aborted) the offer stops, and [`check_in`](OtaClient::check_in) drops the download
//! ([`CheckInOutcome::Withdrawn`]) instead of installing a release the fleet has stopped.
//!
//! # Pushed commands
//!
//! Over MQTT the server may push [`Command`]s; [`command`](OtaClient::command) acts on them: a
//! `check_in` nudge says when to check in (the caller waits, then calls `check_in`), a `stop`
//! drops the download of a halted, paused or aborted rollout at once (as a check-in that no
//! longer offers it would), and a `report_ack` forgets the events it acknowledges, for a
//! device that publishes [`pending_report`](OtaClient::pending_report) instead of calling
//! [`flush_reports`](OtaClient::flush_reports).
//!
//! # Events
//!
//! `OfferAccepted`, `DownloadStarted` (once the slot is erased), then `Installed`, or the
//! failure that ended the download; after the reboot `TrialBoot` (once the trial reached the
//! server) and `Confirmed`, or, from the old image (or through the old stage-1), `RolledBack`.
//!
//! # Resets
//!
//! [`boot_reset`](OtaClient::boot_reset), once per boot, reports why the device reset (the
//! board decodes RCC_CSR and its own records, [`ResetCause::from_rcc_csr`]) as a `reset` event
//! with the version that ran before it and how long it had run, from what the client recorded
//! ([`record_uptime`](OtaClient::record_uptime) every [`UPTIME_RECORD_EVERY_S`] seconds, so a
//! reset's uptime is known to that resolution). The server's health gate counts the unexpected
//! ones (watchdogs, faults, brown-out) against the release that ran. A factory-fresh device's
//! first power-on has nothing to report; and at most [`MAX_QUEUED_RESETS`] unacknowledged
//! resets are queued, so a device in a reset loop without a link never pushes its update's
//! outcome out of the queue.
//!
//! # Confirming
//!
//! [`after_boot`](OtaClient::after_boot) confirms a trial (or unconfirmed) image only after a
//! successful check-in *and* a passing self-test. An image that cannot reach the server is never
//! confirmed, so the bootloader reverts it after three attempts, and the old image, booting
//! confirmed, reports the rollback.

use crate::download::{max_image_len, target_partition, Download};
use crate::patch::{PatchRun, SlotBase, StageFull, PIECE, STAGE_LEN};
pub use crate::persist::EVENT_QUEUE_LEN;
use crate::persist::{
    Change, FaultRecord, Installed, Persist, PersistedState, Running, SavedCheckpoint,
    SavedDownload, CHECKPOINT_LEN, CHECKPOINT_TAIL,
};
use crate::transport::Transport;
use core::fmt::Write as _;
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use fota_boot::{BootControl, BootMode, ControlError};
use fota_delta::{PatchApplier, PatchError};
use fota_protocol::image::{Digest, ImageVersion, TrustedKey};
use fota_protocol::layout::SECTORS;
use fota_protocol::messages::{
    BootState, CheckIn, CheckInResponse, Command, CommandKind, Component, Event, EventKind, Model,
    Offer, PatchOffer, RdpLevel, Reason, Report, ResetCause, ResetInfo, Stage1Status,
    MAX_EVENTS_PER_REPORT, PATCH_FALLBACK_MARK, PATCH_REASON_PREFIX,
};
use fota_protocol::SlotId;
use sha2::{Digest as _, Sha256};

/// Size of the client's chunk buffer: the most bytes one [`OtaClient::download_step`] fetches.
/// It also holds a delta patch's checkpoint record ([`CHECKPOINT_LEN`] bytes) while it is
/// written to the store or read back from it, so no other buffer is needed for one.
pub const CHUNK_BUF_LEN: usize = 1344;
const _: () = assert!(CHUNK_BUF_LEN >= CHECKPOINT_LEN);

/// How often [`OtaClient::record_uptime`] writes the uptime to the persistent store (a 16-byte
/// record: about 4.6 KB a day, so a 128 KB sector compacts about monthly).
pub const UPTIME_RECORD_EVERY_S: u32 = 300;

/// Most unacknowledged `reset` events kept queued; further resets before the server
/// acknowledges them are counted in [`OtaClient::dropped_events`] instead.
pub const MAX_QUEUED_RESETS: usize = 3;

/// How often a download's offset is recorded: after every this many bytes programmed. A power
/// cut costs at most this many bytes fetched again.
pub const PROGRESS_EVERY: u32 = 4096;

/// How often a delta patch's checkpoint is recorded by default ([`Config::checkpoint_every`]):
/// after every this many bytes of the patch applied.
pub const CHECKPOINT_EVERY: u32 = 4096;

/// What the device says about itself at check-in, besides its boot state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Hardware model.
    pub model: Model,
    /// Version of the running application image.
    pub firmware_version: ImageVersion,
    /// Version of the bootloader, reported at check-in when the client cannot read the running
    /// stage-1's own header (no stage-1 verifies: a single-stage device, or the simulator);
    /// otherwise the check-in says the running stage-1's version.
    pub bootloader_version: ImageVersion,
    /// Read-out protection level, from the option bytes.
    pub rdp_level: RdpLevel,
    /// Write-protected sectors (bit i = sector i protected; nWRP already inverted).
    pub wrp_mask: u32,
}

/// Tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Consecutive failed fetches after which a download is given up (and `DownloadFailed`
    /// reported). At least 1.
    pub max_fetch_failures: u32,
    /// Bytes asked for per fetch, at most [`CHUNK_BUF_LEN`] minus one write unit.
    pub chunk_len: usize,
    /// While a delta patch is applied, its checkpoint is recorded once at least this many bytes
    /// of the patch were applied since the last one (at the end of the first download step
    /// after that which leaves every rebuilt byte programmed); a power cut then costs at most
    /// about this many bytes of the patch fetched again, plus a chunk or two. At least 1.
    pub checkpoint_every: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_fetch_failures: 5,
            chunk_len: 512,
            checkpoint_every: CHECKPOINT_EVERY,
        }
    }
}

/// What a [`download_step`](OtaClient::download_step) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No download in progress.
    Idle,
    /// Progress (or a retryable failure): call again.
    Continue,
    /// The download was given up or refused; the reason is queued as an event.
    Failed,
    /// The image is installed and marked pending: flush reports, then reset the device.
    Reboot,
}

/// What a [`check_in`](OtaClient::check_in) did with the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckInOutcome {
    /// No offer.
    NoOffer,
    /// The offer was accepted and its download started.
    Started,
    /// A download is already running and the server still offers it: it goes on.
    Busy,
    /// A download was running and the server no longer offers it (the rollout was halted,
    /// paused or aborted): the download is dropped, without a failure event, so a halt stops
    /// devices that were still downloading from installing.
    Withdrawn,
    /// The running image (or the running stage-1) is not confirmed yet: it must confirm itself
    /// before the device installs anything.
    NotConfirmed,
    /// The offer was for the running slot (or, for a bootloader, the running stage-1's slot):
    /// ignored.
    WrongSlot,
    /// The target slot is write-protected: `ProtectionBlocked` queued.
    ProtectionBlocked,
    /// The offer was refused (too large, security counter below the floor, a bootloader on a
    /// device with no stage-1 it could fall back to): `VerifyFailed` queued.
    Refused,
    /// The offer is the image the bootloader just reverted, and the server has not heard of
    /// the revert yet (its `RolledBack` event is still queued): it would only be reverted
    /// again, so it is not downloaded. (A server that offers while a device's report is on its
    /// way, e.g. when the check-in goes out before the report after a reboot, sees the revert
    /// with that report.)
    Reverted,
}

/// What a pushed [`Command`] (MQTT) asked, and what [`command`](OtaClient::command) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// A stage that includes this device opened: check in after this many seconds (a random
    /// share of the server's jitter, so a cohort does not arrive in one second).
    CheckInAfter(u32),
    /// The rollout being downloaded was halted, paused or aborted: the download is dropped,
    /// without a failure event, as when a check-in no longer offers it.
    Stopped,
    /// Events up to the acknowledged one are stored: this many were forgotten.
    Acknowledged(usize),
    /// Nothing to do (a stop for another rollout, an acknowledgement already seen).
    Ignored,
}

/// What [`after_boot`](OtaClient::after_boot) found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterBoot {
    /// A confirmed boot with nothing to report.
    Confirmed,
    /// The trial (or unconfirmed) image reached the server, passed its self-test and confirmed
    /// itself (and the stage-1 that booted it, if that one was on trial or unconfirmed):
    /// `Confirmed` queued.
    NewlyConfirmed,
    /// The application was confirmed already; the stage-1 that booted it was on trial (or
    /// unconfirmed, a factory journal), and the application reached the server and passed its
    /// self-test, which proves the stage-1: confirmed (`Confirmed` queued for its rollout).
    Stage1Confirmed(SlotId),
    /// A trial image could not reach the server: not confirmed (the bootloader will revert it
    /// if this keeps happening).
    CheckInFailed,
    /// A trial image failed its self-test: not confirmed.
    SelfTestFailed,
    /// The bootloader reverted (or refused) the image installed earlier, or stage-0 the stage-1
    /// installed earlier: `RolledBack` queued.
    RolledBack,
}

/// Why a client call failed. The client's own state stays consistent: call again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError<TE, FE> {
    /// The transport failed.
    Transport(TE),
    /// The boot journal could not be read or written, or an image did not verify.
    Boot(ControlError<FE>),
}

/// The stage-1 that booted this run, as the journal and the stage-1 slots say (stage-0's own
/// decision, [`BootControl::running_stage1`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningStage1 {
    /// Its stage-1 slot.
    pub slot: SlotId,
    /// On trial, confirmed, or unconfirmed (a factory journal without stage-1 records).
    pub mode: BootMode,
    /// Its version, from its own (verified) header.
    pub version: ImageVersion,
}

/// An offer being downloaded, with the flash bookkeeping around [`Download`].
#[derive(Debug)]
struct Active {
    download: Download,
    /// Sectors of the slot erased so far (erased first, one per step).
    erased: usize,
    /// Bytes fetched but not yet programmed (less than one write unit), at the buffer's start.
    held: usize,
    /// Consecutive failed fetches.
    failures: u32,
    /// `DownloadStarted` has been queued (and the offer recorded in the persistent store).
    started: bool,
    /// After a reset: the bytes already in the slot, to read back through the verifier
    /// before fetching goes on.
    rehash_to: u32,
    /// The offset last recorded in the persistent store.
    saved_offset: u32,
    /// The patch bytes applied when its checkpoint was last recorded.
    saved_fetched: u32,
    /// A delta patch being applied instead of fetching the image (issue 19): the bytes that go
    /// through `download` are then the rebuilt ones.
    patch: Option<PatchRun>,
    /// The image in the slot was rebuilt from a patch: if it does not verify, the client falls
    /// back to the full image of the same offer.
    from_patch: bool,
}

impl Active {
    /// A download of `download`'s offer from its first byte, with the slot still to erase.
    fn fresh(download: Download, patch: Option<PatchRun>) -> Self {
        Self {
            download,
            erased: 0,
            held: 0,
            failures: 0,
            started: false,
            rehash_to: 0,
            saved_offset: 0,
            saved_fetched: 0,
            patch,
            from_patch: false,
        }
    }
}

/// Why a step of a patch application stopped.
enum PatchStop {
    /// The patch (or the image it rebuilds) is unusable: fall back to the full image.
    Refused(Reason),
    /// The flash failed: give the download up, as a full download would.
    Flash(Reason),
}

/// The OTA client. See the [module docs](self).
#[derive(Debug)]
pub struct OtaClient<'k, T, F, P> {
    transport: T,
    boot: BootControl<F>,
    persist: P,
    device: DeviceInfo,
    keys: &'k [TrustedKey],
    config: Config,
    /// The stage-1 that booted this run (`None` if none verifies), read at start and after the
    /// client confirms one.
    stage1: Option<RunningStage1>,
    active: Option<Active>,
    buf: [u8; CHUNK_BUF_LEN],
    queue: heapless::Vec<Event, EVENT_QUEUE_LEN>,
    next_event_id: u64,
    installed: Option<Installed>,
    running: Option<Running>,
    fault: Option<FaultRecord>,
    poll_interval_s: Option<u32>,
    dropped_events: u32,
    persist_errors: u32,
}

impl<'k, T, F, P> OtaClient<'k, T, F, P>
where
    T: Transport,
    F: NorFlash + ReadNorFlash,
    P: Persist,
{
    /// A client for the device described by `device`, trusting image signatures by `keys`.
    pub fn new(
        transport: T,
        boot: BootControl<F>,
        mut persist: P,
        device: DeviceInfo,
        keys: &'k [TrustedKey],
        config: Config,
    ) -> Self {
        let saved = persist.load();
        let max_chunk = CHUNK_BUF_LEN.saturating_sub(F::WRITE_SIZE.max(1));
        let config = Config {
            max_fetch_failures: config.max_fetch_failures.max(1),
            chunk_len: config.chunk_len.min(max_chunk).max(1),
            checkpoint_every: config.checkpoint_every.max(1),
        };
        let mut client = Self {
            transport,
            boot,
            persist,
            device,
            keys,
            config,
            stage1: None,
            active: None,
            buf: [0; CHUNK_BUF_LEN],
            queue: heapless::Vec::new(),
            next_event_id: 1,
            installed: None,
            running: None,
            fault: None,
            poll_interval_s: None,
            dropped_events: 0,
            persist_errors: 0,
        };
        client.stage1 = client.read_running_stage1();
        client.restore(saved);
        client
    }

    /// Which stage-1 booted this run, and its version (both stage-1 slots read and verified
    /// where stage-0's decision needs it, nothing written).
    fn read_running_stage1(&mut self) -> Option<RunningStage1> {
        let (slot, mode) = self.boot.running_stage1(self.keys)?;
        let verified = self.boot.verify_stage1(slot, self.keys).ok()?;
        Some(RunningStage1 {
            slot,
            mode,
            version: verified.image.header.version,
        })
    }

    /// The stage-1 that booted this run, as the client read it (`None`: no stage-1 verifies,
    /// e.g. a single-stage device, and bootloader offers are refused).
    pub fn running_stage1(&self) -> Option<RunningStage1> {
        self.stage1
    }

    /// Whether something this run booted through is on trial and must prove itself by this
    /// boot reaching the server: the application, or the stage-1 that booted it. The runtime
    /// resets a trial that has not confirmed by its deadline, so stage-0 or the bootloader
    /// counts the attempt.
    pub fn on_trial(&self) -> bool {
        self.boot.info().is_trial()
            || self
                .stage1
                .is_some_and(|s| matches!(s.mode, BootMode::Trial { .. }))
    }

    /// Whether every stage of this run is confirmed: the application, and the stage-1 if one is
    /// known. Only then does the device install anything, so that a failed trial always has
    /// confirmed images to fall back to.
    fn all_confirmed(&self) -> bool {
        self.boot.info().mode == BootMode::Confirmed
            && self.stage1.is_none_or(|s| s.mode == BootMode::Confirmed)
    }

    /// The slot a new image of `component` goes to: the inactive application slot, or the
    /// stage-1 slot stage-0 is not running (`None` if no stage-1 is known).
    fn inactive_slot(&self, component: Component) -> Option<SlotId> {
        match component {
            Component::Application => Some(self.boot.inactive_slot()),
            Component::Bootloader => self.stage1.map(|s| s.slot.other()),
        }
    }

    /// The offset of `offer`'s slot in the flash driver.
    fn slot_offset(&self, offer: &Offer) -> u32 {
        let layout = self.boot.layout();
        match offer.component {
            Component::Application => layout.slot_offset(offer.slot),
            Component::Bootloader => layout.stage1_offset(offer.slot),
        }
    }

    /// Whether the image installed for `installed` was reverted or refused since (by the
    /// bootloader, or by stage-0 for a stage-1).
    fn is_rejected(&self, installed: &Installed) -> bool {
        let state = self.boot.journal().state();
        match installed.component {
            Component::Application => state.is_rejected(installed.slot),
            Component::Bootloader => state.stage1().is_rejected(installed.slot),
        }
    }

    /// Take up what the persistent store says: the counter, the unacknowledged events, the
    /// installed image, and a download to resume if it can still be resumed here.
    fn restore(&mut self, saved: PersistedState) {
        self.next_event_id = saved.next_event_id.max(1);
        self.queue = saved.events;
        self.installed = saved.installed;
        self.running = saved.running;
        self.fault = saved.fault;
        let Some(download) = saved.download else {
            return;
        };
        // Only a confirmed image (booted through a confirmed stage-1) writes the inactive slot; a
        // trial (after the install that the download became) or a download for the running
        // slot (or stage-1 slot) is over.
        let resumable = self.all_confirmed()
            && self.inactive_slot(download.offer.component) == Some(download.offer.slot);
        match Download::new(&download.offer) {
            Ok(fresh) if resumable => {
                let partition = target_partition(&download.offer);
                let sectors = SECTORS
                    .iter()
                    .filter(|s| partition.contains(s.start))
                    .count();
                // A patch with a checkpoint goes on from it; otherwise (none recorded, or one
                // that cannot be used) the full image's download goes on after the bytes in
                // the slot, which are the image's first bytes either way.
                let patch = self.resume_patch(&download);
                // A resumed patch's rebuilt bytes are in the slot but for its staged tail.
                let (rehash_to, saved_fetched) = match &patch {
                    Some(run) => (
                        u32::try_from(run.applier.written() - run.staged_len as u64)
                            .unwrap_or(u32::MAX),
                        run.fetched(),
                    ),
                    None => (download.offset, 0),
                };
                self.active = Some(Active {
                    download: fresh,
                    erased: sectors,
                    held: 0,
                    failures: 0,
                    started: true,
                    rehash_to,
                    saved_offset: rehash_to,
                    saved_fetched,
                    patch,
                    from_patch: false,
                });
            }
            _ => self.record(&Change::Download(None)),
        }
    }

    /// The patch of a download recorded before a reset, resumed from its last checkpoint: the
    /// running image must still hash to the patch's base (as at the offer), the record must
    /// read back whole from the store and be accepted by [`PatchApplier::resume`], and say what
    /// the store said of it (bytes written and applied), or there is no patch to go on with.
    /// The applier hashes the base against the patch's header again at its first piece.
    fn resume_patch(&mut self, download: &SavedDownload) -> Option<PatchRun> {
        let SavedCheckpoint {
            patch,
            written,
            fetched,
            tail,
            tail_len,
        } = download.checkpoint?;
        let tail = tail.get(..usize::from(tail_len))?;
        if download.offer.component != Component::Application
            || written > download.offer.size
            || fetched > patch.size
            || tail.len() >= F::WRITE_SIZE.max(1)
            || tail.len() as u32 > written
        {
            return None;
        }
        // Hashing the running slot uses the chunk buffer: before the record goes there.
        let base_len = self.running_image_len(&patch.base_sha256).ok()?;
        let record: &mut [u8; CHECKPOINT_LEN] =
            (&mut self.buf[..CHECKPOINT_LEN]).try_into().ok()?;
        if !self.persist.load_checkpoint(record) {
            return None;
        }
        let applier = PatchApplier::resume(record).ok()?;
        let consistent = applier.written() == u64::from(written)
            && applier.offset() == u64::from(fetched)
            && applier
                .header()
                .is_none_or(|h| h.base_digest == patch.base_sha256.0);
        consistent.then(|| PatchRun::resumed(patch, base_len, applier, tail))
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The boot control (journal and flash).
    pub fn boot(&self) -> &BootControl<F> {
        &self.boot
    }

    /// The boot control, mutably.
    pub fn boot_mut(&mut self) -> &mut BootControl<F> {
        &mut self.boot
    }

    /// The persistent store.
    pub fn persist(&self) -> &P {
        &self.persist
    }

    /// The persistent store, mutably (to read it back, as a reset would).
    pub fn persist_mut(&mut self) -> &mut P {
        &mut self.persist
    }

    /// Events waiting for the server's acknowledgement, oldest first.
    pub fn queued_events(&self) -> &[Event] {
        &self.queue
    }

    /// The id the next event will get.
    pub fn next_event_id(&self) -> u64 {
        self.next_event_id
    }

    /// Events dropped because the queue was full (oldest dropped first).
    pub fn dropped_events(&self) -> u32 {
        self.dropped_events
    }

    /// Writes to the [`Persist`] store that failed.
    pub fn persist_errors(&self) -> u32 {
        self.persist_errors
    }

    /// The download in progress, if any.
    pub fn download(&self) -> Option<&Download> {
        self.active.as_ref().map(|a| &a.download)
    }

    /// The delta patch the download in progress is rebuilt from, if it is (`None` for a full
    /// image, and once a patch was given up for the full image).
    pub fn applying_patch(&self) -> Option<&PatchOffer> {
        self.active
            .as_ref()
            .and_then(|a| a.patch.as_ref())
            .map(|p| &p.offer)
    }

    /// Consecutive failed fetches of the download in progress (0 after a successful one).
    pub fn fetch_failures(&self) -> u32 {
        self.active.as_ref().map_or(0, |a| a.failures)
    }

    /// The check-in interval the server asked for at the last successful check-in.
    pub fn poll_interval_s(&self) -> Option<u32> {
        self.poll_interval_s
    }

    /// Give the parts back.
    pub fn into_parts(self) -> (T, BootControl<F>, P) {
        (self.transport, self.boot, self.persist)
    }

    /// The check-in message for the device as it is now.
    pub fn check_in_message(&self) -> CheckIn {
        let info = self.boot.info();
        CheckIn {
            model: self.device.model.clone(),
            firmware_version: self.device.firmware_version,
            running_slot: info.slot,
            boot_state: if info.mode == BootMode::Confirmed {
                BootState::Confirmed
            } else {
                BootState::Trial
            },
            bootloader_version: self
                .stage1
                .map_or(self.device.bootloader_version, |s| s.version),
            rdp_level: self.device.rdp_level,
            wrp_mask: self.device.wrp_mask,
            security_counter: Some(info.security_counter),
            stage1: self.stage1.map(|s| Stage1Status {
                slot: s.slot,
                // Unconfirmed (a factory journal without stage-1 records) confirms itself
                // after this check-in, as a trial does: not proved yet.
                boot_state: if s.mode == BootMode::Confirmed {
                    BootState::Confirmed
                } else {
                    BootState::Trial
                },
            }),
            // Every build of the client applies patches (docs/FIRMWARE.md).
            delta_format: Some(fota_delta::header::FORMAT_VERSION),
        }
    }

    /// Check in with the server and decide about its offer, if any (see [`CheckInOutcome`]).
    pub fn check_in(&mut self) -> Result<CheckInOutcome, ClientError<T::Error, F::Error>> {
        let response = self.send_check_in()?;
        if let Some(active) = &self.active {
            let offered = active.download.offer().sha256;
            if response.offer.as_ref().is_some_and(|o| o.sha256 == offered) {
                return Ok(CheckInOutcome::Busy);
            }
            self.active = None;
            self.record(&Change::Download(None));
            return Ok(CheckInOutcome::Withdrawn);
        }
        Ok(match response.offer {
            None => CheckInOutcome::NoOffer,
            Some(offer) => self.consider(&offer),
        })
    }

    fn send_check_in(&mut self) -> Result<CheckInResponse, ClientError<T::Error, F::Error>> {
        let message = self.check_in_message();
        let response = self
            .transport
            .check_in(&message)
            .map_err(ClientError::Transport)?;
        self.poll_interval_s = Some(response.poll_interval_s);
        Ok(response)
    }

    fn consider(&mut self, offer: &Offer) -> CheckInOutcome {
        if self.active.is_some() {
            return CheckInOutcome::Busy;
        }
        if let Some(installed) = self.installed {
            if offer.rollout_id == installed.rollout_id
                && offer.version == installed.version
                && offer.component == installed.component
                && self.is_rejected(&installed)
            {
                return CheckInOutcome::Reverted;
            }
        }
        if !self.all_confirmed() {
            return CheckInOutcome::NotConfirmed;
        }
        let Some(inactive) = self.inactive_slot(offer.component) else {
            // A bootloader offer, and no stage-1 verifies here: this run came from no stage-1
            // stage-0 could fall back to, so none may be replaced.
            self.queue_event(
                EventKind::VerifyFailed,
                Some(offer.rollout_id),
                Some(offer.version),
                Some(reason(format_args!(
                    "no running stage-1 verifies: cannot install a bootloader"
                ))),
            );
            return CheckInOutcome::Refused;
        };
        if offer.slot != inactive {
            return CheckInOutcome::WrongSlot;
        }
        let slot_mask = target_partition(offer).sector_mask();
        let blocked = self.device.wrp_mask & slot_mask;
        if blocked != 0 {
            let what = match offer.component {
                Component::Application => "slot",
                Component::Bootloader => "stage-1 slot",
            };
            let reason = reason(format_args!(
                "{what} {} sectors are write-protected (wrp_mask {:#x}, slot needs {:#x})",
                offer.slot, self.device.wrp_mask, slot_mask
            ));
            self.queue_event(
                EventKind::ProtectionBlocked,
                Some(offer.rollout_id),
                Some(offer.version),
                Some(reason),
            );
            return CheckInOutcome::ProtectionBlocked;
        }
        let floor = match offer.component {
            Component::Application => self.boot.info().security_counter,
            Component::Bootloader => self.boot.journal().state().stage1().floor(),
        };
        if offer.security_counter < floor {
            let which = match offer.component {
                Component::Application => "device's",
                Component::Bootloader => "stage-1",
            };
            let reason = reason(format_args!(
                "security counter {} is below the {which} floor {floor}",
                offer.security_counter
            ));
            self.queue_event(
                EventKind::VerifyFailed,
                Some(offer.rollout_id),
                Some(offer.version),
                Some(reason),
            );
            return CheckInOutcome::Refused;
        }
        match Download::new(offer) {
            Ok(download) => {
                self.queue_event(
                    EventKind::OfferAccepted,
                    Some(offer.rollout_id),
                    Some(offer.version),
                    None,
                );
                let patch = self.usable_patch(offer);
                self.active = Some(Active::fresh(download, patch));
                CheckInOutcome::Started
            }
            Err(e) => {
                self.queue_event(
                    e.event_kind(),
                    Some(offer.rollout_id),
                    Some(offer.version),
                    Some(reason(format_args!("{e}"))),
                );
                CheckInOutcome::Refused
            }
        }
    }

    /// Advance the download by one bounded step: erase one sector of the target slot, or fetch
    /// and program one chunk, or (once every byte is in) verify and mark the slot pending.
    pub fn download_step(&mut self) -> Step {
        let Some(mut active) = self.active.take() else {
            return Step::Idle;
        };
        let slot = active.download.slot();
        let slot_offset = self.slot_offset(active.download.offer());

        // 1. Erase the slot, one sector per step (a 128 KB sector takes a second or two).
        let partition = target_partition(active.download.offer());
        let mut sectors = SECTORS.iter().filter(|s| partition.contains(s.start));
        if let Some(sector) = sectors.nth(active.erased) {
            let from = slot_offset + (sector.start - partition.start);
            return match self.boot.flash_mut().erase(from, from + sector.size) {
                Ok(()) => {
                    active.erased += 1;
                    self.active = Some(active);
                    Step::Continue
                }
                Err(e) => self.give_up(
                    &active,
                    EventKind::DownloadFailed,
                    reason(format_args!("erasing slot {slot}: {e:?}")),
                ),
            };
        }

        if !active.started {
            active.started = true;
            // Recorded without its patch: the patch is recorded with its checkpoints, and
            // without one a reset goes on with the full image after the bytes in the slot.
            let offer = Offer {
                patch: None,
                ..active.download.offer().clone()
            };
            // From here on a reset resumes instead of starting over: the slot is erased.
            self.record(&Change::Download(Some(&offer)));
            let (rollout, version) = (offer.rollout_id, offer.version);
            self.queue_event(
                EventKind::DownloadStarted,
                Some(rollout),
                Some(version),
                None,
            );
        }

        // 2. After a reset: read the bytes already in the slot back through the verifier (for
        // a patch resumed from its checkpoint, the bytes it had rebuilt by then).
        let have = active.download.resume_offset();
        if have < active.rehash_to {
            let n = ((active.rehash_to - have) as usize).min(CHUNK_BUF_LEN);
            let at = slot_offset + have;
            if let Err(e) = self.boot.flash_mut().read(at, &mut self.buf[..n]) {
                return self.give_up(
                    &active,
                    EventKind::DownloadFailed,
                    reason(format_args!("reading slot {slot} at {at:#x}: {e:?}")),
                );
            }
            if let Err(e) = active.download.accept(&self.buf[..n]) {
                return self.give_up(
                    &active,
                    e.event_kind(),
                    reason(format_args!("resuming at {have}: {e}")),
                );
            }
            self.active = Some(active);
            return Step::Continue;
        }

        // A patch: fetch the container and apply it instead of fetching the image.
        if active.patch.is_some() {
            return self.patch_step(active, slot_offset);
        }

        // 3. Every byte in: verify, hand to the bootloader, reboot.
        if active.download.is_complete() {
            return self.install(active);
        }

        // 4. Fetch the next chunk after the bytes held back, program whole write units.
        let write = F::WRITE_SIZE.max(1);
        let held = active.held;
        let fetched = active.download.resume_offset() + held as u32;
        let left = (active.download.offer().size - fetched) as usize;
        let want = left.min(self.config.chunk_len);
        let sha256 = active.download.offer().sha256;
        let result = if want == 0 {
            Ok(0)
        } else {
            self.transport
                .fetch_range(&sha256, fetched, &mut self.buf[held..held + want])
        };
        let n = match result {
            Ok(n) if n > 0 || want == 0 => n.min(want),
            failure => {
                active.failures += 1;
                if active.failures >= self.config.max_fetch_failures {
                    let why = match failure {
                        Err(e) => reason(format_args!(
                            "{} fetches failed at offset {fetched}: {e:?}",
                            active.failures
                        )),
                        Ok(_) => reason(format_args!(
                            "server has no bytes at offset {fetched} of {}",
                            active.download.offer().size
                        )),
                    };
                    return self.give_up(&active, EventKind::DownloadFailed, why);
                }
                self.active = Some(active);
                return Step::Continue;
            }
        };
        active.failures = 0;
        let have = held + n;
        let last = n == want && want == left;
        // The last chunk is padded with the erased value to a whole write unit.
        let (program_len, accept_len) = if last {
            let padded = have.div_ceil(write) * write;
            self.buf[have..padded].fill(0xFF);
            (padded, have)
        } else {
            let aligned = have - have % write;
            (aligned, aligned)
        };
        if program_len > 0 {
            let at = slot_offset + active.download.resume_offset();
            if let Err(e) = self.boot.flash_mut().write(at, &self.buf[..program_len]) {
                return self.give_up(
                    &active,
                    EventKind::DownloadFailed,
                    reason(format_args!("programming slot {slot} at {at:#x}: {e:?}")),
                );
            }
            if let Err(e) = active.download.accept(&self.buf[..accept_len]) {
                return self.give_up(&active, e.event_kind(), reason(format_args!("{e}")));
            }
        }
        self.buf.copy_within(accept_len..have, 0);
        active.held = have - accept_len;
        let offset = active.download.resume_offset();
        if offset - active.saved_offset >= PROGRESS_EVERY {
            self.record(&Change::Progress(offset));
            active.saved_offset = offset;
        }
        self.active = Some(active);
        Step::Continue
    }

    fn install(&mut self, active: Active) -> Step {
        let offer = active.download.offer().clone();
        let image = match active.download.finish(self.keys) {
            Ok(image) => image,
            Err(e) if active.from_patch => {
                return self.patch_fallback(
                    &offer,
                    reason(format_args!("the rebuilt image does not verify: {e}")),
                );
            }
            Err(e) => {
                return self.give_up_offer(&offer, e.event_kind(), reason(format_args!("{e}")));
            }
        };
        // Remember the rollout before the journal says Pending: the trial boot needs it.
        self.set_installed(Some(Installed {
            component: offer.component,
            slot: offer.slot,
            rollout_id: offer.rollout_id,
            version: image.header.version,
        }));
        // Checked again from flash, as the bootloader (or stage-0) will, before Pending.
        let marked = match offer.component {
            Component::Application => self.boot.mark_pending(offer.slot, self.keys),
            Component::Bootloader => self.boot.mark_stage1_pending(offer.slot, self.keys),
        };
        if let Err(e) = marked {
            self.set_installed(None);
            let kind = match e {
                ControlError::Image { .. } | ControlError::Stage1 { .. } => EventKind::VerifyFailed,
                _ => EventKind::DownloadFailed,
            };
            return self.give_up_offer(&offer, kind, reason(format_args!("mark_pending: {e:?}")));
        }
        self.record(&Change::Download(None));
        self.queue_event(
            EventKind::Installed,
            Some(offer.rollout_id),
            Some(offer.version),
            None,
        );
        Step::Reboot
    }

    /// The offer's patch, if it is an application's and applies to the running image (its
    /// `base_sha256` is the SHA-256 of the running slot's signed image, header through TLVs).
    /// A patch for another base is reported (`VerifyFailed`, naming the patch) and the full
    /// image is downloaded instead.
    fn usable_patch(&mut self, offer: &Offer) -> Option<PatchRun> {
        let patch = offer.patch?;
        if offer.component != Component::Application {
            return None;
        }
        match self.running_image_len(&patch.base_sha256) {
            Ok(base_len) => Some(PatchRun::new(patch, base_len, max_image_len(offer))),
            Err(why) => {
                let why = reason(format_args!(
                    "{PATCH_REASON_PREFIX}{:08x}{PATCH_FALLBACK_MARK}{why}",
                    short(&patch.sha256)
                ));
                self.queue_event(
                    EventKind::VerifyFailed,
                    Some(offer.rollout_id),
                    Some(offer.version),
                    Some(why),
                );
                None
            }
        }
    }

    /// The running image's length if it hashes to `base` (read from the running slot, which
    /// is only read); otherwise why not.
    fn running_image_len(&mut self, base: &Digest) -> Result<u32, Reason> {
        let running = self.boot.inactive_slot().other();
        let verified = self.boot.verify(running, self.keys).map_err(|e| {
            reason(format_args!(
                "the running slot {running} does not verify: {e:?}"
            ))
        })?;
        let len = verified.image.total_len;
        let offset = self.boot.layout().slot_offset(running);
        let mut hash = Sha256::new();
        let mut at = 0;
        while at < len {
            let n = ((len - at) as usize).min(CHUNK_BUF_LEN);
            self.boot
                .flash_mut()
                .read(offset + at, &mut self.buf[..n])
                .map_err(|e| reason(format_args!("reading slot {running}: {e:?}")))?;
            hash.update(&self.buf[..n]);
            at += n as u32;
        }
        let have = Digest::from(hash.finalize());
        if have != *base {
            return Err(reason(format_args!(
                "its base {:08x}.. is not the running image {:08x}..",
                short(base),
                short(&have)
            )));
        }
        Ok(len)
    }

    /// One step of a patch: fetch the next piece of the container and apply it, the rebuilt
    /// bytes programmed into the inactive slot in whole write units and fed to the download's
    /// verifier; or, once the container is in, check it, program the last bytes and install.
    fn patch_step(&mut self, mut active: Active, slot_offset: u32) -> Step {
        let Some(mut run) = active.patch.take() else {
            self.active = Some(active);
            return Step::Continue;
        };
        let write = F::WRITE_SIZE.max(1);
        let offer = active.download.offer().clone();
        let id = short(&run.offer.sha256);

        if run.fetched() >= run.offer.size {
            if let Err(e) = run.applier.finish::<F::Error, StageFull>() {
                return self.patch_fallback(&offer, reason(format_args!("{e}")));
            }
            // The last bytes, padded with the erased value to a whole write unit.
            if run.staged_len > 0 {
                let padded = run.staged_len.div_ceil(write) * write;
                if padded > STAGE_LEN {
                    return self.patch_fallback(&offer, reason(format_args!("{StageFull:?}")));
                }
                run.staged[run.staged_len..padded].fill(0xFF);
                let at = slot_offset + active.download.resume_offset();
                if let Err(e) = self.boot.flash_mut().write(at, &run.staged[..padded]) {
                    return self.give_up(
                        &active,
                        EventKind::DownloadFailed,
                        reason(format_args!(
                            "programming slot {} at {at:#x}: {e:?}",
                            offer.slot
                        )),
                    );
                }
                if let Err(e) = active.download.accept(&run.staged[..run.staged_len]) {
                    return self.patch_fallback(
                        &offer,
                        reason(format_args!("the rebuilt image is refused: {e}")),
                    );
                }
            }
            if !active.download.is_complete() {
                let why = reason(format_args!(
                    "it rebuilt {} of the offered {} bytes",
                    active.download.resume_offset(),
                    offer.size
                ));
                return self.patch_fallback(&offer, why);
            }
            active.from_patch = true;
            return self.install(active);
        }

        // Fetch the next piece of the container.
        let fetched = run.fetched();
        let want = ((run.offer.size - fetched) as usize).min(self.config.chunk_len);
        let n = match self
            .transport
            .fetch_range(&run.offer.sha256, fetched, &mut self.buf[..want])
        {
            Ok(n) if n > 0 => n.min(want),
            failure => {
                active.failures += 1;
                if active.failures >= self.config.max_fetch_failures {
                    let why = match failure {
                        Err(e) => reason(format_args!(
                            "delta patch {id:08x}: {} fetches failed at offset {fetched}: {e:?}",
                            active.failures
                        )),
                        Ok(_) => reason(format_args!(
                            "delta patch {id:08x}: server has no bytes at offset {fetched} of {}",
                            run.offer.size
                        )),
                    };
                    return self.give_up(&active, EventKind::DownloadFailed, why);
                }
                active.patch = Some(run);
                self.active = Some(active);
                return Step::Continue;
            }
        };
        active.failures = 0;

        // Apply it, a piece at a time: a piece rebuilds at most what the staging buffer holds.
        let running = self.boot.inactive_slot().other();
        let base_offset = self.boot.layout().slot_offset(running);
        let mut stop = None;
        for piece in self.buf[..n].chunks(PIECE) {
            let mut base = SlotBase {
                flash: self.boot.flash_mut(),
                offset: base_offset,
                len: run.base_len,
            };
            let (staged, staged_len) = (&mut run.staged, &mut run.staged_len);
            let fed = run.applier.feed(
                piece,
                &mut base,
                &mut |out: &[u8]| -> Result<(), StageFull> {
                    let end = *staged_len + out.len();
                    let room = staged.get_mut(*staged_len..end).ok_or(StageFull)?;
                    room.copy_from_slice(out);
                    *staged_len = end;
                    Ok(())
                },
            );
            match fed {
                Ok(()) => {}
                // Reading the running slot failed: a flash failure, as in a full download.
                Err(PatchError::Base(e)) => {
                    stop = Some(PatchStop::Flash(reason(format_args!(
                        "reading slot {running}: {e:?}"
                    ))));
                    break;
                }
                Err(e) => {
                    stop = Some(PatchStop::Refused(reason(format_args!("{e}"))));
                    break;
                }
            }
            let aligned = run.staged_len - run.staged_len % write;
            if aligned == 0 {
                continue;
            }
            let at = slot_offset + active.download.resume_offset();
            if let Err(e) = self.boot.flash_mut().write(at, &run.staged[..aligned]) {
                stop = Some(PatchStop::Flash(reason(format_args!(
                    "programming slot {} at {at:#x}: {e:?}",
                    offer.slot
                ))));
                break;
            }
            if let Err(e) = active.download.accept(&run.staged[..aligned]) {
                stop = Some(PatchStop::Refused(reason(format_args!(
                    "the rebuilt image is refused: {e}"
                ))));
                break;
            }
            run.staged.copy_within(aligned..run.staged_len, 0);
            run.staged_len -= aligned;
        }
        match stop {
            Some(PatchStop::Refused(why)) => return self.patch_fallback(&offer, why),
            Some(PatchStop::Flash(why)) => {
                return self.give_up(&active, EventKind::DownloadFailed, why)
            }
            None => {}
        }
        // The rebuilt bytes in the slot: after a reset without a usable checkpoint the full
        // image's download goes on after them.
        let offset = active.download.resume_offset();
        if offset - active.saved_offset >= PROGRESS_EVERY {
            self.record(&Change::Progress(offset));
            active.saved_offset = offset;
        }
        // The checkpoint, once enough of the patch was applied since the last one: every byte
        // rebuilt is programmed but the staged tail (less than a write unit), which goes in
        // the checkpoint, so that the applier resumed from it goes on exactly where the slot
        // does. Its record is written through the chunk buffer, whose bytes were all applied
        // above.
        let fetched = run.fetched();
        let tail_len = run.staged_len;
        if tail_len <= CHECKPOINT_TAIL
            && fetched - active.saved_fetched >= self.config.checkpoint_every
            && u64::from(offset) + tail_len as u64 == run.applier.written()
        {
            let mut tail = [0; CHECKPOINT_TAIL];
            tail[..tail_len].copy_from_slice(&run.staged[..tail_len]);
            if let Ok(record) =
                <&mut [u8; CHECKPOINT_LEN]>::try_from(&mut self.buf[..CHECKPOINT_LEN])
            {
                run.applier.checkpoint(record);
                let checkpoint = SavedCheckpoint {
                    patch: run.offer,
                    written: offset + tail_len as u32,
                    fetched,
                    tail,
                    tail_len: tail_len as u8,
                };
                let record: &[u8; CHECKPOINT_LEN] = record;
                if self
                    .persist
                    .record(&Change::Checkpoint { checkpoint, record })
                    .is_err()
                {
                    self.persist_errors = self.persist_errors.saturating_add(1);
                }
                active.saved_fetched = fetched;
            }
        }
        active.patch = Some(run);
        self.active = Some(active);
        Step::Continue
    }

    /// The patch of `offer` cannot be used (`why`): report it (`VerifyFailed`, naming the
    /// patch) and download the full image of the same offer instead, from an erased slot. The
    /// half-written slot is never marked pending: the download restarts with its erase, and
    /// until its first byte is recorded a reset leaves no download to resume.
    fn patch_fallback(&mut self, offer: &Offer, why: Reason) -> Step {
        let id = offer.patch.map(|p| short(&p.sha256)).unwrap_or(0);
        let why = reason(format_args!(
            "{PATCH_REASON_PREFIX}{id:08x}{PATCH_FALLBACK_MARK}{why}"
        ));
        self.record(&Change::Download(None));
        self.queue_event(
            EventKind::VerifyFailed,
            Some(offer.rollout_id),
            Some(offer.version),
            Some(why),
        );
        let full = Offer {
            patch: None,
            ..offer.clone()
        };
        match Download::new(&full) {
            Ok(download) => {
                self.active = Some(Active::fresh(download, None));
                Step::Continue
            }
            Err(e) => self.give_up_offer(&full, e.event_kind(), reason(format_args!("{e}"))),
        }
    }

    fn give_up(&mut self, active: &Active, kind: EventKind, why: Reason) -> Step {
        let offer = active.download.offer().clone();
        self.give_up_offer(&offer, kind, why)
    }

    fn give_up_offer(&mut self, offer: &Offer, kind: EventKind, why: Reason) -> Step {
        self.active = None;
        self.record(&Change::Download(None));
        self.queue_event(kind, Some(offer.rollout_id), Some(offer.version), Some(why));
        Step::Failed
    }

    /// Once per boot, before anything else: on a trial (or unconfirmed) boot, check in and run
    /// `self_test`, and confirm the image only if both succeed; the same for the stage-1 that
    /// booted this run, if it is on trial (or unconfirmed): the application reaching the server
    /// and passing its self-test is its proof. On a confirmed boot, report a rollback of an
    /// image (or a stage-1) installed earlier.
    pub fn after_boot(
        &mut self,
        self_test: impl FnOnce() -> bool,
    ) -> Result<AfterBoot, ClientError<T::Error, F::Error>> {
        let info = self.boot.info();
        let installed = self.installed;
        let app_unproven = info.mode != BootMode::Confirmed;
        let stage1_unproven = self
            .stage1
            .filter(|s| s.mode != BootMode::Confirmed)
            .map(|s| s.slot);
        if app_unproven || stage1_unproven.is_some() {
            // Check in first: an image that cannot reach the server must not confirm itself.
            if self.send_check_in().is_err() {
                return Ok(AfterBoot::CheckInFailed);
            }
            // The rollouts this boot tries: the application's, the stage-1's (none for a
            // factory image, which confirms all the same).
            let app_rollout = installed
                .filter(|i| {
                    app_unproven && i.component == Component::Application && i.slot == info.slot
                })
                .map(|i| i.rollout_id);
            let stage1 = installed.filter(|i| {
                i.component == Component::Bootloader && stage1_unproven == Some(i.slot)
            });
            if app_unproven {
                self.queue_event_once(
                    EventKind::TrialBoot,
                    app_rollout,
                    Some(self.device.firmware_version),
                    None,
                );
            }
            if let Some(i) = stage1 {
                self.queue_event_once(
                    EventKind::TrialBoot,
                    Some(i.rollout_id),
                    Some(i.version),
                    None,
                );
            }
            if !self_test() {
                return Ok(AfterBoot::SelfTestFailed);
            }
            if app_unproven {
                self.boot
                    .mark_confirmed(self.keys)
                    .map_err(ClientError::Boot)?;
                self.queue_event_once(
                    EventKind::Confirmed,
                    app_rollout,
                    Some(self.device.firmware_version),
                    None,
                );
            }
            if let Some(slot) = stage1_unproven {
                self.boot
                    .confirm_stage1(self.keys)
                    .map_err(ClientError::Boot)?;
                self.stage1 = self.read_running_stage1();
                if let Some(i) = stage1 {
                    self.queue_event_once(
                        EventKind::Confirmed,
                        Some(i.rollout_id),
                        Some(i.version),
                        None,
                    );
                }
                if !app_unproven {
                    return Ok(AfterBoot::Stage1Confirmed(slot));
                }
            }
            return Ok(AfterBoot::NewlyConfirmed);
        }
        let Some(installed) = installed else {
            return Ok(AfterBoot::Confirmed);
        };
        // What runs now from the kind of slot the image was installed into.
        let (running, pending) = match installed.component {
            Component::Application => (Some(info.slot), self.boot.journal().state().pending()),
            Component::Bootloader => (
                self.stage1.map(|s| s.slot),
                self.boot.journal().state().stage1().pending(),
            ),
        };
        if running == Some(installed.slot) {
            // Confirmed earlier, but the server never acknowledged the event: say it again.
            let version = match installed.component {
                Component::Application => self.device.firmware_version,
                Component::Bootloader => installed.version,
            };
            self.queue_event_once(
                EventKind::Confirmed,
                Some(installed.rollout_id),
                Some(version),
                None,
            );
            return Ok(AfterBoot::Confirmed);
        }
        if self.is_rejected(&installed) {
            let slot = installed.slot;
            let why = match (installed.component, running) {
                (Component::Bootloader, Some(to)) => reason(format_args!(
                    "stage-0 reverted stage-1 slot {slot} to stage-1 slot {to}"
                )),
                (Component::Bootloader, None) => {
                    reason(format_args!("stage-0 reverted stage-1 slot {slot}"))
                }
                (Component::Application, _) => reason(format_args!(
                    "bootloader reverted slot {slot} to slot {}",
                    info.slot
                )),
            };
            self.queue_event_once(
                EventKind::RolledBack,
                Some(installed.rollout_id),
                Some(installed.version),
                Some(why),
            );
            return Ok(AfterBoot::RolledBack);
        }
        if pending != Some(installed.slot) {
            // Installed but never marked pending (a reset in between): nothing to report.
            self.set_installed(None);
        }
        Ok(AfterBoot::Confirmed)
    }

    /// Once per boot, before [`after_boot`](Self::after_boot): queue a `reset` event saying why
    /// the device reset (`cause`), with the version that ran before it and its uptime: `ran` when
    /// the caller knows better, else the fault handler's record when the cause is a fault
    /// ([`recorded_fault`](Self::recorded_fault)), otherwise what this client last recorded. A
    /// fault's event also says what faulted and where in its `reason` (`fault after 12 s:
    /// UNDEFINSTR pc 0x08061a2c ...`, cut to 96 bytes). The fault record is taken either way:
    /// it is reported once, and a record left from an earlier reset never colours a later one.
    /// Then record that this image runs, from 0 s. Nothing is queued for a power-on with no run
    /// recorded (a factory-fresh device), nor for an unknown cause.
    pub fn boot_reset(&mut self, cause: ResetCause, ran: Option<Running>) {
        let fault = self.fault.take();
        if fault.is_some() {
            self.record(&Change::Fault(None));
        }
        let fault = fault.filter(|_| cause == ResetCause::Fault);
        let faulted = fault.map(|f| Running {
            version: f.version,
            uptime_s: f.uptime_s,
        });
        let before = ran.or(faulted).or(self.running);
        // A software reset into the image (or through the stage-1) this client installed is
        // the update's own.
        let booted = self.boot.info().slot;
        let stage1 = self.stage1.map(|s| s.slot);
        let into_installed = self.installed.is_some_and(|i| match i.component {
            Component::Application => i.slot == booted,
            Component::Bootloader => Some(i.slot) == stage1,
        });
        let cause = match cause {
            ResetCause::Software if into_installed => ResetCause::Update,
            other => other,
        };
        let queued = self
            .queue
            .iter()
            .filter(|e| e.kind == EventKind::Reset)
            .count();
        // An unknown cause (an emulator without RCC, a register already cleared) says nothing.
        if let Some(before) = before.filter(|_| cause != ResetCause::Unknown) {
            if queued >= MAX_QUEUED_RESETS {
                self.dropped_events = self.dropped_events.saturating_add(1);
            } else {
                let id = self.take_event_id();
                let event = Event {
                    version: Some(before.version),
                    reason: fault
                        .map(|f| reason(format_args!("fault after {} s: {f}", before.uptime_s))),
                    reset: Some(ResetInfo {
                        cause,
                        uptime_s: before.uptime_s,
                    }),
                    ..Event::new(id, EventKind::Reset)
                };
                self.push_event(event);
            }
        }
        self.set_running(0);
    }

    /// The fault the board's fault handler recorded before the last reset, not yet reported: the
    /// board passes [`ResetCause::Fault`] as the recorded cause to
    /// [`ResetCause::from_rcc_csr`] when there is one, before [`boot_reset`](Self::boot_reset).
    pub fn recorded_fault(&self) -> Option<&FaultRecord> {
        self.fault.as_ref()
    }

    /// Record the running image's uptime (call it from the main loop, e.g. every second): it is
    /// written every [`UPTIME_RECORD_EVERY_S`] seconds, for the next boot's `reset` event.
    pub fn record_uptime(&mut self, uptime_s: u32) {
        let recorded = self
            .running
            .filter(|r| r.version == self.device.firmware_version)
            .map(|r| r.uptime_s);
        match recorded {
            Some(at) if uptime_s < at.saturating_add(UPTIME_RECORD_EVERY_S) => {}
            _ => self.set_running(uptime_s),
        }
    }

    fn set_running(&mut self, uptime_s: u32) {
        let running = Running {
            version: self.device.firmware_version,
            uptime_s,
        };
        self.running = Some(running);
        self.record(&Change::Running(running));
    }

    /// What this client last recorded as running (the previous boot's, until
    /// [`boot_reset`](Self::boot_reset)).
    pub fn running(&self) -> Option<Running> {
        self.running
    }

    /// Act on a command the server pushed (over MQTT; see `fota_protocol::messages::Command`).
    /// `random` is any random number (the device's RNG or a hash of its id and the time): a
    /// `check_in` nudge becomes a wait of `random % (jitter_s + 1)` seconds, which the caller
    /// sleeps before calling [`check_in`](Self::check_in).
    pub fn command(&mut self, command: &Command, random: u32) -> Pushed {
        match command.kind {
            CommandKind::CheckIn => {
                let jitter = command.jitter_s.unwrap_or(0);
                Pushed::CheckInAfter(random % jitter.saturating_add(1))
            }
            CommandKind::Stop => {
                let stops_ours = self
                    .active
                    .as_ref()
                    .is_some_and(|a| Some(a.download.offer().rollout_id) == command.rollout_id);
                if !stops_ours {
                    return Pushed::Ignored;
                }
                self.active = None;
                self.record(&Change::Download(None));
                Pushed::Stopped
            }
            CommandKind::ReportAck => match command.last_event_id {
                Some(through) => match self.acknowledged(through) {
                    0 => Pushed::Ignored,
                    n => Pushed::Acknowledged(n),
                },
                None => Pushed::Ignored,
            },
        }
    }

    /// The report to publish over MQTT (the queued events, at most a report's worth, oldest
    /// first); they stay queued until a `report_ack` through them arrives.
    pub fn pending_report(&self) -> Option<Report> {
        if self.queue.is_empty() {
            return None;
        }
        let mut events = heapless::Vec::new();
        for event in self.queue.iter().take(MAX_EVENTS_PER_REPORT) {
            // Cannot fail: at most MAX_EVENTS_PER_REPORT are taken.
            let _ = events.push(event.clone());
        }
        Some(Report { events })
    }

    /// Send up to one report's worth of queued events; they are dropped only once the server
    /// acknowledges them. Returns how many were acknowledged (0 when nothing was queued).
    pub fn flush_reports(&mut self) -> Result<usize, ClientError<T::Error, F::Error>> {
        if self.queue.is_empty() {
            return Ok(0);
        }
        let n = self.queue.len().min(MAX_EVENTS_PER_REPORT);
        let mut events = heapless::Vec::new();
        for event in self.queue.iter().take(n) {
            // Cannot fail: at most MAX_EVENTS_PER_REPORT are taken.
            let _ = events.push(event.clone());
        }
        let report = Report { events };
        self.transport
            .report(&report)
            .map_err(ClientError::Transport)?;
        if let Some(last) = report.events.last() {
            self.acknowledged(last.id);
        }
        Ok(n)
    }

    /// The server stored every queued event up to id `through`: forget them (in flash too),
    /// and the installed image once its outcome is among them. Returns how many went.
    fn acknowledged(&mut self, through: u64) -> usize {
        let n = self.queue.iter().take_while(|e| e.id <= through).count();
        if n == 0 {
            return 0;
        }
        let settled = self.queue.iter().take(n).any(|e| {
            matches!(e.kind, EventKind::Confirmed | EventKind::RolledBack)
                && e.rollout_id.is_some()
                && self.installed().map(|(_, r, _)| r) == e.rollout_id
        });
        if settled {
            self.set_installed(None);
        }
        self.record(&Change::Acked { through });
        let rest = self.queue.len() - n;
        for i in 0..rest {
            self.queue.swap(i, i + n);
        }
        self.queue.truncate(rest);
        n
    }

    /// The installed-but-unreported image: slot, rollout, version.
    fn installed(&self) -> Option<(SlotId, u64, ImageVersion)> {
        self.installed.map(|i| (i.slot, i.rollout_id, i.version))
    }

    fn set_installed(&mut self, installed: Option<Installed>) {
        self.installed = installed;
        self.record(&Change::Installed(installed));
    }

    fn record(&mut self, change: &Change<'_>) {
        if self.persist.record(change).is_err() {
            self.persist_errors = self.persist_errors.saturating_add(1);
        }
    }

    fn queue_event_once(
        &mut self,
        kind: EventKind,
        rollout_id: Option<u64>,
        version: Option<ImageVersion>,
        reason: Option<Reason>,
    ) {
        if !self
            .queue
            .iter()
            .any(|e| e.kind == kind && e.rollout_id == rollout_id)
        {
            self.queue_event(kind, rollout_id, version, reason);
        }
    }

    /// Queue an event with the next persisted id; when the queue is full the oldest is dropped.
    fn queue_event(
        &mut self,
        kind: EventKind,
        rollout_id: Option<u64>,
        version: Option<ImageVersion>,
        reason: Option<Reason>,
    ) {
        let id = self.take_event_id();
        self.push_event(Event {
            rollout_id,
            version,
            reason,
            ..Event::new(id, kind)
        });
    }

    fn take_event_id(&mut self) -> u64 {
        let id = self.next_event_id;
        self.next_event_id = id.saturating_add(1);
        id
    }

    fn push_event(&mut self, event: Event) {
        // Persisted first: the store drops the oldest of a full queue by the same rule.
        self.record(&Change::Event(&event));
        if self.queue.is_full() {
            self.queue.remove(0);
            self.dropped_events = self.dropped_events.saturating_add(1);
        }
        // Cannot fail: room was made above.
        let _ = self.queue.push(event);
    }
}

/// The first four bytes of a digest, to name an artifact in a reason.
fn short(digest: &Digest) -> u32 {
    u32::from_be_bytes([digest.0[0], digest.0[1], digest.0[2], digest.0[3]])
}

/// A reason string, cut at its capacity rather than dropped.
fn reason(args: core::fmt::Arguments<'_>) -> Reason {
    struct Truncating(Reason);
    impl core::fmt::Write for Truncating {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for c in s.chars() {
                if self.0.push(c).is_err() {
                    break;
                }
            }
            Ok(())
        }
    }
    let mut out = Truncating(Reason::new());
    let _ = out.write_fmt(args);
    out.0
}
