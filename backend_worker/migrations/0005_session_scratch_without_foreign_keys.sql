-- session_dirs (a row per folder a session listed) and session_vanished (a row per file it found
-- gone) lose their foreign key to scan_sessions. Every row's check locked the session's row, which
-- every walk of the session shares (PostgreSQL makes a multixact for each new locker): at 22,000
-- folders that cost more than the rest of an unchanged rescan's writes. A session's rows are
-- deleted when it closes (ledger.prune_session), and sessions themselves are never deleted.
ALTER TABLE session_dirs DROP CONSTRAINT IF EXISTS session_dirs_session_id_fkey;
ALTER TABLE session_vanished DROP CONSTRAINT IF EXISTS session_vanished_session_id_fkey;
