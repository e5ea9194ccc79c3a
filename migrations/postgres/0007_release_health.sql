-- Release health beyond the first boot (issue 16).
--
-- 1. Unexpected resets (watchdogs, faults, brown-out) that devices report at their next boot,
--    one row per reset event, with the version that was running: the health gate compares the
--    rate on a rollout's new release with the rate on the old one among the same targets.
--    Expected resets (power-on, pin, update) stay in device_events only.
CREATE TABLE device_resets (
    device_id   TEXT NOT NULL,
    event_id    BIGINT NOT NULL,
    version     TEXT,
    cause       TEXT NOT NULL,
    uptime_s    BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, event_id)
);
CREATE INDEX device_resets_received ON device_resets (received_at);

-- 2. Each stage's limit for them: at most max_reset_ratio_pct / 100 times the baseline's rate
--    (0 turns the check off), judged once the new release has min_device_s device-seconds.
ALTER TABLE rollout_stages ADD COLUMN max_reset_ratio_pct BIGINT NOT NULL DEFAULT 200;
ALTER TABLE rollout_stages ADD COLUMN min_device_s BIGINT NOT NULL DEFAULT 36000;
