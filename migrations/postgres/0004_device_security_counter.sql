-- Anti-rollback (twin: migrations/sqlite/0004_device_security_counter.sql).
--
-- The security counter a device's bootloader holds (the highest SEC_CNT of an image it has
-- confirmed), as its check-ins report it. NULL for devices that never reported one: the server
-- then infers it from the release the device runs. Rollout start, late joiners and every offer
-- skip a device whose counter is above the release's, so no path offers an image its
-- bootloader would refuse.
ALTER TABLE devices ADD COLUMN security_counter BIGINT;
