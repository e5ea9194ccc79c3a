-- The reset gate's old-release exposure (twin: migrations/sqlite/0008_events_rollout_covering.sql).
--
-- Each evaluation of a rollout's reset gate reads, per target, when it left the old release: the
-- first `installed` event of the rollout (server/src/store/resets.rs). At 100,000 targets that
-- is 100,000 rows of device_events; with the (rollout_id, kind) index each needs a visit to the
-- table for device_id and received_at. The same index with both columns answers it from the
-- index alone; it serves every query the old one did, and it is one index in place of one.
DROP INDEX device_events_rollout;
CREATE INDEX device_events_rollout ON device_events (rollout_id, kind, device_id, received_at);
