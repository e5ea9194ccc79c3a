-- A rollout's events indexed by when they came (twin: migrations/postgres/0015_events_rollout_by_time.sql).
--
-- 0008 made this index (rollout_id, kind, device_id, received_at) so that the reset gate's
-- exposure (each target's first `installed` event of the rollout) is read from the index alone.
-- Ordered by device, every report put its entry at a random place in the rollout's part of the
-- index: a group commit of 100 reports dirtied about 100 more pages, each written whole to the
-- WAL. Ordered by the time the server received the event, new entries land at the end of the
-- rollout's part, a few pages a commit. The index still holds every column the exposure reads
-- (it now groups by device with a sort, on the rare evaluation that has resets to weigh), and a
-- lookup of one device's event goes through the primary key (device_id, event_id), which the
-- store's statements now ask for (`+rollout_id`, server/src/store/resets.rs).
DROP INDEX device_events_rollout;
CREATE INDEX device_events_rollout ON device_events (rollout_id, kind, received_at, device_id);
