-- A rollout's evaluations from one index (twin: migrations/sqlite/0011_evaluation_covering.sql).
--
-- Every evaluation of an active rollout (at least once a second while it runs, and at once on a
-- failure, a timeout or a reset) counts its targets by stage and state and sums when the
-- confirmed and installed ones last moved (server/src/store/rollout_devices.rs, resets.rs).
-- With stage and updated_at outside the (rollout, state, deadline) index, each target these
-- read was a visit to the table: at 100,000 targets on SQLite 128 ms for the counts and 58 ms
-- for a sum, about a third of the server's database time during the 100,000-device demo
-- (docs/BENCHMARKS.md). The same index with both columns appended answers them alone and still
-- serves the deadline sweep's range on deadline_at; a state move rewrote its entry already.
--
-- Not device_id as well: with it the index covers `rollout_id = ? AND device_id IN (...)`, and
-- SQLite then serves the group commit's many-device move by scanning the rollout's whole part of
-- this index rather than by the primary key (seen: the 100,000-device demo slowed to a crawl).
-- server/tests/plans.rs checks SQLite's plans of the hot statements for this.
DROP INDEX rollout_devices_state;
CREATE INDEX rollout_devices_state ON rollout_devices (rollout_id, state, deadline_at, stage, updated_at);
