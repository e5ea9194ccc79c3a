//! SHA-256 whose state is a `Copy` value with a fixed-size record, so the hash of the target
//! being rebuilt survives a checkpoint (`sha2`'s hasher cannot be saved: its buffer and block
//! count are private). The compression function is `sha2`'s; only the padding is here.

use sha2::digest::generic_array::GenericArray;

/// The length of [`Sha256::to_bytes`]'s record.
pub const SHA256_RECORD_LEN: usize = 32 + 8 + 64;

const INITIAL: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A SHA-256 computation in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256 {
    state: [u32; 8],
    /// Bytes hashed so far; the first `len % 64` of `block` are the unfinished block.
    len: u64,
    block: [u8; 64],
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// An empty hash.
    pub const fn new() -> Self {
        Self {
            state: INITIAL,
            len: 0,
            block: [0; 64],
        }
    }

    /// Hash more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let at = (self.len % 64) as usize;
            let n = (64 - at).min(data.len());
            self.block[at..at + n].copy_from_slice(&data[..n]);
            self.len += n as u64;
            data = &data[n..];
            if at + n == 64 {
                sha2::compress256(
                    &mut self.state,
                    &[GenericArray::clone_from_slice(&self.block)],
                );
            }
        }
    }

    /// The digest of everything hashed (the state itself is left as it was).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = *self;
        let bits = self.len.wrapping_mul(8);
        h.update(&[0x80]);
        while h.len % 64 != 56 {
            h.update(&[0]);
        }
        h.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (o, word) in out.chunks_exact_mut(4).zip(h.state) {
            o.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The state as a fixed-size record: the eight words, the length, the unfinished block
    /// (little-endian).
    pub fn to_bytes(&self) -> [u8; SHA256_RECORD_LEN] {
        let mut out = [0u8; SHA256_RECORD_LEN];
        for (o, word) in out[..32].chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&word.to_le_bytes());
        }
        out[32..40].copy_from_slice(&self.len.to_le_bytes());
        out[40..].copy_from_slice(&self.block);
        out
    }

    /// The state back from [`Sha256::to_bytes`] (any record is a possible state).
    pub fn from_bytes(record: &[u8; SHA256_RECORD_LEN]) -> Self {
        let mut state = [0u32; 8];
        for (word, b) in state.iter_mut().zip(record[..32].chunks_exact(4)) {
            *word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&record[32..40]);
        let mut block = [0u8; 64];
        block.copy_from_slice(&record[40..]);
        Self {
            state,
            len: u64::from_le_bytes(len),
            block,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use sha2::Digest;
    use std::vec::Vec;

    #[test]
    fn agrees_with_sha2_at_every_length_and_split_and_through_a_record() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let want: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
            for split in [0, len / 3, len] {
                let mut h = Sha256::new();
                h.update(&data[..split]);
                let mut h = Sha256::from_bytes(&h.to_bytes());
                h.update(&data[split..len]);
                assert_eq!(h.digest(), want, "len {len}, split {split}");
                assert_eq!(h.len(), len as u64);
            }
        }
    }
}
