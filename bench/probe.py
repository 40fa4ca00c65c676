"""The Celery app of the bench's workers: backend_worker's app, plus a byte counter.

``celery -A bench.probe worker ...`` runs exactly ``backend_worker``'s app and tasks; the only
addition is a wrapper around the function kombu's Redis transport uses to serialise each message
envelope before LPUSH/PUBLISH, which appends ``<kind>\\t<bytes>`` to a per-process file in
``$SONIQUEBAY_BENCH_MESSAGE_LOG`` (a directory). It costs one small write per message (a few
hundred per 20,000-file ingest), and measures what Redis really stores: the JSON envelope with
the base64-encoded body.
"""

from __future__ import annotations

import os

import kombu.transport.redis as redis_transport

from backend_worker.app import app  # noqa: F401 - what `celery -A bench.probe` loads

_LOG_DIR = os.environ.get("SONIQUEBAY_BENCH_MESSAGE_LOG")
_dumps = redis_transport.dumps


def _kind(message) -> str:
    if isinstance(message, list) and message and isinstance(message[0], dict):
        # acks_late: a delivered message is copied into the "unacked" hash until it is acked.
        return "unacked copy: " + _kind(message[0])
    if not isinstance(message, dict):
        return "other"
    headers = message.get("headers") or {}
    if headers.get("task"):
        return headers["task"]
    exchange = (message.get("properties") or {}).get("delivery_info", {}).get("exchange", "")
    if exchange == "celeryev":
        return "event"
    if "pidbox" in str(exchange):
        return "control"
    return "other"


def _counting_dumps(message, *args, **kwargs):
    text = _dumps(message, *args, **kwargs)
    try:
        fd = os.open(
            os.path.join(_LOG_DIR, f"{os.getpid()}.tsv"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        try:
            os.write(fd, f"{_kind(message)}\t{len(text)}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass
    return text


if _LOG_DIR:
    redis_transport.dumps = _counting_dumps


def read_message_log(directory: str) -> dict[str, list[int]]:
    """kind -> sizes of every message logged in ``directory``."""
    sizes: dict[str, list[int]] = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as fh:
            for line in fh:
                kind, _, size = line.rstrip("\n").partition("\t")
                if size.isdigit():
                    sizes.setdefault(kind, []).append(int(size))
    return sizes
