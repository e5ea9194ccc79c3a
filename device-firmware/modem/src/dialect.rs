//! What differs between module families: how to bring the data link up, make one HTTP request
//! and read its answer out of the module's buffer.
//!
//! [`Sim7600`] is SIMCom's SIM7500/SIM7600 HTTP(S) AT dialect, the one this firmware ships and
//! the host modem emulator speaks:
//!
//! ```text
//! AT                                   probe (repeated until OK)
//! ATE0                                 no echo
//! AT+IFC=2,2                           RTS/CTS hardware flow control both ways
//! AT+CGDCONT=1,"IP","<apn>"            PDP context 1
//! AT+CGACT=1,1                         activate it
//! AT+HTTPTERM / AT+HTTPINIT            (re)start the HTTP service
//! AT+HTTPPARA="URL","<url>"
//! AT+HTTPPARA="USERDATA","Authorization: Bearer <token>\r\nRange: bytes=<a>-<b>"
//! AT+HTTPPARA="CONTENT","application/json"        (POST)
//! AT+HTTPDATA=<len>,<seconds>  -> DOWNLOAD, <body>, OK (POST)
//! AT+HTTPACTION=<0 GET|1 POST> -> OK, later +HTTPACTION: <method>,<status>,<length>
//! AT+HTTPREAD=<offset>,<len>   -> OK, +HTTPREAD: <n>, <n raw bytes>, +HTTPREAD: 0
//! ```
//!
//! The module keeps the whole response body in its buffer until the next `AT+HTTPACTION`, so
//! a download asks for ranges no larger than that buffer ([`HttpDialect::MAX_RESPONSE`]) and
//! reads each out in pieces no larger than one read ([`HttpDialect::MAX_READ`]). Status codes
//! from 700 up are the module's own network errors (705 timeout, 706 socket, 709 network, 714
//! DNS, ...), not the server's.
//!
//! A Quectel EC2x/BG96 implementation would send `AT+QIACT` for the context, `AT+QHTTPCFG`
//! (`"requestheader",1` to pass the `Range` and `Authorization` lines), `AT+QHTTPURL` (URL as
//! data after `CONNECT`), `AT+QHTTPGET` / `AT+QHTTPPOST`, and `AT+QHTTPREAD` (body between
//! `CONNECT` and `OK`), behind the same three methods.

use crate::at::{AtPort, ModemError};
use crate::{Clock, Serial};

/// An HTTP method the transport uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (artifacts).
    Get,
    /// POST with a JSON body (check-in, reports).
    Post,
}

/// One request, as the dialect needs it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// GET or POST.
    pub method: Method,
    /// The full URL.
    pub url: &'a str,
    /// `Authorization: Bearer ...` value (the device token), if any.
    pub bearer: Option<&'a str>,
    /// A byte range `(first, last)`, inclusive, for GET.
    pub range: Option<(u32, u32)>,
    /// The JSON body of a POST.
    pub body: &'a [u8],
}

/// Timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a plain command's final result.
    pub command_ms: u32,
    /// From `AT+HTTPACTION`'s OK to its `+HTTPACTION` URC (the network round trip).
    pub action_ms: u32,
    /// For the data of one `AT+HTTPREAD` to arrive (depends on the line rate and the read size).
    pub read_ms: u32,
}

/// A module family's HTTP AT dialect.
pub trait HttpDialect {
    /// The most bytes of one response the module buffers (so the largest range asked for).
    const MAX_RESPONSE: u32;
    /// The most bytes one read of the buffered response returns.
    const MAX_READ: usize;

    /// Bring the data link up: probe the module, turn echo off, activate the PDP context for
    /// `apn`, (re)start the HTTP service.
    fn bring_up<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        apn: &str,
        t: &Timeouts,
    ) -> Result<(), ModemError>;

    /// Send `request`; the server's status and the response length.
    fn request<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        request: &Request<'_>,
        t: &Timeouts,
    ) -> Result<(u16, u32), ModemError>;

    /// Read up to `buf.len()` (at most [`MAX_READ`](Self::MAX_READ)) bytes of the buffered
    /// response from `offset`; how many came.
    fn read<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        offset: u32,
        buf: &mut [u8],
        t: &Timeouts,
    ) -> Result<usize, ModemError>;
}

/// SIMCom SIM7500/SIM7600 (and SIM7000/SIM7070 with the same HTTP commands).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sim7600;

impl HttpDialect for Sim7600 {
    /// The SIM7600's HTTP buffer holds far more; 16 KB keeps a lost segment cheap at 4G rates.
    const MAX_RESPONSE: u32 = 16 * 1024;
    const MAX_READ: usize = 1024;

    fn bring_up<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        apn: &str,
        t: &Timeouts,
    ) -> Result<(), ModemError> {
        at.discard_input();
        // A module that was mid-answer, or just powered up, may need a few probes.
        let mut probe = Err(ModemError::Timeout("AT"));
        for _ in 0..3 {
            probe = at.command(t.command_ms.min(1000), "AT", format_args!("AT"));
            if probe.is_ok() {
                break;
            }
        }
        probe?;
        at.command(t.command_ms, "ATE0", format_args!("ATE0"))?;
        // RTS/CTS both ways: the MCU polls its USART and may be busy erasing flash.
        at.command(t.command_ms, "AT+IFC", format_args!("AT+IFC=2,2"))?;
        at.command(
            t.command_ms,
            "AT+CGDCONT",
            format_args!("AT+CGDCONT=1,\"IP\",\"{apn}\""),
        )?;
        at.command(t.action_ms, "AT+CGACT", format_args!("AT+CGACT=1,1"))?;
        at.urcs.pdp_lost = false;
        // Not started yet is an ERROR here: fine.
        let _ = at.command(t.command_ms, "AT+HTTPTERM", format_args!("AT+HTTPTERM"));
        at.command(t.command_ms, "AT+HTTPINIT", format_args!("AT+HTTPINIT"))
    }

    fn request<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        request: &Request<'_>,
        t: &Timeouts,
    ) -> Result<(u16, u32), ModemError> {
        at.command(
            t.command_ms,
            "AT+HTTPPARA URL",
            format_args!("AT+HTTPPARA=\"URL\",\"{}\"", request.url),
        )?;
        // One USERDATA line carries every extra header, separated by a literal \r\n.
        match (request.bearer, request.range) {
            (Some(token), Some((a, b))) => at.command(
                t.command_ms,
                "AT+HTTPPARA USERDATA",
                format_args!(
                    "AT+HTTPPARA=\"USERDATA\",\"Authorization: Bearer {token}\\r\\nRange: bytes={a}-{b}\""
                ),
            )?,
            (Some(token), None) => at.command(
                t.command_ms,
                "AT+HTTPPARA USERDATA",
                format_args!("AT+HTTPPARA=\"USERDATA\",\"Authorization: Bearer {token}\""),
            )?,
            (None, Some((a, b))) => at.command(
                t.command_ms,
                "AT+HTTPPARA USERDATA",
                format_args!("AT+HTTPPARA=\"USERDATA\",\"Range: bytes={a}-{b}\""),
            )?,
            (None, None) => at.command(
                t.command_ms,
                "AT+HTTPPARA USERDATA",
                format_args!("AT+HTTPPARA=\"USERDATA\",\"\""),
            )?,
        }
        let method = match request.method {
            Method::Get => 0,
            Method::Post => {
                at.command(
                    t.command_ms,
                    "AT+HTTPPARA CONTENT",
                    format_args!("AT+HTTPPARA=\"CONTENT\",\"application/json\""),
                )?;
                at.send(format_args!("AT+HTTPDATA={},10", request.body.len()))?;
                at.expect_prompt(t.command_ms, "AT+HTTPDATA")?;
                at.write_raw(request.body)?;
                at.expect_ok(t.command_ms.max(t.read_ms), "AT+HTTPDATA body")?;
                1
            }
        };
        at.urcs.http_action = None;
        at.command(
            t.command_ms,
            "AT+HTTPACTION",
            format_args!("AT+HTTPACTION={method}"),
        )?;
        let (_, status, len) = at.expect_http_action(t.action_ms)?;
        if status >= 700 {
            return Err(ModemError::Network(status));
        }
        Ok((status, len))
    }

    fn read<S: Serial, C: Clock>(
        at: &mut AtPort<S, C>,
        offset: u32,
        buf: &mut [u8],
        t: &Timeouts,
    ) -> Result<usize, ModemError> {
        let want = buf.len().min(Self::MAX_READ);
        if want == 0 {
            return Ok(0);
        }
        at.send(format_args!("AT+HTTPREAD={offset},{want}"))?;
        let deadline = at.now() + u64::from(t.command_ms.max(t.read_ms));
        let (mut ok, mut ended, mut data) = (false, false, None);
        loop {
            if ok && ended {
                return Ok(data.unwrap_or(0));
            }
            let line = at.next_line(deadline, "AT+HTTPREAD")?;
            if line == "OK" {
                ok = true;
            } else if line == "ERROR" {
                return Err(ModemError::Error("AT+HTTPREAD"));
            } else if let Some(n) = line.strip_prefix("+CME ERROR:") {
                return Err(ModemError::Cme(n.trim().parse().unwrap_or(0)));
            } else if let Some(rest) = line.strip_prefix("+HTTPREAD:") {
                // "+HTTPREAD: <n>" (or "+HTTPREAD: DATA,<n>" on some firmware); 0 ends it.
                let n: usize = rest
                    .trim()
                    .trim_start_matches("DATA,")
                    .trim()
                    .parse()
                    .map_err(|_| ModemError::Protocol("+HTTPREAD length"))?;
                if n == 0 {
                    ended = true;
                } else if n > want || data.is_some() {
                    return Err(ModemError::Protocol("+HTTPREAD longer than asked"));
                } else {
                    at.read_exact(&mut buf[..n], deadline, "AT+HTTPREAD data")?;
                    data = Some(n);
                }
            } else {
                return Err(ModemError::Protocol("unexpected line in AT+HTTPREAD"));
            }
        }
    }
}
