//! Downloading an offered image into the inactive slot: resumable after a dropped link, verified
//! while it streams, and checked against the offer and the slot before it may be marked pending.
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

use fota_protocol::image::{check_verified_for_slot, SlotError};
use fota_protocol::image::{Digest, ImageError, ImageVersion, StreamVerifier, TrustedKey};
use fota_protocol::messages::{EventKind, Offer};
use fota_protocol::{SlotId, VerifiedImage};
use sha2::{Digest as _, Sha256};

/// Why a download was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The offer is larger than the slot it is for: refused before a byte is fetched.
    #[error("offer of {size} bytes does not fit slot {slot} ({slot_size} bytes)")]
    OfferTooLarge {
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
            | DownloadError::Slot(_)
            | DownloadError::SecurityCounterMismatch { .. }
            | DownloadError::VersionMismatch { .. } => EventKind::VerifyFailed,
        }
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
    /// Start downloading `offer` into `offer.slot`. Refuses an offer larger than the slot.
    pub fn new(offer: &Offer) -> Result<Self, DownloadError> {
        let slot_size = offer.slot.partition().size;
        if offer.size > slot_size {
            return Err(DownloadError::OfferTooLarge {
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
    /// `keys`, that it can execute in place from the offered slot, and that its security counter
    /// and version are the ones offered (events about the offer name them, and the device
    /// refused downgrades on the offer's word). Only then may the slot be marked pending.
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
        check_verified_for_slot(&image, self.offer.slot)?;
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
