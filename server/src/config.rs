//! `fota serve` configuration, layered: built-in defaults, then an optional TOML file
//! (`--config`, `FOTA_CONFIG`), then `FOTA_*` environment variables, then command-line flags.
//!
//! clap reads flags and environment variables into `Option`s, so "not given" is visible and the
//! file's value (or the default) fills in. See `deploy/fota.toml` for every key.

use crate::store::PoolSettings;
pub use crate::transport::ConnectionLimits;
use anyhow::{bail, Context as _};
use fota_protocol::TrustedKey;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags (and their environment variables) of `fota serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "FOTA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "FOTA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database and the artifact store (created on first run).
    #[arg(long, env = "FOTA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite:PATH` or `postgres://...`; default: SQLite in the data directory.
    #[arg(long, env = "FOTA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Public keys (PEM) that release images must be signed with; repeat or comma-separate.
    #[arg(long = "trusted-key", env = "FOTA_TRUSTED_KEYS", value_delimiter = ',')]
    pub trusted_keys: Option<Vec<PathBuf>>,
    /// Seconds a device waits between check-ins.
    #[arg(long, env = "FOTA_POLL_INTERVAL_S")]
    pub poll_interval_s: Option<u32>,
    /// How often buffered check-in facts are written, in milliseconds.
    #[arg(long, env = "FOTA_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// How often deadlines are checked and rollouts evaluated, in milliseconds.
    #[arg(long, env = "FOTA_SWEEP_INTERVAL_MS")]
    pub sweep_interval_ms: Option<u64>,
    /// Redirect artifact downloads to this base URL (a CDN holding the same files by SHA-256).
    #[arg(long, env = "FOTA_CDN_BASE_URL")]
    pub cdn_base_url: Option<String>,
    /// Largest signed image accepted, in bytes (default: the 256 KB slot).
    #[arg(long, env = "FOTA_MAX_IMAGE_BYTES")]
    pub max_image_bytes: Option<u32>,
    /// Longest a request waits for a database connection before answering 503, in milliseconds.
    #[arg(long, env = "FOTA_DATABASE_ACQUIRE_TIMEOUT_MS")]
    pub database_acquire_timeout_ms: Option<u64>,
    /// How often the database's health is checked, in milliseconds (`/readyz`, and requests
    /// refused at once while it is down).
    #[arg(long, env = "FOTA_DATABASE_HEALTH_INTERVAL_MS")]
    pub database_health_interval_ms: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "FOTA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FOTA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most connections open at once; more wait in the listen backlog.
    #[arg(long, env = "FOTA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest a client may take to send a request's headers, in milliseconds.
    #[arg(long, env = "FOTA_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// A connection on which nothing moves for this long is closed, in milliseconds.
    #[arg(long, env = "FOTA_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Longest a client may take to send a request's body, in milliseconds.
    #[arg(long, env = "FOTA_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Most request bodies being read at once.
    #[arg(long, env = "FOTA_MAX_INFLIGHT_BODIES")]
    pub max_inflight_bodies: Option<usize>,
    /// MQTT broker for pushing to devices and taking their reports:
    /// `mqtt://user:password@host:port` (the user is the broker's dynamic-security admin).
    #[arg(long, env = "FOTA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// This replica's MQTT client id (default: derived from the listen address and data
    /// directory, so stable across restarts and distinct between replicas).
    #[arg(long, env = "FOTA_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Check-in nudges per second at most.
    #[arg(long, env = "FOTA_MQTT_NUDGE_RATE")]
    pub mqtt_nudge_rate: Option<u32>,
    /// The longest random wait, in seconds, a nudged device applies before checking in.
    #[arg(long, env = "FOTA_MQTT_JITTER_S")]
    pub mqtt_jitter_s: Option<u32>,
    /// Create each registered device's broker account (Mosquitto dynamic security): true or
    /// false (default true).
    #[arg(long, env = "FOTA_MQTT_PROVISION")]
    pub mqtt_provision: Option<bool>,
    /// Offer a device a delta patch from the image it runs only when the patch is smaller than
    /// this share of the full image, in percent (default 50); 0 offers no patches.
    #[arg(long, env = "FOTA_DELTA_MAX_PERCENT")]
    pub delta_max_percent: Option<u8>,
}

/// The same settings in the TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    trusted_keys: Option<Vec<PathBuf>>,
    poll_interval_s: Option<u32>,
    flush_interval_ms: Option<u64>,
    sweep_interval_ms: Option<u64>,
    cdn_base_url: Option<String>,
    max_image_bytes: Option<u32>,
    database_acquire_timeout_ms: Option<u64>,
    database_health_interval_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_connections: Option<usize>,
    header_read_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    body_read_timeout_ms: Option<u64>,
    max_inflight_bodies: Option<usize>,
    mqtt_url: Option<String>,
    mqtt_client_id: Option<String>,
    mqtt_nudge_rate: Option<u32>,
    mqtt_jitter_s: Option<u32>,
    mqtt_provision: Option<bool>,
    delta_max_percent: Option<u8>,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Keys release images must verify under.
    pub trusted_keys: Vec<TrustedKey>,
    /// Device poll interval.
    pub poll_interval: Duration,
    /// Flush period for buffered check-in facts.
    pub flush_interval: Duration,
    /// Period of the rollout sweep (deadlines, advancement).
    pub sweep_interval: Duration,
    /// CDN base URL for artifact redirects.
    pub cdn_base_url: Option<String>,
    /// Largest image accepted.
    pub max_image_bytes: u32,
    /// The database pool's settings (acquire timeout).
    pub pool: PoolSettings,
    /// Period of the database health check.
    pub database_health_interval: Duration,
    /// What one client may hold: connections, timeouts, bodies in flight.
    pub connections: ConnectionLimits,
    /// HTTPS: the certificate chain and key files (plain HTTP when `None`).
    pub tls: Option<TlsFiles>,
    /// The MQTT broker (none: devices poll over HTTP only).
    pub mqtt: Option<MqttSettings>,
    /// Delta patches are offered when smaller than this share of the full image, in percent
    /// (0: none).
    pub delta_max_percent: u8,
}

/// The PEM files `fota serve` terminates TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl ServeConfig {
    /// Defaults for tests and embedding: SQLite under `data_dir`, an ephemeral port.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: default_database_url(&data_dir),
            data_dir,
            trusted_keys: Vec::new(),
            poll_interval: Duration::from_secs(3600),
            flush_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(500),
            cdn_base_url: None,
            max_image_bytes: fota_protocol::layout::SLOT_A.size,
            pool: PoolSettings::default(),
            database_health_interval: Duration::from_millis(250),
            connections: ConnectionLimits::default(),
            tls: None,
            mqtt: None,
            delta_max_percent: crate::rollout::DeltaPolicy::DEFAULT_MAX_PERCENT,
        }
    }

    /// Resolve flags, environment, file and defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("fota-data"));
        let mut config = Self::for_data_dir(&data_dir);
        config.listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if let Some(url) = args.database_url.clone().or(file.database_url) {
            config.database_url = url;
        }
        let key_files = args
            .trusted_keys
            .clone()
            .or(file.trusted_keys)
            .unwrap_or_default();
        config.trusted_keys = key_files
            .iter()
            .map(|p| load_trusted_key(p))
            .collect::<anyhow::Result<_>>()?;
        if let Some(s) = args.poll_interval_s.or(file.poll_interval_s) {
            if s == 0 {
                bail!("poll interval must be at least 1 second");
            }
            config.poll_interval = Duration::from_secs(u64::from(s));
        }
        if let Some(ms) = args.flush_interval_ms.or(file.flush_interval_ms) {
            if ms == 0 {
                bail!("flush interval must be at least 1 ms");
            }
            config.flush_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = args.sweep_interval_ms.or(file.sweep_interval_ms) {
            if ms == 0 {
                bail!("sweep interval must be at least 1 ms");
            }
            config.sweep_interval = Duration::from_millis(ms);
        }
        config.cdn_base_url = args.cdn_base_url.clone().or(file.cdn_base_url);
        if let Some(max) = args.max_image_bytes.or(file.max_image_bytes) {
            config.max_image_bytes = max;
        }
        if let Some(ms) = args
            .database_acquire_timeout_ms
            .or(file.database_acquire_timeout_ms)
        {
            if !(1..=60_000).contains(&ms) {
                bail!("database acquire timeout must be 1-60000 ms");
            }
            config.pool.acquire_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = args
            .database_health_interval_ms
            .or(file.database_health_interval_ms)
        {
            if !(10..=60_000).contains(&ms) {
                bail!("database health interval must be 10-60000 ms");
            }
            config.database_health_interval = Duration::from_millis(ms);
        }
        config.tls = match (
            args.tls_cert.clone().or(file.tls_cert),
            args.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
        };
        let limits = &mut config.connections;
        if let Some(n) = args.max_connections.or(file.max_connections) {
            if !(1..=1_000_000).contains(&n) {
                bail!("max connections must be 1-1000000");
            }
            limits.max_connections = n;
        }
        if let Some(n) = args.max_inflight_bodies.or(file.max_inflight_bodies) {
            if !(1..=100_000).contains(&n) {
                bail!("max in-flight bodies must be 1-100000");
            }
            limits.max_inflight_bodies = n;
        }
        for (value, name, slot) in [
            (
                args.header_read_timeout_ms.or(file.header_read_timeout_ms),
                "header read timeout",
                &mut limits.header_read_timeout,
            ),
            (
                args.idle_timeout_ms.or(file.idle_timeout_ms),
                "idle timeout",
                &mut limits.idle_timeout,
            ),
            (
                args.body_read_timeout_ms.or(file.body_read_timeout_ms),
                "body read timeout",
                &mut limits.body_read_timeout,
            ),
        ] {
            if let Some(ms) = value {
                if !(10..=3_600_000).contains(&ms) {
                    bail!("{name} must be 10-3600000 ms");
                }
                *slot = Duration::from_millis(ms);
            }
        }
        if let Some(url) = args.mqtt_url.clone().or(file.mqtt_url) {
            let client_id = args
                .mqtt_client_id
                .clone()
                .or(file.mqtt_client_id)
                .unwrap_or_else(|| default_client_id(&config));
            let mut mqtt = MqttSettings::from_url(&url, client_id).map_err(anyhow::Error::msg)?;
            if let Some(rate) = args.mqtt_nudge_rate.or(file.mqtt_nudge_rate) {
                if !(1..=1_000_000).contains(&rate) {
                    bail!("MQTT nudge rate must be 1-1000000 per second");
                }
                mqtt.nudge_rate = rate;
            }
            if let Some(jitter) = args.mqtt_jitter_s.or(file.mqtt_jitter_s) {
                mqtt.jitter_s = jitter;
            }
            if let Some(provision) = args.mqtt_provision.or(file.mqtt_provision) {
                mqtt.provision = provision;
            }
            config.mqtt = Some(mqtt);
        }
        if let Some(percent) = args.delta_max_percent.or(file.delta_max_percent) {
            if percent > 100 {
                bail!("delta max percent must be 0-100");
            }
            config.delta_max_percent = percent;
        }
        Ok(config)
    }
}

/// How to reach the broker and how hard to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The server's own broker account (a dynamic-security admin when `provision` is on).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// This replica's client id: stable across restarts (so the broker keeps its session and
    /// redelivers unacknowledged reports), distinct between replicas.
    pub client_id: String,
    /// Nudges per second at most.
    pub nudge_rate: u32,
    /// The longest random wait a nudged device applies before it checks in, in seconds.
    pub jitter_s: u32,
    /// Create and delete each device's broker account (Mosquitto dynamic security).
    pub provision: bool,
}

impl MqttSettings {
    /// Parse `mqtt://[user[:password]@]host[:port]`.
    pub fn from_url(url: &str, client_id: String) -> Result<Self, String> {
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or_else(|| format!("MQTT URL must start with mqtt:// (got {url:?})"))?;
        let rest = rest.trim_end_matches('/');
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let (username, password) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| format!("invalid port in MQTT URL: {p:?}"))?,
            ),
            None => (hostport.to_string(), 1883),
        };
        if host.is_empty() {
            return Err("MQTT URL has no host".into());
        }
        Ok(Self {
            host,
            port,
            username,
            password,
            client_id,
            nudge_rate: 500,
            jitter_s: 30,
            provision: true,
        })
    }
}

/// `fota-` and 12 hex digits of the SHA-256 of the listen address and data directory: the
/// same replica gets the same id after a restart (the broker keeps its session and redelivers
/// what it did not acknowledge), two replicas get different ones.
fn default_client_id(config: &ServeConfig) -> String {
    use sha2::Digest as _;
    let digest =
        sha2::Sha256::digest(format!("{}|{}", config.listen, config.data_dir.display()).as_bytes());
    format!("fota-{}", &hex::encode(digest)[..12])
}

/// SQLite in the data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("fota.db").display())
}

/// A trusted public key from a PEM file (public or private; only the public half is kept).
pub fn load_trusted_key(path: &Path) -> anyhow::Result<TrustedKey> {
    Ok(crate::keys::load_trusted_key(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fota.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\npoll_interval_s = 120\ndata_dir = \"/srv/fota\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            poll_interval_s: Some(30),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap(), "from the file");
        assert_eq!(c.poll_interval, Duration::from_secs(30), "flag beats file");
        assert_eq!(
            c.database_url, "sqlite:///srv/fota/fota.db",
            "default follows data_dir"
        );
        assert_eq!(c.flush_interval, Duration::from_secs(1), "default");

        let defaults = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(defaults.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(defaults.database_url, "sqlite://fota-data/fota.db");

        std::fs::write(&file, "listen = 5\n").unwrap();
        let err = ServeConfig::resolve(&args).unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid config file"),
            "{err:#}"
        );
        std::fs::write(&file, "colour = \"red\"\n").unwrap();
        assert!(
            ServeConfig::resolve(&args).is_err(),
            "unknown keys are refused"
        );
        let zero = ServeArgs {
            poll_interval_s: Some(0),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(&zero).is_err());
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../deploy/fota.toml");
        let file: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(file.poll_interval_s, Some(3600));
        assert_eq!(file.delta_max_percent, Some(50));
    }

    #[test]
    fn the_delta_share_is_a_percentage() {
        let with = |p| ServeArgs {
            delta_max_percent: Some(p),
            ..ServeArgs::default()
        };
        assert_eq!(ServeConfig::resolve(&with(0)).unwrap().delta_max_percent, 0);
        assert_eq!(
            ServeConfig::resolve(&with(100)).unwrap().delta_max_percent,
            100
        );
        let err = ServeConfig::resolve(&with(101)).unwrap_err();
        assert_eq!(err.to_string(), "delta max percent must be 0-100");
        assert_eq!(
            ServeConfig::resolve(&ServeArgs::default())
                .unwrap()
                .delta_max_percent,
            crate::rollout::DeltaPolicy::DEFAULT_MAX_PERCENT
        );
    }
}
