-- The record buffer's payloads (an extract chunk's records as JSON, ~600 KB per 1,000 files) and
-- the units' messages (an extract chunk's paths, ~70 KB) are compressed by PostgreSQL with lz4,
-- not pglz: a payload's insert took 6.5 ms with pglz and 2 ms with lz4, a message's compression
-- 0.6 ms and 0.02 ms; and 2 ms in the server is less than zlib cost the extract workers when they
-- compressed payloads themselves (2.7 ms). A server built without lz4 (Debian's are built with
-- it) keeps pglz.
DO $$
BEGIN
    ALTER TABLE record_buffer ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE scan_units ALTER COLUMN message SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not supported by this server: pglz is kept';
END
$$;
