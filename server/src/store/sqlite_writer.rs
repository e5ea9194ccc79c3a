//! The SQLite report writer's connection: a rusqlite connection of its own to the store's file,
//! on which the group commit runs each batch of reports whole, from one blocking thread
//! (`group_commit.rs`).
//!
//! Through sqlx every statement of a batch, and every row a statement returns, crosses a channel
//! between the async task and the connection's own thread, with a wake-up each way; under the
//! report-ingest benchmark those hand-offs were the largest share of the server's CPU
//! (docs/BENCHMARKS.md). Here a batch is one hand-off to a blocking thread and one back. The
//! connection takes SQLite's write lock only while the group commit holds the write pool's one
//! connection, so batches still take their turn with every other write instead of meeting them
//! in SQLite's busy handler.

use super::error::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::OnceLock;

/// Every SQLite connection's settings, this writer's and the sqlx pools' (`db.rs`): WAL lets
/// readers run beside the one writer; NORMAL is durable across process crashes and costs one
/// fsync per checkpoint; checkpoints run in the background (`checkpoint.rs`), never inside a
/// commit.
pub(super) const SQLITE_PRAGMAS: [&str; 5] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 10000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA wal_autocheckpoint = 0",
];

/// Statements the connection keeps prepared: the batch's texts come in a handful of sizes per
/// kind (powers of two), a few dozen in all.
const PREPARED: usize = 256;

/// The connection, for one batch at a time.
pub(crate) struct SqliteWriter {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter").finish_non_exhaustive()
    }
}

impl SqliteWriter {
    /// Open `path` (made and migrated already; a `file:` URI is taken as one) with the store's
    /// connection pragmas ([`SQLITE_PRAGMAS`]), the WAL truncated to `max_wal_bytes` when it
    /// starts over, and statement journals in memory.
    pub(crate) fn open(path: &str, max_wal_bytes: i64) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        for pragma in SQLITE_PRAGMAS {
            conn.execute_batch(pragma)?;
        }
        conn.pragma_update(None, "journal_size_limit", max_wal_bytes)?;
        // A multi-row statement that may fail halfway keeps a statement journal; in memory it
        // is not a temporary file opened and closed by every transaction.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Run `f` on the connection (blocking: call it from a blocking thread).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }
}

/// `text` with sqlx's `$n` placeholders as SQLite's `?n`, which SQLite numbers exactly as
/// written (a `$n` is a named parameter, numbered in order of first appearance), so values bind
/// by position. The store's texts hold no `$` but their placeholders.
pub(crate) fn positional(text: &str) -> String {
    text.replace('$', "?")
}

/// SQL texts built once for each size of the writer's multi-row statements (the powers of two
/// up to 256 that [`super::sql::padded`] lists come in), by `n.trailing_zeros()`. The writer is
/// the serial stage of ingest, and a batch runs a few statements per round.
pub(super) type BySize<T> = [OnceLock<T>; 9];

/// What `build` makes for `n`: built once in `texts` for a power of two up to 256, for this
/// call otherwise.
pub(super) fn by_size<T: Clone>(
    texts: &'static BySize<T>,
    n: usize,
    build: impl FnOnce(usize) -> T,
) -> Cow<'static, T> {
    match texts.get(n.trailing_zeros() as usize) {
        Some(text) if n.is_power_of_two() => Cow::Borrowed(text.get_or_init(|| build(n))),
        _ => Cow::Owned(build(n)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_keep_their_numbers() {
        assert_eq!(
            super::positional("SET a = COALESCE($2, a) WHERE id = $1 AND b IN ($10)"),
            "SET a = COALESCE(?2, a) WHERE id = ?1 AND b IN (?10)"
        );
    }
}
