//! [`StoreError`]: why a store operation failed, and which database errors mean "the database
//! is unavailable" (answered with 503) rather than a fault.

/// A storage failure. Constraint violations the API turns into 4xx have their own variants; a
/// database that cannot be reached is `Unavailable` (the API answers 503 and asks the client to
/// retry); everything else is `Database` and becomes a logged 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not `sqlite:` or `postgres://`.
    #[error("unsupported database URL (expected sqlite:PATH or postgres://...)")]
    UnsupportedUrl,
    /// A row with the same key exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// The row is referenced and cannot change.
    #[error("{0}")]
    InUse(String),
    /// The database cannot be reached now: it is down or restarting, the connection broke, or
    /// no connection came free within the pool's acquire timeout. Nothing was changed that the
    /// caller was told about; retrying later is safe.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database said no.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// SQLite said no, on the report writer's own connection (`sqlite_writer.rs`).
    #[error("database error: {0}")]
    Sqlite(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not decode (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// [`Store::connect_existing`]: there is no fota database at the URL (no SQLite file, or no
    /// fota schema in it).
    #[error("no fota database there (fota serve makes it on its first start)")]
    NoDatabase,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e)
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        // BUSY and LOCKED (after the busy timeout) mean "not now", as on sqlx's connections.
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if busy {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Sqlite(e.to_string())
        }
    }
}

/// Whether an error means the database cannot be reached (as opposed to a statement it
/// refused): pool timeouts, broken connections, and the server saying it is shutting down,
/// starting up or out of connections. SQLite's "busy" after its busy timeout counts too.
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL SQLSTATE: class 08 connection exceptions, 57P01-57P03 admin/crash
            // shutdown and "cannot connect now", 53300 too many connections.
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                // SQLite result codes: BUSY (5) and LOCKED (6) with their extended forms.
                || matches!(&*code, "5" | "6" | "261" | "262" | "517")
        }),
        _ => false,
    }
}

/// Whether a database error is a unique-key violation (both backends report it as such).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
