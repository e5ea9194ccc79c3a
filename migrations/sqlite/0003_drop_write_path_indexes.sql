-- Write-path costs that bought little (twin: migrations/postgres/0003_drop_write_path_indexes.sql).
--
-- 1. Every flush of check-in facts rewrites last_seen_at for thousands of devices; an index on it
--    made each of those updates an index insertion. The filters that read last_seen_at are
--    cheap scans; the write path is the hot one.
DROP INDEX devices_last_seen;

-- 2. Creating a rollout writes a row per target (100,000 and more). Per-row foreign-key checks
--    against devices and rollouts, and a (rollout, rank) B-tree filled at random positions,
--    cost more than the rows themselves. The rows are only ever written for a rollout created
--    in the same transaction or for a device that just authenticated, and neither devices nor
--    rollouts are deleted, so the code holds the references; only the last stage's completion
--    check reads ranks of eligible devices, through the (rollout, state) index.
--    SQLite cannot drop a foreign key: rebuild the table.
CREATE TABLE rollout_devices_new (
    rollout_id   BIGINT NOT NULL,
    device_id    TEXT NOT NULL,
    rank         BIGINT NOT NULL,
    state        TEXT NOT NULL,
    stage        BIGINT,
    offered_at   BIGINT,
    deadline_at  BIGINT,
    updated_at   BIGINT NOT NULL,
    reason       TEXT,
    PRIMARY KEY (rollout_id, device_id)
);
INSERT INTO rollout_devices_new
    SELECT rollout_id, device_id, rank, state, stage, offered_at, deadline_at, updated_at, reason
    FROM rollout_devices;
DROP TABLE rollout_devices;
ALTER TABLE rollout_devices_new RENAME TO rollout_devices;
CREATE INDEX rollout_devices_state ON rollout_devices (rollout_id, state, deadline_at);
