-- Every artist a file names, in the role it names them (issue 29, docs/architecture.md "Credits"):
-- the track's artists ("A feat. B" is two), composers, lyricists, conductors, remixers, arrangers,
-- producers, engineers, mixers, DJ-mixers, performers (with their instrument), and the album's
-- artists. Artists stay keyed as before (name + MusicBrainz id); the display strings as tagged
-- (tracks.artist, tracks.albumartist, tracks.composer) and tracks.artist_id / albums.albumartist_id
-- stay as they are.
--
-- A role is a label of credit_role, one per credit field of stages/fields.py (a test compares
-- both): adding a role is a field and a migration `ALTER TYPE credit_role ADD VALUE '...'`.
CREATE TYPE credit_role AS ENUM (
    'artist', 'composer', 'lyricist', 'conductor', 'remixer', 'arranger', 'producer', 'engineer',
    'mixer', 'djmixer', 'performer'
);

-- No foreign keys, as tracks and track_genres (migration 0006): the library lock
-- (stages.insert.LIBRARY_LOCK) keeps them right, and the triggers below remove a removed track's
-- or album's credits with it.
CREATE TABLE track_credits (
    track_id    bigint NOT NULL,
    role        credit_role NOT NULL,
    position    smallint NOT NULL,
    artist_id   bigint NOT NULL,
    -- What the tag says beyond the role: a performer's instrument ('' when it says nothing).
    subrole     text NOT NULL DEFAULT '',
    PRIMARY KEY (track_id, role, position)
);
CREATE INDEX track_credits_artist ON track_credits (artist_id, role);

CREATE TABLE album_credits (
    album_id    bigint NOT NULL,
    position    smallint NOT NULL,
    artist_id   bigint NOT NULL,
    PRIMARY KEY (album_id, position)
);
CREATE INDEX album_credits_artist ON album_credits (artist_id);

-- Credits go with their track or album, and a credited artist is never an orphan, whichever
-- release deletes: during a rolling upgrade the workers of the release before (which know
-- nothing of credits) still remove tracks, albums and orphaned artists.
-- Arguments: the credits table, its column naming the removed row.
CREATE FUNCTION drop_credits_of_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I c USING removed WHERE c.%I = removed.id', TG_ARGV[0], TG_ARGV[1]);
    RETURN NULL;
END $$;
CREATE TRIGGER tracks_drop_credits AFTER DELETE ON tracks REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION drop_credits_of_removed('track_credits', 'track_id');
CREATE TRIGGER albums_drop_credits AFTER DELETE ON albums REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION drop_credits_of_removed('album_credits', 'album_id');

CREATE FUNCTION keep_credited_artists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM track_credits WHERE artist_id = OLD.id)
        OR EXISTS (SELECT 1 FROM album_credits WHERE artist_id = OLD.id) THEN
        RETURN NULL;  -- still credited: not deleted
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER artists_keep_credited BEFORE DELETE ON artists
    FOR EACH ROW EXECUTE FUNCTION keep_credited_artists();

-- Which record layout wrote the row: 1 for rows written before this migration (and by workers of
-- an older release still running during a rolling upgrade), 2 since. The scan reads a file again
-- when its row is older than the layout the workers write (library.known_files), so the first scan
-- after this upgrade fills every track's credits; ids, paths and everything else stay.
ALTER TABLE tracks ADD COLUMN record_version smallint NOT NULL DEFAULT 1;

-- Until then each existing track credits its artist and each album its album artist, as before.
INSERT INTO track_credits (track_id, role, position, artist_id)
SELECT id, 'artist', 0, artist_id FROM tracks;
INSERT INTO album_credits (album_id, position, artist_id)
SELECT id, 0, albumartist_id FROM albums;

-- The app's view of the present tracks (migration 0008) takes the new column.
CREATE OR REPLACE VIEW present_tracks AS SELECT * FROM tracks WHERE missing_since IS NULL;
