//! An in-process serial line between the transport under test and an emulator session: two
//! byte queues, the device's end a non-blocking [`fota_modem::Serial`], the module's end a
//! blocking `Read` and a `Write` for [`crate::session::serve`]. Dropping the device's end closes
//! the line (the session ends); dropping the module's writer makes the device's reads fail.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Queue {
    bytes: VecDeque<u8>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The device's end.
#[derive(Debug)]
pub struct DeviceEnd {
    to_module: Arc<Shared>,
    from_module: Arc<Shared>,
}

/// The module's end, reading what the device sent.
#[derive(Debug)]
pub struct ModuleReader {
    from_device: Arc<Shared>,
}

/// The module's end, writing to the device.
#[derive(Debug)]
pub struct ModuleWriter {
    to_device: Arc<Shared>,
}

/// A new line: the device's end and the module's two halves.
pub fn pipe() -> (DeviceEnd, ModuleReader, ModuleWriter) {
    let down = Arc::new(Shared::default());
    let up = Arc::new(Shared::default());
    (
        DeviceEnd {
            to_module: up.clone(),
            from_module: down.clone(),
        },
        ModuleReader { from_device: up },
        ModuleWriter { to_device: down },
    )
}

impl Drop for DeviceEnd {
    fn drop(&mut self) {
        self.to_module.lock().closed = true;
        self.to_module.ready.notify_all();
    }
}

impl Drop for ModuleWriter {
    fn drop(&mut self) {
        self.to_device.lock().closed = true;
        self.to_device.ready.notify_all();
    }
}

/// The line is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fota_modem::Serial for DeviceEnd {
    type Error = Closed;

    fn write(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let mut q = self.to_module.lock();
        if q.closed {
            return Err(Closed);
        }
        q.bytes.extend(bytes);
        self.to_module.ready.notify_all();
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Closed> {
        let mut q = self.from_module.lock();
        let n = buf.len().min(q.bytes.len());
        for (slot, b) in buf.iter_mut().zip(q.bytes.drain(..n)) {
            *slot = b;
        }
        if n == 0 && q.closed {
            return Err(Closed);
        }
        Ok(n)
    }
}

impl io::Read for ModuleReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut q = self.from_device.lock();
        loop {
            if !q.bytes.is_empty() {
                let n = buf.len().min(q.bytes.len());
                for (slot, b) in buf.iter_mut().zip(q.bytes.drain(..n)) {
                    *slot = b;
                }
                return Ok(n);
            }
            if q.closed {
                return Ok(0);
            }
            q = self
                .from_device
                .ready
                .wait_timeout(q, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl io::Write for ModuleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut q = self.to_device.lock();
        if q.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        q.bytes.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The host's clock for the transport: milliseconds since it was made; idling sleeps a
/// fraction of a millisecond so a waiting transport does not spin a core.
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    start: Instant,
}

impl StdClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fota_modem::Clock for StdClock {
    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn idle(&mut self) {
        std::thread::sleep(Duration::from_micros(200));
    }
}
