-- A revoked device: its token no longer authenticates (HTTP or MQTT reports); the row stays,
-- with its history, for the audit trail.
ALTER TABLE devices ADD COLUMN revoked_at BIGINT;
