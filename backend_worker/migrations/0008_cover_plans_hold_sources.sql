-- A cover unit's plan holds where each of its albums' cover is looked for (a folder of the album's
-- tracks, a track with an embedded picture), found by the final step in one pass over the
-- session's tracks. Each cover unit looked them up itself: ten queries of ~40 ms per 200,000
-- files, at the end of the session, when nothing else runs. A plan without them (made before
-- this migration) is still looked up by its unit.
ALTER TABLE cover_plans ADD COLUMN IF NOT EXISTS sources jsonb;
