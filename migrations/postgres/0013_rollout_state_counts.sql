-- The gate's counts kept as devices move, instead of recounted at every evaluation.
-- The SQLite twin is migrations/sqlite/0013_rollout_state_counts.sql, which says why.
--
-- `stage` is -1 for a device not offered in a stage. Devices still `eligible` are not counted.
--
-- PostgreSQL has concurrent writers: a trigger that updated one counter row per (rollout,
-- stage, state) would hold that row's lock until its transaction committed, so every move of
-- a stage's devices would queue behind the previous one's commit. Instead each move appends
-- its deltas (-1 where the device left, +1 where it arrived) to `rollout_state_deltas`, which
-- takes no lock another move waits for; a read sums the counts and the deltas, and the store
-- folds a rollout's deltas into its counts (one statement: DELETE ... RETURNING feeding an
-- upsert) when a read finds many of them. Neither table has a foreign key: rollouts are never
-- deleted, and a delta written by a cascade from a rollout's deletion would fail one.
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

CREATE FUNCTION rollout_devices_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.state <> 'eligible' THEN
        INSERT INTO rollout_state_deltas (rollout_id, stage, state, n, updated_at_sum)
        VALUES (OLD.rollout_id, COALESCE(OLD.stage, -1), OLD.state, -1, -OLD.updated_at);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state <> 'eligible' THEN
        INSERT INTO rollout_state_deltas (rollout_id, stage, state, n, updated_at_sum)
        VALUES (NEW.rollout_id, COALESCE(NEW.stage, -1), NEW.state, 1, NEW.updated_at);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER rollout_devices_count_insert AFTER INSERT ON rollout_devices
FOR EACH ROW WHEN (NEW.state <> 'eligible') EXECUTE FUNCTION rollout_devices_count();

CREATE TRIGGER rollout_devices_count_update AFTER UPDATE OF state, stage, updated_at ON rollout_devices
FOR EACH ROW WHEN ((OLD.state <> 'eligible' OR NEW.state <> 'eligible')
    AND (OLD.state, OLD.stage, OLD.updated_at) IS DISTINCT FROM (NEW.state, NEW.stage, NEW.updated_at))
EXECUTE FUNCTION rollout_devices_count();

CREATE TRIGGER rollout_devices_count_delete AFTER DELETE ON rollout_devices
FOR EACH ROW WHEN (OLD.state <> 'eligible') EXECUTE FUNCTION rollout_devices_count();
