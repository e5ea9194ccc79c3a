-- The events' rollout index only where it is read. SQLite only: PostgreSQL keeps 0008's index
-- (below).
--
-- 0008 made `device_events_rollout (rollout_id, kind, device_id, received_at)` so that the reset
-- gate's exposure (each target's first `installed` event of the rollout, server/src/store/
-- resets.rs) is read from one index. Every event had an entry in it, at a random place in its
-- rollout's part (ordered by device): each report dirtied one more page per event, each written
-- whole to the WAL. On SQLite nothing else reads it: the reset gate's lookup of a device's
-- `confirmed` event goes through the primary key (device_id, event_id), and the fleet summary
-- looks for `rolled_back` events. So two partial indexes take its place:
--
-- * `device_events_installed`: the exposure's, `installed` events only (one event of the
--   four or five a device sends per update), by device within the rollout as before, so the
--   exposure still groups in index order without a sort (`kind` in it too, or SQLite visits
--   the table for it, partial index or not);
-- * `device_events_rolled_back`: the fleet summary's devices that ever reported a rollback
--   (rare events), instead of its scan of every event.
--
-- The statements name the kinds as literals, which SQLite needs to use a partial index;
-- server/tests/plans.rs checks both plans. Measured (docs/BENCHMARKS.md): an index by time
-- instead (every entry appended) wrote as few pages but made the exposure sort 100,000 rows.
--
-- Not on PostgreSQL: there the lookup of a device's `confirmed` event uses 0008's index (one
-- entry, where the primary key's probe visits the heap for every event of the device without
-- a visibility map, and autovacuum may be off).
DROP INDEX device_events_rollout;
CREATE INDEX device_events_installed ON device_events (rollout_id, device_id, received_at, kind)
    WHERE kind = 'installed';
CREATE INDEX device_events_rolled_back ON device_events (device_id) WHERE kind = 'rolled_back';
