-- What started each session: someone (`soniquebay scan`), soniquebay-scan.timer, or soniquebay watch.
ALTER TABLE scan_sessions
    ADD COLUMN origin text NOT NULL DEFAULT 'manual' CHECK (origin IN ('manual', 'timer', 'watch'));
-- The newest completed session over each root (the exporter's last-scan age).
CREATE INDEX scan_sessions_completed ON scan_sessions (ended_at) WHERE status = 'completed';
