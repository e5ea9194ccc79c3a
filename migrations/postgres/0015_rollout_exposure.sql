-- The reset gate's exposure kept as events arrive, instead of grouped at every evaluation.
-- The SQLite twin is migrations/sqlite/0015_rollout_exposure.sql, which says why.
--
-- Per rollout: how many devices have an `installed` event of it (`n`) and the sum of each
-- one's earliest `received_at` (`at_sum`), the figure `installed_exposure_sql` (server/src/
-- store/resets.rs) defines. That query grouped every `installed` event of the rollout at each
-- evaluation; without autovacuum (no visibility map) each of its index entries cost a heap
-- visit: 144 ms a call at the end of a 100,000-device rollout, the top statement of the demo.
--
-- PostgreSQL has concurrent writers, so "had this device an `installed` event of the rollout
-- before?" cannot be answered by looking at the events: two transactions storing a device's
-- two `installed` events would each see none of the other's and count the device twice. So
-- `rollout_installed` keeps each device's earliest time under a primary key, and one upsert
-- decides: a concurrent insert of the same key waits for the other transaction and then finds
-- its row. The upsert's RETURNING tells what changed: a new row (`was` NULL) adds the device
-- and its time; an earlier time than the one kept (a server clock set back) replaces it and
-- `was` holds the old one, for the difference. Only the arbiter index is used: no plan to
-- choose, so none that could go wrong without statistics.
--
-- The per-rollout figure is appended to `rollout_exposure_deltas` (one row per rollout a
-- statement changed), which takes no lock another writer waits for, and folded into
-- `rollout_exposure` by the store when a read finds many, as 0013-0014 do for the state counts.
--
-- Events are only ever inserted (`ON CONFLICT DO NOTHING`: a duplicate is not in the
-- transition table) or deleted with their device (a cascade): the delete trigger recomputes the
-- device's earliest time from what is left. An update of the columns the figure depends on is
-- refused, so no statement changes the events without changing the figure.
CREATE TABLE rollout_installed (
    rollout_id BIGINT NOT NULL,
    device_id  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    was        BIGINT,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE rollout_exposure (
    rollout_id BIGINT PRIMARY KEY,
    n          BIGINT NOT NULL,
    at_sum     BIGINT NOT NULL
);
CREATE TABLE rollout_exposure_deltas (
    rollout_id BIGINT NOT NULL,
    n          BIGINT NOT NULL,
    at_sum     BIGINT NOT NULL
);
CREATE INDEX rollout_exposure_deltas_rollout ON rollout_exposure_deltas (rollout_id);

INSERT INTO rollout_installed (rollout_id, device_id, at)
SELECT rollout_id, device_id, MIN(received_at) FROM device_events
WHERE kind = 'installed' AND rollout_id IS NOT NULL GROUP BY rollout_id, device_id;
INSERT INTO rollout_exposure (rollout_id, n, at_sum)
SELECT rollout_id, COUNT(*), SUM(at) FROM rollout_installed GROUP BY rollout_id;

CREATE FUNCTION device_events_exposure_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH first AS (
        SELECT rollout_id, device_id, MIN(received_at) AS t FROM new_rows
        WHERE kind = 'installed' AND rollout_id IS NOT NULL
        GROUP BY rollout_id, device_id
    ), kept AS (
        INSERT INTO rollout_installed (rollout_id, device_id, at)
        SELECT rollout_id, device_id, t FROM first ORDER BY rollout_id, device_id
        ON CONFLICT (rollout_id, device_id) DO UPDATE
        SET at = excluded.at, was = rollout_installed.at
        WHERE excluded.at < rollout_installed.at
        RETURNING rollout_id, at, was
    )
    INSERT INTO rollout_exposure_deltas (rollout_id, n, at_sum)
    SELECT rollout_id, COUNT(*) FILTER (WHERE was IS NULL), SUM(at - COALESCE(was, 0))
    FROM kept GROUP BY rollout_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION device_events_exposure_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH touched AS (
        SELECT g.rollout_id, g.device_id,
               (SELECT MIN(e.received_at) FROM device_events e
                WHERE e.rollout_id = g.rollout_id AND e.kind = 'installed'
                  AND e.device_id = g.device_id) AS t
        FROM (SELECT DISTINCT rollout_id, device_id FROM old_rows
              WHERE kind = 'installed' AND rollout_id IS NOT NULL) AS g
    ), gone AS (
        DELETE FROM rollout_installed r USING touched
        WHERE r.rollout_id = touched.rollout_id AND r.device_id = touched.device_id
          AND touched.t IS NULL
        RETURNING r.rollout_id, -1 AS n, -r.at AS d
    ), moved AS (
        INSERT INTO rollout_installed (rollout_id, device_id, at)
        SELECT rollout_id, device_id, t FROM touched WHERE t IS NOT NULL
        ORDER BY rollout_id, device_id
        ON CONFLICT (rollout_id, device_id) DO UPDATE
        SET at = excluded.at, was = rollout_installed.at
        WHERE excluded.at <> rollout_installed.at
        RETURNING rollout_id, CASE WHEN was IS NULL THEN 1 ELSE 0 END AS n,
                  at - COALESCE(was, 0) AS d
    )
    INSERT INTO rollout_exposure_deltas (rollout_id, n, at_sum)
    SELECT rollout_id, SUM(n), SUM(d) FROM (SELECT * FROM gone UNION ALL SELECT * FROM moved) AS c
    GROUP BY rollout_id;
    RETURN NULL;
END
$$;

CREATE FUNCTION device_events_exposure_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'device events are not updated (the kept exposure counts them as stored)';
END
$$;

CREATE TRIGGER device_events_exposure_insert AFTER INSERT ON device_events
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION device_events_exposure_inserted();

CREATE TRIGGER device_events_exposure_delete AFTER DELETE ON device_events
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION device_events_exposure_deleted();

CREATE TRIGGER device_events_exposure_frozen
BEFORE UPDATE OF device_id, event_id, kind, rollout_id, received_at ON device_events
FOR EACH ROW EXECUTE FUNCTION device_events_exposure_frozen();
