-- The reset gate's exposure kept as events arrive, instead of grouped at every evaluation.
-- The PostgreSQL twin is migrations/postgres/0015_rollout_exposure.sql.
--
-- The gate counts a target on the old release until it left it: its first `installed` event of
-- the rollout (server/src/store/resets.rs, `installed_exposure_sql`, which stays the
-- definition). Every evaluation (about once a second while a rollout with background resets is
-- under way) and every status read grouped all of the rollout's `installed` events by device
-- for that: 100,000 rows at the end of a 100,000-device rollout. Here a trigger keeps, per
-- rollout, how many devices have an `installed` event of it (`n`) and the sum of each one's
-- earliest `received_at` (`at_sum`), so the read is one row.
--
-- SQLite has one writer, so the row trigger can ask whether the device had an `installed`
-- event of the rollout before this one (one probe of the partial index
-- `device_events_installed`, migration 0014) and update the counts in place. An event stored
-- with an earlier time than the device's earliest so far (a server clock set back) moves the
-- sum back by the difference, so the kept figure is the definition's exactly.
--
-- Events are only ever inserted (`ON CONFLICT DO NOTHING`: a duplicate fires nothing) or
-- deleted with their device (a cascade, row by row: the delete trigger undoes what the row
-- added). An update of the columns the figure depends on is refused, so no statement can
-- change the events without changing the figure.
--
-- `rollout_exposure_deltas` is PostgreSQL's (concurrent writers append deltas there instead of
-- queueing on one row's lock); here it stays empty, so both read the same statement.
CREATE TABLE rollout_exposure (
    rollout_id BIGINT PRIMARY KEY NOT NULL,
    n          BIGINT NOT NULL,
    at_sum     BIGINT NOT NULL
);
CREATE TABLE rollout_exposure_deltas (
    rollout_id BIGINT NOT NULL,
    n          BIGINT NOT NULL,
    at_sum     BIGINT NOT NULL
);
CREATE INDEX rollout_exposure_deltas_rollout ON rollout_exposure_deltas (rollout_id);

INSERT INTO rollout_exposure (rollout_id, n, at_sum)
SELECT rollout_id, COUNT(*), SUM(t) FROM
    (SELECT rollout_id, MIN(received_at) AS t FROM device_events
     WHERE kind = 'installed' AND rollout_id IS NOT NULL GROUP BY rollout_id, device_id) AS first
GROUP BY rollout_id;

-- `p.t`: the device's earliest `installed` event of the rollout before this one, if any.
CREATE TRIGGER device_events_exposure_insert AFTER INSERT ON device_events
WHEN NEW.kind = 'installed' AND NEW.rollout_id IS NOT NULL
BEGIN
    INSERT INTO rollout_exposure (rollout_id, n, at_sum)
    SELECT NEW.rollout_id,
           CASE WHEN p.t IS NULL THEN 1 ELSE 0 END,
           CASE WHEN p.t IS NULL THEN NEW.received_at
                WHEN NEW.received_at < p.t THEN NEW.received_at - p.t
                ELSE 0 END
    FROM (SELECT MIN(received_at) AS t FROM device_events
          WHERE rollout_id = NEW.rollout_id AND kind = 'installed'
            AND device_id = NEW.device_id AND event_id <> NEW.event_id) AS p
    WHERE true
    ON CONFLICT (rollout_id) DO UPDATE
    SET n = n + excluded.n, at_sum = at_sum + excluded.at_sum;
END;

-- `p.t`: the device's earliest `installed` event of the rollout left after this one's deletion.
CREATE TRIGGER device_events_exposure_delete AFTER DELETE ON device_events
WHEN OLD.kind = 'installed' AND OLD.rollout_id IS NOT NULL
BEGIN
    UPDATE rollout_exposure SET
        n = n - (SELECT CASE WHEN MIN(received_at) IS NULL THEN 1 ELSE 0 END FROM device_events
                 WHERE rollout_id = OLD.rollout_id AND kind = 'installed'
                   AND device_id = OLD.device_id),
        at_sum = at_sum + (SELECT CASE WHEN MIN(received_at) IS NULL THEN -OLD.received_at
                                       WHEN OLD.received_at < MIN(received_at)
                                       THEN MIN(received_at) - OLD.received_at
                                       ELSE 0 END FROM device_events
                           WHERE rollout_id = OLD.rollout_id AND kind = 'installed'
                             AND device_id = OLD.device_id)
    WHERE rollout_id = OLD.rollout_id;
END;

CREATE TRIGGER device_events_exposure_frozen BEFORE UPDATE OF device_id, event_id, kind, rollout_id, received_at
ON device_events
BEGIN
    SELECT RAISE(ABORT, 'device events are not updated (the kept exposure counts them as stored)');
END;
