"""Running one unit of the ledger (a row of scan_units): what each task does, as plain functions
of ids. Skip a unit that is done, call the stage's work (backend_worker.stages), record what it did
and register the next units in one transaction, then hand them off through `send`.
backend_worker.tasks wraps them as Celery tasks; a test calls them with a recorder for `send`.

One module per stage, named as the stage (pipeline.STAGES): walk, extract, collect (and the
flush of the buffer), insert, finalize, cover; handoff sends what a session needs next.
"""
