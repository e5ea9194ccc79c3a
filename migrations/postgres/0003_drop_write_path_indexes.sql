-- Write-path costs that bought little (twin: migrations/sqlite/0003_drop_write_path_indexes.sql).
--
-- 1. Every flush of check-in facts rewrites last_seen_at for thousands of devices; an index on it
--    made each of those updates an index insertion and ruled out HOT updates. The filters that
--    read last_seen_at are cheap scans; the write path is the hot one.
DROP INDEX devices_last_seen;

-- 2. Creating a rollout writes a row per target (100,000 and more). Per-row foreign-key checks
--    against devices and rollouts (about 1 s per 100,000 rows here), and a (rollout, rank)
--    B-tree filled at random positions, cost more than the rows themselves. The rows are only
--    ever written for a rollout created in the same transaction or for a device that just
--    authenticated, and neither devices nor rollouts are deleted, so the code holds the
--    references; only the last stage's completion check reads ranks of eligible devices,
--    through the (rollout, state) index.
ALTER TABLE rollout_devices DROP CONSTRAINT rollout_devices_device_id_fkey;
ALTER TABLE rollout_devices DROP CONSTRAINT rollout_devices_rollout_id_fkey;
DROP INDEX rollout_devices_rank;
