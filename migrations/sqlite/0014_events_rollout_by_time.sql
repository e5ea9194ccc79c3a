-- A rollout's events indexed by when they came. SQLite only: PostgreSQL keeps 0008's order (below).
--
-- 0008 made this index (rollout_id, kind, device_id, received_at) so that the reset gate's
-- exposure (each target's first `installed` event of the rollout) is read from the index alone.
-- Ordered by device, every report put its entry at a random place in the rollout's part of the
-- index: a group commit of 100 reports dirtied about 100 more pages, each written whole to the
-- WAL. Ordered by the time the server received the event, new entries land at the end of the
-- rollout's part, a few pages a commit. The index still holds every column the exposure reads
-- (it now groups by device with a sort, on an evaluation that has resets to weigh), and the
-- reset gate's lookup of one device's `confirmed` event goes through the primary key
-- (device_id, event_id) and the device's few rows (server/tests/plans.rs checks it).
--
-- Not on PostgreSQL: there that lookup through the key visits the heap for each of the
-- device's events (index-only scans need a visibility map that only VACUUM sets, and
-- autovacuum may be off), where 0008's index finds the one entry; with the index by time the
-- 100,000-device demo's reset gate slowed (good rollout 198 / 209 s against 184 s, a
-- crashing release's first crash to halt 1.1 / 1.3 s against 0.35 s: docs/BENCHMARKS.md).
DROP INDEX device_events_rollout;
CREATE INDEX device_events_rollout ON device_events (rollout_id, kind, received_at, device_id);
