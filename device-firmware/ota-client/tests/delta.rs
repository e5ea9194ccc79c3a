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
use fota_ota_client::{CheckInOutcome, Config, DeviceInfo, MemPersist, OtaClient, Step};
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

fn client<'k>(
    server: Server,
    flash: MemFlash,
    persist: MemPersist,
    keys: &'k [TrustedKey],
) -> Client<'k> {
    let boot = BootControl::open(flash, FlashLayout::STM32F429, SlotId::A).unwrap();
    let device = DeviceInfo {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: OLD,
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0,
    };
    OtaClient::new(server, boot, persist, device, keys, Config::default())
}

fn run_download(c: &mut Client<'_>) -> Step {
    for _ in 0..100_000 {
        match c.download_step() {
            Step::Continue => {}
            other => return other,
        }
    }
    panic!("download never ended");
}

fn kinds(c: &Client<'_>) -> Vec<EventKind> {
    c.queued_events().iter().map(|e| e.kind).collect()
}

/// The reasons of the queued `VerifyFailed` events.
fn verify_failures(c: &Client<'_>) -> Vec<String> {
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
    // Cut after every number of steps through the patch's application.
    let mut cuts = 0;
    for steps in 1.. {
        let server = Server::new(offered.clone(), &[&target, &patch]);
        let mut c = client(server, flash_running(&base), MemPersist::default(), &keys);
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
        let saved = persist.download.as_ref().map(|d| d.offset);
        let server = Server::new(offered.clone(), &[&target, &patch]);
        let mut c = client(server, boot.into_flash(), persist, &keys);
        // The server still offers it: the resumed download goes on (or a new one starts).
        let outcome = c.check_in().unwrap();
        assert!(
            matches!(outcome, CheckInOutcome::Busy | CheckInOutcome::Started),
            "{outcome:?}"
        );
        assert_eq!(run_download(&mut c), Step::Reboot, "cut after {steps}");
        assert!(verify_failures(&c).is_empty(), "cut after {steps}");
        let server = assert_installed(c, &base, &target);
        // The bytes rebuilt before the cut and recorded stay: the full image's download goes
        // on after them (with nothing recorded, the patch starts over).
        let full = server.served(&offered.sha256);
        match saved {
            Some(offset) => assert_eq!(full, target.len() - offset as usize, "cut after {steps}"),
            None => assert_eq!(full, 0, "cut after {steps}"),
        }
    }
    assert!(cuts > 10, "{cuts} cuts");
}
