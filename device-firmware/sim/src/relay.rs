//! Sessions held by another process: a relay that owns the TCP connections to a broker and
//! moves their bytes, unchanged, to and from the fleet over its stdin and stdout.
//!
//! Why: a device's MQTT session is a socket, and a process may hold only so many
//! (`RLIMIT_NOFILE`: 20,000 in the container the benchmarks ran in, a hard limit root cannot
//! raise there). A fleet of 100,000 sessions in one process cannot exist there, but it can as
//! one fleet process (the devices, their sessions' MQTT logic, every counter) and a few relay
//! processes, each holding the sockets of up to a few ten thousand sessions. The broker still
//! sees one TCP connection per device, with its own CONNECT and credentials; the relay parses
//! no MQTT.
//!
//! The two processes speak frames over the relay's stdin (fleet → relay) and stdout (relay →
//! fleet): `id: u32 LE, kind: u8, len: u32 LE, payload`. `OPEN` (payload: `host:port`) asks the
//! relay to connect, `DATA` carries bytes of connection `id` either way, `CLOSE` ends it either
//! way (a relay that cannot connect answers `CLOSE`). Connection ids are never reused.
//!
//! [`serve_stdio`] is the relay's side (the program [`RelayCommand`] names runs it, e.g.
//! `fota mqtt-relay`); [`Relay`] is the fleet's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// How to start a relay: a program (with its arguments) whose `main` runs [`serve_stdio`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCommand {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

const OPEN: u8 = 1;
const DATA: u8 = 2;
const CLOSE: u8 = 3;
const HEADER: usize = 9;
/// A frame's payload is at most this long (reads are smaller).
const MAX_FRAME: usize = 64 * 1024;
/// Bytes buffered each way between a session and its relayed connection.
const PIPE: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

fn frame(id: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The next frame from `input`; `None` at its end (or on a malformed header).
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(input: &mut R) -> Option<(u32, u8, Vec<u8>)> {
    let mut header = [0u8; HEADER];
    input.read_exact(&mut header).await.ok()?;
    let id = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).await.ok()?;
    Some((id, header[4], payload))
}

/// Write every frame `frames` yields to `output`, flushing whenever none is waiting.
async fn write_frames<W: tokio::io::AsyncWrite + Unpin>(
    output: W,
    mut frames: UnboundedReceiver<Vec<u8>>,
) {
    let mut output = tokio::io::BufWriter::with_capacity(64 * 1024, output);
    while let Some(first) = frames.recv().await {
        if output.write_all(&first).await.is_err() {
            return;
        }
        while let Ok(more) = frames.try_recv() {
            if output.write_all(&more).await.is_err() {
                return;
            }
        }
        if output.flush().await.is_err() {
            return;
        }
    }
}

type Conns = Arc<Mutex<HashMap<u32, UnboundedSender<Vec<u8>>>>>;

fn lock(conns: &Conns) -> std::sync::MutexGuard<'_, HashMap<u32, UnboundedSender<Vec<u8>>>> {
    conns.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fleet's side of one relay process: opens connections through it. Must be created and
/// used inside a tokio runtime; the process is killed when this is dropped.
#[derive(Debug)]
pub struct Relay {
    frames: UnboundedSender<Vec<u8>>,
    conns: Conns,
    next: AtomicU32,
    child: tokio::process::Child,
}

impl Relay {
    /// Start the relay process `command`.
    pub fn spawn(command: &RelayCommand) -> std::io::Result<Arc<Self>> {
        let mut child = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the relay's pipes are missing"));
        };
        let (frames, outgoing) = unbounded_channel();
        tokio::spawn(write_frames(stdin, outgoing));
        let conns: Conns = Arc::default();
        let incoming = Arc::clone(&conns);
        tokio::spawn(async move {
            let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
            while let Some((id, kind, payload)) = read_frame(&mut stdout).await {
                match kind {
                    DATA => {
                        if let Some(conn) = lock(&incoming).get(&id) {
                            let _ = conn.send(payload);
                        }
                    }
                    // Dropping its sender ends the pump, whose session then reads its end.
                    CLOSE => drop(lock(&incoming).remove(&id)),
                    _ => {}
                }
            }
            // The relay is gone: so are its connections.
            eprintln!("fota-sim: an MQTT relay process ended; its sessions are closed");
            lock(&incoming).clear();
        });
        Ok(Arc::new(Self {
            frames,
            conns,
            next: AtomicU32::new(1),
            child,
        }))
    }

    /// The relay process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// A connection to `addr` through the relay: the stream a session reads and writes. It
    /// ends (reads 0 bytes) when the relay cannot connect or the connection breaks.
    pub fn open(self: &Arc<Self>, addr: &str) -> DuplexStream {
        let (near, far) = tokio::io::duplex(PIPE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (to_session, from_relay) = unbounded_channel();
        lock(&self.conns).insert(id, to_session);
        let _ = self.frames.send(frame(id, OPEN, addr.as_bytes()));
        tokio::spawn(Arc::clone(self).pump(id, far, from_relay));
        near
    }

    /// Move bytes between a session's stream and the relay until either side ends it.
    async fn pump(
        self: Arc<Self>,
        id: u32,
        far: DuplexStream,
        mut from_relay: UnboundedReceiver<Vec<u8>>,
    ) {
        let (mut reader, mut writer) = tokio::io::split(far);
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        let _ = self.frames.send(frame(id, CLOSE, &[]));
                        break;
                    }
                    Ok(n) => {
                        let _ = self.frames.send(frame(id, DATA, &buf[..n]));
                    }
                },
                bytes = from_relay.recv() => match bytes {
                    Some(bytes) => {
                        if writer.write_all(&bytes).await.is_err() {
                            let _ = self.frames.send(frame(id, CLOSE, &[]));
                            break;
                        }
                    }
                    // Closed by the relay.
                    None => break,
                },
            }
        }
        lock(&self.conns).remove(&id);
    }
}

/// The relay process: read frames from stdin, hold the connections they open, write what the
/// connections read to stdout. Returns when stdin ends (the fleet is gone).
pub fn serve_stdio() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (frames, outgoing) = unbounded_channel();
        tokio::spawn(write_frames(tokio::io::stdout(), outgoing));
        let conns: Conns = Arc::default();
        let mut stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
        while let Some((id, kind, payload)) = read_frame(&mut stdin).await {
            match kind {
                OPEN => {
                    let addr = String::from_utf8_lossy(&payload).into_owned();
                    let (tx, rx) = unbounded_channel();
                    lock(&conns).insert(id, tx);
                    tokio::spawn(connection(id, addr, rx, frames.clone(), Arc::clone(&conns)));
                }
                DATA => {
                    if let Some(conn) = lock(&conns).get(&id) {
                        let _ = conn.send(payload);
                    }
                }
                CLOSE => drop(lock(&conns).remove(&id)),
                _ => {}
            }
        }
        Ok(())
    })
}

/// One relayed connection, in the relay process.
async fn connection(
    id: u32,
    addr: String,
    mut from_fleet: UnboundedReceiver<Vec<u8>>,
    frames: UnboundedSender<Vec<u8>>,
    conns: Conns,
) {
    let closed_by_fleet =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let (mut reader, mut writer) = stream.into_split();
                let mut buf = vec![0u8; 1024];
                loop {
                    tokio::select! {
                        read = reader.read(&mut buf) => match read {
                            Ok(0) | Err(_) => break false,
                            Ok(n) => {
                                let _ = frames.send(frame(id, DATA, &buf[..n]));
                            }
                        },
                        bytes = from_fleet.recv() => match bytes {
                            Some(bytes) => {
                                if writer.write_all(&bytes).await.is_err() {
                                    break false;
                                }
                            }
                            None => break true,
                        },
                    }
                }
            }
            _ => false,
        };
    lock(&conns).remove(&id);
    if !closed_by_fleet {
        let _ = frames.send(frame(id, CLOSE, &[]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_bad_length_ends_the_stream() {
        let mut bytes = frame(7, DATA, b"hello");
        bytes.extend(frame(u32::MAX, CLOSE, &[]));
        let mut input = &bytes[..];
        assert_eq!(
            read_frame(&mut input).await,
            Some((7, DATA, b"hello".to_vec()))
        );
        assert_eq!(
            read_frame(&mut input).await,
            Some((u32::MAX, CLOSE, vec![]))
        );
        assert_eq!(read_frame(&mut input).await, None);
        let mut huge = frame(1, DATA, &[]);
        huge[5..9].copy_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert_eq!(read_frame(&mut &huge[..]).await, None);
    }
}
