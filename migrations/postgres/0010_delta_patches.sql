-- Delta patches (issue 19; twin: migrations/sqlite/0010_delta_patches.sql).
--
-- A patch rebuilds a target image from a base image: both are release images (by content
-- address), generated once per pair on the first offer that can use it, by whichever replica
-- gets there first (the generator is deterministic, so a second replica's insert changes
-- nothing). The patch's bytes are an artifact like the images', served by the same endpoint from
-- any replica.
CREATE TABLE patches (
    base_sha256   TEXT NOT NULL,
    target_sha256 TEXT NOT NULL,
    patch_sha256  TEXT NOT NULL REFERENCES artifacts (sha256),
    size          BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (base_sha256, target_sha256)
);

-- Devices that gave up a rollout's patch for the full image (a `verify_failed` event whose
-- reason says so): the rollout offers them the full image alone from then on.
CREATE TABLE patch_fallbacks (
    rollout_id BIGINT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device_id  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
