-- The events' rollout index only where it is read, on PostgreSQL too (SQLite's twin did this in
-- migrations/sqlite/0014_events_partial_indexes.sql).
--
-- 0008's `device_events_rollout (rollout_id, kind, device_id, received_at)` gave every event an
-- entry, four columns wide, at a random place in its rollout's part (ordered by device): every
-- event a report stores was one more index insertion, one more dirtied page and WAL record. Its
-- reader, the reset gate's exposure, is kept by triggers since migration 0015
-- (`rollout_installed`); what is left to read is
--
-- * the reset gate's lookup of a device's `confirmed` event of a rollout (the first of them:
--   server/src/store/resets.rs, AFTER_CONFIRMATION), one probe per reset on the new release:
--   `device_events_confirmed`, `confirmed` events only (one event of the five or six a device
--   sends per update), by device and rollout, the event id in the key so that the probe's
--   MIN(event_id) is its first entry, answered from the index. The primary key (device_id,
--   event_id) would visit the table for every event of the device (no visibility map without
--   vacuum), which is why 0008's index was kept here;
-- * the fleet summary's devices that ever reported a rollback (rare events):
--   `device_events_rolled_back`, as on SQLite; before, a scan of every event.
--
-- The statements name the kinds as literals: a prepared statement's generic plan can use a
-- partial index only if the statement itself implies its predicate. server/tests/plans.rs checks
-- the probe's plan, custom and generic, with and without statistics.
DROP INDEX device_events_rollout;
CREATE INDEX device_events_confirmed ON device_events (device_id, rollout_id, event_id)
    WHERE kind = 'confirmed';
CREATE INDEX device_events_rolled_back ON device_events (device_id) WHERE kind = 'rolled_back';
