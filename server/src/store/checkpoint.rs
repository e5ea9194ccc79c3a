//! SQLite's WAL checkpoints, off the request path.
//!
//! Left to itself SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: the
//! request that happens to commit then copies the whole WAL into the database file and fsyncs
//! it before it is answered. Every connection of a [`Store`](super::Store) turns that off
//! (`wal_autocheckpoint = 0`, `db.rs`) and this task, on a connection of its own, checkpoints
//! instead: a `PASSIVE` checkpoint every [`INTERVAL`], which copies what it can without waiting
//! for or blocking anyone.
//!
//! The WAL stays bounded: a writer starts it over from the beginning once a checkpoint has
//! copied all of it, so it normally holds what one interval wrote. Should readers keep it from
//! starting over (a passive checkpoint copies only frames no reader still needs), and the WAL
//! grow past [`MAX_WAL_PAGES`], the task runs a `RESTART` checkpoint, which waits for those
//! readers and holds new writers back until the WAL can start over, and `journal_size_limit`
//! (`db.rs`) truncates the file back to [`MAX_WAL_BYTES`] when it does.

use sqlx::any::AnyConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, Executor as _, Row as _};
use std::sync::Weak;
use std::time::Duration;

/// How often the WAL is checkpointed.
pub(super) const INTERVAL: Duration = Duration::from_millis(500);

/// The WAL's size past which a checkpoint waits for readers (pages of 4 KiB: 64 MiB).
pub(super) const MAX_WAL_PAGES: i64 = 16_384;

/// The WAL file's size it is truncated to when it starts over (`journal_size_limit`).
pub(super) const MAX_WAL_BYTES: i64 = MAX_WAL_PAGES * 4096;

/// Checkpoint the database `options` opens every [`INTERVAL`] while `alive` has a strong
/// reference (its [`Store`](super::Store) lives).
pub(super) async fn run(options: AnyConnectOptions, alive: Weak<()>) {
    let mut conn: Option<sqlx::AnyConnection> = None;
    loop {
        tokio::time::sleep(INTERVAL).await;
        if alive.strong_count() == 0 {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match open(&options).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::debug!(error = %e, "WAL checkpoint: cannot connect");
                    continue;
                }
            },
        };
        if let Err(e) = checkpoint(c).await {
            // The next round tries again on a fresh connection.
            tracing::warn!(error = %e, "WAL checkpoint failed");
            if let Some(c) = conn.take() {
                drop(c.close().await);
            }
        }
    }
    if let Some(c) = conn {
        drop(c.close().await);
    }
}

async fn open(options: &AnyConnectOptions) -> Result<sqlx::AnyConnection, sqlx::Error> {
    let mut c = options.connect().await?;
    c.execute("PRAGMA busy_timeout = 10000").await?;
    c.execute("PRAGMA wal_autocheckpoint = 0").await?;
    Ok(c)
}

/// One passive checkpoint, and a restarting one if the WAL has outgrown its bound.
async fn checkpoint(c: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *c)
        .await?;
    let log: i64 = row.try_get(1)?;
    if log > MAX_WAL_PAGES {
        let row = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .fetch_one(&mut *c)
            .await?;
        let busy: i64 = row.try_get(0)?;
        tracing::info!(
            wal_pages = log,
            restarted = busy == 0,
            "WAL past its bound: checkpointed with RESTART"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{NewDevice, Store};

    /// Without a checkpoint nothing would ever copy the WAL back (every connection has
    /// `wal_autocheckpoint = 0`) and the WAL file would hold every page written: the task keeps
    /// it to what is written between two checkpoints, and the database file gets the rows.
    #[tokio::test]
    async fn the_background_task_checkpoints_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fota.db");
        let store = Store::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        let wal = dir.path().join("fota.db-wal");
        let mut largest_wal = 0;
        let mut next = 0;
        // 12 rounds of 2,000 devices (~5 MB of pages in all), two intervals apart.
        for _ in 0..12 {
            let devices: Vec<NewDevice> = (next..next + 2_000)
                .map(|i| NewDevice {
                    id: format!("dev-{i:07}-{}", "x".repeat(200)),
                    model: "f429".into(),
                    tags: vec![],
                    token_hash: [7; 32],
                })
                .collect();
            next += 2_000;
            store.register_devices(&devices, "test", 1).await.unwrap();
            tokio::time::sleep(super::INTERVAL * 2).await;
            largest_wal = largest_wal.max(std::fs::metadata(&wal).unwrap().len());
        }
        let db = std::fs::metadata(&path).unwrap().len();
        assert!(
            db > 4_000_000,
            "the database file holds the rows after checkpoints: {db} bytes"
        );
        assert!(
            largest_wal < db / 3,
            "the WAL started over after checkpoints: at most {largest_wal} bytes, database {db}"
        );
        store.close().await;
    }
}
