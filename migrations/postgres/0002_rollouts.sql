-- fota schema v2 (PostgreSQL): rollouts, their stages, per-device execution state, the audit log.
-- The SQLite twin is migrations/sqlite/0002_rollouts.sql; keep them in step.

CREATE TABLE rollouts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    release_id        BIGINT NOT NULL REFERENCES releases (id),
    -- 'rollout' or 'rollback' (a roll-forward to an earlier release).
    kind              TEXT NOT NULL,
    -- 'active', 'paused', 'halted', 'aborted', 'completed'.
    state             TEXT NOT NULL,
    -- Target selector: model is the release's; tags (JSON array, all must match) and an optional
    -- running-version range [version_min_key, version_max_key] as sortable keys.
    model             TEXT NOT NULL,
    selector_tags     TEXT NOT NULL,
    version_min_key   BIGINT,
    version_max_key   BIGINT,
    -- Only devices that ran this release id (fleet rollback of a bad release), if set.
    from_release_id   BIGINT,
    targets           BIGINT NOT NULL,
    current_stage     BIGINT NOT NULL,
    -- Devices with rank < current_threshold are in the cohorts so far (rank is 32-bit).
    current_threshold BIGINT NOT NULL,
    stage_started_at  BIGINT NOT NULL,
    -- The stage index an operator approved to advance past (manual stages).
    approved_stage    BIGINT,
    halt_reason       TEXT,
    created_at        BIGINT NOT NULL,
    created_by        TEXT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX rollouts_state ON rollouts (state, model);

CREATE TABLE rollout_stages (
    rollout_id        BIGINT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    idx               BIGINT NOT NULL,
    -- Exactly one of: cumulative share of targets in basis points (100 = 1%), or a cumulative
    -- absolute device count.
    percent_bp        BIGINT,
    device_count      BIGINT,
    bake_s            BIGINT NOT NULL,
    min_sample        BIGINT NOT NULL,
    -- Parts per million (100000 = 10%).
    max_failure_ppm   BIGINT NOT NULL,
    confirm_deadline_s BIGINT NOT NULL,
    auto_advance      BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, idx)
);

CREATE TABLE rollout_devices (
    rollout_id   BIGINT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    rank         BIGINT NOT NULL,
    -- 'eligible', 'offered', 'downloading', 'installed', 'confirmed', 'failed', 'rolled_back',
    -- 'timed_out', 'protection_blocked'.
    state        TEXT NOT NULL,
    -- Stage during which it was offered.
    stage        BIGINT,
    offered_at   BIGINT,
    deadline_at  BIGINT,
    updated_at   BIGINT NOT NULL,
    reason       TEXT,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX rollout_devices_rank ON rollout_devices (rollout_id, rank);
CREATE INDEX rollout_devices_state ON rollout_devices (rollout_id, state, deadline_at);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    -- Token name for operator actions, 'fota' for automatic decisions.
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    rollout_id  BIGINT,
    release_id  BIGINT,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_log_rollout ON audit_log (rollout_id, id);
