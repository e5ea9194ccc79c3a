//! Delta updates on the device (issue 19, item 3): an offer that carries a patch is applied into
//! the inactive slot from the running slot (only ever read), verified exactly as a full
//! download, and every way a patch can be unusable falls back to the full image of the same
//! offer. Host tests: fota-boot's NOR test flash with the F429 map and a real boot journal,
//! images signed as the release pipeline does, patches made by the server's generator.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::SigningKey;
use fota_boot::journal::RecordKind;
use fota_boot::{BootControl, BootJournal, FlashLayout, JournalRegion};
use fota_ota_client::transport::Transport;
use fota_ota_client::{
    CheckInOutcome, Config, DeviceInfo, FlashPersist, MemPersist, OtaClient, Persist,
    SavedCheckpoint, Step, StoreRegion,
};
use fota_protocol::image::{Digest, ImageBuilder, ImageVersion, TrustedKey};
use fota_protocol::messages::{
    CheckIn, CheckInResponse, Component, EventKind, Model, Offer, PatchOffer, RdpLevel, Report,
    ReportAck,
};
use fota_protocol::SlotId;

const OLD: ImageVersion = ImageVersion::new(1, 4, 0, 1);
const NEW: ImageVersion = ImageVersion::new(1, 5, 0, 2);
const ROLLOUT: u64 = 9;

type MemFlash = fota_boot::testing::MemFlash;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn keys() -> [TrustedKey; 1] {
    [TrustedKey::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()]
}

/// A firmware-like signed image linked for `slot`: code words, and a table of absolute
/// addresses inside the slot (which move when the image is linked for the other slot), with
/// `seed` changing a stretch of it as a point release would.
fn image(slot: SlotId, version: ImageVersion, counter: u32, len: usize, seed: u32) -> Vec<u8> {
    let base = slot.partition().start;
    let entry = base + 0x200 + 0x100;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    p.extend_from_slice(&(entry | 1).to_le_bytes());
    let mut x = 1u32;
    while p.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if p.len() % 512 < 64 {
            p.extend_from_slice(&(base + 0x400 + (x >> 20)).to_le_bytes());
        } else {
            p.extend_from_slice(&((x >> 16) as u16 & 0x3fff).to_le_bytes());
        }
    }
    p.truncate(len);
    // The release's change: a stretch rewritten.
    let at = len / 3;
    for (i, b) in p[at..at + 200].iter_mut().enumerate() {
        *b = (i as u32 * seed) as u8;
    }
    ImageBuilder::new(p, version)
        .security_counter(counter)
        .rom_fixed(base)
        .sign(&signing_key())
        .unwrap()
}

/// The running image (slot A) and the release (slot B).
fn base_image() -> Vec<u8> {
    image(SlotId::A, OLD, 3, 60_001, 3)
}

fn target_image() -> Vec<u8> {
    image(SlotId::B, NEW, 4, 61_003, 5)
}

fn offer(target: &[u8], patch: Option<&[u8]>, base: &[u8]) -> Offer {
    Offer {
        rollout_id: ROLLOUT,
        version: NEW,
        component: Component::Application,
        slot: SlotId::B,
        sha256: Digest::of(target),
        size: target.len() as u32,
        security_counter: 4,
        patch: patch.map(|p| PatchOffer {
            sha256: Digest::of(p),
            size: p.len() as u32,
            base_sha256: Digest::of(base),
        }),
    }
}

fn slot_of(flash: &MemFlash, slot: SlotId) -> &[u8] {
    let start = FlashLayout::STM32F429.slot_offset(slot) as usize;
    &flash.bytes[start..start + slot.partition().size as usize]
}

/// Flash with `running` in slot A, confirmed in the journal.
fn flash_running(running: &[u8]) -> MemFlash {
    let mut flash = MemFlash::f429();
    let start = FlashLayout::STM32F429.slot_offset(SlotId::A) as usize;
    flash.bytes[start..start + running.len()].copy_from_slice(running);
    let mut journal = BootJournal::open(flash, JournalRegion::STM32F429).unwrap();
    journal
        .append(RecordKind::Confirmed { slot: SlotId::A })
        .unwrap();
    let mut flash = journal.into_flash();
    flash.writes = 0;
    flash.erases.clear();
    flash
}

#[derive(Debug, PartialEq, Eq)]
struct LinkDown;

/// A server with content-addressed artifacts (the image and the patch), as `GET
/// /v1/artifacts/{sha256}` serves them.
#[derive(Debug, Default)]
struct Server {
    artifacts: Vec<Vec<u8>>,
    offer: Option<Offer>,
    /// Every `drop_every`-th fetch fails (0: never).
    drop_every: usize,
    max_read: usize,
    /// Every fetch: the artifact's address, the offset, the bytes served (`None`: dropped).
    fetches: Vec<(Digest, u32, Option<usize>)>,
}

impl Server {
    fn new(offer: Offer, artifacts: &[&[u8]]) -> Self {
        Self {
            artifacts: artifacts.iter().map(|a| a.to_vec()).collect(),
            offer: Some(offer),
            max_read: usize::MAX,
            ..Self::default()
        }
    }

    /// Bytes served of the artifact at `sha256`.
    fn served(&self, sha256: &Digest) -> usize {
        self.fetches
            .iter()
            .filter(|(s, _, _)| s == sha256)
            .filter_map(|(_, _, n)| *n)
            .sum()
    }
}

impl Transport for Server {
    type Error = LinkDown;

    fn check_in(&mut self, _: &CheckIn) -> Result<CheckInResponse, LinkDown> {
        Ok(CheckInResponse {
            poll_interval_s: 60,
            offer: self.offer.clone(),
        })
    }

    fn report(&mut self, report: &Report) -> Result<ReportAck, LinkDown> {
        Ok(ReportAck {
            stored: report.events.len() as u32,
            duplicates: 0,
        })
    }

    fn fetch_range(
        &mut self,
        sha: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, LinkDown> {
        let artifact = self
            .artifacts
            .iter()
            .find(|a| Digest::of(a) == *sha)
            .expect("the device asks only for offered artifacts")
            .clone();
        if self.drop_every > 0 && (self.fetches.len() + 1) % self.drop_every == 0 {
            self.fetches.push((*sha, offset, None));
            return Err(LinkDown);
        }
        let start = (offset as usize).min(artifact.len());
        let n = buf.len().min(self.max_read).min(artifact.len() - start);
        buf[..n].copy_from_slice(&artifact[start..start + n]);
        self.fetches.push((*sha, offset, Some(n)));
        Ok(n)
    }
}

type Client<'k> = OtaClient<'k, Server, MemFlash, MemPersist>;

fn device() -> DeviceInfo {
    DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: OLD,
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0,
    }
}

fn client<'k>(
    server: Server,
    flash: MemFlash,
    persist: MemPersist,
    keys: &'k [TrustedKey],
) -> Client<'k> {
    client_with(server, flash, persist, keys, Config::default())
}

fn client_with<'k>(
    server: Server,
    flash: MemFlash,
    persist: MemPersist,
    keys: &'k [TrustedKey],
    config: Config,
) -> Client<'k> {
    let boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A).unwrap();
    OtaClient::new(server, boot, persist, device(), keys, config)
}

fn run_download<P: Persist>(c: &mut OtaClient<'_, Server, MemFlash, P>) -> Step {
    for _ in 0..100_000 {
        match c.download_step() {
            Step::Continue => {}
            other => return other,
        }
    }
    panic!("download never ended");
}

fn kinds<P: Persist>(c: &OtaClient<'_, Server, MemFlash, P>) -> Vec<EventKind> {
    c.queued_events().iter().map(|e| e.kind).collect()
}

/// The reasons of the queued `VerifyFailed` events.
fn verify_failures<P: Persist>(c: &OtaClient<'_, Server, MemFlash, P>) -> Vec<String> {
    c.queued_events()
        .iter()
        .filter(|e| e.kind == EventKind::VerifyFailed)
        .map(|e| e.reason.as_ref().unwrap().as_str().to_owned())
        .collect()
}

/// The end of every test: slot B holds exactly the target (then erased bytes), marked pending;
/// slot A (the base) is what it was and was never erased.
fn assert_installed(c: Client<'_>, base: &[u8], target: &[u8]) -> Server {
    assert_eq!(c.boot().journal().state().pending(), Some(SlotId::B));
    assert_eq!(c.boot().journal().state().confirmed(), Some(SlotId::A));
    assert_eq!(c.persist().download, None);
    let (server, boot, _) = c.into_parts();
    let flash = boot.into_flash();
    let b = slot_of(&flash, SlotId::B);
    assert_eq!(&b[..target.len()], target);
    assert!(b[target.len()..].iter().all(|&x| x == 0xFF));
    let a = slot_of(&flash, SlotId::A);
    assert_eq!(&a[..base.len()], base, "the base slot was written");
    assert!(a[base.len()..].iter().all(|&x| x == 0xFF));
    let slot_a = FlashLayout::STM32F429.slot_offset(SlotId::A);
    let slot_a_end = slot_a + SlotId::A.partition().size;
    assert!(
        flash
            .erases
            .iter()
            .all(|&(from, to)| to <= slot_a || from >= slot_a_end),
        "the base slot was erased: {:?}",
        flash.erases
    );
    server
}

#[test]
fn a_patch_rebuilds_the_image_for_the_other_slot_and_installs_it() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let patch = fota_delta::generate(&base, &target).unwrap();
    assert!(patch.len() < target.len() / 2, "{} bytes", patch.len());
    let offer = offer(&target, Some(&patch), &base);
    let server = Server::new(offer.clone(), &[&target, &patch]);
    let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Reboot);
    assert_eq!(
        kinds(&c),
        [
            EventKind::OfferAccepted,
            EventKind::DownloadStarted,
            EventKind::Installed
        ]
    );
    let server = assert_installed(c, &base, &target);
    // Only the patch went over the link, all of it, once.
    assert_eq!(server.served(&offer.sha256), 0);
    assert_eq!(server.served(&Digest::of(&patch)), patch.len());
}

#[test]
fn a_dropping_link_resumes_the_patch_where_it_stopped() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let patch = fota_delta::generate(&base, &target).unwrap();
    let offer = offer(&target, Some(&patch), &base);
    let mut server = Server::new(offer.clone(), &[&target, &patch]);
    server.drop_every = 3;
    server.max_read = 301;
    let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Reboot);
    let server = assert_installed(c, &base, &target);
    // Each request asks for the first container byte not yet applied: nothing twice, no gap.
    let mut next = 0;
    for &(sha, offset, n) in &server.fetches {
        assert_eq!(sha, Digest::of(&patch));
        assert_eq!(offset, next);
        next += n.unwrap_or(0) as u32;
    }
    assert_eq!(next as usize, patch.len());
    assert_eq!(server.served(&offer.sha256), 0);
}

#[test]
fn a_patch_for_another_base_is_reported_and_the_full_image_installed() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    // The device runs another build than the one the patch was made from.
    let other = image(SlotId::A, OLD, 3, 60_001, 11);
    let patch = fota_delta::generate(&other, &target).unwrap();

    // The offer names the other base: refused at the offer, before a byte of it is fetched.
    let offered = offer(&target, Some(&patch), &other);
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Reboot);
    let failures = verify_failures(&c);
    assert_eq!(failures.len(), 1);
    assert!(failures[0].starts_with("delta patch "), "{}", failures[0]);
    assert!(
        failures[0].contains("is not the running image"),
        "{}",
        failures[0]
    );
    let server = assert_installed(c, &base, &target);
    assert_eq!(server.served(&Digest::of(&patch)), 0);
    assert_eq!(server.served(&offered.sha256), target.len());

    // The offer says the running image, the container another: its header is checked too.
    let offered = offer(&target, Some(&patch), &base);
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    assert_eq!(run_download(&mut c), Step::Reboot);
    let failures = verify_failures(&c);
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].contains("does not apply to this base"),
        "{}",
        failures[0]
    );
    let server = assert_installed(c, &base, &target);
    assert_eq!(server.served(&offered.sha256), target.len());
}

#[test]
fn a_corrupt_patch_is_reported_and_the_full_image_installed() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let good = fota_delta::generate(&base, &target).unwrap();
    // Corrupted where the server made it (its content address is of the corrupt bytes): in
    // the body, in the header, and cut short.
    let mut body = good.clone();
    body[good.len() / 2] ^= 0x10;
    let mut header = good.clone();
    header[20] ^= 1;
    let short = good[..good.len() - 40].to_vec();
    for bad in [body, header, short] {
        let offered = offer(&target, Some(&bad), &base);
        let server = Server::new(offered.clone(), &[&target, &bad]);
        let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        assert_eq!(run_download(&mut c), Step::Reboot);
        let failures = verify_failures(&c);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("delta patch "), "{}", failures[0]);
        assert!(
            failures[0].contains(" (full image instead): "),
            "{}",
            failures[0]
        );
        let kinds = kinds(&c);
        assert_eq!(kinds.first(), Some(&EventKind::OfferAccepted));
        assert_eq!(kinds.last(), Some(&EventKind::Installed));
        let server = assert_installed(c, &base, &target);
        assert_eq!(server.served(&offered.sha256), target.len());
    }
}

#[test]
fn a_patch_whose_image_does_not_verify_is_never_marked_pending() {
    let keys = keys();
    let base = base_image();
    let target = target_image();
    // Well-formed patches that rebuild exactly what they say (their own target digest matches),
    // but not the offered image: one whose signature is damaged (it does not verify), a longer
    // image (refused as it streams, past the offered size) and a shorter one (it ends short of
    // the offered size). Each is caught before anything is marked pending, and the genuine full
    // image is installed instead.
    let mut forged = target.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0xFF; // in the signature
    let longer = image(SlotId::B, NEW, 4, 61_003 + 600, 5);
    let shorter = target[..target.len() - 100].to_vec();
    // And whether the whole patch was applied (the longer image is refused as soon as it
    // passes the offered size, and the rest of its patch never fetched).
    let cases = [
        (forged, "the rebuilt image does not verify".to_owned(), true),
        (longer, "the rebuilt image is refused".to_owned(), false),
        (
            shorter,
            format!(
                "it rebuilt {} of the offered {} bytes",
                target.len() - 100,
                target.len()
            ),
            true,
        ),
    ];
    for (rebuilt, why, whole) in cases {
        let patch = fota_delta::generate(&base, &rebuilt).unwrap();
        let offered = offer(&target, Some(&patch), &base);
        let server = Server::new(offered.clone(), &[&target, &patch]);
        let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        assert_eq!(run_download(&mut c), Step::Reboot);
        let failures = verify_failures(&c);
        assert_eq!(failures.len(), 1, "{why}: {failures:?}");
        let expected = format!(
            "delta patch {} (full image instead): {why}",
            hex8(&Digest::of(&patch))
        );
        assert!(failures[0].starts_with(&expected), "{}", failures[0]);
        // The patch's image was never installed: one install, of the full image, after the
        // slot was erased and the download started again.
        assert_eq!(
            kinds(&c),
            [
                EventKind::OfferAccepted,
                EventKind::DownloadStarted,
                EventKind::VerifyFailed,
                EventKind::DownloadStarted,
                EventKind::Installed
            ],
            "{why}"
        );
        let server = assert_installed(c, &base, &target);
        assert_eq!(server.served(&offered.sha256), target.len(), "{why}");
        let applied = server.served(&Digest::of(&patch));
        if whole {
            assert_eq!(applied, patch.len(), "{why}");
        } else {
            assert!(applied < patch.len(), "{why}: {applied} of {}", patch.len());
        }
    }
}

/// The first four bytes of a digest in hex, as reasons name a patch.
fn hex8(digest: &Digest) -> String {
    digest.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_power_cut_mid_patch_resumes_to_the_exact_image() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let patch = fota_delta::generate(&base, &target).unwrap();
    let offered = offer(&target, Some(&patch), &base);
    // Checkpoints every 1 KB of patch, so several land in this patch.
    let config = Config {
        checkpoint_every: 1024,
        ..Config::default()
    };
    // Cut after every number of steps through the patch's application.
    let (mut cuts, mut from_checkpoint) = (0, 0);
    for steps in 1.. {
        let server = Server::new(offered.clone(), &[&target, &patch]);
        let mut c = client_with(
            server,
            flash_running(&base),
            MemPersist::default(),
            &keys,
            config,
        );
        assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
        let mut done = false;
        for _ in 0..steps {
            match c.download_step() {
                Step::Continue => {}
                Step::Reboot => {
                    done = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        if done {
            break;
        }
        cuts += 1;
        // Power off: RAM is gone, the flash and the persisted state stay.
        let (_, boot, persist) = c.into_parts();
        let saved = persist.download.clone();
        let server = Server::new(offered.clone(), &[&target, &patch]);
        let mut c = client_with(server, boot.into_flash(), persist, &keys, config);
        // The server still offers it: the resumed download goes on (or a new one starts).
        let outcome = c.check_in().unwrap();
        assert!(
            matches!(outcome, CheckInOutcome::Busy | CheckInOutcome::Started),
            "{outcome:?}"
        );
        assert_eq!(run_download(&mut c), Step::Reboot, "cut after {steps}");
        assert!(verify_failures(&c).is_empty(), "cut after {steps}");
        let server = assert_installed(c, &base, &target);
        // A checkpoint recorded before the cut: the patch goes on from it, and only the rest
        // of the patch is fetched. None: the full image's download goes on after the bytes
        // recorded, or, with nothing recorded, the patch starts over.
        let full = server.served(&offered.sha256);
        let applied = server.served(&Digest::of(&patch));
        match saved {
            Some(d) if d.checkpoint.is_some() => {
                let cp = d.checkpoint.unwrap();
                from_checkpoint += 1;
                assert_eq!(full, 0, "cut after {steps}");
                assert_eq!(server.fetches[0].1, cp.fetched, "cut after {steps}");
                assert_eq!(
                    applied,
                    patch.len() - cp.fetched as usize,
                    "cut after {steps}"
                );
            }
            Some(d) => {
                assert_eq!(full, target.len() - d.offset as usize, "cut after {steps}");
            }
            None => assert_eq!(full, 0, "cut after {steps}"),
        }
    }
    assert!(cuts > 10, "{cuts} cuts");
    assert!(
        from_checkpoint >= cuts / 3,
        "{from_checkpoint} of {cuts} cuts"
    );
}

/// A client whose state store is the real one (`FlashPersist`, on a flash of its own standing
/// for sectors 10-11).
type FlashClient<'k> = OtaClient<'k, Server, MemFlash, FlashPersist<MemFlash>>;

/// Patch bytes between checkpoints in the flash store's tests: several in this patch.
const EVERY: u32 = 1024;

const STORE: StoreRegion = StoreRegion {
    start: 0,
    sector_size: 16 * 1024,
};

fn flash_client<'k>(
    server: Server,
    flash: MemFlash,
    store: MemFlash,
    keys: &'k [TrustedKey],
) -> FlashClient<'k> {
    let boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A).unwrap();
    OtaClient::new(
        server,
        boot,
        FlashPersist::open(store, STORE),
        device(),
        keys,
        Config {
            checkpoint_every: EVERY,
            ..Config::default()
        },
    )
}

/// Steps until the store holds its `n`-th checkpoint (counting those it recorded), then `more`
/// steps (the client then loses its power). Returns the checkpoints recorded, in order.
fn cut_after_checkpoint(c: &mut FlashClient<'_>, n: usize, more: usize) -> Vec<SavedCheckpoint> {
    let mut seen = Vec::new();
    let mut left = None;
    loop {
        assert_eq!(c.download_step(), Step::Continue, "the patch ended first");
        let now = c.persist_mut().load().download.and_then(|d| d.checkpoint);
        if let Some(cp) = now {
            if seen.last() != Some(&cp) {
                seen.push(cp);
            }
        }
        if left.is_none() && seen.len() == n {
            left = Some(more);
        }
        match left.as_mut() {
            Some(0) => return seen,
            Some(k) => *k -= 1,
            None => {}
        }
    }
}

#[test]
fn a_power_cut_mid_patch_resumes_the_patch_from_its_checkpoint_in_flash() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let patch = fota_delta::generate(&base, &target).unwrap();
    assert!(
        patch.len() > 4 * EVERY as usize,
        "{} bytes: too few checkpoints",
        patch.len()
    );
    let offered = offer(&target, Some(&patch), &base);
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, flash_running(&base), MemFlash::new(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    // Past the first checkpoint, and a few steps more (rebuilt bytes programmed since).
    let seen = cut_after_checkpoint(&mut c, 1, 3);
    let cp = *seen.last().unwrap();
    assert!(cp.fetched >= EVERY && cp.written > 0, "{cp:?}");
    assert_eq!(cp.patch, offered.patch.unwrap());
    let (before, boot, store) = c.into_parts();
    let fetched_before: usize = before.fetches.iter().filter_map(|f| f.2).sum();
    assert!(fetched_before > cp.fetched as usize);

    // Power back: the download resumes, from the patch's checkpoint.
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, boot.into_flash(), store.into_flash(), &keys);
    assert_eq!(
        c.applying_patch(),
        offered.patch.as_ref(),
        "the patch is resumed"
    );
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Busy);
    assert_eq!(run_download(&mut c), Step::Reboot);
    assert!(verify_failures(&c).is_empty(), "{:?}", verify_failures(&c));
    let after = assert_installed_flash(c, &base, &target);
    // Every byte fetched after the cut is the patch's, from the checkpoint's offset on, in
    // order; none of the full image.
    assert_eq!(after.served(&offered.sha256), 0);
    assert_eq!(
        after.fetches[0],
        (Digest::of(&patch), cp.fetched, after.fetches[0].2)
    );
    let mut next = cp.fetched;
    for &(sha, offset, n) in &after.fetches {
        assert_eq!((sha, offset), (Digest::of(&patch), next));
        next += n.unwrap() as u32;
    }
    assert_eq!(next as usize, patch.len());
    // Before and after the cut together: far less than the image.
    let total = fetched_before + after.served(&Digest::of(&patch));
    assert!(
        total < target.len() / 2,
        "{total} bytes for a {}-byte image",
        target.len()
    );
    assert!(
        total <= patch.len() + EVERY as usize + 1024,
        "{total} of a {}-byte patch",
        patch.len()
    );
}

#[test]
fn a_torn_checkpoint_falls_back_to_the_one_before() {
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let patch = fota_delta::generate(&base, &target).unwrap();
    let offered = offer(&target, Some(&patch), &base);
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, flash_running(&base), MemFlash::new(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    // Cut in the step that records the second checkpoint: it is the log's last entry.
    let seen = cut_after_checkpoint(&mut c, 2, 0);
    let (first, second) = (seen[0], seen[1]);
    assert!(first.fetched < second.fetched);
    let (_, boot, store) = c.into_parts();
    let mut store = store.into_flash();
    let end = {
        let mut s = FlashPersist::open(&mut store, STORE);
        s.load();
        s.log_end()
    };
    // Tear the entry's last record (its commit) as a cut while programming it leaves it: its
    // last word (the CRC) not programmed yet.
    let commit = end as usize - (4 + 88 + 4);
    store.bytes[commit + 92..commit + 96].fill(0xFF);
    let loaded = FlashPersist::open(&mut store, STORE).load();
    assert_eq!(loaded.download.unwrap().checkpoint, Some(first));

    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, boot.into_flash(), store, &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Busy);
    assert_eq!(run_download(&mut c), Step::Reboot);
    assert!(verify_failures(&c).is_empty(), "{:?}", verify_failures(&c));
    let after = assert_installed_flash(c, &base, &target);
    assert_eq!(after.served(&offered.sha256), 0);
    assert_eq!(
        after.fetches[0].1, first.fetched,
        "resumed from the checkpoint before"
    );
    assert_eq!(
        after.served(&Digest::of(&patch)),
        patch.len() - first.fetched as usize
    );

    // A torn part of the first (only) checkpoint: none left, and the download goes on as
    // before checkpoints: the full image after the bytes recorded.
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, flash_running(&base), MemFlash::new(), &keys);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Started);
    let seen = cut_after_checkpoint(&mut c, 1, 0);
    assert_eq!(seen.len(), 1);
    let (_, boot, store) = c.into_parts();
    let mut store = store.into_flash();
    let end = {
        let mut s = FlashPersist::open(&mut store, STORE);
        s.load();
        s.log_end()
    };
    // The last part (4-byte header, index and 117 bytes padded to 120, CRC) before the commit
    // (4-byte header, 85 bytes padded to 88, CRC).
    let last_part = end as usize - (4 + 88 + 4) - (4 + 120 + 4);
    store.bytes[last_part + 60..end as usize].fill(0xFF);
    let loaded = FlashPersist::open(&mut store, STORE)
        .load()
        .download
        .unwrap();
    assert_eq!(loaded.checkpoint, None);
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, boot.into_flash(), store, &keys);
    assert_eq!(c.applying_patch(), None);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Busy);
    assert_eq!(run_download(&mut c), Step::Reboot);
    assert!(verify_failures(&c).is_empty(), "{:?}", verify_failures(&c));
    let after = assert_installed_flash(c, &base, &target);
    assert_eq!(after.served(&Digest::of(&patch)), 0);
    assert_eq!(
        after.served(&offered.sha256),
        target.len() - loaded.offset as usize
    );
}

#[test]
fn a_store_written_before_checkpoints_still_loads_and_resumes_the_full_image() {
    // The records the firmware before checkpoints wrote for a patch in progress: the offer
    // (without its patch) once the slot was erased, then progress every 4 KB; byte for byte,
    // with their CRCs computed here.
    let keys = keys();
    let (base, target) = (base_image(), target_image());
    let patch = fota_delta::generate(&base, &target).unwrap();
    let offered = offer(&target, Some(&patch), &base);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let record = |kind: u8, payload: &[u8]| {
        let mut r = vec![0x0F, 0x7A, kind, payload.len() as u8];
        r.extend_from_slice(payload);
        while r.len() % 4 != 0 {
            r.push(0);
        }
        let c = crc.checksum(&r);
        r.extend_from_slice(&c.to_le_bytes());
        r
    };
    let version = |v: ImageVersion| {
        (u64::from(v.major) << 56
            | u64::from(v.minor) << 48
            | u64::from(v.revision) << 32
            | u64::from(v.build))
        .to_le_bytes()
    };
    let mut download = Vec::new();
    download.extend_from_slice(&ROLLOUT.to_le_bytes());
    download.extend_from_slice(&version(NEW));
    download.push(1); // slot B
    download.extend_from_slice(&offered.sha256.0);
    download.extend_from_slice(&offered.size.to_le_bytes());
    download.extend_from_slice(&offered.security_counter.to_le_bytes());
    let offset = 8192u32;
    let mut log = record(1, &1u32.to_le_bytes()); // the commit record, generation 1
    log.extend(record(9, &1u64.to_le_bytes())); // the next event id
    log.extend(record(6, &download));
    log.extend(record(8, &4096u32.to_le_bytes()));
    log.extend(record(8, &offset.to_le_bytes()));
    let mut store = MemFlash::new();
    store.bytes[..log.len()].copy_from_slice(&log);

    // The slot holds the first bytes the patch rebuilt (and erased bytes after them).
    let mut flash = flash_running(&base);
    let b = FlashLayout::STM32F429.slot_offset(SlotId::B) as usize;
    flash.bytes[b..b + offset as usize].copy_from_slice(&target[..offset as usize]);

    let mut persist = FlashPersist::open(store, STORE);
    let loaded = persist.load().download.unwrap();
    assert_eq!(
        (loaded.offer.sha256, loaded.offset, loaded.checkpoint),
        (offered.sha256, offset, None)
    );
    let server = Server::new(offered.clone(), &[&target, &patch]);
    let mut c = flash_client(server, flash, persist.into_flash(), &keys);
    assert_eq!(c.applying_patch(), None);
    assert_eq!(c.check_in().unwrap(), CheckInOutcome::Busy);
    assert_eq!(run_download(&mut c), Step::Reboot);
    let after = assert_installed_flash(c, &base, &target);
    assert_eq!(after.served(&Digest::of(&patch)), 0);
    assert_eq!(
        after.served(&offered.sha256),
        target.len() - offset as usize
    );
}

/// [`assert_installed`] for a client on the flash store.
fn assert_installed_flash(c: FlashClient<'_>, base: &[u8], target: &[u8]) -> Server {
    assert_eq!(c.boot().journal().state().pending(), Some(SlotId::B));
    let (server, boot, mut store) = c.into_parts();
    assert_eq!(store.load().download, None);
    let persist = MemPersist::default();
    let boot_flash = boot.into_flash();
    let boot = BootControl::open(boot_flash, FlashLayout::STM32F429, SlotId::A).unwrap();
    let c = OtaClient::new(server, boot, persist, device(), &[], Config::default());
    assert_installed(c, base, target)
}
