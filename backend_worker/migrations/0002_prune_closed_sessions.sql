-- Sessions closed before their working rows were pruned at close (see ledger.prune_session):
-- delete those rows once. Running sessions keep theirs.
DELETE FROM session_dirs WHERE session_id IN (SELECT id FROM scan_sessions WHERE status <> 'running');
DELETE FROM session_vanished WHERE session_id IN (SELECT id FROM scan_sessions WHERE status <> 'running');
DELETE FROM cover_plans WHERE session_id IN (SELECT id FROM scan_sessions WHERE status <> 'running');
DELETE FROM record_buffer WHERE session_id IN (SELECT id FROM scan_sessions WHERE status <> 'running');
