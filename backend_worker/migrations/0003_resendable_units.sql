-- At-least-once delivery owned by the ledger (see backend_worker.delivery): every unit keeps the
-- message that runs it and the id of the task last sent for it, so a unit whose message was lost
-- (a worker killed, a broker restart, a host gone) can be sent again.
ALTER TABLE scan_units
    ADD COLUMN task_id       text,
    ADD COLUMN message       jsonb,
    ADD COLUMN sent_at       timestamptz,
    -- When the reconciler first found its task neither queued nor held by a live worker.
    ADD COLUMN suspect_since timestamptz,
    ADD COLUMN resent        integer NOT NULL DEFAULT 0;

-- When and how often the reconciler sent a running session its next step again (a flush or the
-- final step, which are not units) because nothing was pending and nothing moved.
ALTER TABLE scan_sessions
    ADD COLUMN nudged_at timestamptz,
    ADD COLUMN nudges    integer NOT NULL DEFAULT 0;

-- Each worker process says every few seconds that it lives and which tasks it holds (waiting,
-- running or scheduled for a retry): a unit whose task no live worker holds and no queue holds
-- is lost.
CREATE TABLE worker_heartbeats (
    instance    text PRIMARY KEY,
    worker      text NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    held        text[] NOT NULL DEFAULT '{}'
);

-- One row: when the last reconciliation pass ran (whichever worker ran it).
CREATE TABLE delivery_passes (
    id          integer PRIMARY KEY CHECK (id = 1),
    last_pass   timestamptz NOT NULL
);
INSERT INTO delivery_passes VALUES (1, '-infinity');

CREATE INDEX scan_units_suspect ON scan_units (session_id) WHERE suspect_since IS NOT NULL;
CREATE INDEX scan_units_resent ON scan_units (stage) WHERE resent > 0;
