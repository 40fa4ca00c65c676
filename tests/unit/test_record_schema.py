"""The field table (backend_worker/stages/fields.py) is the one list of the record's fields.

These tests look at what each layer does rather than at the constant it should derive, so a layer
that keeps a list of its own fails as soon as the table changes. The database's side (the
migrations' ``tracks`` table, insert's temp table, rows written and read back) is checked in
tests/integration/test_record_schema.py.
"""

from __future__ import annotations

import re

import pytest

from backend_worker.stages import fields, insert
from backend_worker.stages.extract import read_record
from testkit import audio_fixtures as af

# The Python type each column type holds in a record (genres, with no column, are a list).
PYTHON_TYPES = {
    "text": str,
    "uuid": str,
    "integer": int,
    "bigint": int,
    "double precision": float,
    "boolean": bool,
    None: (float, list),
}


def test_names_are_unique_sql_identifiers_and_tag_rows_name_keys_for_every_family():
    names = [field.name for field in fields.FIELDS]
    assert len(set(names)) == len(names)
    # insert interpolates the names into its SQL.
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in names), names
    assert {field.column for field in fields.FIELDS} <= set(PYTHON_TYPES)
    for field in fields.TAG_FIELDS:
        for column in ("id3", "mp4", "vorbis_ape", "asf"):
            assert getattr(field, column), f"{field.name}: no {column} key, that family would never read it"


@pytest.mark.parametrize("fmt", af.FORMATS)
def test_read_record_gives_the_tables_fields_in_order_with_their_column_types(tmp_path, fmt):
    path = af.make_seed(fmt, tmp_path)
    if fmt not in af.UNTAGGABLE:
        af.write_tags(path, {**af.SAMPLE_TAGS, "cover": af.cover_jpeg()}, replace=True)
    record = read_record(str(path))
    assert tuple(record) == fields.RECORD_KEYS
    for field in fields.FIELDS:
        value = record[field.name]
        if fmt not in af.UNTAGGABLE:
            assert value is not None, field.name  # SAMPLE_TAGS sets every tag
        assert value is None or isinstance(value, PYTHON_TYPES[field.column]), (field.name, value)
        if field.column in ("integer", "bigint"):
            assert value is None or not isinstance(value, bool), field.name


def test_the_fixtures_sample_every_tag_and_expect_every_record_key():
    """SAMPLE_TAGS holds every tag field, so the round trip in test_extract covers a new field in
    every tag family (write_tags must learn to write it); build_library's expectations cover
    every record key but the ones the encoder decides."""
    assert set(af.SAMPLE_TAGS) - {"date"} == set(fields.TAG_NAMES)
    assert set(fields.TAG_NAMES) <= af.TAG_KEYS
    assert not set(af.EXPECTED_KEYS) & set(af.STREAM_KEYS)
    assert set(af.EXPECTED_KEYS) | set(af.STREAM_KEYS) == set(fields.RECORD_KEYS)


def test_insert_stores_every_field_that_has_a_column_in_the_tables_order():
    stored = [column for column in insert.TRACK_COLUMNS if column in fields.RECORD_KEYS]
    assert stored == [field.name for field in fields.FIELDS if field.column]
    # What insert adds of its own is no field of the record.
    assert len(insert.TRACK_COLUMNS) == len(set(insert.TRACK_COLUMNS))
