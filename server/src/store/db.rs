//! The connection: [`Store`] over one sqlx `Any` pool with a bounded acquire timeout
//! ([`PoolSettings`]), the [`Backend`] its URL names (with the SQLite file created on first run
//! and the migrations applied at connect), [`StoreError`], and the clock every row's times come
//! from. Whether the database answers right now is `health.rs`'s to find out ([`DbHealth`]
//! only holds its last answer, so this file needs nothing from there).

pub(crate) use super::error::is_unique_violation;
pub use super::error::StoreError;
use super::sqlite_writer::{SqliteWriter, SQLITE_PRAGMAS};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (WAL mode).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if fota supports it.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// The database behind the server.
#[derive(Debug, Clone)]
pub struct Store {
    /// Writes (and, on PostgreSQL, everything): on SQLite one connection, so writes queue in
    /// order for it instead of for SQLite's write lock.
    pool: AnyPool,
    /// The group commit's connection: the same pool as `pool` (on SQLite, its one
    /// connection, which a batch holds as its turn with the other writes while it runs on
    /// `sqlite_writer`).
    writer: AnyPool,
    /// Reads outside a transaction: on SQLite a pool of its own whose connections refuse to
    /// write (`query_only`), so reads never queue behind writes for a connection; on
    /// PostgreSQL the pool.
    reader: AnyPool,
    backend: Backend,
    health: Arc<DbHealth>,
    group_commit: Arc<super::group_queue::GroupCommit>,
    /// On SQLite, the group commit's own connection, which runs each batch whole on a blocking
    /// thread in the write pool's turn (`sqlite_writer.rs`); on PostgreSQL none.
    sqlite_writer: Option<Arc<SqliteWriter>>,
    /// While any clone of this store lives, SQLite's WAL is checkpointed in the background
    /// (`checkpoint.rs`); the task holds only a weak reference.
    _checkpoints: Arc<()>,
}

/// How the connection pool behaves.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Longest a request waits for a connection before it fails with
    /// [`StoreError::Unavailable`] (503): a few seconds, so an exhausted pool or a database that
    /// just went away answers quickly instead of holding requests open.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

/// The default of [`PoolSettings::acquire_timeout`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Store {
    /// Connect with the default [`PoolSettings`], creating the SQLite file (and its directory)
    /// on first run, and apply migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PoolSettings::default()).await
    }

    /// A new, empty, migrated store in memory, its own for each call (unit tests).
    #[cfg(test)]
    pub(crate) async fn in_memory() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let url = format!(
            "sqlite:file:fota-test-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        Self::connect(&url).await.expect("in-memory SQLite store")
    }

    /// Connect with `settings`, creating the SQLite file (and its directory) on first run, and
    /// apply migrations.
    pub async fn connect_with(url: &str, settings: PoolSettings) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or(StoreError::UnsupportedUrl)?;
        let mut sqlite_writer = None;
        let (pool, writer, reader) = match backend {
            Backend::Sqlite => {
                create_sqlite_parent_dir(url);
                let url = sqlite_url_with_create(url);
                // Every write goes through one connection: SQLite has one write lock, and
                // writers that wait for it in sqlx's queue are woken the moment it is free,
                // in order, where writers on several connections sleep in SQLite's busy handler
                // (up to 100 ms a nap) while the group commit keeps taking the lock.
                let pool = sqlite_pool(&url, 1, settings, &[]).await?;
                // The migrations make the file (and WAL mode) before the read pool opens it.
                sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
                let reader = sqlite_pool(&url, 8, settings, &["PRAGMA query_only = ON"]).await?;
                let path = sqlite_writer_name(&url);
                sqlite_writer = Some(Arc::new(
                    tokio::task::spawn_blocking(move || {
                        SqliteWriter::open(&path, super::checkpoint::MAX_WAL_BYTES)
                    })
                    .await
                    .map_err(|e| StoreError::Unavailable(e.to_string()))??,
                ));
                (pool.clone(), pool, reader)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(settings.acquire_timeout)
                    .connect(url)
                    .await?;
                sqlx::migrate!("../migrations/postgres").run(&pool).await?;
                (pool.clone(), pool.clone(), pool)
            }
        };
        let checkpoints = Arc::new(());
        if backend == Backend::Sqlite {
            tokio::spawn(super::checkpoint::run(
                (*pool.connect_options()).clone(),
                Arc::downgrade(&checkpoints),
            ));
        }
        Ok(Self {
            pool,
            writer,
            reader,
            backend,
            health: Arc::default(),
            group_commit: Arc::default(),
            sqlite_writer,
            _checkpoints: checkpoints,
        })
    }

    /// Connect to a database `fota serve` has already made (see [`Self::has_schema`]), and
    /// apply any newer migrations; [`StoreError::NoDatabase`] if there is none at `url`, rather
    /// than a new, empty one nobody serves from.
    pub async fn connect_existing(url: &str) -> Result<Self, StoreError> {
        if !Self::has_schema(url).await? {
            return Err(StoreError::NoDatabase);
        }
        Self::connect(url).await
    }

    /// Whether `url` holds a fota database (its schema migrated at least once), without creating
    /// anything: a SQLite file that does not exist is `false`, and is not made.
    pub async fn has_schema(url: &str) -> Result<bool, StoreError> {
        use sqlx::Row as _;
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or(StoreError::UnsupportedUrl)?;
        let check = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url);
                if path.is_empty()
                    || path.contains(":memory:")
                    || !std::path::Path::new(path).is_file()
                {
                    return Ok(false);
                }
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'admin_tokens'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = 'admin_tokens'"
            }
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=ro", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(DEFAULT_ACQUIRE_TIMEOUT)
            .connect(&url)
            .await?;
        let found: i64 = sqlx::query(check).fetch_one(&pool).await?.try_get("n")?;
        pool.close().await;
        Ok(found > 0)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool whatever the database's health (the gated one is `pool()`, in `health.rs`).
    pub(crate) fn pool_ref(&self) -> &AnyPool {
        &self.pool
    }

    /// The group commit's connection whatever the database's health.
    pub(crate) fn writer_ref(&self) -> &AnyPool {
        &self.writer
    }

    /// The read pool whatever the database's health.
    pub(crate) fn reader_ref(&self) -> &AnyPool {
        &self.reader
    }

    /// The queue of reports waiting for their group commit.
    pub(crate) fn group_commit(&self) -> &super::group_queue::GroupCommit {
        &self.group_commit
    }

    /// On SQLite, run `f` on the writer's own connection (`sqlite_writer.rs`), on a blocking
    /// thread, while holding the write pool's one connection, so it takes its turn with every
    /// other write; `None` on PostgreSQL (the caller writes through the pool).
    pub(crate) async fn on_sqlite_writer<R, F>(&self, f: F) -> Option<Result<R, StoreError>>
    where
        R: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let sqlite = self.sqlite_writer.clone()?;
        Some(
            async move {
                let turn = self.writer()?.acquire().await?;
                let result = tokio::task::spawn_blocking(move || sqlite.with(f))
                    .await
                    .map_err(|e| {
                        StoreError::Unavailable(format!("the SQLite writer stopped: {e}"))
                    });
                drop(turn);
                result?
            }
            .await,
        )
    }

    /// What the health monitor last saw.
    pub(crate) fn health(&self) -> &DbHealth {
        &self.health
    }

    /// Close every connection (after the last flush at shutdown).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// A SQLite pool of `max` connections: WAL, one fsync per checkpoint, a busy timeout for
/// SQLite's one write lock, and no automatic checkpoints (SQLite would run them inside the commit
/// that crosses the WAL's threshold, in a request; `checkpoint.rs` runs them instead), then
/// `extra` pragmas.
///
/// A connection is not pinged before each use (sqlx's default): a connection to a file cannot
/// go stale as a network one can, and the ping is a round trip to the connection's own thread
/// (a wake-up each way) before every statement, which a profile of the 100,000-device demo
/// showed inside every acquire of the one write connection, the queue every write waits in.
async fn sqlite_pool(
    url: &str,
    max: u32,
    settings: PoolSettings,
    extra: &'static [&'static str],
) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                for pragma in SQLITE_PRAGMAS.iter().chain(extra) {
                    conn.execute(*pragma).await?;
                }
                conn.execute(
                    format!(
                        "PRAGMA journal_size_limit = {}",
                        super::checkpoint::MAX_WAL_BYTES
                    )
                    .as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// `sqlite:path` with `mode=rwc` so the file is created on first run.
fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The file path of a `sqlite:` URL.
fn sqlite_path(url: &str) -> &str {
    let path = sqlite_target(url);
    path.split('?').next().unwrap_or(path)
}

/// A SQLite URL without its scheme: a path with options, or a `file:` URI.
fn sqlite_target(url: &str) -> &str {
    url.trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
}

/// What the SQLite writer opens: a `file:` URI whole (an in-memory database with a shared
/// cache, as tests use), otherwise the file's path.
fn sqlite_writer_name(url: &str) -> String {
    let rest = sqlite_target(url);
    if rest.starts_with("file:") {
        rest.to_string()
    } else {
        sqlite_path(url).to_string()
    }
}

/// Create the directory a SQLite file lives in, so a fresh `--data-dir` just works.
fn create_sqlite_parent_dir(url: &str) {
    let path = sqlite_path(url);
    if path.is_empty() || path.contains(":memory:") {
        return;
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            // A failure shows up as a clear connect error right after.
            let _ = std::fs::create_dir_all(parent);
        }
    }
}

/// The database's health as the monitor last saw it.
#[derive(Debug)]
pub struct DbHealth {
    up: AtomicBool,
}

impl Default for DbHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
        }
    }
}

impl DbHealth {
    /// Whether the last health ping succeeded (true until a monitor says otherwise).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Record a ping's outcome; returns whether that changed anything.
    pub(super) fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel) != up
    }
}

/// A SQLite database in `dir` made by the migrations before `version` (to test what migration
/// `version` does to data already there): its URL, and a pool of one connection to it.
#[cfg(test)]
pub(super) async fn sqlite_migrated_before(
    dir: &tempfile::TempDir,
    version: i64,
) -> (String, AnyPool) {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}/fota.db?mode=rwc", dir.path().display());
    let old = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut before = sqlx::migrate!("../migrations/sqlite");
    before.migrations = std::borrow::Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect(),
    );
    before.run(&old).await.unwrap();
    (url, old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row as _;

    /// Migration 9 rebuilds SQLite's `releases` (a new UNIQUE key): on a database made by the
    /// migrations before it, with releases, their images and a rollout in it, every release
    /// keeps its id and is an application, nothing that references one is lost (no cascade),
    /// the id counter goes on after a deleted release's, foreign keys are on again and hold,
    /// and a bootloader release of an application's version can then be stored.
    #[tokio::test]
    async fn migration_9_keeps_every_release_and_reference_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let (url, old) = sqlite_migrated_before(&dir, 9).await;
        for sql in [
            "INSERT INTO artifacts (sha256, size, created_at) VALUES ('aa', 1, 0), ('bb', 1, 0)",
            "INSERT INTO releases (id, model, version, version_key, security_counter, notes, created_at, created_by) \
             VALUES (1, 'f429', '1.0.0', 1, 0, '', 0, 't'), (2, 'f429', '1.1.0', 2, 1, '', 0, 't'), \
                    (3, 'f429', '1.2.0', 3, 1, '', 0, 't')",
            "DELETE FROM releases WHERE id = 3",
            "INSERT INTO release_images (release_id, slot, sha256, size, key_hash) \
             VALUES (1, 'a', 'aa', 1, 'k'), (1, 'b', 'bb', 1, 'k'), (2, 'a', 'aa', 1, 'k'), (2, 'b', 'bb', 1, 'k')",
            "INSERT INTO rollouts (release_id, kind, state, model, selector_tags, targets, current_stage, \
             current_threshold, stage_started_at, created_at, created_by, updated_at) \
             VALUES (2, 'rollout', 'completed', 'f429', '[]', 0, 0, 0, 0, 0, 't', 0)",
        ] {
            sqlx::query(sql).execute(&old).await.unwrap();
        }
        old.close().await;

        let store = Store::connect(&url).await.unwrap();
        let pool = store.pool_ref();
        let rows = sqlx::query("SELECT id, version, component FROM releases ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        let got: Vec<(i64, String, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            got,
            [
                (1, "1.0.0".into(), "application".into()),
                (2, "1.1.0".into(), "application".into())
            ]
        );
        let count = |sql: &'static str| async move {
            sqlx::query(sql)
                .fetch_one(pool)
                .await
                .unwrap()
                .get::<i64, _>(0)
        };
        assert_eq!(count("SELECT COUNT(*) FROM release_images").await, 4);
        assert_eq!(
            count("SELECT COUNT(*) FROM rollouts WHERE release_id = 2").await,
            1
        );
        assert_eq!(
            count("PRAGMA foreign_keys").await,
            1,
            "foreign keys on again"
        );
        assert!(sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(pool)
            .await
            .unwrap()
            .is_empty());
        // The deleted release's id is not reused.
        sqlx::query(
            "INSERT INTO releases (model, version, version_key, security_counter, notes, created_at, created_by, component) \
             VALUES ('f429', '1.1.0', 2, 1, '', 0, 't', 'bootloader')",
        )
        .execute(pool)
        .await
        .unwrap();
        assert_eq!(count("SELECT MAX(id) FROM releases").await, 4);
        // The same component and version twice is still refused.
        assert!(sqlx::query(
            "INSERT INTO releases (model, version, version_key, security_counter, notes, created_at, created_by, component) \
             VALUES ('f429', '1.1.0', 2, 1, '', 0, 't', 'bootloader')",
        )
        .execute(pool)
        .await
        .is_err());
        // Deleting a release still cascades to its images (the rebuilt table is referenced).
        sqlx::query("DELETE FROM releases WHERE id = 1")
            .execute(pool)
            .await
            .unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM release_images").await, 2);
    }

    #[test]
    fn backend_from_url() {
        assert_eq!(Backend::from_url("sqlite:fota.db"), Some(Backend::Sqlite));
        assert_eq!(
            Backend::from_url("sqlite://x/y.db?mode=rwc"),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("mysql://u@h/db"), None);
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
    }
}
