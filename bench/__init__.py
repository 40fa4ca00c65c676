"""Benchmarks of the SoniqueBay ingest pipeline against the physical limits and a peer (beets).

Not tests: ``python -m bench`` (or ``make bench``) prints tables and ratios and writes
``docs/performance.md`` and ``docs/performance.png``. See ``python -m bench --help``.
"""
