-- tracks (to artists and albums) and track_genres (to tracks and genres) lose their foreign keys.
-- Their per-row checks were 737 of the 1,279 ms a COPY of 20,000 tracks and their genres took, the
-- largest part of PostgreSQL's work in a full ingest. The references are kept whole by the code
-- that writes these tables: an insert batch holds the library lock shared and the clean-up that
-- removes tracks, albums, artists and genres holds it exclusively (stages.insert.LIBRARY_LOCK), and
-- a removed track's genres are deleted with it (stages.insert.remove_tracks).
ALTER TABLE tracks DROP CONSTRAINT IF EXISTS tracks_artist_id_fkey;
ALTER TABLE tracks DROP CONSTRAINT IF EXISTS tracks_album_id_fkey;
ALTER TABLE track_genres DROP CONSTRAINT IF EXISTS track_genres_track_id_fkey;
ALTER TABLE track_genres DROP CONSTRAINT IF EXISTS track_genres_genre_id_fkey;
