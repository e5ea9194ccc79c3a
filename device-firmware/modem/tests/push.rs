//! The push path against a scripted SIM7600: the exact MQTT commands of a session, publishes
//! received while idle and in the middle of an `AT+HTTPREAD` answer, a payload split in two, a
//! lost connection reconnected with backoff, a broker that refuses, a full queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fota_modem::dialect::Timeouts;
use fota_modem::{Clock, ModemConfig, ModemTransport, PushConfig, Serial, Sim7600};
use fota_ota_client::transport::Transport;
use fota_protocol::image::Digest;
use fota_protocol::messages::{Command, CommandKind};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

/// One step of the module's script: a command line it expects (by prefix) and what it
/// answers, or raw bytes it takes after a prompt.
enum Step {
    Cmd(&'static str, Vec<u8>),
    Raw(usize, Vec<u8>),
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Step>,
    /// Bytes the module has sent, not read yet.
    out: VecDeque<u8>,
    line: Vec<u8>,
    /// Raw bytes still expected, and the answer after them.
    raw: Option<(usize, Vec<u8>)>,
    /// Every command line received.
    commands: Vec<String>,
    raws: Vec<Vec<u8>>,
    raw_buf: Vec<u8>,
    /// Hand over one byte per two reads, as a UART the MCU polls faster than bytes arrive.
    trickle: bool,
    reads: u64,
}

/// The scripted module: a serial port whose answers come from the script.
#[derive(Clone, Default)]
struct Module(Rc<RefCell<Inner>>);

impl Module {
    fn expect(&self, prefix: &'static str, answer: &[u8]) -> &Self {
        self.0
            .borrow_mut()
            .script
            .push_back(Step::Cmd(prefix, answer.to_vec()));
        self
    }

    fn raw(&self, n: usize, answer: &[u8]) -> &Self {
        self.0
            .borrow_mut()
            .script
            .push_back(Step::Raw(n, answer.to_vec()));
        self
    }

    /// Bytes the module sends on its own (URCs).
    fn send(&self, bytes: &[u8]) {
        self.0.borrow_mut().out.extend(bytes.iter().copied());
    }

    fn commands(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut().commands)
    }

    fn script_done(&self) -> bool {
        self.0.borrow().script.is_empty()
    }

    fn bring_up(&self) -> &Self {
        for c in [
            "AT",
            "ATE0",
            "AT+IFC=2,2",
            "AT+CGDCONT=1",
            "AT+CGACT=1,1",
            "AT+HTTPTERM",
            "AT+HTTPINIT",
        ] {
            self.expect(c, b"\r\nOK\r\n");
        }
        self
    }

    fn connect(&self, fresh: bool) -> &Self {
        if fresh {
            self.expect("AT+CMQTTSTART", b"\r\nOK\r\n\r\n+CMQTTSTART: 0\r\n")
                .expect("AT+CMQTTACCQ=0,\"lamp-1\"", b"\r\nOK\r\n");
        }
        self.expect(
            "AT+CMQTTCONNECT=0,\"tcp://broker:1883\",300,1,\"lamp-1\",\"tok\"",
            b"\r\nOK\r\n\r\n+CMQTTCONNECT: 0,0\r\n",
        )
        .expect("AT+CMQTTSUB=0,17,1", b"\r\n>")
        .raw(17, b"\r\nOK\r\n\r\n+CMQTTSUB: 0,0\r\n")
    }
}

impl Serial for Module {
    type Error = ();

    fn write(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let mut m = self.0.borrow_mut();
        for &b in bytes {
            if let Some((left, answer)) = m.raw.take() {
                m.raw_buf.push(b);
                if left > 1 {
                    m.raw = Some((left - 1, answer));
                } else {
                    let raw = std::mem::take(&mut m.raw_buf);
                    m.raws.push(raw);
                    m.out.extend(answer);
                }
                continue;
            }
            if b != b'\r' {
                m.line.push(b);
                continue;
            }
            let line = String::from_utf8(std::mem::take(&mut m.line)).unwrap();
            m.commands.push(line.clone());
            match m.script.pop_front() {
                Some(Step::Cmd(prefix, answer)) => {
                    assert!(
                        line.starts_with(prefix),
                        "sent {line:?}, expected {prefix:?}"
                    );
                    m.out.extend(answer);
                    if let Some(Step::Raw(..)) = m.script.front() {
                        let Some(Step::Raw(n, answer)) = m.script.pop_front() else {
                            unreachable!()
                        };
                        m.raw = Some((n, answer));
                    }
                }
                Some(Step::Raw(..)) => panic!("a command {line:?} where raw bytes were due"),
                None => panic!("unexpected command {line:?}"),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let mut m = self.0.borrow_mut();
        m.reads += 1;
        if m.trickle && m.reads % 2 == 0 {
            return Ok(0);
        }
        // A few bytes at a time, so URCs and answers arrive in pieces.
        let n = buf
            .len()
            .min(m.out.len())
            .min(if m.trickle { 1 } else { 7 });
        for slot in &mut buf[..n] {
            *slot = m.out.pop_front().unwrap();
        }
        Ok(n)
    }
}

/// Time: 1 ms per idle; tests move it on by hand too.
#[derive(Clone, Default)]
struct TestClock(Rc<Cell<u64>>);

impl TestClock {
    fn advance(&self, ms: u64) {
        self.0.set(self.0.get() + ms);
    }
}

impl Clock for TestClock {
    fn now_ms(&mut self) -> u64 {
        self.0.get()
    }

    fn idle(&mut self) {
        self.advance(1);
    }
}

type Modem = ModemTransport<'static, Module, TestClock, Sim7600>;

fn modem() -> (Modem, Module, TestClock) {
    let module = Module::default();
    let clock = TestClock::default();
    let mut config = ModemConfig::new("http://fota", "lamp-1", "tok", "internet");
    config.timeouts = Timeouts {
        command_ms: 100,
        action_ms: 500,
        read_ms: 300,
    };
    let push = PushConfig::from_url("mqtt://broker:1883").unwrap();
    let mut m = ModemTransport::new(module.clone(), clock.clone(), config);
    m.enable_push(push).unwrap();
    (m, module, clock)
}

/// A publish as the module reports it, the payload in `chunks` (`+CMQTTRXPAYLOAD` each).
fn publish(topic: &str, chunks: &[&str]) -> Vec<u8> {
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut out = format!(
        "\r\n+CMQTTRXSTART: 0,{},{total}\r\n+CMQTTRXTOPIC: 0,{}\r\n{topic}",
        topic.len(),
        topic.len()
    );
    for chunk in chunks {
        out.push_str(&format!(
            "\r\n+CMQTTRXPAYLOAD: 0,{}\r\n{chunk}",
            chunk.len()
        ));
    }
    out.push_str("\r\n+CMQTTRXEND: 0\r\n");
    out.into_bytes()
}

const TOPIC: &str = "fota/d/lamp-1/cmd";
const NUDGE: &str = r#"{"kind":"check_in","jitter_s":30}"#;
const STOP: &str = r#"{"kind":"stop","rollout_id":7}"#;

#[test]
fn connects_as_the_device_and_takes_a_publish_received_while_idle() {
    let (mut m, module, _clock) = modem();
    module.bring_up().connect(true);
    assert_eq!(m.take_command(), None);
    assert!(module.script_done());
    assert_eq!(m.push_connected(), Some(true));
    let sent = module.commands();
    assert!(sent.contains(&"AT+CMQTTSTART".to_string()), "{sent:?}");
    assert_eq!(module.0.borrow().raws, vec![TOPIC.as_bytes().to_vec()]);

    // A nudge arrives while the device does nothing else; nothing is sent for it.
    module.send(&publish(TOPIC, &[NUDGE]));
    assert_eq!(m.take_command(), Some(Command::check_in(30)));
    assert_eq!(m.take_command(), None);
    assert!(module.commands().is_empty());
    assert_eq!(m.push_stats().received, 1);
}

#[test]
fn a_publish_trickling_in_a_byte_at_a_time_is_taken_in_one_call() {
    let (mut m, module, clock) = modem();
    module.bring_up().connect(true);
    m.take_command();
    module.0.borrow_mut().trickle = true;
    module.send(&publish(TOPIC, &[STOP]));
    assert_eq!(m.take_command(), Some(Command::stop(7)));
    // Nothing there: nothing waited for.
    let before = clock.0.get();
    assert_eq!(m.take_command(), None);
    assert_eq!(clock.0.get(), before);
}

#[test]
fn a_publish_just_before_the_subscribe_prompt_is_kept() {
    let (mut m, module, _clock) = modem();
    let mut prompt = publish(TOPIC, &[STOP]);
    prompt.extend_from_slice(b"\r\n>");
    module
        .bring_up()
        .expect("AT+CMQTTSTART", b"\r\nOK\r\n\r\n+CMQTTSTART: 0\r\n")
        .expect("AT+CMQTTACCQ=0,\"lamp-1\"", b"\r\nOK\r\n")
        .expect(
            "AT+CMQTTCONNECT=0,",
            b"\r\nOK\r\n\r\n+CMQTTCONNECT: 0,0\r\n",
        )
        .expect("AT+CMQTTSUB=0,17,1", &prompt)
        .raw(17, b"\r\nOK\r\n\r\n+CMQTTSUB: 0,0\r\n");
    assert_eq!(m.take_command(), Some(Command::stop(7)));
    assert!(module.script_done());
    assert_eq!(m.push_connected(), Some(true));
}

#[test]
fn publishes_inside_an_http_read_are_kept_and_the_read_is_intact() {
    let (mut m, module, _clock) = modem();
    module.bring_up().connect(true);
    m.take_command();
    module.commands();

    // A ranged GET whose AT+HTTPREAD answer carries a publish between OK and the data, and a
    // second one (its payload split in two) between the data and the end marker. The data
    // itself looks like URCs and an OK: it is read as data.
    let data: &[u8] = b"\r\nOK\r\n+CMQTTRXEND: 0\r\n";
    let mut read = b"\r\nOK\r\n".to_vec();
    read.extend(publish(TOPIC, &[STOP]));
    read.extend(format!("\r\n+HTTPREAD: {}\r\n", data.len()).as_bytes());
    read.extend_from_slice(data);
    read.extend(publish(TOPIC, &[&NUDGE[..10], &NUDGE[10..]]));
    read.extend_from_slice(b"\r\n+HTTPREAD: 0\r\n");
    module
        .expect("AT+HTTPPARA=\"URL\"", b"\r\nOK\r\n")
        .expect("AT+HTTPPARA=\"USERDATA\",\"Range: bytes=0-", b"\r\nOK\r\n")
        .expect(
            "AT+HTTPACTION=0",
            format!("\r\nOK\r\n\r\n+HTTPACTION: 0,206,{}\r\n", data.len()).as_bytes(),
        )
        .expect("AT+HTTPREAD=0,", &read);
    let mut buf = [0u8; 64];
    let n = m
        .fetch_range(&Digest::of(b"artifact"), 0, &mut buf)
        .expect("the read");
    assert_eq!(&buf[..n], data);
    assert!(module.script_done());
    assert_eq!(m.take_command(), Some(Command::stop(7)));
    assert_eq!(m.take_command(), Some(Command::check_in(30)));
    assert_eq!(m.take_command(), None);
    assert_eq!(m.push_stats().received, 2);
    assert_eq!(m.push_stats().malformed, 0);
}

#[test]
fn a_lost_connection_is_reconnected_with_backoff_without_starting_over() {
    let (mut m, module, clock) = modem();
    module.bring_up().connect(true);
    m.take_command();
    module.commands();

    module.send(b"\r\n+CMQTTCONNLOST: 0,1\r\n");
    // The broker refuses the first reconnection (at once: the loss resets the backoff) ...
    module.expect(
        "AT+CMQTTCONNECT=0,",
        b"\r\nOK\r\n\r\n+CMQTTCONNECT: 0,11\r\n",
    );
    assert_eq!(m.take_command(), None);
    assert_eq!(m.push_connected(), Some(false));
    assert_eq!(m.push_stats().connections_lost, 1);
    assert_eq!(m.push_stats().connect_failures, 1);
    assert!(module.script_done());
    assert_eq!(module.commands().len(), 1);
    // ... so nothing is tried again before the backoff (2 s) has passed ...
    clock.advance(1_500);
    assert_eq!(m.take_command(), None);
    assert!(module.commands().iter().all(|c| !c.starts_with("AT+CMQTT")));
    // ... then it connects again (a refusal leaves the module's client as it was) and
    // subscribes.
    clock.advance(600);
    module.connect(false);
    assert_eq!(m.take_command(), None);
    assert!(module.script_done());
    assert_eq!(m.push_connected(), Some(true));
    module.send(&publish(TOPIC, &[STOP]));
    assert_eq!(m.take_command(), Some(Command::stop(7)));
}

#[test]
fn a_broker_away_never_blocks_http() {
    let (mut m, module, clock) = modem();
    module.bring_up().connect(true);
    m.take_command();
    // The connection drops and the broker does not answer a reconnection in time.
    module.send(b"\r\n+CMQTTCONNLOST: 0,3\r\n");
    module.expect("AT+CMQTTCONNECT=0,", b"\r\nOK\r\n");
    let before = clock.0.get();
    assert_eq!(m.take_command(), None);
    // Bounded by the connect timeout (30 s), then a backoff.
    assert!(
        clock.0.get() - before <= 30_100,
        "{}",
        clock.0.get() - before
    );
    assert_eq!(m.push_connected(), Some(false));
    // An artifact request goes through as usual meanwhile (the link was not torn down).
    module
        .expect("AT+HTTPPARA=\"URL\"", b"\r\nOK\r\n")
        .expect("AT+HTTPPARA=\"USERDATA\"", b"\r\nOK\r\n")
        .expect("AT+HTTPACTION=0", b"\r\nOK\r\n\r\n+HTTPACTION: 0,206,3\r\n")
        .expect(
            "AT+HTTPREAD=0,",
            b"\r\nOK\r\n\r\n+HTTPREAD: 3\r\nabc\r\n+HTTPREAD: 0\r\n",
        );
    let mut buf = [0u8; 16];
    assert_eq!(m.fetch_range(&Digest::of(b"x"), 0, &mut buf), Ok(3));
    assert!(module.script_done());
}

#[test]
fn a_flood_keeps_the_stops_and_counts_what_it_dropped() {
    let (mut m, module, _clock) = modem();
    module.bring_up().connect(true);
    m.take_command();
    let mut flood = publish(TOPIC, &[STOP]);
    for _ in 0..10 {
        flood.extend(publish(TOPIC, &[NUDGE]));
    }
    flood.extend(publish(TOPIC, &["not json"]));
    flood.extend(publish("fota/d/lamp-1/other", &[STOP]));
    module.send(&flood);
    let taken: Vec<Command> = std::iter::from_fn(|| m.take_command()).collect();
    assert_eq!(taken[0], Command::stop(7));
    assert!(taken[1..].iter().all(|c| c.kind == CommandKind::CheckIn));
    let stats = m.push_stats();
    assert_eq!(stats.received, 13);
    assert_eq!(stats.malformed, 2);
    assert_eq!(stats.dropped_stops, 0);
    assert_eq!(taken.len() as u32 + stats.dropped_nudges, 11);
}

#[test]
fn without_a_broker_nothing_is_sent() {
    let module = Module::default();
    let config = ModemConfig::new("http://fota", "lamp-1", "tok", "internet");
    let mut m: Modem = ModemTransport::new(module.clone(), TestClock::default(), config);
    assert_eq!(m.take_command(), None);
    assert_eq!(m.push_connected(), None);
    assert!(module.commands().is_empty());
}
