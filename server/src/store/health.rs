//! Whether the database answers, known at all times without asking it on every request.
//!
//! A database outage must not cost a request the pool's whole acquire timeout: while the
//! database is down, sqlx keeps retrying to connect until the deadline, so every request would
//! hang for seconds and then fail. Instead a monitor ([`Store::watch_health`]) pings the database
//! over a connection of its own (so a busy pool never looks like a dead database) several times
//! a second; while a ping fails, [`Store`] refuses work at once with
//! [`StoreError::Unavailable`], which the API answers with 503 and `Retry-After`, and `/readyz`
//! says 503. The first ping that succeeds lets work through again.
//!
//! Without a monitor running (tests, the CLI's one-shot commands) the database counts as up and
//! only the pool's acquire timeout bounds a wait.

use super::db::{Store, StoreError};
use sqlx::{ConnectOptions as _, Connection as _};
use std::time::Duration;
use tokio::sync::watch;

/// How long one health ping may take before the database counts as down.
pub const PING_TIMEOUT: Duration = Duration::from_millis(700);

impl Store {
    /// Ping the database every `interval` until `stop` flips, keeping [`Store::is_up`] current. Each ping has [`PING_TIMEOUT`];
    /// the monitor keeps one connection of its own, reopened after a failure.
    pub async fn watch_health(&self, interval: Duration, mut stop: watch::Receiver<bool>) {
        let options = self.pool_ref().connect_options();
        let mut conn: Option<sqlx::AnyConnection> = None;
        loop {
            let ping = async {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(options.connect().await?),
                };
                c.ping().await
            };
            let up = matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(())));
            if !up {
                // Whatever state the connection is in, start afresh next time.
                if let Some(c) = conn.take() {
                    drop(tokio::time::timeout(PING_TIMEOUT, c.close()).await);
                }
            }
            if self.health().set(up) {
                if up {
                    tracing::info!("database answers again");
                } else {
                    tracing::warn!(
                        "database unavailable: requests that need it answer 503 until it returns"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
        }
        if let Some(c) = conn {
            drop(tokio::time::timeout(PING_TIMEOUT, c.close()).await);
        }
    }

    /// Whether the database answered the last health ping.
    pub fn is_up(&self) -> bool {
        self.health().is_up()
    }

    /// The pool, unless the monitor knows the database is down: then fail at once rather than
    /// wait out the acquire timeout.
    pub(crate) fn pool(&self) -> Result<&sqlx::AnyPool, StoreError> {
        self.up().map(|()| self.pool_ref())
    }

    /// The group commit's connection (`pool()`'s rule).
    pub(crate) fn writer(&self) -> Result<&sqlx::AnyPool, StoreError> {
        self.up().map(|()| self.writer_ref())
    }

    /// The pool for reads outside a transaction (`pool()`'s rule).
    pub(crate) fn reader(&self) -> Result<&sqlx::AnyPool, StoreError> {
        self.up().map(|()| self.reader_ref())
    }

    fn up(&self) -> Result<(), StoreError> {
        if self.health().is_up() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the database does not answer its health check".into(),
            ))
        }
    }
}
