"""The `soniquebay` commands that need no service, run as the installed command."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from backend_worker.stages.extract import read_record
from testkit import audio_fixtures as af
from testkit import services


def closed_port() -> int:
    port = services.free_port()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    return port


def test_extract_json_prints_the_record_with_no_broker_and_no_database(tmp_path):
    """Reading files is for checking a file by hand: it must not need Redis or PostgreSQL."""
    song = af.make_seed("flac", tmp_path)
    af.write_tags(song, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(b"this is not audio" * 10)
    env = {
        **os.environ,
        "SONIQUEBAY_BROKER_URL": f"redis://127.0.0.1:{closed_port()}/0",
        "SONIQUEBAY_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{closed_port()}/none",
    }
    proc = subprocess.run(
        [str(services.VENV_BIN / "soniquebay"), "extract", "--json", str(song), str(garbage)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert printed == [
        read_record(str(song)),
        {"path": str(garbage), "error": "not an audio file mutagen can read"},
    ]
    assert printed[0]["title"] == af.SAMPLE_TAGS["title"] and printed[0]["has_cover"] is True
