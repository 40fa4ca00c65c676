"""SoniqueBay ingest worker: `celery -A backend_worker worker -Q scan` finds the app here.

The app is built on first use, so importing a stage module does not read the settings.
"""

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]), so does
# the wheelhouse builder; a tree run from PYTHONPATH without being installed reports its own.
# A new release: change it here and add its section to CHANGELOG.md.
__version__ = "0.5.0"


def __getattr__(name: str):
    if name in ("app", "celery"):
        from backend_worker.app import app

        return app
    raise AttributeError(f"module 'backend_worker' has no attribute {name!r}")
