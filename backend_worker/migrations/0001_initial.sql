-- Library: artists, albums, tracks, genres.
CREATE TABLE artists (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    -- '' when the files carry no MusicBrainz id: same-named artists without ids share a row.
    mb_key      text NOT NULL DEFAULT '',
    UNIQUE (name, mb_key)
);

CREATE TABLE albums (
    id              bigserial PRIMARY KEY,
    title           text NOT NULL,
    albumartist_id  bigint NOT NULL REFERENCES artists (id),
    mb_key          text NOT NULL DEFAULT '',
    mb_albumid      uuid,
    mb_releasegroupid uuid,
    year            integer,
    comp            boolean NOT NULL DEFAULT false,
    cover_hash      text,
    UNIQUE (albumartist_id, title, mb_key)
);

CREATE TABLE genres (
    id      bigserial PRIMARY KEY,
    name    text NOT NULL UNIQUE
);

CREATE TABLE tracks (
    id              bigserial PRIMARY KEY,
    path            text NOT NULL UNIQUE,
    dir             text NOT NULL,
    size            bigint NOT NULL,
    mtime_ns        bigint NOT NULL,
    artist_id       bigint NOT NULL REFERENCES artists (id),
    album_id        bigint NOT NULL REFERENCES albums (id),
    title           text,
    artist          text,
    album           text,
    albumartist     text,
    composer        text,
    year            integer,
    track           integer,
    tracktotal      integer,
    disc            integer,
    disctotal       integer,
    comp            boolean NOT NULL DEFAULT false,
    bpm             integer,
    initial_key     text,
    length          double precision,
    bitrate         integer,
    samplerate      integer,
    bitdepth        integer,
    channels        integer,
    format          text,
    -- Not unique: two files can hold the same recording.
    mb_trackid      uuid,
    mb_albumid      uuid,
    mb_artistid     uuid,
    mb_albumartistid uuid,
    mb_releasegroupid uuid,
    rg_track_gain   double precision,
    rg_track_peak   double precision,
    rg_album_gain   double precision,
    rg_album_peak   double precision,
    has_cover       boolean NOT NULL DEFAULT false,
    session_id      uuid,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracks_dir ON tracks (dir);
CREATE INDEX tracks_album ON tracks (album_id);
CREATE INDEX tracks_artist ON tracks (artist_id);
CREATE INDEX tracks_session ON tracks (session_id);
CREATE INDEX tracks_mb_trackid ON tracks (mb_trackid);

CREATE TABLE track_genres (
    track_id    bigint NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
    genre_id    bigint NOT NULL REFERENCES genres (id),
    position    smallint NOT NULL,
    PRIMARY KEY (track_id, position)
);
CREATE INDEX track_genres_genre ON track_genres (genre_id);

-- Files that could not be read (or listed): kept with their stat so an unchanged broken file
-- is not retried on every scan.
CREATE TABLE file_errors (
    path        text PRIMARY KEY,
    dir         text NOT NULL,
    size        bigint,
    mtime_ns    bigint,
    stage       text NOT NULL,
    reason      text NOT NULL,
    session_id  uuid,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_errors_dir ON file_errors (dir);

-- Scan sessions and their work ledger.
CREATE TABLE scan_sessions (
    id          uuid PRIMARY KEY,
    roots       text[] NOT NULL,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed')),
    phase       text NOT NULL DEFAULT 'scanning' CHECK (phase IN ('scanning', 'finishing', 'closed')),
    discovered  integer NOT NULL DEFAULT 0,
    unchanged   integer NOT NULL DEFAULT 0,
    extracted   integer NOT NULL DEFAULT 0,
    inserted    integer NOT NULL DEFAULT 0,
    errors      integer NOT NULL DEFAULT 0,
    removed     integer NOT NULL DEFAULT 0,
    message     text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz
);
CREATE INDEX scan_sessions_running ON scan_sessions (started_at) WHERE status = 'running';

-- One row per unit of work a task owns (a walk of some folders, an extract chunk, an insert
-- batch, a cover chunk). Units are created pending before their message is sent and marked done
-- exactly once with their counts, so a redelivered task cannot count twice and the session knows
-- it is finished when nothing is pending.
CREATE TABLE scan_units (
    session_id  uuid NOT NULL REFERENCES scan_sessions (id) ON DELETE CASCADE,
    unit_id     text NOT NULL,
    stage       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent        boolean NOT NULL DEFAULT false,
    done_at     timestamptz,
    counts      jsonb,
    PRIMARY KEY (session_id, unit_id)
);
CREATE INDEX scan_units_pending ON scan_units (session_id, stage) WHERE done_at IS NULL;

-- Extracted records waiting to be grouped into an insert batch. The row outlives its payload
-- (payload set to NULL once inserted) so a redelivered extract result is not buffered twice.
CREATE TABLE record_buffer (
    session_id  uuid NOT NULL REFERENCES scan_sessions (id) ON DELETE CASCADE,
    unit_id     text NOT NULL,
    sort_key    text NOT NULL,
    rows        integer NOT NULL,
    batch_id    text,
    payload     bytea,
    PRIMARY KEY (session_id, unit_id)
);
CREATE INDEX record_buffer_unbatched ON record_buffer (session_id, sort_key) WHERE batch_id IS NULL;

-- Folders a session listed; tracks in folders it did not reach (vanished) are removed at the end.
CREATE TABLE session_dirs (
    session_id  uuid NOT NULL REFERENCES scan_sessions (id) ON DELETE CASCADE,
    dir         text NOT NULL,
    listed      boolean NOT NULL,
    PRIMARY KEY (session_id, dir)
);

-- Files known to the library that a session's walk did not find in a folder it listed.
CREATE TABLE session_vanished (
    session_id  uuid NOT NULL REFERENCES scan_sessions (id) ON DELETE CASCADE,
    path        text NOT NULL,
    PRIMARY KEY (session_id, path)
);

-- Albums each cover unit looks after (planned when the scan part of a session ends).
CREATE TABLE cover_plans (
    session_id  uuid NOT NULL REFERENCES scan_sessions (id) ON DELETE CASCADE,
    unit_id     text NOT NULL,
    album_ids   text NOT NULL,
    PRIMARY KEY (session_id, unit_id)
);
