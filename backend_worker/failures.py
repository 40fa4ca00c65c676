"""Failures: which errors are an outage to wait out (the task is retried with backoff, see
tasks.PipelineTask), which may come from one record of an insert batch (the batch is then inserted
record by record, see units.insert), anything else permanent (recorded, not retried); and how an
error is written down, for a stored record or for an operator's log line."""

from __future__ import annotations

import kombu.exceptions
import psycopg
import redis.exceptions

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    # The server went away, restarted, or two transactions collided.
    psycopg.OperationalError,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    # An album or artist removed by a concurrent session's clean-up: the retry recreates it.
    psycopg.errors.ForeignKeyViolation,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
)

# Errors one record can cause, whatever the others: a value the database refuses (DataError), a
# constraint, or a limit such as an index entry above 2,704 bytes (a 20,000-character artist tag).
# ProgramLimitExceeded is an OperationalError to psycopg, which would otherwise count as transient
# and retry the batch for a quarter of an hour before failing the session.
ONE_RECORD_ERRORS: tuple[type[Exception], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    psycopg.ProgrammingError,
    psycopg.errors.ProgramLimitExceeded,
)


def may_come_from_one_record(exc: BaseException) -> bool:
    """Whether a batch's failure may come from one of its records (not an outage to wait out)."""
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return True
    return isinstance(exc, ONE_RECORD_ERRORS) and not isinstance(exc, TRANSIENT_ERRORS)


def short_error(exc: BaseException) -> str:
    """The error's type and first line: what a file error record or a failed session keeps."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def one_line(exc: BaseException) -> str:
    """The error's lines joined into one ("Connection refused" and the hint that follows it):
    what an operator reads in a log line or on the command line."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:500] or type(exc).__name__
