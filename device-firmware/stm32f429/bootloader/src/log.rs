//! The boot log over semihosting (`semihosting` feature), one line at a time, without
//! `core::fmt`: its machinery (padding, integer formatting, `write_fmt`) costs about 2 KB, and the
//! QEMU build, which logs, must fit the same 32 KB as the device build. Lines are assembled from
//! [`Part`]s (strings, decimal and hex numbers) in a stack buffer and written with one call.
//! Without the feature only the types remain (the `log!` macro evaluates and drops its parts).
#![cfg_attr(not(feature = "semihosting"), allow(dead_code))]

#[cfg(feature = "semihosting")]
use cortex_m_semihosting::hio;
use fota_protocol::SlotId;

/// Longest line; anything beyond is cut.
const LINE: usize = 160;

/// A line being assembled.
pub struct Line {
    buf: [u8; LINE],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(LINE - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

/// Something a log line can show.
pub trait Part {
    /// Append it to `line`.
    fn put(&self, line: &mut Line);
}

impl Part for &str {
    fn put(&self, line: &mut Line) {
        line.push(self.as_bytes());
    }
}

impl Part for u32 {
    fn put(&self, line: &mut Line) {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut v = *self;
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        line.push(&digits[at..]);
    }
}

impl Part for u8 {
    fn put(&self, line: &mut Line) {
        u32::from(*self).put(line);
    }
}

/// A number shown as `0x` and `digits` hex digits.
pub struct Hex(pub u32, pub u8);

impl Part for Hex {
    fn put(&self, line: &mut Line) {
        let mut out = [0u8; 10];
        out[0] = b'0';
        out[1] = b'x';
        let digits = usize::from(self.1.min(8));
        for i in 0..digits {
            let nibble = (self.0 >> (4 * (digits - 1 - i))) & 0xF;
            out[2 + i] = b"0123456789abcdef"[nibble as usize];
        }
        line.push(&out[..2 + digits]);
    }
}

impl Part for SlotId {
    fn put(&self, line: &mut Line) {
        line.push(match self {
            SlotId::A => b"A",
            SlotId::B => b"B",
        });
    }
}

/// Write `parts` and a newline to the host's stdout. Errors are ignored: the log is advisory.
#[cfg(feature = "semihosting")]
pub fn line(parts: &[&dyn Part]) {
    let mut line = Line {
        buf: [0; LINE],
        len: 0,
    };
    for part in parts {
        part.put(&mut line);
    }
    line.buf[line.len] = b'\n';
    if let Ok(mut out) = hio::hstdout() {
        let _ = out.write_all(&line.buf[..line.len + 1]);
    }
}
