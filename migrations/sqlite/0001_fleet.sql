-- fota schema v1 (SQLite): devices, their events, releases, artifacts, admin tokens.
-- Times are Unix milliseconds (BIGINT) so both backends share every query.
-- The PostgreSQL twin is migrations/postgres/0001_fleet.sql; keep them in step.

CREATE TABLE devices (
    id                  TEXT PRIMARY KEY NOT NULL,
    model               TEXT NOT NULL,
    token_hash          BLOB NOT NULL,
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT,
    firmware_version    TEXT,
    -- Sortable form of firmware_version (server/src/store: version_key): range filters in SQL.
    firmware_version_key BIGINT,
    running_slot        TEXT,
    boot_state          TEXT,
    bootloader_version  TEXT,
    rdp_level           TEXT,
    wrp_mask            BIGINT
);
CREATE INDEX devices_model_version ON devices (model, firmware_version_key);
CREATE INDEX devices_last_seen ON devices (last_seen_at);

CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_tag ON device_tags (tag, device_id);

CREATE TABLE device_events (
    device_id   TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    event_id    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    rollout_id  BIGINT,
    version     TEXT,
    reason      TEXT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE INDEX device_events_rollout ON device_events (rollout_id, kind);

CREATE TABLE artifacts (
    sha256     TEXT PRIMARY KEY NOT NULL,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE releases (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    model            TEXT NOT NULL,
    version          TEXT NOT NULL,
    version_key      BIGINT NOT NULL,
    security_counter BIGINT NOT NULL,
    notes            TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    created_by       TEXT NOT NULL,
    UNIQUE (model, version)
);

CREATE TABLE release_images (
    release_id  BIGINT NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    slot        TEXT NOT NULL,
    sha256      TEXT NOT NULL REFERENCES artifacts (sha256),
    size        BIGINT NOT NULL,
    key_hash    TEXT NOT NULL,
    PRIMARY KEY (release_id, slot)
);

CREATE TABLE admin_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
