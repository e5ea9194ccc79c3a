//! `fota demo --mqtt`'s own Mosquitto: the real `mosquitto` 2.0 binary with the
//! dynamic-security plugin, on a free port, in the demo's data directory.
//!
//! The demo writes the plugin's accounts file itself, before the broker starts: fota's own
//! account (the dynamic-security admin, with the `fota-server` role `fota serve` gives itself)
//! and one account per device (its id, its device token as password, salted PBKDF2-SHA512 as
//! the plugin stores it) with a role allowing only its own topics, the same rules `fota serve`
//! creates through `$CONTROL` when it provisions devices itself. Why not that way here:
//! Mosquitto 2.0's plugin writes its whole accounts file after every `$CONTROL` command, so
//! creating n accounts through it takes time quadratic in n (10 s for the first 1,000 devices,
//! 64 s for the third 1,000 on this machine); written at once, 100,000 take seconds.
//!
//! A fleet larger than one broker process can hold connections for (each is an open file, and
//! `RLIMIT_NOFILE` may be a hard 20,000) runs on a small cluster instead, as a broker cluster
//! (EMQX, VerneMQ) would carry it in the field: a core broker that `fota serve` connects to,
//! and edge brokers that hold the devices' connections and accounts, each bridged to the core
//! with an account of its own there (`fota/d/+/cmd` in, `fota/d/+/report` out, QoS 1), so
//! that what the server publishes reaches a device on any edge and a device's report reaches
//! the server from any edge.

use anyhow::{bail, Context as _};
use fota_server::api::mqtt::dynsec;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha512;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// fota's account on the broker.
pub const ADMIN_USER: &str = "fota-admin";
/// The edges' account on the core broker.
const BRIDGE_USER: &str = "fota-bridge";
/// PBKDF2 rounds, as `mosquitto_ctrl` and the plugin use.
const ITERATIONS: u32 = 101;

/// A running broker, stopped when dropped.
pub struct Broker {
    dir: PathBuf,
    port: u16,
    password: String,
    child: Option<Child>,
    role: Role,
}

/// What a broker is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// The only broker: fota and the devices.
    Single,
    /// A cluster's core: fota and the edges' bridges.
    Core,
    /// A cluster's edge: devices, bridged to the core at this port with this password.
    Edge {
        core_port: u16,
        core_password: String,
    },
}

/// Where the dynamic-security plugin is (`$FOTA_MOSQUITTO_DYNSEC`, else the usual paths).
fn dynsec_plugin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("FOTA_MOSQUITTO_DYNSEC") {
        return Ok(PathBuf::from(p));
    }
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
        "/opt/homebrew/lib/mosquitto_dynamic_security.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .context(
        "no Mosquitto dynamic-security plugin found: install mosquitto (scripts/setup does) or \
         set FOTA_MOSQUITTO_DYNSEC to mosquitto_dynamic_security.so",
    )
}

/// PBKDF2-HMAC-SHA512 of `password`, 64 bytes (one block).
fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let key = Hmac::<Sha512>::new_from_slice(password).unwrap_or_else(|_| unreachable!());
    let mut mac = key.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u: [u8; 64] = mac.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut mac = key.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes().into();
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One dynamic-security client entry: `username` with `password`, in `roles`.
fn client(username: &str, password: &str, roles: &[&str]) -> anyhow::Result<Value> {
    let mut salt = [0u8; 12];
    getrandom::getrandom(&mut salt).context("no randomness for a password salt")?;
    let hash = pbkdf2_sha512(password.as_bytes(), &salt, ITERATIONS);
    Ok(json!({
        "username": username,
        "roles": roles.iter().map(|r| json!({"rolename": r})).collect::<Vec<_>>(),
        "password": base64(&hash),
        "salt": base64(&salt),
        "iterations": ITERATIONS,
    }))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The soft limit on open files raised to the hard one (for this process and the children it
/// starts: the simulator and Mosquitto hold a socket per device). Returns the limit now.
pub fn raise_open_files() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            limit.current = Some(hard);
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

impl Broker {
    /// Start a broker on a free port of 127.0.0.1 with its config in `dir` and fota's account
    /// only (devices come with [`reload`](Self::reload)).
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_as(dir, Role::Single, &[])
    }

    /// Start a cluster's core broker: fota's account, and the account its edges' bridges log
    /// in with.
    pub fn start_core(dir: &Path) -> anyhow::Result<Self> {
        Self::start_as(dir, Role::Core, &[])
    }

    /// Start an edge broker of `core`'s cluster that holds the accounts of `devices` (id,
    /// token) and bridges their topics to the core (its bridge is named after `dir`).
    pub fn start_edge(
        dir: &Path,
        core: &Broker,
        devices: &[(String, String)],
    ) -> anyhow::Result<Self> {
        if core.role != Role::Core {
            bail!("an edge broker bridges to a core broker");
        }
        let role = Role::Edge {
            core_port: core.port,
            core_password: core.password.clone(),
        };
        Self::start_as(dir, role, devices)
    }

    fn start_as(dir: &Path, role: Role, devices: &[(String, String)]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut secret = [0u8; 18];
        getrandom::getrandom(&mut secret).context("no randomness for a password")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free port for the broker")?
            .port();
        let user = if is_root() { "user root\n" } else { "" };
        let mut config = format!(
            "{user}listener {port} 127.0.0.1\nallow_anonymous false\n\
             plugin {plugin}\nplugin_opt_config_file {json}\n\
             persistence false\nmax_packet_size 65536\nset_tcp_nodelay true\n\
             connection_messages false\nlog_dest stderr\nlog_type error\nlog_type warning\n",
            plugin = dynsec_plugin()?.display(),
            json = dir.join("dynamic-security.json").display(),
        );
        if role != Role::Single {
            // A bridge carries every device's commands (core to edges) or reports (edges to
            // core) on one connection: the default 20 QoS 1 messages in flight and 1,000
            // queued per client would make it the bottleneck, and drop what overflows.
            config.push_str("max_inflight_messages 1000\nmax_queued_messages 1000000\n");
        }
        if let Role::Edge {
            core_port,
            core_password,
        } = &role
        {
            let name = dir.file_name().map_or_else(
                || format!("edge-{port}"),
                |n| n.to_string_lossy().into_owned(),
            );
            config.push_str(&format!(
                "connection fota-core\naddress 127.0.0.1:{core_port}\n\
                 remote_clientid fota-{name}\nremote_username {BRIDGE_USER}\n\
                 remote_password {core_password}\nbridge_protocol_version mqttv311\n\
                 cleansession true\nnotifications false\nrestart_timeout 1 5\n\
                 topic fota/d/+/cmd in 1\ntopic fota/d/+/report out 1\n"
            ));
        }
        std::fs::write(dir.join("mosquitto.conf"), config)
            .context("cannot write the broker's config")?;
        let mut broker = Self {
            dir: dir.to_path_buf(),
            port,
            password: hex(&secret),
            child: None,
            role,
        };
        broker.reload(devices)?;
        Ok(broker)
    }

    /// Stop the broker, write the accounts of fota and of `devices` (id, token), and start it
    /// again on the same port.
    pub fn reload(&mut self, devices: &[(String, String)]) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.write_accounts(devices)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .context("cannot open the broker's log")?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start mosquitto (install it: scripts/setup does)")?;
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "mosquitto exited ({status}): {}",
                        self.log().trim().lines().last().unwrap_or("")
                    );
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("mosquitto did not listen on port {} within 60 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn write_accounts(&self, devices: &[(String, String)]) -> anyhow::Result<()> {
        let mut roles = vec![
            json!({"rolename": "admin", "acls": [
                {"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "allow": true},
                {"acltype": "publishClientReceive", "topic": "$CONTROL/dynamic-security/#", "allow": true},
                {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "allow": true},
            ]}),
            json!({"rolename": dynsec::SERVER_ROLE, "acls": dynsec::server_acls()}),
        ];
        let mut clients = vec![client(
            ADMIN_USER,
            &self.password,
            &["admin", dynsec::SERVER_ROLE],
        )?];
        if self.role == Role::Core {
            // The edges' bridges: every device's commands in, every device's reports out.
            roles.push(json!({"rolename": BRIDGE_USER, "acls": [
                {"acltype": "subscribeLiteral", "topic": "fota/d/+/cmd", "allow": true},
                {"acltype": "publishClientReceive", "topic": "fota/d/+/cmd", "allow": true},
                {"acltype": "publishClientSend", "topic": "fota/d/+/report", "allow": true},
            ]}));
            clients.push(client(BRIDGE_USER, &self.password, &[BRIDGE_USER])?);
        }
        roles.reserve(devices.len());
        clients.reserve(devices.len());
        // Hashing is most of the work (about 0.1 ms a device): on every core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = devices.len().div_ceil(threads).max(1);
        let hashed: Vec<anyhow::Result<Vec<Value>>> = std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|(id, token)| client(id, token, &[&dynsec::device_role(id)]))
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("hashing a password panicked"))
                })
                .collect()
        });
        for chunk in hashed {
            clients.extend(chunk?);
        }
        for (id, _) in devices {
            roles.push(
                json!({"rolename": dynsec::device_role(id), "acls": dynsec::device_acls(id)}),
            );
        }
        let accounts = json!({
            "defaultACLAccess": {
                "publishClientSend": false,
                "publishClientReceive": true,
                "subscribe": false,
                "unsubscribe": true,
            },
            "clients": clients,
            "groups": [],
            "roles": roles,
        });
        let path = self.dir.join("dynamic-security.json");
        std::fs::write(&path, serde_json::to_vec(&accounts)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// `mqtt://fota-admin:...@127.0.0.1:port`, for `fota serve --mqtt-url`.
    pub fn url(&self) -> String {
        format!(
            "mqtt://{ADMIN_USER}:{}@127.0.0.1:{}",
            self.password, self.port
        )
    }

    /// `127.0.0.1:port`, for the devices.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_are_hashed_as_mosquitto_does() {
        // From an account `mosquitto_ctrl dynsec createClient` made (Mosquitto 2.0.11).
        use base64::Engine as _;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("sZQzd8Ch0Gd1ZXh7")
            .unwrap();
        let hash = pbkdf2_sha512(
            b"fota_dev_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
            &salt,
            101,
        );
        assert_eq!(
            base64(&hash),
            "jaowRWsP3nArEBsAX1X+Zs9DNhkfrrN7Ch1c5oo3bQYm4JwyPXoWY4NnMi5EfHaIG5IN1Bgv1wg4xvbPJ+QqFQ=="
        );
    }
}
