-- What a release is about: the application or the stage-1 bootloader (issue 18; twin:
-- migrations/postgres/0009_release_component.sql). A bootloader's versions are a series of their
-- own, so a model's release is unique by (model, component, version): bootloader 1.1.0 and
-- application 1.1.0 may both exist.
--
-- SQLite cannot change a table's UNIQUE constraint in place, so the table is rebuilt (SQLite's
-- documented procedure, https://sqlite.org/lang_altertable.html#otheralter), with foreign keys
-- off: dropping the old table with them on would cascade to release_images (and fail on the
-- rollouts that reference it). The pragma is a no-op inside a transaction, and sqlx 0.8 runs
-- every SQLite migration inside one (it ignores `-- no-transaction` there), so this script
-- commits sqlx's transaction first (nothing of it is written yet), rebuilds in a transaction
-- of its own, and leaves a new one open for sqlx to record the migration in and commit. Should
-- the rebuild fail, sqlx rolls that open transaction back and the server refuses to start.
-- Every release keeps its id, so every reference to a release still holds. A crash between the
-- rebuild's commit and sqlx's leaves the migration unrecorded; it then runs again at the next
-- start, on a table no server has used yet (only applications in it), to the same result.
COMMIT;
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE releases_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    model            TEXT NOT NULL,
    version          TEXT NOT NULL,
    version_key      BIGINT NOT NULL,
    security_counter BIGINT NOT NULL,
    notes            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    component        TEXT NOT NULL DEFAULT 'application'
        CHECK (component IN ('application', 'bootloader')),
    UNIQUE (model, component, version)
);
INSERT INTO releases_new (id, model, version, version_key, security_counter, notes, created_at, created_by)
    SELECT id, model, version, version_key, security_counter, notes, created_at, created_by FROM releases;
-- AUTOINCREMENT never reuses an id, not even a deleted release's: keep the old table's counter.
DELETE FROM sqlite_sequence WHERE name = 'releases_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'releases_new', seq FROM sqlite_sequence WHERE name = 'releases';
DROP TABLE releases;
ALTER TABLE releases_new RENAME TO releases;
COMMIT;
PRAGMA foreign_keys = ON;
BEGIN;
