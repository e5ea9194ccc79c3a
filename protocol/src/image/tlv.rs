//! Iterating over a TLV area without reading out of bounds.

use super::{ImageError, Region, TLV_HEADER_LEN};

/// One TLV entry: its type and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvEntry<'a> {
    /// `it_type`.
    pub tlv_type: u16,
    /// The value, `it_len` bytes.
    pub value: &'a [u8],
}

/// Iterates over the entries of a TLV area whose info header has already been checked.
///
/// `area` is the whole area, info header included. Yields an error (once, then stops) when an
/// entry runs past the end.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    area: &'a [u8],
    at: usize,
    region: Region,
    failed: bool,
}

impl<'a> TlvIter<'a> {
    pub(crate) fn new(area: &'a [u8], region: Region) -> Self {
        Self {
            area,
            at: TLV_HEADER_LEN,
            region,
            failed: false,
        }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<TlvEntry<'a>, ImageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.area.len() {
            return None;
        }
        let rest = &self.area[self.at..];
        let (tlv_type, len) = match rest {
            [t0, t1, l0, l1, ..] => (
                u16::from_le_bytes([*t0, *t1]),
                u16::from_le_bytes([*l0, *l1]),
            ),
            // Fewer than 4 bytes left: an entry header cut short.
            _ => {
                self.failed = true;
                let tlv_type = match rest {
                    [t0, t1, ..] => u16::from_le_bytes([*t0, *t1]),
                    [t0] => u16::from(*t0),
                    [] => 0,
                };
                return Some(Err(ImageError::TlvOverrun {
                    region: self.region,
                    tlv_type,
                }));
            }
        };
        let Some(value) = rest.get(TLV_HEADER_LEN..TLV_HEADER_LEN + usize::from(len)) else {
            self.failed = true;
            return Some(Err(ImageError::TlvOverrun {
                region: self.region,
                tlv_type,
            }));
        };
        self.at += TLV_HEADER_LEN + usize::from(len);
        Some(Ok(TlvEntry { tlv_type, value }))
    }
}

/// Check a TLV area's info header: magic, and that its total is what the caller expects.
/// Returns the declared total length.
pub(crate) fn info_total(area: &[u8], region: Region, magic: u16) -> Result<usize, ImageError> {
    let [m0, m1, t0, t1, ..] = *area else {
        return Err(ImageError::Truncated(region));
    };
    let found = u16::from_le_bytes([m0, m1]);
    if found != magic {
        return Err(ImageError::BadTlvMagic {
            region,
            found,
            expected: magic,
        });
    }
    let total = usize::from(u16::from_le_bytes([t0, t1]));
    if total < TLV_HEADER_LEN {
        return Err(ImageError::TlvTotalTooSmall(region));
    }
    Ok(total)
}
