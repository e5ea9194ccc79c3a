-- The devices revoked lately, for the revocation feed each replica reads every second
-- (server/src/api/auth.rs, Store::revoked_since): with it, a replica trusts its cached device
-- credentials for minutes instead of asking the database for every device every 30 s, and a
-- device revoked through another replica is refused within about a second. Partial: most
-- devices are never revoked, and `revoked_at >= $1` implies the index's condition.
CREATE INDEX devices_revoked ON devices (revoked_at) WHERE revoked_at IS NOT NULL;
