//! Downloading an offered image into the inactive slot: resumable after a dropped link, verified
//! while it streams, and checked against the offer and the slot before it may be marked pending.
//! An offer's component says which slots: an application's is an application slot (A or B), a
//! bootloader's a stage-1 slot, and the image must be that component (its protected COMPONENT
//! TLV: none for an application, a stage-1 mark naming exactly the offered stage-1 slot for a
//! bootloader).
//!
//! A [`Download`] holds no image bytes, only what it needs to decide about them (about 1.2 KB):
//! the offer, how many bytes are in the slot, a [`StreamVerifier`] and a SHA-256 of the whole
//! artifact. The caller moves the bytes:
//!
//! ```text
//! let mut dl = Download::new(&offer)?;
//! loop {
//!     let want = dl.remaining().min(buf.len());
//!     let n = transport.fetch_range(&offer.sha256, dl.resume_offset(), &mut buf[..want])?;
//!     if n == 0 { break; }
//!     program(slot_start + dl.resume_offset(), &buf[..n])?;   // into the slot first,
//!     dl.accept(&buf[..n])?;                                   // then count it
//! }
//! let image = dl.finish(&keys)?;   // only now append Pending{slot} to the boot journal
//! ```
//!
//! Programming before accepting keeps [`resume_offset`](Download::resume_offset) equal to the
//! bytes durably in the slot, so after a dropped link the download asks for exactly the bytes
//! it lacks. (It lives in RAM: after a reset the download starts over.)
//!
//! Two different hashes are checked, because they answer different questions:
//! - the offer's `sha256` is the artifact's content address, the SHA-256 of the whole file as
//!   served. A mismatch means the bytes that arrived are not the artifact offered (a bad resume,
//!   a proxy, a server bug): retry the download.
//! - the image's SHA256 TLV covers header, payload and protected TLVs only, and with the Ed25519
//!   signature says the image is genuine. A mismatch there means the artifact itself is bad.

use fota_protocol::image::{check_verified_for_slot, check_verified_for_stage1, SlotError};
use fota_protocol::image::{Digest, ImageError, ImageVersion, StreamVerifier, TrustedKey};
use fota_protocol::layout::{Partition, STAGE1_IMAGE_MAX};
use fota_protocol::messages::{Component, EventKind, Offer};
use fota_protocol::{SlotId, VerifiedImage};
use sha2::{Digest as _, Sha256};

/// Why a download was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The offer is larger than the slot it is for (for a bootloader: than a stage-1's
    /// budget): refused before a byte is fetched.
    #[error("offer of {size} bytes does not fit {component} slot {slot} ({slot_size} bytes)")]
    OfferTooLarge {
        /// The offered component.
        component: Component,
        /// The offered slot.
        slot: SlotId,
        /// The offered size.
        size: u32,
        /// The slot's size.
        slot_size: u32,
    },
    /// A chunk would take the download past the offered size. Nothing was taken.
    #[error("{len} more bytes at offset {offset} would exceed the offered {size}")]
    Oversize {
        /// Bytes already accepted.
        offset: u32,
        /// Length of the refused chunk.
        len: usize,
        /// The offered size.
        size: u32,
    },
    /// [`Download::finish`] before all offered bytes arrived.
    #[error("download incomplete: {written} of {size} bytes")]
    Incomplete {
        /// Bytes accepted.
        written: u32,
        /// The offered size.
        size: u32,
    },
    /// The bytes do not hash to the offer's content address.
    #[error("downloaded bytes do not hash to the offered artifact")]
    ContentMismatch,
    /// The image is malformed, its hash is wrong, or its signature does not verify.
    #[error("image refused: {0}")]
    Image(#[from] ImageError),
    /// The image is not the component offered: an application offered as a bootloader, a
    /// stage-1 offered as an application, or a stage-1 marked for the other stage-1 slot.
    #[error("offered as {offered} for slot {slot}, the image is {}", Mark(*.image))]
    WrongComponent {
        /// What the offer said.
        offered: Component,
        /// The slot offered.
        slot: SlotId,
        /// What the image's COMPONENT TLV says.
        image: fota_protocol::image::Component,
    },
    /// The image cannot execute in place from the offered slot (linked for the other one, ...).
    #[error("image cannot run from its slot: {0}")]
    Slot(#[from] SlotError),
    /// The signed image's security counter is not the one the offer announced.
    #[error("offer says security counter {offered}, the image carries {image}")]
    SecurityCounterMismatch {
        /// What the offer said.
        offered: u32,
        /// What the signed image says.
        image: u32,
    },
    /// The signed image's version is not the one the offer announced.
    #[error("offer says version {offered}, the image is {image}")]
    VersionMismatch {
        /// What the offer said.
        offered: ImageVersion,
        /// What the signed image says.
        image: ImageVersion,
    },
}

impl DownloadError {
    /// The event to report: [`EventKind::DownloadFailed`] when the transfer went wrong (worth
    /// retrying), [`EventKind::VerifyFailed`] when the offered artifact itself is unfit.
    pub fn event_kind(&self) -> EventKind {
        match self {
            DownloadError::Oversize { .. }
            | DownloadError::Incomplete { .. }
            | DownloadError::ContentMismatch => EventKind::DownloadFailed,
            DownloadError::OfferTooLarge { .. }
            | DownloadError::Image(_)
            | DownloadError::WrongComponent { .. }
            | DownloadError::Slot(_)
            | DownloadError::SecurityCounterMismatch { .. }
            | DownloadError::VersionMismatch { .. } => EventKind::VerifyFailed,
        }
    }
}

/// An image's COMPONENT mark, as a failure reason says it.
struct Mark(fota_protocol::image::Component);

impl core::fmt::Display for Mark {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            fota_protocol::image::Component::Application => f.write_str("an application"),
            fota_protocol::image::Component::Stage1 { slot } => {
                write!(f, "a stage-1 for stage-1 slot {slot}")
            }
        }
    }
}

/// Where an offer's image goes: the application slot, or the stage-1 slot for a bootloader.
pub fn target_partition(offer: &Offer) -> Partition {
    match offer.component {
        Component::Application => offer.slot.partition(),
        Component::Bootloader => offer.slot.stage1_partition(),
    }
}

/// The largest image an offer may carry: its application slot's size, or a stage-1's budget
/// ([`STAGE1_IMAGE_MAX`], less than stage-1 slot B's 128 KB sector).
pub fn max_image_len(offer: &Offer) -> u32 {
    match offer.component {
        Component::Application => offer.slot.partition().size,
        Component::Bootloader => STAGE1_IMAGE_MAX.min(offer.slot.stage1_partition().size),
    }
}

/// One offer being downloaded into its slot.
#[derive(Clone)]
pub struct Download {
    offer: Offer,
    /// Bytes accepted, which the caller has programmed into the slot.
    written: u32,
    verifier: StreamVerifier,
    /// SHA-256 of every byte accepted: the artifact's content address once complete.
    content: Sha256,
}

impl core::fmt::Debug for Download {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Download")
            .field("offer", &self.offer)
            .field("written", &self.written)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl Download {
    /// Start downloading `offer` into `offer.slot` (of the application slots, or of the stage-1
    /// slots for a bootloader). Refuses an offer larger than the slot (than a stage-1's budget).
    pub fn new(offer: &Offer) -> Result<Self, DownloadError> {
        let slot_size = max_image_len(offer);
        if offer.size > slot_size {
            return Err(DownloadError::OfferTooLarge {
                component: offer.component,
                slot: offer.slot,
                size: offer.size,
                slot_size,
            });
        }
        Ok(Self {
            offer: offer.clone(),
            written: 0,
            // The verifier refuses, from the header alone, an image that could not fit the slot.
            verifier: StreamVerifier::new(slot_size),
            content: Sha256::new(),
        })
    }

    /// The offer being downloaded.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The slot the image is written to.
    pub fn slot(&self) -> SlotId {
        self.offer.slot
    }

    /// The offset to request next, after a dropped link too: the bytes accepted so far, which
    /// are the bytes durably in the slot when the caller programs each chunk before accepting it.
    pub fn resume_offset(&self) -> u32 {
        self.written
    }

    /// Bytes still to come before the offered size is reached.
    pub fn remaining(&self) -> u32 {
        self.offer.size - self.written
    }

    /// Whether every offered byte has been accepted.
    pub fn is_complete(&self) -> bool {
        self.written == self.offer.size
    }

    /// Take the next `chunk` (the bytes at [`resume_offset`](Self::resume_offset)), after it has
    /// been programmed into the slot.
    ///
    /// A chunk that would go past the offered size is refused whole and changes nothing
    /// ([`DownloadError::Oversize`]). Any other error is the verifier's and is final: the image
    /// is malformed or too large for the slot, and every later call fails the same way.
    pub fn accept(&mut self, chunk: &[u8]) -> Result<(), DownloadError> {
        let len = u32::try_from(chunk.len())
            .ok()
            .filter(|&len| len <= self.remaining())
            .ok_or(DownloadError::Oversize {
                offset: self.written,
                len: chunk.len(),
                size: self.offer.size,
            })?;
        self.verifier.update(chunk)?;
        self.content.update(chunk);
        self.written += len;
        Ok(())
    }

    /// All bytes are in: check that they are the offered artifact, that the image verifies under
    /// `keys`, that it is the component offered (a bootloader's COMPONENT TLV naming exactly the
    /// offered stage-1 slot, an application's none), that it can execute in place from the
    /// offered slot (for a stage-1: what stage-0 checks, `check_verified_for_stage1`), and that
    /// its security counter and version are the ones offered (events about the offer name them,
    /// and the device refused downgrades on the offer's word). Only then may the slot be marked
    /// pending.
    ///
    /// Checked in this order, so a transfer problem ([`DownloadError::ContentMismatch`]) is not
    /// reported as a bad image.
    pub fn finish(self, keys: &[TrustedKey]) -> Result<VerifiedImage, DownloadError> {
        if !self.is_complete() {
            return Err(DownloadError::Incomplete {
                written: self.written,
                size: self.offer.size,
            });
        }
        if Digest::from(self.content.finalize()) != self.offer.sha256 {
            return Err(DownloadError::ContentMismatch);
        }
        let image = self.verifier.finish()?.verify(keys)?;
        let (component, slot) = (self.offer.component, self.offer.slot);
        if !component.matches(image.component, slot) {
            return Err(DownloadError::WrongComponent {
                offered: component,
                slot,
                image: image.component,
            });
        }
        match component {
            Component::Application => check_verified_for_slot(&image, slot)?,
            Component::Bootloader => check_verified_for_stage1(&image, slot)?,
        }
        if image.security_counter != self.offer.security_counter {
            return Err(DownloadError::SecurityCounterMismatch {
                offered: self.offer.security_counter,
                image: image.security_counter,
            });
        }
        if image.header.version != self.offer.version {
            return Err(DownloadError::VersionMismatch {
                offered: self.offer.version,
                image: image.header.version,
            });
        }
        Ok(image)
    }
}
