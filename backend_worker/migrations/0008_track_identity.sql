-- A track's id outlives its path (docs/architecture.md, "A track's identity"): a file moved,
-- renamed, copied to another disk, retagged and moved, or gone for a while keeps its track's id.
-- Every existing row keeps its id; the new columns are filled by the first rescan after this
-- migration (the walk stats every file anyway; it reads the audio key of each file once).
ALTER TABLE tracks
    -- The file system's identity of the file (st_dev, st_ino) when it was last seen: a file
    -- moved within a file system keeps it.
    ADD COLUMN dev bigint,
    ADD COLUMN ino bigint,
    -- A key over the file's audio data, tags left out (stages/identity.py): a retag or a copy to
    -- another disk keeps it. 128 bits, stored as a uuid (16 bytes: a smaller, faster index than
    -- its 32 hex digits as text). NULL: not computed yet (rows of older releases).
    ADD COLUMN audio_key uuid,
    -- Set when a session found the file gone: the track is kept (with its id, credits, album) and
    -- comes back when its file does; purged after the retention (SONIQUEBAY_MISSING_RETENTION).
    ADD COLUMN missing_since timestamptz;

CREATE INDEX tracks_ino ON tracks (ino);
CREATE INDEX tracks_audio_key ON tracks (audio_key);
CREATE INDEX tracks_missing ON tracks (missing_since) WHERE missing_since IS NOT NULL;

-- What each session did to identities: files recognised at a new path, tracks whose file came
-- back, tracks marked missing, missing tracks purged after the retention. The `removed` column of
-- older sessions stays (tracks deleted at once, as releases before this one did).
ALTER TABLE scan_sessions
    ADD COLUMN moved integer NOT NULL DEFAULT 0,
    ADD COLUMN returned integer NOT NULL DEFAULT 0,
    ADD COLUMN missing integer NOT NULL DEFAULT 0,
    ADD COLUMN purged integer NOT NULL DEFAULT 0,
    -- The library held no track when the session started (a first ingest): none of its new files
    -- can be a track's moved file, so it looks for none (the extract stage saves a query per chunk).
    ADD COLUMN over_empty_library boolean NOT NULL DEFAULT false;

-- The tracks whose file is present: what the SoniqueBay app lists. A migration adding a column to
-- tracks recreates this view (CREATE OR REPLACE VIEW ... the same SELECT), so it keeps every column
-- (tests/integration/test_record_schema.py checks it).
CREATE VIEW present_tracks AS SELECT * FROM tracks WHERE missing_since IS NULL;
