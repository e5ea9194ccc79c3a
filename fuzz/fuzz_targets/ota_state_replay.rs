//! Fuzz the OTA client's flash log (the events not yet acknowledged, the installed image, the
//! download and its offset, what runs and for how long, kept in two sectors): a log written by real changes, then damaged
//! anywhere (bits cleared as a power cut or a failing cell clears them), must open without
//! panicking, and every change recorded after that must leave flash that the next boot loads as
//! exactly the state the running code believes it recorded.
#![no_main]

use fota_boot::testing::MemFlash;
use fota_ota_client::flash_store::{FlashPersist, StoreRegion};
use fota_ota_client::persist::{Change, Installed, Persist, PersistedState, Running};
use fota_protocol::image::{Digest, ImageVersion};
use fota_protocol::messages::{Component, Event, EventKind, Offer, Reason, ResetCause, ResetInfo};
use fota_protocol::SlotId;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const SECTOR: u32 = MemFlash::SECTOR as u32;
const REGION: StoreRegion = StoreRegion {
    start: 0,
    sector_size: SECTOR,
};
const CAUSES: [ResetCause; 10] = ResetCause::ALL;
const KINDS: [EventKind; 10] = EventKind::ALL;

/// A version's four parts.
type Version = (u8, u8, u16, u32);
/// An installed image: bootloader?, slot B?, rollout, version.
type InstalledImage = (bool, bool, u64, Version);
/// An offer: bootloader?, rollout, slot B?, digest, size, security counter.
type OfferParts = (bool, u64, bool, [u8; 32], u32, u32);

#[derive(Debug, Arbitrary)]
enum Op {
    Event {
        id: u64,
        kind: u8,
        rollout: Option<u64>,
        version: Option<Version>,
        reason: Option<String>,
        /// A reset's cause (index) and uptime.
        reset: Option<(u8, u32)>,
    },
    Acked(u64),
    Installed(Option<InstalledImage>),
    Download(Option<OfferParts>),
    Progress(u32),
    /// What runs, and for how long.
    Running(Version, u32),
    /// Power off and on: carry on from the store reopened from flash.
    Reboot,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Changes recorded before the damage.
    history: Vec<Op>,
    /// Bytes of the two sectors ANDed with a value (NOR flash only loses bits).
    damage: Vec<(u16, u8)>,
    /// Changes recorded after the boot.
    ops: Vec<Op>,
}

fn version(v: Version) -> ImageVersion {
    ImageVersion::new(v.0, v.1, v.2, v.3)
}

fn component(bootloader: bool) -> Component {
    if bootloader {
        Component::Bootloader
    } else {
        Component::Application
    }
}

fn slot(b: bool) -> SlotId {
    if b {
        SlotId::B
    } else {
        SlotId::A
    }
}

/// Record `op` (if it is a change) in `store`, and in `model` when the store took it.
fn record(store: &mut FlashPersist<MemFlash>, model: &mut PersistedState, op: &Op) {
    let event;
    let offer;
    let change = match op {
        Op::Event {
            id,
            kind,
            rollout,
            version: v,
            reason,
            reset,
        } => {
            let reason = reason.as_deref().and_then(|r| Reason::try_from(r).ok());
            event = Event {
                id: *id,
                kind: KINDS[usize::from(*kind) % KINDS.len()],
                rollout_id: *rollout,
                version: v.map(version),
                reason,
                reset: reset.map(|(cause, uptime_s)| ResetInfo {
                    cause: CAUSES[usize::from(cause) % CAUSES.len()],
                    uptime_s,
                }),
            };
            Change::Event(&event)
        }
        Op::Acked(through) => Change::Acked { through: *through },
        Op::Installed(i) => Change::Installed(i.map(|(c, b, rollout_id, v)| Installed {
            component: component(c),
            slot: slot(b),
            rollout_id,
            version: version(v),
        })),
        Op::Download(None) => Change::Download(None),
        Op::Download(Some((c, rollout_id, b, sha, size, counter))) => {
            offer = Offer {
                rollout_id: *rollout_id,
                version: ImageVersion::new(1, 2, 3, 4),
                component: component(*c),
                slot: slot(*b),
                sha256: Digest(*sha),
                size: *size,
                security_counter: *counter,
                patch: None,
            };
            Change::Download(Some(&offer))
        }
        Op::Progress(offset) => Change::Progress(*offset),
        Op::Running(v, uptime_s) => Change::Running(Running {
            version: version(*v),
            uptime_s: *uptime_s,
        }),
        Op::Reboot => return,
    };
    if store.record(&change).is_ok() {
        model.apply(&change);
    }
}

fuzz_target!(|input: Input| {
    let mut store = FlashPersist::open(MemFlash::new(), REGION);
    let mut model = store.load();
    for op in input.history.iter().take(64) {
        record(&mut store, &mut model, op);
    }
    let mut flash = store.into_flash();
    for &(at, mask) in input.damage.iter().take(16) {
        let at = usize::from(at) % (2 * SECTOR as usize);
        flash.bytes[at] &= mask;
    }

    // Boot on the damaged log: whatever it holds, opening and loading never panic.
    let mut store = FlashPersist::open(flash, REGION);
    let mut model = store.load();
    for op in input.ops.iter().take(64) {
        record(&mut store, &mut model, op);
        // The next boot loads exactly what the running code believes it recorded.
        let next_boot = FlashPersist::open(store.flash_mut().clone(), REGION).load();
        assert_eq!(next_boot, model, "after {op:?}");
        if matches!(op, Op::Reboot) {
            store = FlashPersist::open(store.into_flash(), REGION);
            assert_eq!(store.load(), model);
        }
    }
});
