"""How an error is written down: for a stored record, or for an operator's log line."""

from __future__ import annotations


def short_error(exc: BaseException) -> str:
    """The error's type and first line: what a file error record or a failed session keeps."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def one_line(exc: BaseException) -> str:
    """The error's lines joined into one ("Connection refused" and the hint that follows it):
    what an operator reads in a log line or on the command line."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text[:500] or type(exc).__name__
