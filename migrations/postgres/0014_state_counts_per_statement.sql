-- The kept counts' deltas (0013) written once per statement instead of once per row.
-- PostgreSQL only: SQLite's triggers (migrations/sqlite/0013_rollout_state_counts.sql) update
-- the counters in place under its one writer, and SQLite has no statement-level triggers.
--
-- 0013's row triggers ran a PL/pgSQL function per moved device, two single-row INSERTs each: a
-- group commit's move of 64 devices was 128 inserts into rollout_state_deltas. These statement
-- triggers read the statement's transition tables instead and append one delta row per
-- (rollout, stage, state) the statement changed: +1 and the time for each row as it is after,
-- -1 and minus the time for each row as it was before, summed, and groups that sum to nothing
-- (a row updated without moving: same state, stage and time) left out. Devices still
-- `eligible` are not counted, as before. The sums are what 0013's triggers appended, grouped.
--
-- A trigger with transition tables cannot name columns (UPDATE OF ...), so the update trigger
-- runs for every UPDATE of rollout_devices; an update that moves nothing appends nothing.

DROP TRIGGER rollout_devices_count_insert ON rollout_devices;
DROP TRIGGER rollout_devices_count_update ON rollout_devices;
DROP TRIGGER rollout_devices_count_delete ON rollout_devices;
DROP FUNCTION rollout_devices_count();

CREATE FUNCTION rollout_devices_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollout_state_deltas (rollout_id, stage, state, n, updated_at_sum)
    SELECT rollout_id, COALESCE(stage, -1), state, COUNT(*), SUM(updated_at)
    FROM new_rows WHERE state <> 'eligible'
    GROUP BY rollout_id, COALESCE(stage, -1), state;
    RETURN NULL;
END
$$;

CREATE FUNCTION rollout_devices_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollout_state_deltas (rollout_id, stage, state, n, updated_at_sum)
    SELECT rollout_id, stage, state, SUM(n), SUM(at) FROM (
        SELECT rollout_id, COALESCE(stage, -1) AS stage, state, 1 AS n, updated_at AS at
        FROM new_rows WHERE state <> 'eligible'
        UNION ALL
        SELECT rollout_id, COALESCE(stage, -1), state, -1, -updated_at
        FROM old_rows WHERE state <> 'eligible'
    ) AS moves
    GROUP BY rollout_id, stage, state
    HAVING SUM(n) <> 0 OR SUM(at) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION rollout_devices_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rollout_state_deltas (rollout_id, stage, state, n, updated_at_sum)
    SELECT rollout_id, COALESCE(stage, -1), state, -COUNT(*), -SUM(updated_at)
    FROM old_rows WHERE state <> 'eligible'
    GROUP BY rollout_id, COALESCE(stage, -1), state;
    RETURN NULL;
END
$$;

CREATE TRIGGER rollout_devices_count_insert AFTER INSERT ON rollout_devices
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION rollout_devices_count_inserted();

CREATE TRIGGER rollout_devices_count_update AFTER UPDATE ON rollout_devices
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION rollout_devices_count_updated();

CREATE TRIGGER rollout_devices_count_delete AFTER DELETE ON rollout_devices
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION rollout_devices_count_deleted();
