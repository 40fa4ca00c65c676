"""SoniqueBay ingest worker: `celery -A backend_worker worker -Q scan` finds the app here.

The app is built on first use, so importing a stage module does not read the settings.
"""


def __getattr__(name: str):
    if name in ("app", "celery"):
        from backend_worker.app import app

        return app
    raise AttributeError(f"module 'backend_worker' has no attribute {name!r}")
