//! A Mosquitto broker of a test's own: the real `mosquitto` 2.0 binary with the
//! dynamic-security plugin, on a free port, with a config and an admin account made for the
//! test in a temporary directory. The test may stop and start it. Without the binary or the
//! plugin the test fails (scripts/setup installs them), it is not skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dynamic-security admin account the server connects as.
pub const ADMIN_USER: &str = "fota-admin";

/// A running broker; killed and deleted when dropped.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    child: Option<Child>,
}

/// Where the dynamic-security plugin is (`$FOTA_MOSQUITTO_DYNSEC`, else Debian's paths).
pub fn dynsec_plugin() -> PathBuf {
    if let Ok(p) = std::env::var("FOTA_MOSQUITTO_DYNSEC") {
        return PathBuf::from(p);
    }
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        panic!(
            "no Mosquitto dynamic-security plugin: install mosquitto (scripts/setup does) or set \
             FOTA_MOSQUITTO_DYNSEC"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Mosquitto {
    /// Initialise dynamic security with an admin account and start the broker.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fota-mqtt-")
            .tempdir()
            .unwrap();
        let password = format!("pw-{}", std::process::id());
        let json = dir.path().join("dynamic-security.json");
        let mut init = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&json)
            .arg(ADMIN_USER)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_ctrl (install mosquitto-clients; scripts/setup does)");
        {
            use std::io::Write as _;
            let stdin = init.stdin.as_mut().unwrap();
            writeln!(stdin, "{password}\n{password}").unwrap();
        }
        assert!(
            init.wait().unwrap().success(),
            "mosquitto_ctrl dynsec init failed"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let user = if is_root() { "user root\n" } else { "" };
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "{user}listener {port} 127.0.0.1\nallow_anonymous false\n\
                 plugin {plugin}\nplugin_opt_config_file {json}\n\
                 persistence false\nmax_packet_size 65536\nlog_dest stderr\nlog_type all\n",
                plugin = dynsec_plugin().display(),
                json = json.display(),
            ),
        )
        .unwrap();
        let mut broker = Self {
            dir,
            port,
            password,
            child: None,
        };
        broker.start_again();
        broker
    }

    /// Start it again (after [`stop`](Self::stop)) on the same port, with the accounts it had.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (install it; scripts/setup does)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen on {} within 10 s; log: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it (SIGKILL: a broker that goes away).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `mqtt://fota-admin:...@127.0.0.1:port`, what `fota serve --mqtt-url` takes.
    pub fn url(&self) -> String {
        format!(
            "mqtt://{ADMIN_USER}:{}@127.0.0.1:{}",
            self.password, self.port
        )
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (config, accounts, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
