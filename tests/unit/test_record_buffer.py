"""The record buffer's payload (record_buffer.encode / _decode): what extract parks is what insert reads."""

from __future__ import annotations

import json
import zlib

from backend_worker import record_buffer


def record(path: str, **tags) -> dict:
    return {"path": path, "size": 123, "mtime_ns": 1_700_000_000_123_456_789, "mtime": 1.7e9, "title": None,
            "genres": ["Rock", "Jazz"], "comp": False, "rg_track_gain": -6.5, **tags}  # fmt: skip


def test_records_read_back_exactly():
    records = [record(f"/music/Artist/Album/{n:02d} - Ünïcode ♪.flac", title=f"T{n}") for n in range(50)]
    assert record_buffer.decode(record_buffer.encode(records)) == records


def test_a_path_that_is_not_utf8_reads_back_exactly():
    # os.fsdecode of a Latin-1 name: a lone surrogate, which orjson refuses and json escapes.
    records = [record("/music/caf\udce9.mp3"), record("/music/plain.mp3")]
    payload = record_buffer.encode(records)
    assert "\\udce9" in payload.decode()
    assert record_buffer.decode(payload) == records


def test_records_of_different_keys_and_payloads_of_earlier_versions_still_read():
    mixed = [record("/a.mp3"), {"path": "/b.mp3", "size": 1}]
    assert record_buffer.decode(record_buffer.encode(mixed)) == mixed
    plain_json = json.dumps([record("/c.mp3")]).encode()  # the first versions: a list, plain
    assert record_buffer.decode(plain_json) == [record("/c.mp3")]
    assert record_buffer.decode(zlib.compress(plain_json)) == [record("/c.mp3")]
    # Up to migration 0007: the keys-and-rows form, compressed by the extract worker.
    keyed = [record(f"/d{n}.mp3") for n in range(3)]
    assert record_buffer.decode(zlib.compress(record_buffer.encode(keyed), 1)) == keyed
