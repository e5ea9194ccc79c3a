//! `fota serve`: open the store (applying migrations), bind, serve, watch the database's health,
//! and on SIGTERM or Ctrl-C shut down in order: stop accepting, finish in-flight requests, then
//! flush buffered check-in facts and close the database. Nothing a device was told is lost.

use crate::api::{router, AppState};
use crate::config::{ServeArgs, ServeConfig};
use crate::store::Store;
use crate::transport::{self, Tls};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A server running in the background of this process (tests, the demo, `fota serve`).
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (store, metrics, buffers), for tests and embedding.
    pub state: Arc<AppState>,
    tls: bool,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// `http://addr`, or `https://addr` when it terminates TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Graceful shutdown; returns once everything is flushed and closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task panicked")?
    }
}

/// Start serving `config` in the background.
pub async fn start(config: ServeConfig) -> anyhow::Result<RunningServer> {
    let tls = config
        .tls
        .as_ref()
        .map(|files| Tls::from_pem_files(&files.cert, &files.key))
        .transpose()?;
    let store = Store::connect_with(&config.database_url, config.pool)
        .await
        .with_context(|| format!("cannot open database {}", redact(&config.database_url)))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let flush_interval = config.flush_interval;
    let sweep_interval = config.sweep_interval;
    let health_interval = config.database_health_interval;
    let limits = config.connections;
    let state = Arc::new(
        AppState::new(store.clone(), config).context("cannot open the artifact directory")?,
    );
    let (stop, mut stopped) = watch::channel(false);
    let (stop_flusher, flusher_stopped) = watch::channel(false);
    let flusher = {
        let state = state.clone();
        let store = store.clone();
        tokio::spawn(async move {
            state
                .facts
                .run_flusher(store, flush_interval, flusher_stopped, &state.metrics)
                .await;
        })
    };
    let sweeper = {
        let state = state.clone();
        let store = store.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            state
                .engine
                .run_sweeper(store, sweep_interval, stopped)
                .await;
        })
    };
    let revocations = {
        let state = state.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { state.credentials.run_feed(&state.store, stopped).await })
    };
    let (stop_monitor, monitor_stopped) = watch::channel(false);
    let monitor = {
        let store = store.clone();
        tokio::spawn(async move { store.watch_health(health_interval, monitor_stopped).await })
    };
    let (stop_mqtt, mqtt_stopped) = watch::channel(false);
    let mqtt = state.config.mqtt.clone().map(|settings| {
        let (link, task) = crate::api::mqtt::start(settings, state.clone(), mqtt_stopped);
        let _ = state.mqtt.set(link as Arc<dyn crate::api::state::Broker>);
        task
    });
    let app = router(state.clone());
    let tls_on = tls.is_some();
    let streams = state.clone();
    let task = tokio::spawn(async move {
        transport::serve(listener, app, limits, tls, async move {
            let _ = stopped.wait_for(|s| *s).await;
            // Event streams end now, or the graceful shutdown would wait for their clients.
            streams.stopping.send_replace(true);
        })
        .await;
        let _ = stop_mqtt.send(true);
        if let Some(mqtt) = mqtt {
            mqtt.await.context("MQTT link panicked")?;
        }
        // Every request has finished: now the last flush sees everything they recorded.
        let _ = stop_flusher.send(true);
        flusher.await.context("flusher panicked")?;
        sweeper.await.context("sweeper panicked")?;
        revocations.await.context("revocation feed panicked")?;
        let _ = stop_monitor.send(true);
        monitor.await.context("database health monitor panicked")?;
        store.close().await;
        Ok(())
    });
    Ok(RunningServer {
        addr,
        state,
        tls: tls_on,
        stop,
        task,
    })
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// SIGTERM and SIGINT (Ctrl-C), registered when this is created: a signal that arrives after
/// that, even before anyone waits, is not lost (and does not kill the process unflushed).
struct TerminateSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl TerminateSignal {
    fn register() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Log to stderr; `FOTA_LOG` sets the filter (default `info`), `FOTA_LOG_FORMAT=json` for
/// structured logs.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FOTA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if std::env::var("FOTA_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `fota serve`.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::resolve(args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        init_tracing();
        let mut terminate = TerminateSignal::register()?;
        let no_keys = config.trusted_keys.is_empty();
        let server = start(config).await?;
        if no_keys {
            tracing::warn!("no trusted keys configured (--trusted-key): release uploads will be refused");
        }
        tracing::info!(url = %server.url(), backend = ?server.state.store.backend(), "fota serving");
        terminate.recv().await;
        tracing::info!("shutting down: finishing requests, flushing");
        server.shutdown().await?;
        tracing::info!("stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://fota:s3cret@db:5432/fota"),
            "postgres://fota:***@db:5432/fota"
        );
        assert_eq!(
            super::redact("postgres://fota@db/fota"),
            "postgres://fota@db/fota"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
