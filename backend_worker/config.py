"""Settings, read once from the environment (the deployment writes them to one env file)."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

DEFAULT_TIME_LIMITS = {"scan": 600, "extract": 600, "batch": 300, "insert": 600, "deferred": 900}


class ConfigError(Exception):
    """A setting has a value we cannot use; the message names it."""


def url_without_credentials(url: str) -> str:
    """scheme://host:port/db of a URL, without credentials: what logs and errors may show."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or 'localhost'}{port}{parts.path}"


def broker_url() -> str:
    """SONIQUEBAY_BROKER_URL, logged in as SONIQUEBAY_BROKER_USER with SONIQUEBAY_BROKER_PASSWORD when
    set: each service has its own broker user (the workers' env file names theirs, Flower's and the
    exporter's env files override it), all on the one URL."""
    url = os.environ.get("SONIQUEBAY_BROKER_URL", "redis://127.0.0.1:6379/0")
    user = os.environ.get("SONIQUEBAY_BROKER_USER", "")
    if not user:
        return url
    parts = urlsplit(url)
    address = parts.netloc.rpartition("@")[2]
    password = quote(os.environ.get("SONIQUEBAY_BROKER_PASSWORD", ""), safe="")
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{password}@{address}"))


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds of a duration: a whole number with a unit (30d, 12h, 90m, 45s), or of seconds."""
    text = text.strip()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS else (text, "s")
    if not number.isdigit():
        raise ValueError("not a duration (a whole number and s, m, h or d: 30d, 12h)")
    return int(number) * _DURATION_UNITS[unit]


def _duration(name: str, default: str) -> int:
    raw = os.environ.get(name) or default
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is {exc}") from None


# How one tagged name holding several is split ("A feat. B"), and names never split (the role's
# backend_worker_artist_separators and backend_worker_artist_names_kept: the same defaults).
DEFAULT_ARTIST_SEPARATORS = (" feat. ", " ft. ", "; ", " / ")
DEFAULT_ARTIST_NAMES_KEPT = ("AC/DC",)


def _string_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{name}={raw!r} is not a JSON list of non-empty strings")
    return tuple(value)


def artist_name_settings() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(separators, names kept whole): SONIQUEBAY_ARTIST_SEPARATORS, SONIQUEBAY_ARTIST_NAMES_KEPT."""
    separators = _string_list("SONIQUEBAY_ARTIST_SEPARATORS", DEFAULT_ARTIST_SEPARATORS)
    blank = [s for s in separators if not s.strip()]
    if blank:
        raise ConfigError(
            f"SONIQUEBAY_ARTIST_SEPARATORS holds {blank[0]!r}: a separator of only spaces would split "
            "every name that has one"
        )
    return separators, _string_list("SONIQUEBAY_ARTIST_NAMES_KEPT", DEFAULT_ARTIST_NAMES_KEPT)


def queue_time_limits() -> dict[str, int]:
    """Hard time limit per queue, SONIQUEBAY_TIME_LIMIT_<QUEUE> overriding the default. The soft
    limit is 30 s lower so a task can record what it was doing; units' TimeoutStopSec and the
    broker's visibility timeout must exceed these."""
    return {
        queue: _int(f"SONIQUEBAY_TIME_LIMIT_{queue.upper()}", default, minimum=40)
        for queue, default in DEFAULT_TIME_LIMITS.items()
    }


@dataclass(frozen=True)
class Settings:
    broker_url: str
    # rediss:// only: the CA the broker's certificate is verified against (None: the system's).
    broker_ca: str | None
    database_url: str
    covers_dir: str
    library_roots: tuple[str, ...]
    visibility_timeout: int
    extract_chunk_files: int
    insert_batch_rows: int
    walk_unit_entries: int
    extract_slots: int
    watch_quiet_seconds: int
    # How long a track whose file is gone stays in the library, missing, before it is purged.
    missing_retention: int
    # Splitting "A feat. B": separators, and names kept whole (tags.NameSplitter).
    artist_separators: tuple[str, ...]
    artist_names_kept: tuple[str, ...]

    @classmethod
    def from_env(cls) -> Settings:
        roots = os.environ.get("SONIQUEBAY_LIBRARY_ROOTS", "")
        separators, names_kept = artist_name_settings()
        settings = cls(
            broker_url=broker_url(),
            broker_ca=os.environ.get("SONIQUEBAY_BROKER_CA") or None,
            database_url=os.environ.get("SONIQUEBAY_DATABASE_URL", "postgresql:///soniquebay"),
            covers_dir=os.environ.get("SONIQUEBAY_COVERS_DIR", "/var/lib/soniquebay/covers"),
            library_roots=tuple(r for r in roots.split(":") if r),
            visibility_timeout=_int("SONIQUEBAY_VISIBILITY_TIMEOUT", 2 * max(queue_time_limits().values())),
            extract_chunk_files=_int("SONIQUEBAY_EXTRACT_CHUNK_FILES", 1000),
            insert_batch_rows=_int("SONIQUEBAY_INSERT_BATCH_ROWS", 2000, minimum=100),
            walk_unit_entries=_int("SONIQUEBAY_WALK_UNIT_ENTRIES", 5000, minimum=10),
            extract_slots=_int("SONIQUEBAY_EXTRACT_SLOTS", len(os.sched_getaffinity(0)), minimum=0),
            watch_quiet_seconds=_int("SONIQUEBAY_WATCH_QUIET_SECONDS", 10),
            missing_retention=_duration("SONIQUEBAY_MISSING_RETENTION", "30d"),
            artist_separators=separators,
            artist_names_kept=names_kept,
        )
        longest = max(queue_time_limits().values())
        if settings.visibility_timeout <= longest:
            raise ConfigError(
                f"SONIQUEBAY_VISIBILITY_TIMEOUT={settings.visibility_timeout} must exceed the longest "
                f"task time limit ({longest} s), or running tasks get delivered twice"
            )
        return settings


def broker_tls(conf: Settings) -> dict:
    """The TLS options of a rediss:// broker (Celery's broker_use_ssl, redis-py's keywords): the
    broker's certificate verified, against SONIQUEBAY_BROKER_CA, with its name or address (redis-py
    checks neither by default). Empty for redis://."""
    if urlsplit(conf.broker_url).scheme != "rediss":
        return {}
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": conf.broker_ca, "ssl_check_hostname": True}


def broker_client(conf: Settings, **options):
    """A redis-py client of the broker (the exporter's, the reconciler's), TLS as the workers'."""
    import redis

    return redis.Redis.from_url(conf.broker_url, **broker_tls(conf), **options)


def settings() -> Settings:
    return Settings.from_env()
