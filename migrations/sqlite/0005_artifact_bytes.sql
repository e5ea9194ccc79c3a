-- Artifact bytes in the database, so that every replica can serve every image: replicas on
-- separate hosts share the database and nothing else. Images are at most a 256 KB slot; each
-- replica keeps the ones it serves in memory and a copy under its data directory (the CDN
-- mirror's source). Rows from before this migration keep NULL: their bytes are on the disk of
-- the server that took the upload.
ALTER TABLE artifacts ADD COLUMN bytes BLOB;
