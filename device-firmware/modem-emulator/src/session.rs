//! One connection's AT state machine: the SIM7600 HTTP dialect, answered for real.
//!
//! Commands end in `\r` (or `\n`). Echo is on until `ATE0`, as on a module fresh from power-up.
//! The HTTP service must be started (`AT+HTTPINIT`) and the PDP context active
//! (`AT+CGACT=1,1`) before a request; `AT+HTTPACTION` answers `OK` at once and the
//! `+HTTPACTION: <method>,<status>,<length>` URC once the real request to the server is done;
//! the body stays in the module buffer for `AT+HTTPREAD=<offset>,<len>` until the next request.
//!
//! The MQTT client (`AT+CMQTTSTART`, `AT+CMQTTACCQ`, `AT+CMQTTCONNECT`, `AT+CMQTTSUB`,
//! `AT+CMQTTDISC`, `AT+CMQTTREL`, `AT+CMQTTSTOP`; see `fota_modem::push`) is answered with a
//! real broker connection ([`crate::mqtt`]): publishes on the subscribed topic come back as
//! `+CMQTTRXSTART` ... `+CMQTTRXEND` URCs whenever they arrive, between any two frames of any
//! answer (an `AT+HTTPREAD`'s included), and a broker connection that drops as
//! `+CMQTTCONNLOST: 0,<cause>`.

use crate::mqtt::{MqttClient, Sink};
use crate::{Config, Faults, Pacing};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The paced output to the device.
struct Out<W> {
    writer: W,
    pacing: Pacing,
    /// When the line is free again (pacing).
    free_at: Instant,
    faults: Faults,
}

impl<W: Write> Out<W> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.pacing {
            Pacing::Unlimited => self.writer.write_all(bytes)?,
            Pacing::BytesPerSecond(rate) => {
                // 64-byte bursts at the line rate: smooth enough for timeouts to mean something.
                for chunk in bytes.chunks(64) {
                    let now = Instant::now();
                    if self.free_at < now {
                        self.free_at = now;
                    }
                    let wait = self.free_at.saturating_duration_since(now);
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                    self.writer.write_all(chunk)?;
                    self.writer.flush()?;
                    self.free_at +=
                        Duration::from_secs_f64(chunk.len() as f64 / f64::from(rate.max(1)));
                }
            }
        }
        self.writer.flush()?;
        self.faults
            .with_both(|_, s| s.tx_bytes += bytes.len() as u64);
        Ok(())
    }

    fn line(&mut self, text: &str) -> io::Result<()> {
        self.send(format!("\r\n{text}\r\n").as_bytes())
    }
}

/// The line to the device, shared by the session and its broker connection: each frame (an
/// answer line, a data frame, a whole received publish) goes out whole, frames from both
/// interleave.
pub(crate) struct Line<W>(Arc<Mutex<Out<W>>>);

impl<W> Clone for Line<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W: Write> Line<W> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Out<W>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn send(&self, bytes: &[u8]) -> io::Result<()> {
        self.lock().send(bytes)
    }

    pub(crate) fn line(&self, text: &str) -> io::Result<()> {
        self.lock().line(text)
    }
}

impl<W: Write + Send> Sink for Line<W> {
    fn urc(&self, bytes: &[u8]) {
        // The device gone (the session ending) is not the broker's problem.
        let _ = self.send(bytes);
    }
}

/// The last HTTP response, held in the module buffer.
struct Response {
    body: Vec<u8>,
    artifact: bool,
}

/// The module's state.
struct Module {
    echo: bool,
    pdp_active: bool,
    http_init: bool,
    url: String,
    headers: Vec<(String, String)>,
    content_type: String,
    body: Vec<u8>,
    response: Option<Response>,
    silent_until: Option<Instant>,
    drop_left: u32,
    noise: u32,
    /// The MQTT service started, the client acquired (its client id), its broker connection.
    mqtt_started: bool,
    mqtt_client_id: Option<String>,
    mqtt: Option<MqttClient>,
    /// Raw bytes announced after a prompt: a request body, or a topic to subscribe to.
    raw_for: Raw,
}

/// What the raw bytes after a prompt are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Raw {
    HttpBody,
    Subscribe { qos: u8 },
}

const NOISE: [&str; 3] = ["+CSQ: 21,99", "RING", "+CREG: 1"];

fn quoted_args(s: &str) -> Vec<String> {
    // "a","b" -> [a, b]; a literal \" inside is not used by the dialect.
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else {
            break;
        };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

fn parse_headers(value: &str) -> Vec<(String, String)> {
    value
        .replace("\\r\\n", "\n")
        .split(['\n', '\r'])
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

fn range_start(headers: &[(String, String)]) -> Option<u32> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("range"))
        .and_then(|(_, v)| v.strip_prefix("bytes="))
        .and_then(|v| v.split('-').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Serve one connection until the device's side closes it.
pub fn serve<R: Read, W: Write + Send + 'static>(
    mut reader: R,
    writer: W,
    config: &Config,
    faults: &Faults,
) -> io::Result<()> {
    faults.with_both(|_, s| s.sessions += 1);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build();
    let out = Line(Arc::new(Mutex::new(Out {
        writer,
        pacing: config.pacing,
        free_at: Instant::now(),
        faults: faults.clone(),
    })));
    let mut m = Module {
        echo: true,
        pdp_active: false,
        http_init: false,
        url: String::new(),
        headers: Vec::new(),
        content_type: String::new(),
        body: Vec::new(),
        response: None,
        silent_until: None,
        drop_left: 0,
        noise: 0,
        mqtt_started: false,
        mqtt_client_id: None,
        mqtt: None,
        raw_for: Raw::HttpBody,
    };
    let result = serve_lines(&mut reader, &mut m, &out, config, faults, &agent);
    // The module powers off with its broker connection.
    if let Some(client) = m.mqtt.take() {
        client.close();
    }
    result
}

fn serve_lines<R: Read, W: Write + Send + 'static>(
    reader: &mut R,
    m: &mut Module,
    out: &Line<W>,
    config: &Config,
    faults: &Faults,
    agent: &ureq::Agent,
) -> io::Result<()> {
    let mut line: Vec<u8> = Vec::new();
    // A body announced by AT+HTTPDATA, and how many bytes of it are still to come.
    let mut body_left: usize = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        faults.with_both(|_, s| s.rx_bytes += n as u64);
        let mut i = 0;
        while i < n {
            if body_left > 0 {
                let take = body_left.min(n - i);
                m.body.extend_from_slice(&buf[i..i + take]);
                body_left -= take;
                i += take;
                if body_left == 0 {
                    match m.raw_for {
                        Raw::HttpBody => out.line("OK")?,
                        Raw::Subscribe { qos } => subscribe(m, out, config, qos)?,
                    }
                    m.raw_for = Raw::HttpBody;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            if b == b'\r' || b == b'\n' {
                if line.is_empty() {
                    continue;
                }
                let command = String::from_utf8_lossy(&line).trim().to_string();
                line.clear();
                if let Some(until) = m.silent_until {
                    if Instant::now() < until {
                        continue; // a silent module takes nothing and answers nothing
                    }
                    m.silent_until = None;
                }
                if m.echo {
                    out.send(format!("{command}\r").as_bytes())?;
                }
                faults.with_both(|_, s| s.commands += 1);
                body_left = handle(&command, m, out, config, faults, agent)?;
            } else {
                line.push(b);
                if line.len() > 4096 {
                    line.clear();
                }
            }
        }
    }
}

/// Subscribe to the topic just received (`m.body`) and answer `OK`; the broker's answer comes
/// as `+CMQTTSUB: 0,<err>` from the connection.
fn subscribe<W: Write + Send + 'static>(
    m: &mut Module,
    out: &Line<W>,
    config: &Config,
    qos: u8,
) -> io::Result<()> {
    let topic = String::from_utf8_lossy(&m.body).to_string();
    m.body.clear();
    match &m.mqtt {
        Some(client) if client.is_connected() => {
            out.line("OK")?;
            if config.verbose {
                eprintln!("modem: mqtt subscribe {topic} qos {qos}");
            }
            if !client.subscribe(&topic, qos) {
                out.line("+CMQTTSUB: 0,11")?;
            }
        }
        _ => out.line("ERROR")?,
    }
    Ok(())
}

/// The arguments of an MQTT command: numbers and quoted strings, in order.
fn mqtt_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').unwrap_or(after.len());
            out.push(after[..end].to_string());
            rest = after.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            out.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
        rest = rest
            .trim_start()
            .strip_prefix(',')
            .unwrap_or(rest)
            .trim_start();
    }
    out
}

/// Answer one MQTT command (`AT+CMQTT...`); the number of raw bytes to read next.
fn handle_mqtt<W: Write + Send + 'static>(
    command: &str,
    upper: &str,
    m: &mut Module,
    out: &Line<W>,
    config: &Config,
    faults: &Faults,
) -> io::Result<usize> {
    let error = |out: &Line<W>| out.line("ERROR").map(|()| 0);
    if upper == "AT+CMQTTSTART" {
        if m.mqtt_started {
            // Already running: the manual's "network is opened".
            out.line("ERROR")?;
            out.line("+CMQTTSTART: 23")?;
        } else if !m.pdp_active {
            out.line("OK")?;
            out.line("+CMQTTSTART: 7")?;
        } else {
            m.mqtt_started = true;
            out.line("OK")?;
            out.line("+CMQTTSTART: 0")?;
        }
        return Ok(0);
    }
    if upper == "AT+CMQTTSTOP" {
        if let Some(client) = m.mqtt.take() {
            client.close();
        }
        m.mqtt_client_id = None;
        let was = std::mem::replace(&mut m.mqtt_started, false);
        out.line(if was { "OK" } else { "ERROR" })?;
        out.line(if was {
            "+CMQTTSTOP: 0"
        } else {
            "+CMQTTSTOP: 21"
        })?;
        return Ok(0);
    }
    let Some((name, rest)) = command.split_once('=') else {
        return error(out);
    };
    let args = mqtt_args(rest);
    match name.to_ascii_uppercase().as_str() {
        "AT+CMQTTACCQ" => {
            if !m.mqtt_started || m.mqtt_client_id.is_some() || args.len() < 2 || args[0] != "0" {
                return error(out);
            }
            m.mqtt_client_id = Some(args[1].clone());
            out.line("OK")?;
        }
        "AT+CMQTTREL" => {
            if m.mqtt.as_ref().is_some_and(|c| c.is_connected()) || m.mqtt_client_id.is_none() {
                return error(out);
            }
            m.mqtt_client_id = None;
            out.line("OK")?;
        }
        "AT+CMQTTCONNECT" => {
            let Some(client_id) = m.mqtt_client_id.clone() else {
                return error(out);
            };
            if m.mqtt.as_ref().is_some_and(|c| c.is_connected()) || args.len() < 4 {
                return error(out);
            }
            let Some((host, port)) = args[1]
                .strip_prefix("tcp://")
                .and_then(|hp| hp.rsplit_once(':'))
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            else {
                return error(out);
            };
            let keepalive: u64 = args[2].parse().unwrap_or(60);
            let clean = args[3] == "1";
            let user = args.get(4).cloned();
            let password = args.get(5).cloned();
            out.line("OK")?;
            if let Some(old) = m.mqtt.take() {
                old.close();
            }
            if config.verbose {
                eprintln!("modem: mqtt connect {host}:{port} as {client_id}");
            }
            m.mqtt = Some(MqttClient::connect(
                crate::mqtt::Options {
                    client_id,
                    host,
                    port,
                    keepalive: Duration::from_secs(keepalive.max(5)),
                    clean,
                    credentials: user.zip(password),
                    verbose: config.verbose,
                },
                Box::new(out.clone()),
                faults.clone(),
            ));
        }
        "AT+CMQTTSUB" => {
            // AT+CMQTTSUB=0,<topic len>,<qos>: the topic follows the prompt.
            let len = args.get(1).and_then(|v| v.parse::<usize>().ok());
            let qos = args.get(2).and_then(|v| v.parse::<u8>().ok());
            match (len, qos) {
                (Some(len), Some(qos)) if (1..=1024).contains(&len) && qos <= 2 => {
                    m.body.clear();
                    m.raw_for = Raw::Subscribe { qos };
                    out.send(b"\r\n>")?;
                    return Ok(len);
                }
                _ => return error(out),
            }
        }
        "AT+CMQTTDISC" => match m.mqtt.take() {
            Some(client) if client.is_connected() => {
                client.close();
                out.line("OK")?;
                out.line("+CMQTTDISC: 0,0")?;
            }
            _ => return error(out),
        },
        _ => return error(out),
    }
    Ok(0)
}

/// Answer one command; returns the number of raw body bytes to read next (`AT+HTTPDATA`).
fn handle<W: Write + Send + 'static>(
    command: &str,
    m: &mut Module,
    out: &Line<W>,
    config: &Config,
    faults: &Faults,
    agent: &ureq::Agent,
) -> io::Result<usize> {
    let injected = faults.with_both(|plan, stats| {
        if plan.error_next > 0 {
            plan.error_next -= 1;
            stats.errors += 1;
            Some("ERROR")
        } else if plan.cme_next > 0 {
            plan.cme_next -= 1;
            stats.errors += 1;
            Some("+CME ERROR: 4")
        } else {
            None
        }
    });
    if faults.with_both(|plan, _| plan.urc_noise) {
        let urc = NOISE[m.noise as usize % NOISE.len()];
        m.noise += 1;
        out.line(urc)?;
    }
    if let Some(answer) = injected {
        out.line(answer)?;
        return Ok(0);
    }
    let upper = command.to_ascii_uppercase();
    if upper.starts_with("AT+CMQTT") {
        return handle_mqtt(command, &upper, m, out, config, faults);
    }
    let ok = |out: &Line<W>| out.line("OK");
    let error = |out: &Line<W>| out.line("ERROR");
    match upper.as_str() {
        "AT" => ok(out)?,
        "ATE0" => {
            m.echo = false;
            ok(out)?
        }
        "ATE1" => {
            m.echo = true;
            ok(out)?
        }
        "AT+CSQ" => {
            out.line("+CSQ: 21,99")?;
            ok(out)?
        }
        "AT+CGACT=1,1" => {
            m.pdp_active = true;
            ok(out)?
        }
        "AT+CGACT=0,1" => {
            m.pdp_active = false;
            ok(out)?
        }
        "AT+HTTPINIT" => {
            if m.http_init || !m.pdp_active {
                error(out)?
            } else {
                m.http_init = true;
                ok(out)?
            }
        }
        "AT+HTTPTERM" => {
            if m.http_init {
                m.http_init = false;
                m.response = None;
                ok(out)?
            } else {
                error(out)?
            }
        }
        _ if upper.starts_with("AT+CGDCONT=") || upper == "AT+IFC=2,2" => ok(out)?,
        _ if upper.starts_with("AT+HTTPPARA=") => {
            let args = quoted_args(&command["AT+HTTPPARA=".len()..]);
            if !m.http_init || args.len() != 2 {
                return error(out).map(|()| 0);
            }
            match args[0].to_ascii_uppercase().as_str() {
                "URL" => m.url.clone_from(&args[1]),
                "USERDATA" => m.headers = parse_headers(&args[1]),
                "CONTENT" => m.content_type.clone_from(&args[1]),
                _ => return error(out).map(|()| 0),
            }
            ok(out)?
        }
        _ if upper.starts_with("AT+HTTPDATA=") => {
            let len = upper["AT+HTTPDATA=".len()..]
                .split(',')
                .next()
                .and_then(|v| v.trim().parse::<usize>().ok());
            match len {
                Some(len) if m.http_init && len <= config.module_buffer => {
                    m.body.clear();
                    m.raw_for = Raw::HttpBody;
                    out.line("DOWNLOAD")?;
                    if len == 0 {
                        out.line("OK")?;
                    }
                    return Ok(len);
                }
                _ => error(out)?,
            }
        }
        _ if upper.starts_with("AT+HTTPACTION=") => {
            let method: u8 = match upper["AT+HTTPACTION=".len()..].trim() {
                "0" => 0,
                "1" => 1,
                _ => return error(out).map(|()| 0),
            };
            if !m.http_init {
                return error(out).map(|()| 0);
            }
            ok(out)?;
            let (status, len) = action(method, m, out, config, faults, agent)?;
            if m.silent_until.is_some() {
                return Ok(0);
            }
            out.line(&format!("+HTTPACTION: {method},{status},{len}"))?;
        }
        "AT+HTTPREAD?" => {
            let len = m.response.as_ref().map_or(0, |r| r.body.len());
            out.line(&format!("+HTTPREAD: LEN,{len}"))?;
            ok(out)?
        }
        _ if upper.starts_with("AT+HTTPREAD=") => {
            let mut parts = upper["AT+HTTPREAD=".len()..]
                .split(',')
                .map(|v| v.trim().parse::<usize>().ok());
            let (Some(Some(offset)), Some(Some(len))) = (parts.next(), parts.next()) else {
                return error(out).map(|()| 0);
            };
            let Some(response) = &m.response else {
                return error(out).map(|()| 0);
            };
            let start = offset.min(response.body.len());
            let end = (start + len).min(response.body.len());
            let data = response.body[start..end].to_vec();
            let artifact = response.artifact;
            ok(out)?;
            if !data.is_empty() {
                let mut frame = format!("\r\n+HTTPREAD: {}\r\n", data.len()).into_bytes();
                frame.extend_from_slice(&data);
                out.send(&frame)?;
            }
            out.line("+HTTPREAD: 0")?;
            if artifact {
                faults.with_both(|_, s| s.artifact_bytes += data.len() as u64);
            }
        }
        _ => error(out)?,
    }
    Ok(0)
}

/// Run the request the device configured: its status and the body length left in the buffer.
fn action<W: Write>(
    method: u8,
    m: &mut Module,
    out: &Line<W>,
    config: &Config,
    faults: &Faults,
    agent: &ureq::Agent,
) -> io::Result<(u16, usize)> {
    m.response = None;
    let artifact = method == 0 && m.url.contains("/v1/artifacts/");
    let start = if artifact {
        range_start(&m.headers)
    } else {
        None
    };
    // Faults triggered by how far a download got.
    enum Fault {
        Drop,
        Pdp,
        Silent(Duration),
    }
    let fault = faults.with_both(|plan, stats| {
        if artifact {
            stats.range_starts.push(start.unwrap_or(0));
        }
        let reached = |at: Option<u32>| artifact && at.is_some_and(|at| start.unwrap_or(0) >= at);
        if reached(plan.silent_at) {
            plan.silent_at = None;
            stats.silences += 1;
            return Some(Fault::Silent(plan.silent_for));
        }
        if reached(plan.pdp_drop_at) {
            plan.pdp_drop_at = None;
            stats.pdp_drops += 1;
            return Some(Fault::Pdp);
        }
        if reached(plan.drop_link_at) {
            plan.drop_link_at = None;
            stats.link_drops += 1;
            m.drop_left = plan.drop_requests.max(1);
        }
        if m.drop_left > 0 {
            m.drop_left -= 1;
            return Some(Fault::Drop);
        }
        None
    });
    if config.verbose {
        let what = match &fault {
            Some(Fault::Silent(_)) => " (fault: module silent)",
            Some(Fault::Pdp) => " (fault: PDP context lost)",
            Some(Fault::Drop) => " (fault: link drop)",
            None => "",
        };
        match start {
            Some(start) => eprintln!("modem: GET {} from {start}{what}", m.url),
            None => eprintln!(
                "modem: {} {}{what}",
                if method == 0 { "GET" } else { "POST" },
                m.url
            ),
        }
    }
    match fault {
        Some(Fault::Silent(d)) => {
            m.silent_until = Some(Instant::now() + d);
            return Ok((0, 0));
        }
        Some(Fault::Pdp) => {
            m.pdp_active = false;
            out.line("+CGEV: NW PDN DEACT 1")?;
            return Ok((709, 0));
        }
        Some(Fault::Drop) => return Ok((706, 0)),
        None => {}
    }
    if !m.pdp_active {
        return Ok((709, 0));
    }
    if !config.latency.is_zero() {
        std::thread::sleep(config.latency);
    }
    faults.with_both(|_, s| s.http_requests += 1);
    let mut request = agent.request(if method == 0 { "GET" } else { "POST" }, &m.url);
    for (name, value) in &m.headers {
        request = request.set(name, value);
    }
    let result = if method == 1 {
        let content_type = if m.content_type.is_empty() {
            "application/json"
        } else {
            &m.content_type
        };
        request
            .set("content-type", content_type)
            .send_bytes(&m.body)
    } else {
        request.call()
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        // No server there, a reset connection: the module's socket error.
        Err(ureq::Error::Transport(_)) => return Ok((706, 0)),
    };
    let status = response.status();
    let mut body = Vec::new();
    if response
        .into_reader()
        .take(config.module_buffer as u64 + 1)
        .read_to_end(&mut body)
        .is_err()
    {
        return Ok((706, 0));
    }
    if body.len() > config.module_buffer {
        return Ok((707, 0));
    }
    let len = body.len();
    m.response = Some(Response { body, artifact });
    Ok((status, len))
}
