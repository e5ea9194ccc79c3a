//! Downloads driven through a `Transport` double serving real signed images: whole, chunked,
//! resumed after a dropped link, and every way an offer or an artifact can be refused.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use ed25519_dalek::SigningKey;
use fota_ota_client::download::{Download, DownloadError};
use fota_ota_client::transport::Transport;
use fota_protocol::image::SlotError;
use fota_protocol::image::{verify, Digest, ImageBuilder, ImageError, ImageVersion, TrustedKey};
use fota_protocol::layout::STAGE1_IMAGE_MAX;
use fota_protocol::messages::{
    BootState, CheckIn, CheckInResponse, Component, EventKind, Model, Offer, RdpLevel, Report,
    ReportAck,
};
use fota_protocol::SlotId;

const VERSION: ImageVersion = ImageVersion::new(1, 5, 0, 2);
const COUNTER: u32 = 4;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn trusted(key: &SigningKey) -> TrustedKey {
    TrustedKey::from_bytes(&key.verifying_key().to_bytes()).unwrap()
}

/// An application payload whose vector table is right for `slot`.
fn app_for(slot: SlotId, len: usize) -> Vec<u8> {
    let entry = slot.partition().start + 0x200 + 0x100;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&0x2002_0000u32.to_le_bytes());
    p.extend_from_slice(&(entry | 1).to_le_bytes());
    p.extend((8..len).map(|i| (i * 31 % 251) as u8));
    p
}

/// A signed image linked for `slot`.
fn image_for(slot: SlotId) -> Vec<u8> {
    ImageBuilder::new(app_for(slot, 10_000), VERSION)
        .security_counter(COUNTER)
        .rom_fixed(slot.partition().start)
        .sign(&signing_key())
        .unwrap()
}

/// The offer a correct server makes for `artifact` into `slot`.
fn offer_for(artifact: &[u8], slot: SlotId) -> Offer {
    Offer {
        rollout_id: 9,
        version: VERSION,
        component: Component::Application,
        slot,
        sha256: Digest::of(artifact),
        size: artifact.len() as u32,
        security_counter: COUNTER,
        patch: None,
    }
}

/// The link went down.
#[derive(Debug, PartialEq, Eq)]
struct LinkDown;

/// Serves artifacts from memory, at most `max_read` bytes a request, and drops the link once
/// `drop_after` bytes have been served in total (like a 4G link dying mid-download).
struct MemoryServer {
    artifacts: Vec<Vec<u8>>,
    max_read: usize,
    drop_after: Option<usize>,
    served: usize,
    requests: Vec<u32>,
}

impl MemoryServer {
    fn new(artifact: Vec<u8>) -> Self {
        Self {
            artifacts: vec![artifact],
            max_read: usize::MAX,
            drop_after: None,
            served: 0,
            requests: Vec::new(),
        }
    }
}

impl Transport for MemoryServer {
    type Error = LinkDown;

    fn check_in(&mut self, _: &CheckIn) -> Result<CheckInResponse, LinkDown> {
        Ok(CheckInResponse {
            poll_interval_s: 60,
            offer: None,
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
        sha256: &Digest,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<usize, LinkDown> {
        self.requests.push(offset);
        let mut budget = buf.len().min(self.max_read);
        if let Some(limit) = self.drop_after {
            if self.served >= limit {
                return Err(LinkDown);
            }
            budget = budget.min(limit - self.served);
        }
        let artifact = self
            .artifacts
            .iter()
            .find(|a| Digest::of(a) == *sha256)
            .ok_or(LinkDown)?;
        let start = (offset as usize).min(artifact.len());
        let n = budget.min(artifact.len() - start);
        buf[..n].copy_from_slice(&artifact[start..start + n]);
        self.served += n;
        Ok(n)
    }
}

/// What the device's slot holds: bytes programmed at increasing offsets.
type Slot = Vec<u8>;

/// Fetch until the server says end, the offer is complete or the link drops; program each chunk
/// into `slot`, then accept it. The download loop of the module docs.
fn pump<T: Transport>(
    transport: &mut T,
    dl: &mut Download,
    slot: &mut Slot,
    buf_len: usize,
) -> Result<Result<(), DownloadError>, T::Error> {
    let mut buf = vec![0u8; buf_len];
    let sha256 = dl.offer().sha256;
    while !dl.is_complete() {
        let want = (dl.remaining() as usize).min(buf.len());
        let n = transport.fetch_range(&sha256, dl.resume_offset(), &mut buf[..want])?;
        if n == 0 {
            break;
        }
        assert_eq!(slot.len(), dl.resume_offset() as usize);
        slot.extend_from_slice(&buf[..n]);
        if let Err(e) = dl.accept(&buf[..n]) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

fn download_all(artifact: &[u8], offer: &Offer, buf_len: usize) -> Result<Slot, DownloadError> {
    let mut server = MemoryServer::new(artifact.to_vec());
    let mut dl = Download::new(offer)?;
    let mut slot = Slot::new();
    pump(&mut server, &mut dl, &mut slot, buf_len).unwrap()?;
    dl.finish(&[trusted(&signing_key())])?;
    Ok(slot)
}

#[test]
fn a_download_verifies_whatever_the_chunk_size() {
    let keys = [trusted(&signing_key())];
    for slot in SlotId::ALL {
        let artifact = image_for(slot);
        let expected = verify(&artifact, &keys).unwrap();
        for buf_len in [1, 3, 4, 7, 512, 4096, artifact.len()] {
            let offer = offer_for(&artifact, slot);
            let mut server = MemoryServer::new(artifact.clone());
            let mut dl = Download::new(&offer).unwrap();
            assert_eq!(dl.slot(), slot);
            let mut written = Slot::new();
            pump(&mut server, &mut dl, &mut written, buf_len)
                .unwrap()
                .unwrap();
            assert_eq!(written, artifact);
            assert_eq!(dl.resume_offset() as usize, artifact.len());
            assert_eq!(dl.remaining(), 0);
            assert_eq!(
                dl.finish(&keys).unwrap(),
                expected,
                "slot {slot}, chunks of {buf_len}"
            );
        }
    }
}

#[test]
fn a_dropped_link_resumes_where_it_stopped_with_the_same_result() {
    let keys = [trusted(&signing_key())];
    let artifact = image_for(SlotId::B);
    let offer = offer_for(&artifact, SlotId::B);
    let expected = verify(&artifact, &keys).unwrap();
    let len = artifact.len();
    for cut in [0, 1, 31, 32, 33, 0x200, 0x208, 5000, len - 100, len - 1] {
        let mut server = MemoryServer::new(artifact.clone());
        server.max_read = 1000;
        server.drop_after = Some(cut);
        let mut dl = Download::new(&offer).unwrap();
        let mut slot = Slot::new();

        assert_eq!(pump(&mut server, &mut dl, &mut slot, 700), Err(LinkDown));
        assert_eq!(
            dl.resume_offset() as usize,
            cut,
            "durable bytes at the drop"
        );
        assert_eq!(slot.len(), cut);

        // The link comes back: ask from resume_offset, not from 0.
        server.drop_after = None;
        let first_request = server.requests.len();
        pump(&mut server, &mut dl, &mut slot, 700).unwrap().unwrap();
        assert_eq!(server.requests[first_request] as usize, cut);
        assert_eq!(slot, artifact);
        assert_eq!(dl.finish(&keys).unwrap(), expected, "cut at {cut}");
    }
}

#[test]
fn a_link_that_keeps_dropping_still_completes() {
    let keys = [trusted(&signing_key())];
    let artifact = image_for(SlotId::A);
    let offer = offer_for(&artifact, SlotId::A);
    let mut server = MemoryServer::new(artifact.clone());
    let mut dl = Download::new(&offer).unwrap();
    let mut slot = Slot::new();
    let mut drops = 0;
    loop {
        // Each connection carries 777 bytes before it dies.
        server.drop_after = Some(server.served + 777);
        match pump(&mut server, &mut dl, &mut slot, 256) {
            Err(LinkDown) => drops += 1,
            Ok(done) => break done.unwrap(),
        }
    }
    assert_eq!(drops, artifact.len() / 777);
    assert_eq!(dl.finish(&keys).unwrap(), verify(&artifact, &keys).unwrap());
}

#[test]
fn more_bytes_than_offered_are_refused() {
    let artifact = image_for(SlotId::B);
    let offer = offer_for(&artifact, SlotId::B);
    let mut dl = Download::new(&offer).unwrap();
    dl.accept(&artifact[..100]).unwrap();

    let mut too_much = artifact[100..].to_vec();
    too_much.push(0xFF);
    assert_eq!(
        dl.accept(&too_much),
        Err(DownloadError::Oversize {
            offset: 100,
            len: too_much.len(),
            size: artifact.len() as u32,
        })
    );
    // Refused whole: nothing was taken, and the download can still complete.
    assert_eq!(dl.resume_offset(), 100);
    dl.accept(&artifact[100..]).unwrap();
    assert_eq!(
        dl.accept(&[0]),
        Err(DownloadError::Oversize {
            offset: artifact.len() as u32,
            len: 1,
            size: artifact.len() as u32,
        })
    );
    dl.accept(&[]).unwrap();
    assert!(dl.finish(&[trusted(&signing_key())]).is_ok());
}

#[test]
fn a_server_sending_more_than_it_offered_is_caught() {
    // The offer understates the size: the content address no longer matches what fits.
    let artifact = image_for(SlotId::B);
    let mut offer = offer_for(&artifact, SlotId::B);
    offer.size -= 10;
    let mut dl = Download::new(&offer).unwrap();
    assert!(matches!(
        dl.accept(&artifact),
        Err(DownloadError::Oversize { .. })
    ));
    let err = download_all(&artifact, &offer, 512).unwrap_err();
    assert_eq!(err, DownloadError::ContentMismatch);
}

#[test]
fn an_offer_larger_than_its_slot_is_refused_up_front() {
    let artifact = image_for(SlotId::B);
    let mut offer = offer_for(&artifact, SlotId::B);
    offer.size = 256 * 1024 + 1;
    assert_eq!(
        Download::new(&offer).unwrap_err(),
        DownloadError::OfferTooLarge {
            component: Component::Application,
            slot: SlotId::B,
            size: 256 * 1024 + 1,
            slot_size: 256 * 1024,
        }
    );
    offer.size = 256 * 1024;
    assert!(Download::new(&offer).is_ok());
}

#[test]
fn an_image_claiming_more_than_the_slot_fails_at_its_header() {
    // A header whose img_size alone exceeds the slot: refused after 32 bytes, not 256 KB.
    let mut artifact = image_for(SlotId::A);
    artifact[12..16].copy_from_slice(&(300 * 1024u32).to_le_bytes());
    let offer = offer_for(&artifact, SlotId::A);
    let mut dl = Download::new(&offer).unwrap();
    let err = dl.accept(&artifact[..32]).unwrap_err();
    assert!(
        matches!(err, DownloadError::Image(ImageError::TooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(err.event_kind(), EventKind::VerifyFailed);
    // Final: the verifier's error sticks.
    assert_eq!(dl.accept(&artifact[32..64]), Err(err));
}

#[test]
fn a_wrong_content_hash_is_refused() {
    let artifact = image_for(SlotId::B);
    let mut offer = offer_for(&artifact, SlotId::B);
    offer.sha256.0[0] ^= 1;
    let mut dl = Download::new(&offer).unwrap();
    dl.accept(&artifact).unwrap();
    let err = dl.finish(&[trusted(&signing_key())]).unwrap_err();
    assert_eq!(err, DownloadError::ContentMismatch);
    assert_eq!(err.event_kind(), EventKind::DownloadFailed);

    // Bytes corrupted in transit: the image would fail its own hash too, but the content
    // address catches it first, as a transfer problem.
    let offer = offer_for(&artifact, SlotId::B);
    let mut dl = Download::new(&offer).unwrap();
    let mut damaged = artifact.clone();
    damaged[0x300] ^= 0x40;
    dl.accept(&damaged).unwrap();
    assert_eq!(
        dl.finish(&[trusted(&signing_key())]),
        Err(DownloadError::ContentMismatch)
    );
}

/// A stage-1 build linked for stage-1 slot `linked`, marked (COMPONENT TLV) for `marked`.
fn stage1_for(linked: SlotId, marked: SlotId) -> Vec<u8> {
    let base = linked.stage1_partition().start;
    let mut p = app_for(linked, 6_000);
    p[4..8].copy_from_slice(&((base + 0x200 + 0x101) | 1).to_le_bytes());
    ImageBuilder::new(p, VERSION)
        .security_counter(COUNTER)
        .rom_fixed(base)
        .component(fota_protocol::image::Component::Stage1 { slot: marked })
        .sign(&signing_key())
        .unwrap()
}

fn bootloader_offer_for(artifact: &[u8], slot: SlotId) -> Offer {
    Offer {
        component: Component::Bootloader,
        ..offer_for(artifact, slot)
    }
}

#[test]
fn a_stage1_offered_as_a_bootloader_for_its_slot_verifies_as_stage0_will() {
    for slot in SlotId::ALL {
        let artifact = stage1_for(slot, slot);
        let offer = bootloader_offer_for(&artifact, slot);
        let mut server = MemoryServer::new(artifact.clone());
        let mut dl = Download::new(&offer).unwrap();
        let mut bytes = Slot::new();
        pump(&mut server, &mut dl, &mut bytes, 700)
            .unwrap()
            .unwrap();
        let image = dl.finish(&[trusted(&signing_key())]).unwrap();
        assert_eq!(
            image.component,
            fota_protocol::image::Component::Stage1 { slot }
        );
        assert_eq!(bytes, artifact);
    }
}

#[test]
fn an_image_that_is_not_the_component_offered_is_refused_with_what_it_is() {
    use fota_protocol::image::Component as Mark;
    let cases = [
        // An application offered as the bootloader.
        (
            image_for(SlotId::B),
            Component::Bootloader,
            Mark::Application,
            "offered as bootloader for slot B, the image is an application",
        ),
        // A stage-1 offered as an application.
        (
            stage1_for(SlotId::B, SlotId::B),
            Component::Application,
            Mark::Stage1 { slot: SlotId::B },
            "offered as application for slot B, the image is a stage-1 for stage-1 slot B",
        ),
        // A stage-1 linked for B but marked for A: stage-0 would refuse it in B.
        (
            stage1_for(SlotId::B, SlotId::A),
            Component::Bootloader,
            Mark::Stage1 { slot: SlotId::A },
            "offered as bootloader for slot B, the image is a stage-1 for stage-1 slot A",
        ),
    ];
    for (artifact, offered, mark, message) in cases {
        let offer = Offer {
            component: offered,
            ..offer_for(&artifact, SlotId::B)
        };
        let err = download_all(&artifact, &offer, 1024).unwrap_err();
        assert_eq!(
            err,
            DownloadError::WrongComponent {
                offered,
                slot: SlotId::B,
                image: mark
            }
        );
        assert_eq!(err.to_string(), message);
        assert!(message.len() <= 96, "a report's reason holds it whole");
        assert_eq!(err.event_kind(), EventKind::VerifyFailed);
    }
    // A stage-1 linked for A (its header's address) but marked for B, offered for B: the mark
    // matches, the link address does not, and stage-0's own check says so.
    let artifact = stage1_for(SlotId::A, SlotId::B);
    let err =
        download_all(&artifact, &bootloader_offer_for(&artifact, SlotId::B), 1024).unwrap_err();
    assert!(
        matches!(err, DownloadError::Slot(SlotError::WrongLoadAddress { .. })),
        "{err:?}"
    );
}

#[test]
fn a_bootloader_offer_past_the_stage1_budget_is_refused_up_front() {
    let artifact = stage1_for(SlotId::B, SlotId::B);
    let mut offer = bootloader_offer_for(&artifact, SlotId::B);
    // Stage-1 slot B is a 128 KB sector, but a stage-1 image has 64 KB.
    offer.size = STAGE1_IMAGE_MAX + 1;
    assert_eq!(
        Download::new(&offer).unwrap_err(),
        DownloadError::OfferTooLarge {
            component: Component::Bootloader,
            slot: SlotId::B,
            size: STAGE1_IMAGE_MAX + 1,
            slot_size: STAGE1_IMAGE_MAX,
        }
    );
    offer.size = STAGE1_IMAGE_MAX;
    assert!(Download::new(&offer).is_ok());
}

#[test]
fn an_image_linked_for_the_other_slot_is_refused() {
    let artifact = image_for(SlotId::A);
    let offer = offer_for(&artifact, SlotId::B);
    let err = download_all(&artifact, &offer, 1024).unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::Slot(SlotError::WrongLoadAddress {
                slot: SlotId::B,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(err.event_kind(), EventKind::VerifyFailed);
}

#[test]
fn an_image_signed_by_another_key_is_refused() {
    let artifact = ImageBuilder::new(app_for(SlotId::B, 2000), VERSION)
        .security_counter(COUNTER)
        .rom_fixed(SlotId::B.partition().start)
        .sign(&SigningKey::from_bytes(&[8; 32]))
        .unwrap();
    let offer = offer_for(&artifact, SlotId::B);
    assert_eq!(
        download_all(&artifact, &offer, 1024).unwrap_err(),
        DownloadError::Image(ImageError::UntrustedKey)
    );
}

#[test]
fn an_offer_must_describe_the_image_it_points_at() {
    let artifact = image_for(SlotId::B);
    let mut offer = offer_for(&artifact, SlotId::B);
    offer.security_counter = COUNTER + 1;
    assert_eq!(
        download_all(&artifact, &offer, 1024).unwrap_err(),
        DownloadError::SecurityCounterMismatch {
            offered: COUNTER + 1,
            image: COUNTER,
        }
    );
    let mut offer = offer_for(&artifact, SlotId::B);
    offer.version = ImageVersion::new(1, 5, 0, 3);
    assert_eq!(
        download_all(&artifact, &offer, 1024).unwrap_err(),
        DownloadError::VersionMismatch {
            offered: ImageVersion::new(1, 5, 0, 3),
            image: VERSION,
        }
    );
}

#[test]
fn finishing_early_is_incomplete() {
    let artifact = image_for(SlotId::B);
    let offer = offer_for(&artifact, SlotId::B);
    let mut dl = Download::new(&offer).unwrap();
    dl.accept(&artifact[..1000]).unwrap();
    assert!(!dl.is_complete());
    let err = dl.finish(&[trusted(&signing_key())]).unwrap_err();
    assert_eq!(
        err,
        DownloadError::Incomplete {
            written: 1000,
            size: artifact.len() as u32,
        }
    );
    assert_eq!(err.event_kind(), EventKind::DownloadFailed);
}

#[test]
fn the_transport_double_answers_check_ins_and_reports() {
    // Keeps the trait's other two methods exercised through a `&mut` (the blanket impl).
    let mut server = MemoryServer::new(Vec::new());
    let mut t: &mut MemoryServer = &mut server;
    let ack = Transport::report(
        &mut t,
        &Report {
            events: Default::default(),
        },
    )
    .unwrap();
    let check_in = CheckIn {
        model: Model::try_from("streetlight-f429").unwrap(),
        firmware_version: VERSION,
        running_slot: SlotId::A,
        boot_state: BootState::Confirmed,
        bootloader_version: ImageVersion::new(1, 0, 0, 0),
        rdp_level: RdpLevel::Level1,
        wrp_mask: 0b11,
        security_counter: Some(0),
        stage1: None,
        delta_format: None,
    };
    assert_eq!(Transport::check_in(&mut t, &check_in).unwrap().offer, None);
    assert_eq!(
        ack,
        ReportAck {
            stored: 0,
            duplicates: 0
        }
    );
    let mut buf = [0u8; 8];
    assert_eq!(t.fetch_range(&Digest::of(&[]), 0, &mut buf), Ok(0));
}
