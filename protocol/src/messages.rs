//! The v1 device protocol: what a device sends at check-in, what the server answers (with an
//! optional offer), and the events a device reports.
//!
//! Every type works without `std` or an allocator: strings are bounded `heapless` strings and a
//! report batch holds at most [`MAX_EVENTS_PER_REPORT`] events, so a device can (de)serialize
//! them with `serde-json-core` and the server with `serde_json`. The bounds double as input
//! validation: an oversized field fails to deserialize.
//!
//! Versions travel as strings (`"1.4.2+7"`), digests as 64 hex digits, slots as `"a"`/`"b"`.

use crate::image::{Digest, ImageVersion};
use crate::layout::SlotId;
use core::fmt;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The protocol version these types describe.
pub const PROTOCOL_VERSION: u16 = 1;
/// Most events one report may carry.
pub const MAX_EVENTS_PER_REPORT: usize = 16;

/// A hardware model name, e.g. `"streetlight-f429"`.
pub type Model = heapless::String<32>;
/// A free-text reason attached to a failure event.
pub type Reason = heapless::String<96>;

/// Whether the running image is on trial or confirmed (as the bootloader journal says).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootState {
    /// Booted as a trial: the bootloader reverts it unless the application confirms it.
    Trial,
    /// Confirmed: the bootloader will keep booting it.
    Confirmed,
}

/// Flash read-out protection level (RDP option byte: 0xAA = level 0, 0xCC = level 2, else 1).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RdpLevel {
    /// No protection.
    Level0,
    /// Read-out protection; the application can still program its own flash.
    Level1,
    /// Permanent protection, debug disabled.
    Level2,
}

impl RdpLevel {
    /// Decode the RDP option byte.
    pub fn from_option_byte(b: u8) -> Self {
        match b {
            0xAA => RdpLevel::Level0,
            0xCC => RdpLevel::Level2,
            _ => RdpLevel::Level1,
        }
    }
}

/// What a device says at every check-in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// Hardware model.
    #[cfg_attr(feature = "openapi", schema(value_type = String, max_length = 32))]
    pub model: Model,
    /// Version of the running application image.
    pub firmware_version: ImageVersion,
    /// Slot it runs from.
    pub running_slot: SlotId,
    /// Trial or confirmed.
    pub boot_state: BootState,
    /// Version of the bootloader.
    pub bootloader_version: ImageVersion,
    /// Read-out protection level.
    pub rdp_level: RdpLevel,
    /// Write-protected sectors: bit i set means sector i cannot be programmed. (The F4's nWRP
    /// bits are active-low; the device inverts them before sending.)
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967295_u64))]
    pub wrp_mask: u32,
    /// The bootloader's anti-rollback floor: the highest security counter of an image it has
    /// confirmed (its journal holds it). The server never offers an image below it. Optional
    /// so that devices built before it was added still check in; the server then infers the
    /// floor from the release the device runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967295_u64))]
    pub security_counter: Option<u32>,
    /// The stage-1 bootloader that booted this run, on a two-stage device: its stage-1 slot and
    /// whether it is on trial. The server offers a bootloader only to a device that says this
    /// (into the other stage-1 slot), and only once the application and the stage-1 are both
    /// confirmed. Left out by a single-stage device and by devices built before the field:
    /// neither is ever offered a bootloader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage1: Option<Stage1Status>,
    /// The delta patch container format this device applies (`fota_delta::FORMAT_VERSION`,
    /// docs/PROTOCOL.md "Delta patches"). The server puts a [`PatchOffer`] in an offer only to
    /// a device that names the format the server generates: left out by a device that applies
    /// no patches and by devices built before the field (whose `Offer` denies the unknown
    /// `patch` field), which are offered the full image alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_format: Option<u8>,
}

/// The stage-1 bootloader a two-stage device runs (see [`CheckIn::stage1`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage1Status {
    /// The stage-1 slot stage-0 booted it from.
    pub slot: SlotId,
    /// On trial (a new stage-1 that has not proved itself yet, or one never confirmed), or
    /// confirmed.
    pub boot_state: BootState,
}

/// What an offer (and a release) is about: the application, or the stage-1 bootloader.
///
/// An [`Offer`] without the field is an application's (what every offer was before bootloader
/// releases), and an application's offer leaves it out, so a device built before the field
/// existed (its `Offer` denies unknown fields) still reads every application offer. Such a
/// device cannot install a bootloader, and refuses the check-in answer that offers one.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The application, for application slot A or B (`0x0802_0000`, `0x0806_0000`).
    #[default]
    Application,
    /// The stage-1 bootloader, for stage-1 slot A or B (`0x0801_0000`, `0x080A_0000`): a signed
    /// image whose protected COMPONENT TLV (0x00a0) marks it as a stage-1 for that slot.
    Bootloader,
}

impl Component {
    /// Its name, as in JSON (and in the server's `releases.component`).
    pub const fn name(self) -> &'static str {
        match self {
            Component::Application => "application",
            Component::Bootloader => "bootloader",
        }
    }

    /// The component named `name` ([`Component::name`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Component::Application, Component::Bootloader]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// Whether this is the application (the default, left out of an offer's JSON).
    pub fn is_application(&self) -> bool {
        *self == Component::Application
    }

    /// Whether an image marked `mark` (its COMPONENT TLV, or none) is this component linked for
    /// `slot`: an application for an application offer, a stage-1 marked for `slot` for a
    /// bootloader offer.
    pub fn matches(self, mark: crate::image::Component, slot: SlotId) -> bool {
        match (self, mark) {
            (Component::Application, crate::image::Component::Application) => true,
            (Component::Bootloader, crate::image::Component::Stage1 { slot: marked }) => {
                marked == slot
            }
            _ => false,
        }
    }
}

impl From<crate::image::Component> for Component {
    fn from(mark: crate::image::Component) -> Self {
        match mark {
            crate::image::Component::Application => Component::Application,
            crate::image::Component::Stage1 { .. } => Component::Bootloader,
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Component::Application => "application",
            Component::Bootloader => "bootloader",
        })
    }
}

/// An update the server offers: the image built for the device's inactive slot (of the
/// application slots, or of the stage-1 slots for a bootloader).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// The rollout this offer belongs to; events about it carry the same id.
    pub rollout_id: u64,
    /// Version of the offered release.
    pub version: ImageVersion,
    /// What the image is: `application` (the default, left out) or `bootloader`.
    #[serde(default, skip_serializing_if = "Component::is_application")]
    pub component: Component,
    /// The slot the image is linked for (always the device's inactive slot): an application
    /// slot, or for a bootloader the stage-1 slot stage-0 is not running.
    pub slot: SlotId,
    /// Content address of the signed image: `GET /v1/artifacts/{sha256}`.
    pub sha256: Digest,
    /// Image length in bytes.
    pub size: u32,
    /// The image's security counter, so a device can refuse a downgrade before downloading.
    pub security_counter: u32,
    /// A delta patch that rebuilds this same image from the one the device runs (issue 19),
    /// which the device may fetch instead of the full image; left out when there is none, so an
    /// offer without a patch is byte for byte what offers were before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchOffer>,
}

/// A delta patch offered alongside the full image (docs/PROTOCOL.md, "Offers carry a patch"):
/// a `fota-delta` container that rebuilds the offer's image (`Offer::sha256`, `Offer::size`)
/// from the base image named here. The full image stays the fallback.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOffer {
    /// Content address of the patch container, fetched as the full image is:
    /// `GET /v1/artifacts/{sha256}` (ranged).
    pub sha256: Digest,
    /// Container length in bytes.
    pub size: u32,
    /// The image the patch applies to: the SHA-256 of the signed image in the device's running
    /// slot, its bytes from the slot's start through the end of its TLV area (header size +
    /// image size + TLV areas, `ImageView::total_len`), which is the artifact digest the device
    /// was offered for it. The device applies the patch only when its running image hashes to
    /// this, and the container's own header names the same base.
    pub base_sha256: Digest,
}

/// The server's answer to a check-in.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInResponse {
    /// Seconds until the next check-in.
    pub poll_interval_s: u32,
    /// An update to install, if this device is in a rollout's current cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Offer>,
}

/// What happened on the device.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The device took the offer.
    OfferAccepted,
    /// Download into the inactive slot started.
    DownloadStarted,
    /// Download failed (link, server, flash write); `reason` says which.
    DownloadFailed,
    /// Image written, verified and marked pending; the device reboots into it.
    Installed,
    /// The new image booted as a trial.
    TrialBoot,
    /// The new image reached the server, passed its self-test and confirmed itself.
    Confirmed,
    /// The bootloader reverted to the previous image; `reason` says why.
    RolledBack,
    /// The downloaded image failed verification; `reason` says how.
    VerifyFailed,
    /// RDP/WRP would block writing the target slot, so the device did not start.
    ProtectionBlocked,
    /// The device reset: `reset` says why and after how long, `version` what it ran. Reported
    /// once per boot from the next boot; unexpected causes (watchdogs, faults, brown-out)
    /// count against the release that ran (see [`ResetCause::is_unexpected`]).
    Reset,
}

impl EventKind {
    /// Every kind, in a fixed order: an index into it is the kind's code where one byte stands
    /// for it (the OTA client's flash records), so new kinds go at the end.
    pub const ALL: [EventKind; 10] = [
        EventKind::OfferAccepted,
        EventKind::DownloadStarted,
        EventKind::DownloadFailed,
        EventKind::Installed,
        EventKind::TrialBoot,
        EventKind::Confirmed,
        EventKind::RolledBack,
        EventKind::VerifyFailed,
        EventKind::ProtectionBlocked,
        EventKind::Reset,
    ];

    /// Its name, as in JSON (and in the server's `device_events.kind`).
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::OfferAccepted => "offer_accepted",
            EventKind::DownloadStarted => "download_started",
            EventKind::DownloadFailed => "download_failed",
            EventKind::Installed => "installed",
            EventKind::TrialBoot => "trial_boot",
            EventKind::Confirmed => "confirmed",
            EventKind::RolledBack => "rolled_back",
            EventKind::VerifyFailed => "verify_failed",
            EventKind::ProtectionBlocked => "protection_blocked",
            EventKind::Reset => "reset",
        }
    }

    /// Whether the event counts as a failure for a rollout's health gate.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            EventKind::DownloadFailed
                | EventKind::RolledBack
                | EventKind::VerifyFailed
                | EventKind::ProtectionBlocked
        )
    }
}

/// One event. `id` is unique per device (a counter kept in flash): the server stores each
/// (device, id) once, so a report retried after a lost acknowledgement changes nothing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Per-device unique id.
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
    /// The rollout it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<u64>,
    /// The image version it is about (e.g. the one rolled back from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ImageVersion>,
    /// Human-readable detail for failures: at most 96 bytes of UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, max_length = 96))]
    pub reason: Option<Reason>,
    /// `reset` events: the cause and the uptime before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetInfo>,
}

/// How the reason of a [`EventKind::VerifyFailed`] event about a delta patch starts: this, then
/// the first 4 bytes of the patch's address in hex, then [`PATCH_FALLBACK_MARK`] and why, when
/// the device went on with the offer's full image (docs/PROTOCOL.md, "Offers carry a patch").
pub const PATCH_REASON_PREFIX: &str = "delta patch ";
/// What follows the patch's id in the reason of a patch the device gave up for the full image.
pub const PATCH_FALLBACK_MARK: &str = " (full image instead): ";

impl Event {
    /// An event with no optional field set.
    pub fn new(id: u64, kind: EventKind) -> Self {
        Self {
            id,
            kind,
            rollout_id: None,
            version: None,
            reason: None,
            reset: None,
        }
    }

    /// Whether this reports a delta patch the device could not use and replaced by the offer's
    /// full image (`verify_failed`, reason `delta patch 51d0a2c4 (full image instead): ...`):
    /// the update goes on, so it is not the device's failure; the server offers that device no
    /// patch again in the rollout.
    pub fn is_patch_fallback(&self) -> bool {
        self.kind == EventKind::VerifyFailed
            && self.reason.as_ref().is_some_and(|r| {
                r.strip_prefix(PATCH_REASON_PREFIX)
                    .and_then(|rest| rest.get(8..))
                    .is_some_and(|rest| rest.starts_with(PATCH_FALLBACK_MARK))
            })
    }
}

/// Why a device reset, as its reset-cause register and its own records say.
///
/// On the STM32F429 the cause comes from RCC_CSR's flags (read, then cleared with RMVF, at
/// every boot) and from what the application recorded before a reset it asked for itself:
/// a hard fault handler records the fault, the OTA client records an update.
/// [`ResetCause::from_rcc_csr`] decodes the register.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetCause {
    /// Power applied (POR/PDR): nothing ran before it, so it says nothing about a release.
    PowerOn,
    /// The reset pin (a button, a supervisor chip, a debugger).
    Pin,
    /// A software reset the application asked for, without a recorded reason.
    Software,
    /// The reset into a newly installed image (the OTA client asked for it).
    Update,
    /// The independent watchdog fired: the application hung or starved its main loop.
    IndependentWatchdog,
    /// The window watchdog fired.
    WindowWatchdog,
    /// The supply dropped below the brown-out threshold.
    BrownOut,
    /// An illegal entry into a low-power mode.
    LowPower,
    /// A fault (hard fault, bus fault, stack overflow...) recorded by the fault handler.
    Fault,
    /// No flag set (an emulator, or a register already cleared).
    Unknown,
}

impl ResetCause {
    /// Every cause, in a fixed order: an index into it is the cause's code where one byte
    /// stands for it (the OTA client's flash records), so new causes go at the end.
    pub const ALL: [ResetCause; 10] = [
        ResetCause::PowerOn,
        ResetCause::Pin,
        ResetCause::Software,
        ResetCause::Update,
        ResetCause::IndependentWatchdog,
        ResetCause::WindowWatchdog,
        ResetCause::BrownOut,
        ResetCause::LowPower,
        ResetCause::Fault,
        ResetCause::Unknown,
    ];

    /// Resets that a healthy release does not cause: watchdogs, faults, brown-out and
    /// low-power resets. Power-on, pin, update and plain software resets are expected.
    pub fn is_unexpected(self) -> bool {
        matches!(
            self,
            ResetCause::IndependentWatchdog
                | ResetCause::WindowWatchdog
                | ResetCause::BrownOut
                | ResetCause::LowPower
                | ResetCause::Fault
        )
    }

    /// Decode the STM32F4's RCC_CSR (RM0090 6.3.21): bits 25 BORRSTF, 26 PINRSTF, 27 PORRSTF,
    /// 28 SFTRSTF, 29 IWDGRSTF, 30 WWDGRSTF, 31 LPWRRSTF. Several flags are set at once (every
    /// internal reset also drives NRST, so PINRSTF accompanies a watchdog; a power-on sets
    /// BORRSTF too): the most specific wins. `recorded` is what the application wrote before a
    /// software reset it asked for ([`ResetCause::Fault`] or [`ResetCause::Update`]). With no
    /// flag at all (an emulator without the RCC, or a register already cleared) a recorded
    /// fault still counts: the fault handler wrote it just before the reset it asked for, so it
    /// is the only evidence there is, and it proves the fault.
    pub fn from_rcc_csr(csr: u32, recorded: Option<ResetCause>) -> Self {
        let bit = |n: u32| csr & (1 << n) != 0;
        if bit(29) {
            ResetCause::IndependentWatchdog
        } else if bit(30) {
            ResetCause::WindowWatchdog
        } else if bit(31) {
            ResetCause::LowPower
        } else if bit(28) {
            match recorded {
                Some(cause @ (ResetCause::Fault | ResetCause::Update)) => cause,
                _ => ResetCause::Software,
            }
        } else if bit(27) {
            ResetCause::PowerOn
        } else if bit(25) {
            ResetCause::BrownOut
        } else if bit(26) {
            ResetCause::Pin
        } else if recorded == Some(ResetCause::Fault) {
            ResetCause::Fault
        } else {
            ResetCause::Unknown
        }
    }
}

/// The detail of a `reset` event.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetInfo {
    /// Why.
    pub cause: ResetCause,
    /// Seconds the device had run since its previous boot when it reset, as far as it recorded
    /// (the OTA client records its uptime every few minutes).
    #[cfg_attr(feature = "openapi", schema(maximum = 4294967295_u64))]
    pub uptime_s: u32,
}

/// A batch of events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The events, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Event>, max_items = 16))]
    pub events: heapless::Vec<Event, MAX_EVENTS_PER_REPORT>,
}

/// The server's acknowledgement: sent only once every event is stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// Events stored by this request.
    pub stored: u32,
    /// Events already stored by an earlier request (retries).
    pub duplicates: u32,
}

/// MQTT topics, all under `fota/d/{device id}/`. A device subscribes to its own command topic
/// and publishes only to its own report topic; the broker's per-device rules enforce both.
pub mod topics {
    /// The prefix of every device topic.
    pub const PREFIX: &str = "fota/d/";
    /// Server to device: [`super::Command`]s (QoS 1). `fota/d/{id}/cmd`.
    pub const COMMAND_SUFFIX: &str = "/cmd";
    /// Device to server: a [`super::Report`] (QoS 1), acknowledged by a
    /// [`super::CommandKind::ReportAck`] once stored. `fota/d/{id}/report`.
    pub const REPORT_SUFFIX: &str = "/report";
}

/// What a [`Command`] asks of the device.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Check in now, after a random wait of up to `jitter_s` seconds (so that a cohort's devices
    /// do not all arrive in the same second): a stage that includes this device opened.
    CheckIn,
    /// Stop the download of rollout `rollout_id`'s image: it was halted, paused or aborted.
    Stop,
    /// The report ending with event `last_event_id` is stored (`stored` new, `duplicates`
    /// already stored): the device may forget those events.
    ReportAck,
}

/// A message from the server to one device over MQTT, on `fota/d/{id}/cmd`. Flat (a kind and
/// the fields it uses) so that `serde-json-core` reads it on the device.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// What to do.
    pub kind: CommandKind,
    /// `check_in`: the longest random wait before checking in, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_s: Option<u32>,
    /// `stop`: the rollout whose download to drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<u64>,
    /// `report_ack`: events stored now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<u32>,
    /// `report_ack`: events stored before (retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u32>,
    /// `report_ack`: the id of the report's last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<u64>,
}

impl Command {
    /// "Check in now, within `jitter_s` seconds."
    pub fn check_in(jitter_s: u32) -> Self {
        Self {
            jitter_s: Some(jitter_s),
            ..Self::bare(CommandKind::CheckIn)
        }
    }

    /// "Stop downloading rollout `rollout_id`'s image."
    pub fn stop(rollout_id: u64) -> Self {
        Self {
            rollout_id: Some(rollout_id),
            ..Self::bare(CommandKind::Stop)
        }
    }

    /// "Your report up to `last_event_id` is stored."
    pub fn report_ack(ack: ReportAck, last_event_id: u64) -> Self {
        Self {
            stored: Some(ack.stored),
            duplicates: Some(ack.duplicates),
            last_event_id: Some(last_event_id),
            ..Self::bare(CommandKind::ReportAck)
        }
    }

    fn bare(kind: CommandKind) -> Self {
        Self {
            kind,
            jitter_s: None,
            rollout_id: None,
            stored: None,
            duplicates: None,
            last_event_id: None,
        }
    }
}

struct StrVisitor<T>(&'static str, fn(&str) -> Option<T>);

impl<T> Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

impl Serialize for ImageVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // "255.255.65535+4294967295" is 24 bytes.
        let mut buf = heapless::String::<24>::new();
        fmt::write(&mut buf, format_args!("{self}")).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&buf)
    }
}

impl<'de> Deserialize<'de> for ImageVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("a version like \"1.4.2+7\"", |s| s.parse().ok()))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.to_hex();
        s.serialize_str(core::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor("64 hex digits", Digest::from_hex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_in() -> CheckIn {
        CheckIn {
            model: Model::try_from("streetlight-f429").unwrap(),
            firmware_version: ImageVersion::new(1, 4, 2, 7),
            running_slot: SlotId::A,
            boot_state: BootState::Confirmed,
            bootloader_version: ImageVersion::new(1, 0, 0, 0),
            rdp_level: RdpLevel::Level1,
            wrp_mask: 0b11,
            security_counter: Some(3),
            stage1: None,
            delta_format: None,
        }
    }

    #[test]
    fn check_in_json_is_stable() {
        let json = serde_json::to_string(&check_in()).unwrap();
        assert_eq!(
            json,
            r#"{"model":"streetlight-f429","firmware_version":"1.4.2+7","running_slot":"a","boot_state":"confirmed","bootloader_version":"1.0.0","rdp_level":"level1","wrp_mask":3,"security_counter":3}"#
        );
        assert_eq!(serde_json::from_str::<CheckIn>(&json).unwrap(), check_in());
        // A device that does not report its floor leaves the field out, both ways.
        let older = CheckIn {
            security_counter: None,
            stage1: None,
            ..check_in()
        };
        let json = serde_json::to_string(&older).unwrap();
        assert!(!json.contains("security_counter"), "{json}");
        assert_eq!(serde_json::from_str::<CheckIn>(&json).unwrap(), older);
        let (back, _) = serde_json_core::from_slice::<CheckIn>(json.as_bytes()).unwrap();
        assert_eq!(back, older);
    }

    #[test]
    fn a_two_stage_device_says_which_stage1_booted_it() {
        let two_stage = CheckIn {
            stage1: Some(Stage1Status {
                slot: SlotId::B,
                boot_state: BootState::Trial,
            }),
            ..check_in()
        };
        let json = serde_json::to_string(&two_stage).unwrap();
        assert!(
            json.ends_with(r#","stage1":{"slot":"b","boot_state":"trial"}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<CheckIn>(&json).unwrap(), two_stage);
        // What a device writes without an allocator, the server reads, and back.
        let mut buf = [0u8; 512];
        let n = serde_json_core::to_slice(&two_stage, &mut buf).unwrap();
        assert_eq!(&buf[..n], json.as_bytes());
        let (back, _) = serde_json_core::from_slice::<CheckIn>(&buf[..n]).unwrap();
        assert_eq!(back, two_stage);
        // A stage-1 status missing its state is refused, not half-read.
        let half = json.replace(r#","boot_state":"trial""#, "");
        assert!(serde_json::from_str::<CheckIn>(&half).is_err());
    }

    #[test]
    fn messages_round_trip_without_std() {
        // serde-json-core is what a device uses: no allocator.
        let mut buf = [0u8; 512];
        let n = serde_json_core::to_slice(&check_in(), &mut buf).unwrap();
        let (back, _) = serde_json_core::from_slice::<CheckIn>(&buf[..n]).unwrap();
        assert_eq!(back, check_in());

        let offer = CheckInResponse {
            poll_interval_s: 3600,
            offer: Some(Offer {
                rollout_id: 9,
                version: ImageVersion::new(1, 5, 0, 0),
                component: Component::Application,
                slot: SlotId::B,
                sha256: Digest([0xab; 32]),
                size: 123_456,
                security_counter: 3,
                patch: None,
            }),
        };
        let n = serde_json_core::to_slice(&offer, &mut buf).unwrap();
        let (back, _) = serde_json_core::from_slice::<CheckInResponse>(&buf[..n]).unwrap();
        assert_eq!(back, offer);
        // The server (serde_json) reads what the device (serde-json-core) wrote, and back.
        assert_eq!(
            serde_json::from_slice::<CheckInResponse>(&buf[..n]).unwrap(),
            offer
        );

        let mut events = heapless::Vec::new();
        events
            .push(Event {
                id: 41,
                kind: EventKind::RolledBack,
                rollout_id: Some(9),
                version: Some(ImageVersion::new(1, 5, 0, 0)),
                reason: Some(Reason::try_from("3 failed trial boots").unwrap()),
                reset: None,
            })
            .unwrap();
        events.push(Event::new(42, EventKind::Confirmed)).unwrap();
        events
            .push(Event {
                version: Some(ImageVersion::new(1, 5, 0, 0)),
                reset: Some(ResetInfo {
                    cause: ResetCause::IndependentWatchdog,
                    uptime_s: 310,
                }),
                ..Event::new(43, EventKind::Reset)
            })
            .unwrap();
        let report = Report { events };
        let n = serde_json_core::to_slice(&report, &mut buf).unwrap();
        let (back, _) = serde_json_core::from_slice::<Report>(&buf[..n]).unwrap();
        assert_eq!(back, report);
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }

    #[test]
    fn an_offer_names_its_component_and_an_application_offer_reads_as_before() {
        let app = Offer {
            rollout_id: 9,
            version: ImageVersion::new(1, 5, 0, 0),
            component: Component::Application,
            slot: SlotId::B,
            sha256: Digest([0xab; 32]),
            size: 123_456,
            security_counter: 3,
            patch: None,
        };
        // An application offer is byte for byte what it was before the field existed, so a
        // device whose `Offer` denies unknown fields still reads it...
        let json = serde_json::to_string(&app).unwrap();
        assert!(!json.contains("component"), "{json}");
        // ...and an offer without the field is an application's, on both sides.
        assert_eq!(serde_json::from_str::<Offer>(&json).unwrap(), app);
        let (device, _) = serde_json_core::from_slice::<Offer>(json.as_bytes()).unwrap();
        assert_eq!(device, app);

        let bootloader = Offer {
            component: Component::Bootloader,
            slot: SlotId::A,
            ..app.clone()
        };
        let json = serde_json::to_string(&bootloader).unwrap();
        assert!(json.contains(r#""component":"bootloader""#), "{json}");
        assert_eq!(serde_json::from_str::<Offer>(&json).unwrap(), bootloader);
        let (device, _) = serde_json_core::from_slice::<Offer>(json.as_bytes()).unwrap();
        assert_eq!(device, bootloader);
        let explicit = json.replace("bootloader", "application");
        assert_eq!(
            serde_json::from_str::<Offer>(&explicit).unwrap().component,
            Component::Application
        );
        assert!(serde_json::from_str::<Offer>(&json.replace("bootloader", "stage0")).is_err());
    }

    #[test]
    fn a_patch_fallback_is_told_apart_from_a_failed_update() {
        let event = |kind, reason: &str| Event {
            reason: Some(Reason::try_from(reason).unwrap()),
            ..Event::new(1, kind)
        };
        let fallback = "delta patch 51d0a2c4 (full image instead): its base e3b70c44.. is not";
        assert!(event(EventKind::VerifyFailed, fallback).is_patch_fallback());
        // A patch that failed to download ends the update: a failure like any other.
        for reason in [
            "delta patch 51d0a2c4: 8 fetches failed at offset 4096: Timeout",
            "signature does not verify",
            "delta patch 51d0 (full image instead): short id",
            "delta patch (full image instead): no id",
        ] {
            assert!(
                !event(EventKind::VerifyFailed, reason).is_patch_fallback(),
                "{reason}"
            );
        }
        assert!(!event(EventKind::DownloadFailed, fallback).is_patch_fallback());
        assert!(!Event::new(2, EventKind::VerifyFailed).is_patch_fallback());
    }

    #[test]
    fn an_offer_carries_a_patch_and_an_offer_without_one_reads_as_before() {
        let full = Offer {
            rollout_id: 9,
            version: ImageVersion::new(1, 5, 0, 0),
            component: Component::Application,
            slot: SlotId::B,
            sha256: Digest([0xab; 32]),
            size: 123_456,
            security_counter: 3,
            patch: None,
        };
        // Without a patch the field is left out: what a device built before it reads.
        let json = serde_json::to_string(&full).unwrap();
        assert!(!json.contains("patch"), "{json}");
        assert_eq!(serde_json::from_str::<Offer>(&json).unwrap(), full);
        let (device, _) = serde_json_core::from_slice::<Offer>(json.as_bytes()).unwrap();
        assert_eq!(device, full);

        let with_patch = Offer {
            patch: Some(PatchOffer {
                sha256: Digest([0x5a; 32]),
                size: 31_337,
                base_sha256: Digest([0xc3; 32]),
            }),
            ..full.clone()
        };
        let json = serde_json::to_string(&with_patch).unwrap();
        let expected = format!(
            r#""patch":{{"sha256":"{}","size":31337,"base_sha256":"{}"}}"#,
            "5a".repeat(32),
            "c3".repeat(32)
        );
        assert!(json.contains(&expected), "{json}");
        assert_eq!(serde_json::from_str::<Offer>(&json).unwrap(), with_patch);
        // The device reads it without an allocator, inside a check-in answer, and writes it back.
        let answer = CheckInResponse {
            poll_interval_s: 60,
            offer: Some(with_patch.clone()),
        };
        let mut buf = [0u8; 1024];
        let n = serde_json_core::to_slice(&answer, &mut buf).unwrap();
        let (device, _) = serde_json_core::from_slice::<CheckInResponse>(&buf[..n]).unwrap();
        assert_eq!(device, answer);
        // A patch missing a field, or with one it does not know, is refused, not half-read.
        let missing = json.replace(r#","size":31337"#, "");
        assert!(serde_json::from_str::<Offer>(&missing).is_err());
        let unknown = json.replace(r#""size":31337"#, r#""size":31337,"url":"/x""#);
        assert!(serde_json::from_str::<Offer>(&unknown).is_err());
    }

    #[test]
    fn a_components_name_is_its_json_name() {
        for c in [Component::Application, Component::Bootloader] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(Component::from_name(c.name()), Some(c));
        }
        assert_eq!(Component::from_name("stage0"), None);
        assert_eq!(Component::from_name("Bootloader"), None);
    }

    #[test]
    fn an_event_kinds_name_is_its_json_name() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), k);
        }
        // ALL holds each of the ten kinds once.
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }

    #[test]
    fn a_component_matches_only_its_own_image_mark() {
        use crate::image::Component as Mark;
        let stage1_a = Mark::Stage1 { slot: SlotId::A };
        assert!(Component::Application.matches(Mark::Application, SlotId::A));
        assert!(!Component::Application.matches(stage1_a, SlotId::A));
        assert!(Component::Bootloader.matches(stage1_a, SlotId::A));
        assert!(!Component::Bootloader.matches(stage1_a, SlotId::B));
        assert!(!Component::Bootloader.matches(Mark::Application, SlotId::A));
        assert_eq!(Component::from(stage1_a), Component::Bootloader);
        assert_eq!(Component::from(Mark::Application), Component::Application);
    }

    #[test]
    fn reset_events_read_the_same_on_both_sides() {
        let json =
            r#"{"id":7,"kind":"reset","version":"1.5.0","reset":{"cause":"fault","uptime_s":42}}"#;
        let (device, _) = serde_json_core::from_slice::<Event>(json.as_bytes()).unwrap();
        let server: Event = serde_json::from_str(json).unwrap();
        assert_eq!(device, server);
        assert_eq!(device.reset.unwrap().cause, ResetCause::Fault);
        assert_eq!(serde_json::to_string(&server).unwrap(), json);
        assert!(serde_json::from_str::<Event>(
            r#"{"id":7,"kind":"reset","reset":{"cause":"gremlins","uptime_s":1}}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Event>(
            r#"{"id":7,"kind":"reset","reset":{"cause":"fault","uptime_s":-1}}"#
        )
        .is_err());
    }

    #[test]
    fn reset_causes_decode_from_rcc_csr() {
        const BOR: u32 = 1 << 25;
        const PIN: u32 = 1 << 26;
        const POR: u32 = 1 << 27;
        const SFT: u32 = 1 << 28;
        const IWDG: u32 = 1 << 29;
        const WWDG: u32 = 1 << 30;
        const LPWR: u32 = 1 << 31;
        let cases = [
            (POR | BOR | PIN, None, ResetCause::PowerOn),
            (BOR | PIN, None, ResetCause::BrownOut),
            (PIN, None, ResetCause::Pin),
            (IWDG | PIN, None, ResetCause::IndependentWatchdog),
            (WWDG | PIN, None, ResetCause::WindowWatchdog),
            (LPWR | PIN, None, ResetCause::LowPower),
            (SFT | PIN, None, ResetCause::Software),
            (SFT | PIN, Some(ResetCause::Fault), ResetCause::Fault),
            (SFT | PIN, Some(ResetCause::Update), ResetCause::Update),
            // A record left from an earlier reset does not turn a watchdog into a fault.
            (
                IWDG | PIN,
                Some(ResetCause::Fault),
                ResetCause::IndependentWatchdog,
            ),
            // Only a software reset takes a recorded cause; other recorded values are ignored.
            (SFT, Some(ResetCause::BrownOut), ResetCause::Software),
            (0, None, ResetCause::Unknown),
            // No flag (QEMU models no RCC): a fault record is the only evidence, and enough; a
            // recorded update is not (the client recognises it by the slot it installed).
            (0, Some(ResetCause::Fault), ResetCause::Fault),
            (0, Some(ResetCause::Update), ResetCause::Unknown),
        ];
        for (csr, recorded, want) in cases {
            assert_eq!(ResetCause::from_rcc_csr(csr, recorded), want, "{csr:#x}");
        }
        let unexpected: Vec<_> = ResetCause::ALL
            .into_iter()
            .filter(|c| c.is_unexpected())
            .collect();
        assert_eq!(
            unexpected,
            [
                ResetCause::IndependentWatchdog,
                ResetCause::WindowWatchdog,
                ResetCause::BrownOut,
                ResetCause::LowPower,
                ResetCause::Fault
            ]
        );
    }

    #[test]
    fn bad_fields_are_refused() {
        let good = serde_json::to_value(check_in()).unwrap();
        let cases = [
            ("firmware_version", serde_json::json!("1.x")),
            ("running_slot", serde_json::json!("c")),
            ("boot_state", serde_json::json!("maybe")),
            ("model", serde_json::json!("m".repeat(33))),
            ("wrp_mask", serde_json::json!(-1)),
            ("security_counter", serde_json::json!(-1)),
            ("security_counter", serde_json::json!(1u64 << 32)),
        ];
        for (field, value) in cases {
            let mut v = good.clone();
            v[field] = value;
            assert!(serde_json::from_value::<CheckIn>(v).is_err(), "{field}");
        }
        let mut v = good.clone();
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<CheckIn>(v).is_err());
        assert!(serde_json::from_str::<Offer>(r#"{"rollout_id":1,"version":"1.0.0","slot":"a","sha256":"zz","size":1,"security_counter":0}"#).is_err());
        let too_many: Vec<_> = (0..17)
            .map(|i| serde_json::json!({"id": i, "kind": "confirmed"}))
            .collect();
        assert!(
            serde_json::from_value::<Report>(serde_json::json!({ "events": too_many })).is_err()
        );
    }

    #[test]
    fn failures_are_the_events_a_gate_counts() {
        assert!(EventKind::RolledBack.is_failure());
        assert!(EventKind::VerifyFailed.is_failure());
        assert!(!EventKind::Confirmed.is_failure());
        assert!(!EventKind::Installed.is_failure());
        assert_eq!(RdpLevel::from_option_byte(0xAA), RdpLevel::Level0);
        assert_eq!(RdpLevel::from_option_byte(0x55), RdpLevel::Level1);
        assert_eq!(RdpLevel::from_option_byte(0xCC), RdpLevel::Level2);
    }

    #[test]
    fn commands_round_trip_through_serde_json_core() {
        let ack = ReportAck {
            stored: 3,
            duplicates: 1,
        };
        for command in [
            Command::check_in(30),
            Command::stop(7),
            Command::report_ack(ack, 42),
        ] {
            let mut buf = [0u8; 160];
            let n = serde_json_core::to_slice(&command, &mut buf).unwrap();
            let (back, _) = serde_json_core::from_slice::<Command>(&buf[..n]).unwrap();
            assert_eq!(back, command);
        }
        let (stop, _) =
            serde_json_core::from_slice::<Command>(br#"{"kind":"stop","rollout_id":9}"#).unwrap();
        assert_eq!(stop, Command::stop(9));
        assert!(serde_json_core::from_slice::<Command>(br#"{"kind":"reboot"}"#).is_err());
    }
}
