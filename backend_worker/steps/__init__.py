"""What each task does, as plain functions of ids: check the ledger, call the stage's work
(backend_worker.stages), record what it did, and hand the next units off through `send`.
backend_worker.tasks wraps them as Celery tasks; a test calls them with a recorder for `send`.

One module per stage: walk, extract, batch (collect and flush), insert, finalize, covers; handoff
sends what a session needs next.
"""
