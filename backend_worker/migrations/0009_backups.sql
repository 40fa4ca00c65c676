-- What the database host's backup unit (soniquebay-backup.service, roles/postgresql) did: one row per
-- run, good or failed, written by the backup itself once its dump is complete (so a dump holds the
-- rows of the runs before it). The exporter turns them into the last good backup's age and the time
-- of the last failure (alerts SoniqueBayBackupTooOld, SoniqueBayBackupFailed).
CREATE TABLE backups (
    id          bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    ok          boolean NOT NULL,
    file        text,
    bytes       bigint,
    error       text
);
CREATE INDEX backups_finished ON backups (ok, finished_at);
