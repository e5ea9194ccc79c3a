//! Incremental image verification: feed chunks as they arrive, get the same verdict as [`verify`].
//!
//! State is fixed-size (the 32-byte header, the first 8 payload bytes, both TLV areas up to
//! [`MAX_PROTECTED_TLV_LEN`] + [`MAX_TLV_LEN`] bytes, and a SHA-256 context): about 900 bytes,
//! whatever the image size. Bytes after the end of the image (erased flash, slot padding) are
//! ignored.
//!
//! [`verify`]: super::verify

use super::verify::ParsedImage;
use super::{
    tlv, Extents, ImageError, ImageHeader, Region, HEADER_LEN, MAX_PROTECTED_TLV_LEN, MAX_TLV_LEN,
    TLV_HEADER_LEN, TLV_INFO_MAGIC,
};
use sha2::{Digest as _, Sha256};

/// Verifies an image chunk by chunk while it is downloaded or read from flash.
///
/// ```
/// # use fota_protocol::image::StreamVerifier;
/// # fn demo(chunks: &[&[u8]], keys: &[fota_protocol::TrustedKey]) -> Result<(), fota_protocol::ImageError> {
/// let mut v = StreamVerifier::new(256 * 1024);
/// for chunk in chunks {
///     v.update(chunk)?; // fails early on a bad header or a too-large image
/// }
/// let verified = v.finish()?.verify(keys)?;
/// # let _ = verified; Ok(()) }
/// ```
#[derive(Clone)]
pub struct StreamVerifier {
    max_len: u32,
    pos: u64,
    header_buf: [u8; HEADER_LEN],
    header: Option<(ImageHeader, Extents)>,
    vector: [u8; 8],
    protected: [u8; MAX_PROTECTED_TLV_LEN],
    tlvs: [u8; MAX_TLV_LEN],
    /// Total length of the unprotected TLV area, once its info header has arrived.
    tlv_total: Option<u32>,
    sha: Sha256,
    error: Option<ImageError>,
}

impl core::fmt::Debug for StreamVerifier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamVerifier")
            .field("max_len", &self.max_len)
            .field("pos", &self.pos)
            .field("header", &self.header)
            .field("tlv_total", &self.tlv_total)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// Copy the part of `src` (which sits at offset `src_at` of the image) that overlaps
/// `dst` (which mirrors offsets `dst_at..dst_at + dst.len()`).
fn copy_overlap(dst: &mut [u8], dst_at: u64, src: &[u8], src_at: u64) {
    let start = dst_at.max(src_at);
    let end = (dst_at + dst.len() as u64).min(src_at + src.len() as u64);
    if start < end {
        let (d, s, n) = (
            (start - dst_at) as usize,
            (start - src_at) as usize,
            (end - start) as usize,
        );
        dst[d..d + n].copy_from_slice(&src[s..s + n]);
    }
}

impl StreamVerifier {
    /// A verifier that refuses images longer than `max_len` bytes (e.g. the slot size) as soon as
    /// the header or the TLV info says so.
    pub fn new(max_len: u32) -> Self {
        Self {
            max_len,
            pos: 0,
            header_buf: [0; HEADER_LEN],
            header: None,
            vector: [0; 8],
            protected: [0; MAX_PROTECTED_TLV_LEN],
            tlvs: [0; MAX_TLV_LEN],
            tlv_total: None,
            sha: Sha256::new(),
            error: None,
        }
    }

    /// The parsed header, once the first 32 bytes have arrived and were valid.
    pub fn header(&self) -> Option<&ImageHeader> {
        self.header.as_ref().map(|(h, _)| h)
    }

    /// Bytes of the image consumed so far (trailing bytes after the image are not counted).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Total image length, once the unprotected TLV info header has arrived.
    pub fn total_len(&self) -> Option<u64> {
        let (_, ext) = self.header?;
        Some(u64::from(ext.tlv_start) + u64::from(self.tlv_total?))
    }

    /// Where the next boundary is at which the verifier must look at what it has buffered.
    fn next_boundary(&self) -> u64 {
        match (&self.header, self.tlv_total) {
            (None, _) => HEADER_LEN as u64,
            (Some((_, ext)), None) => u64::from(ext.tlv_start) + TLV_HEADER_LEN as u64,
            (Some((_, ext)), Some(total)) => u64::from(ext.tlv_start) + u64::from(total),
        }
    }

    fn too_large(&self, len: u64) -> Result<(), ImageError> {
        if len > u64::from(self.max_len) {
            Err(ImageError::TooLarge {
                len,
                max: self.max_len,
            })
        } else {
            Ok(())
        }
    }

    /// Feed the next chunk. Errors are sticky: once an error is returned, every later call and
    /// [`finish`](Self::finish) return it too.
    pub fn update(&mut self, mut chunk: &[u8]) -> Result<(), ImageError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        while !chunk.is_empty() {
            let boundary = self.next_boundary();
            if self.pos >= boundary {
                // Past the end of the image: trailing bytes are not part of it.
                return Ok(());
            }
            let take = chunk.len().min((boundary - self.pos) as usize);
            let (piece, rest) = chunk.split_at(take);
            self.absorb(piece);
            self.pos += take as u64;
            chunk = rest;
            if self.pos == boundary {
                if let Err(e) = self.cross_boundary() {
                    self.error = Some(e);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn absorb(&mut self, piece: &[u8]) {
        let at = self.pos;
        let hash_end = self
            .header
            .map_or(HEADER_LEN as u64, |(_, ext)| u64::from(ext.tlv_start));
        if at < hash_end {
            let n = ((hash_end - at) as usize).min(piece.len());
            self.sha.update(&piece[..n]);
        }
        copy_overlap(&mut self.header_buf, 0, piece, at);
        if let Some((header, ext)) = self.header {
            let vector_len = (header.img_size as usize).min(self.vector.len());
            copy_overlap(
                &mut self.vector[..vector_len],
                u64::from(ext.payload_start),
                piece,
                at,
            );
            let prot_len = usize::from(header.protect_tlv_size);
            copy_overlap(
                &mut self.protected[..prot_len],
                u64::from(ext.protected_start),
                piece,
                at,
            );
            copy_overlap(&mut self.tlvs, u64::from(ext.tlv_start), piece, at);
        }
    }

    fn cross_boundary(&mut self) -> Result<(), ImageError> {
        match self.header {
            None => {
                let header = ImageHeader::parse(&self.header_buf)?;
                let ext = Extents::of(&header)?;
                let prot_len = usize::from(header.protect_tlv_size);
                if prot_len > MAX_PROTECTED_TLV_LEN {
                    return Err(ImageError::TlvAreaTooLarge {
                        region: Region::ProtectedTlvs,
                        len: prot_len,
                        max: MAX_PROTECTED_TLV_LEN,
                    });
                }
                self.too_large(u64::from(ext.tlv_start) + TLV_HEADER_LEN as u64)?;
                self.header = Some((header, ext));
            }
            Some((_, ext)) if self.tlv_total.is_none() => {
                let total = tlv::info_total(&self.tlvs, Region::Tlvs, TLV_INFO_MAGIC)?;
                if total > MAX_TLV_LEN {
                    return Err(ImageError::TlvAreaTooLarge {
                        region: Region::Tlvs,
                        len: total,
                        max: MAX_TLV_LEN,
                    });
                }
                self.too_large(u64::from(ext.tlv_start) + total as u64)?;
                self.tlv_total = Some(total as u32);
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// End of input: check that the whole image arrived and return it parsed, with its digest
    /// computed, ready for [`ParsedImage::verify`].
    pub fn finish(self) -> Result<ParsedImage, ImageError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some((header, ext)) = self.header else {
            return Err(ImageError::Truncated(Region::Header));
        };
        if self.pos < u64::from(ext.protected_start) {
            return Err(ImageError::Truncated(Region::Payload));
        }
        if self.pos < u64::from(ext.tlv_start) {
            return Err(ImageError::Truncated(Region::ProtectedTlvs));
        }
        let Some(tlv_total) = self.tlv_total else {
            return Err(ImageError::Truncated(Region::Tlvs));
        };
        if self.pos < u64::from(ext.tlv_start) + u64::from(tlv_total) {
            return Err(ImageError::Truncated(Region::Tlvs));
        }
        let vector = if header.img_size >= 8 {
            let w = |i: usize| {
                u32::from_le_bytes([
                    self.vector[i],
                    self.vector[i + 1],
                    self.vector[i + 2],
                    self.vector[i + 3],
                ])
            };
            Some([w(0), w(4)])
        } else {
            None
        };
        ParsedImage::new(
            header,
            self.sha.finalize().into(),
            vector,
            &self.protected[..usize::from(header.protect_tlv_size)],
            &self.tlvs[..tlv_total as usize],
            ext.tlv_start + tlv_total,
        )
    }
}
