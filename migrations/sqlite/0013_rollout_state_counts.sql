-- The gate's counts kept as devices move, instead of recounted at every evaluation.
-- The PostgreSQL twin is migrations/postgres/0013_rollout_state_counts.sql.
--
-- A rollout is evaluated at least once a second, and each evaluation counted the rollout's
-- devices by stage and state and summed when the confirmed ones moved: a pass over every
-- target in play (tens of milliseconds at 100,000 targets, a quarter of the database's time
-- in a 100,000-device rollout). Here triggers keep those counts per (rollout, stage, state),
-- so an evaluation reads a few rows whatever the fleet's size. Every move of a device is an
-- INSERT, UPDATE or DELETE of `rollout_devices`, so no statement can move a device without
-- moving its count.
--
-- `stage` is -1 for a device not offered in a stage. Devices still `eligible` are not counted
-- here (they are the targets minus everything counted). `updated_at_sum` is the sum of the
-- devices' `updated_at` (the release-health gate's exposure: confirmed device-seconds).
--
-- SQLite has one writer, so the triggers update the counts in place.
-- `rollout_state_deltas` is PostgreSQL's (concurrent writers append deltas there instead of
-- queueing on one counter row); here it stays empty, so both read the same statement.
CREATE TABLE rollout_state_counts (
    rollout_id     BIGINT NOT NULL,
    stage          BIGINT NOT NULL,
    state          TEXT NOT NULL,
    n              BIGINT NOT NULL,
    updated_at_sum BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, stage, state)
);
CREATE TABLE rollout_state_deltas (
    rollout_id     BIGINT NOT NULL,
    stage          BIGINT NOT NULL,
    state          TEXT NOT NULL,
    n              BIGINT NOT NULL,
    updated_at_sum BIGINT NOT NULL
);
CREATE INDEX rollout_state_deltas_rollout ON rollout_state_deltas (rollout_id);

INSERT INTO rollout_state_counts (rollout_id, stage, state, n, updated_at_sum)
SELECT rollout_id, COALESCE(stage, -1), state, COUNT(*), SUM(updated_at)
FROM rollout_devices WHERE state <> 'eligible'
GROUP BY rollout_id, COALESCE(stage, -1), state;

CREATE TRIGGER rollout_devices_count_insert AFTER INSERT ON rollout_devices
WHEN NEW.state <> 'eligible'
BEGIN
    INSERT INTO rollout_state_counts (rollout_id, stage, state, n, updated_at_sum)
    VALUES (NEW.rollout_id, COALESCE(NEW.stage, -1), NEW.state, 1, NEW.updated_at)
    ON CONFLICT (rollout_id, stage, state)
    DO UPDATE SET n = n + 1, updated_at_sum = updated_at_sum + excluded.updated_at_sum;
END;

CREATE TRIGGER rollout_devices_count_leave AFTER UPDATE OF state, stage, updated_at ON rollout_devices
WHEN OLD.state <> 'eligible'
    AND (OLD.state IS NOT NEW.state OR OLD.stage IS NOT NEW.stage
         OR OLD.updated_at IS NOT NEW.updated_at)
BEGIN
    UPDATE rollout_state_counts SET n = n - 1, updated_at_sum = updated_at_sum - OLD.updated_at
    WHERE rollout_id = OLD.rollout_id AND stage = COALESCE(OLD.stage, -1) AND state = OLD.state;
END;

CREATE TRIGGER rollout_devices_count_enter AFTER UPDATE OF state, stage, updated_at ON rollout_devices
WHEN NEW.state <> 'eligible'
    AND (OLD.state IS NOT NEW.state OR OLD.stage IS NOT NEW.stage
         OR OLD.updated_at IS NOT NEW.updated_at)
BEGIN
    INSERT INTO rollout_state_counts (rollout_id, stage, state, n, updated_at_sum)
    VALUES (NEW.rollout_id, COALESCE(NEW.stage, -1), NEW.state, 1, NEW.updated_at)
    ON CONFLICT (rollout_id, stage, state)
    DO UPDATE SET n = n + 1, updated_at_sum = updated_at_sum + excluded.updated_at_sum;
END;

CREATE TRIGGER rollout_devices_count_delete AFTER DELETE ON rollout_devices
WHEN OLD.state <> 'eligible'
BEGIN
    UPDATE rollout_state_counts SET n = n - 1, updated_at_sum = updated_at_sum - OLD.updated_at
    WHERE rollout_id = OLD.rollout_id AND stage = COALESCE(OLD.stage, -1) AND state = OLD.state;
END;
