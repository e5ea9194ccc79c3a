//! A streaming heatshrink decoder (window 2^10, lookahead 2^5), `no_std`, without an allocator,
//! whose whole state is a `Copy` value that serialises to a fixed-size record.
//!
//! Why not a crate: `heatshrink-lib` (the maintained `no_std` port, whose encoder the generator
//! uses) keeps its state in private fields, with an input buffer that holds bytes it has taken
//! but not decoded yet; nothing of it can be saved or restored, so a download interrupted by a
//! power cut could not resume inside the compressed stream. `embedded-heatshrink` needs an
//! allocator for its index, `heatshrink` decodes whole slices. This decoder takes no input
//! buffer at all: it consumes every bit of the piece it is given before it returns, keeping only
//! the field it is in the middle of, so after [`Decoder::decode`] its state is its window and
//! 8 bytes.
//!
//! The format (the reference C library's, and `heatshrink-lib`'s): bits, most significant
//! first. A `1` tag bit is followed by an 8-bit literal; a `0` tag bit by a back-reference, an
//! index of [`WINDOW_BITS`] bits (distance - 1) and a count of [`LOOKAHEAD_BITS`] bits
//! (length - 1). A back-reference before the start of the output reads zeros (the reference
//! decoder's window starts zeroed; so does this one's). The last byte is padded with zero bits,
//! too few to make a literal or a back-reference.

/// The window, log2 bytes.
pub const WINDOW_BITS: u32 = 10;
/// The lookahead, log2 bytes.
pub const LOOKAHEAD_BITS: u32 = 5;
const WINDOW: usize = 1 << WINDOW_BITS;
/// The length of [`Decoder::to_bytes`]'s record.
pub const DECODER_RECORD_LEN: usize = WINDOW + 8;
/// Decoded bytes are handed on in pieces of at most this many.
const OUT_CHUNK: usize = 64;

/// Which field the next bit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Tag,
    Literal,
    Index,
    Count,
}

/// The decoder's state. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    /// The last [`WINDOW`] decoded bytes, a ring.
    window: [u8; WINDOW],
    /// Where the next decoded byte goes in `window`.
    head: u16,
    field: Field,
    /// The bits of the current field read so far, and how many.
    bits: u16,
    nbits: u8,
    /// A back-reference's distance, once its index is read.
    distance: u16,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Decoded bytes waiting to be handed on.
struct Out<'a, E, F: FnMut(&[u8]) -> Result<(), E>> {
    buf: [u8; OUT_CHUNK],
    len: usize,
    emit: &'a mut F,
}

impl<E, F: FnMut(&[u8]) -> Result<(), E>> Out<'_, E, F> {
    fn push(&mut self, byte: u8) -> Result<(), E> {
        self.buf[self.len] = byte;
        self.len += 1;
        if self.len == OUT_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), E> {
        if self.len > 0 {
            let n = core::mem::take(&mut self.len);
            (self.emit)(&self.buf[..n])?;
        }
        Ok(())
    }
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub const fn new() -> Self {
        Self {
            window: [0; WINDOW],
            head: 0,
            field: Field::Tag,
            bits: 0,
            nbits: 0,
            distance: 0,
        }
    }

    /// Decode the next piece of the stream, all of it, handing the decoded bytes to `emit` in
    /// order, in pieces of at most 64 bytes. On `Err` the state is undefined: resume from a
    /// checkpoint.
    pub fn decode<E>(
        &mut self,
        input: &[u8],
        emit: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut out = Out {
            buf: [0; OUT_CHUNK],
            len: 0,
            emit,
        };
        for &byte in input {
            for shift in (0..8).rev() {
                self.bit((byte >> shift) & 1, &mut out)?;
            }
        }
        out.flush()
    }

    fn bit<E, F: FnMut(&[u8]) -> Result<(), E>>(
        &mut self,
        bit: u8,
        out: &mut Out<'_, E, F>,
    ) -> Result<(), E> {
        if self.field == Field::Tag {
            self.field = if bit == 1 {
                Field::Literal
            } else {
                Field::Index
            };
            return Ok(());
        }
        self.bits = (self.bits << 1) | u16::from(bit);
        self.nbits += 1;
        match self.field {
            Field::Literal if self.nbits == 8 => {
                let byte = self.bits as u8;
                self.next_field(Field::Tag);
                self.put(byte, out)?;
            }
            Field::Index if u32::from(self.nbits) == WINDOW_BITS => {
                self.distance = self.bits + 1;
                self.next_field(Field::Count);
            }
            Field::Count if u32::from(self.nbits) == LOOKAHEAD_BITS => {
                let (count, distance) = (self.bits + 1, usize::from(self.distance));
                self.next_field(Field::Tag);
                self.distance = 0;
                for _ in 0..count {
                    let from = (usize::from(self.head) + WINDOW - distance) % WINDOW;
                    self.put(self.window[from], out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn next_field(&mut self, field: Field) {
        self.field = field;
        self.bits = 0;
        self.nbits = 0;
    }

    fn put<E, F: FnMut(&[u8]) -> Result<(), E>>(
        &mut self,
        byte: u8,
        out: &mut Out<'_, E, F>,
    ) -> Result<(), E> {
        self.window[usize::from(self.head)] = byte;
        self.head = (self.head + 1) % WINDOW as u16;
        out.push(byte)
    }

    /// The state as a fixed-size record: the window, then head, field, bits, bit count and
    /// distance (little-endian).
    pub fn to_bytes(&self) -> [u8; DECODER_RECORD_LEN] {
        let mut out = [0u8; DECODER_RECORD_LEN];
        out[..WINDOW].copy_from_slice(&self.window);
        out[WINDOW..WINDOW + 2].copy_from_slice(&self.head.to_le_bytes());
        out[WINDOW + 2] = match self.field {
            Field::Tag => 0,
            Field::Literal => 1,
            Field::Index => 2,
            Field::Count => 3,
        };
        out[WINDOW + 3..WINDOW + 5].copy_from_slice(&self.bits.to_le_bytes());
        out[WINDOW + 5] = self.nbits;
        out[WINDOW + 6..WINDOW + 8].copy_from_slice(&self.distance.to_le_bytes());
        out
    }

    /// The state back from [`Decoder::to_bytes`]; `None` if the record cannot be one (a field
    /// longer than its width, a head outside the window, ...).
    pub fn from_bytes(record: &[u8; DECODER_RECORD_LEN]) -> Option<Self> {
        let u16_at = |at: usize| u16::from_le_bytes([record[at], record[at + 1]]);
        let (field, width) = match record[WINDOW + 2] {
            0 => (Field::Tag, 1),
            1 => (Field::Literal, 8),
            2 => (Field::Index, WINDOW_BITS),
            3 => (Field::Count, LOOKAHEAD_BITS),
            _ => return None,
        };
        let mut window = [0u8; WINDOW];
        window.copy_from_slice(&record[..WINDOW]);
        let decoder = Self {
            window,
            head: u16_at(WINDOW),
            field,
            bits: u16_at(WINDOW + 3),
            nbits: record[WINDOW + 5],
            distance: u16_at(WINDOW + 6),
        };
        let fits = u32::from(decoder.nbits) < width
            && u32::from(decoder.bits) < (1 << decoder.nbits)
            && usize::from(decoder.head) < WINDOW
            && usize::from(decoder.distance) <= WINDOW
            && (field != Field::Tag || decoder.nbits == 0)
            && (field == Field::Count) == (decoder.distance != 0);
        fits.then_some(decoder)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use heatshrink::encoder::HeatshrinkEncoder;
    use heatshrink::{Finish, Poll};
    use std::vec::Vec;

    /// `heatshrink-lib`'s encoder with this format's parameters (what the generator uses).
    fn compress(src: &[u8]) -> Vec<u8> {
        let mut enc = HeatshrinkEncoder::<10, 5, 2048>::new();
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        let mut at = 0;
        loop {
            if at < src.len() {
                if let Ok(n) = enc.sink(&src[at..]) {
                    at += n;
                }
            } else if enc.finish() == Finish::Done {
                return out;
            }
            loop {
                match enc.poll(&mut buf).unwrap() {
                    Poll::More(n) => out.extend_from_slice(&buf[..n]),
                    Poll::Empty(n) => {
                        out.extend_from_slice(&buf[..n]);
                        break;
                    }
                }
            }
        }
    }

    fn decompress(packed: &[u8], piece: usize) -> Vec<u8> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for part in packed.chunks(piece) {
            dec.decode(part, &mut |b: &[u8]| -> Result<(), ()> {
                assert!(b.len() <= OUT_CHUNK);
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        }
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x = 7u32;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                // Runs, repeats at every distance the window allows, and noise.
                match (i / 700) % 3 {
                    0 => 0,
                    1 => (i % 37) as u8,
                    _ => (x >> 24) as u8,
                }
            })
            .collect()
    }

    #[test]
    fn decodes_what_heatshrink_lib_encodes_whatever_the_pieces() {
        for len in [0, 1, 2, 31, 32, 33, 1023, 1024, 1025, 5000, 40_000] {
            let data = sample(len);
            let packed = compress(&data);
            for piece in [1, 3, 64, packed.len().max(1)] {
                assert_eq!(
                    decompress(&packed, piece),
                    data,
                    "len {len}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_back_reference_before_the_start_reads_zeros() {
        // Tag 0, index 4 (distance 5), count 2 (length 3), then a literal 'A' and padding.
        // 0 0000000100 00010 1 01000001 0000000
        let bits = "0000000010000010101000001";
        let mut bytes = Vec::new();
        for chunk in bits.as_bytes().chunks(8) {
            let mut b = 0u8;
            for (i, c) in chunk.iter().enumerate() {
                b |= (c - b'0') << (7 - i);
            }
            bytes.push(b);
        }
        assert_eq!(decompress(&bytes, 1), [0, 0, 0, b'A']);
    }

    #[test]
    fn the_record_round_trips_mid_field_and_bad_records_are_refused() {
        let data = sample(3000);
        let packed = compress(&data);
        for cut in [1, 2, 3, 100, packed.len() - 1] {
            let mut dec = Decoder::new();
            let mut out = Vec::new();
            let mut emit = |b: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(b);
                Ok(())
            };
            dec.decode(&packed[..cut], &mut emit).unwrap();
            let mut resumed = Decoder::from_bytes(&dec.to_bytes()).unwrap();
            assert_eq!(resumed, dec);
            resumed.decode(&packed[cut..], &mut emit).unwrap();
            assert_eq!(out, data, "cut at {cut}");
        }
        let good = Decoder::new().to_bytes();
        let bad = |at: usize, v: u8| {
            let mut r = good;
            r[at] = v;
            Decoder::from_bytes(&r)
        };
        assert!(bad(WINDOW + 1, 4).is_none(), "head outside the window");
        assert!(bad(WINDOW + 2, 4).is_none(), "unknown field");
        assert!(bad(WINDOW + 5, 1).is_none(), "bits inside a tag");
        assert!(bad(WINDOW + 3, 1).is_none(), "bits beyond the count");
    }
}
