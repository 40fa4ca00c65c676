"""docs/tags.md lists every tag key read per family, as the field table (stages/fields.py) says."""

from __future__ import annotations

from pathlib import Path

from backend_worker.stages import fields

DOC = Path(__file__).resolve().parents[2] / "docs" / "tags.md"
START, END = "<!-- fields:start -->", "<!-- fields:end -->"
FAMILIES = (("id3", "ID3v2 (MP3, WAV, AIFF, DSF)"), ("mp4", "MP4"), ("vorbis_ape", "Vorbis comment, APEv2"),
            ("asf", "ASF (WMA)"))  # fmt: skip


def _key(spec) -> str:
    key, convert = spec if isinstance(spec, tuple) else (spec, None)
    key = key.replace("\xa9", "©").replace("----:com.apple.iTunes:", "iTunes:")
    if convert is None:
        return f"`{key}`"
    return f"`{key}` ({convert.__name__.removeprefix('conv_').replace('_', ' ')})"


def table() -> str:
    """The generated table: one row per tag field, its keys per family in the order tried."""
    lines = [
        "| field | credit role | " + " | ".join(title for _, title in FAMILIES) + " |",
        "|---|---|" + "---|" * len(FAMILIES),
    ]
    for field in fields.TAG_FIELDS:
        keys = [", ".join(_key(spec) for spec in getattr(field, column)) for column, _ in FAMILIES]
        lines.append(f"| `{field.name}` | {field.role or ''} | " + " | ".join(keys) + " |")
    return "\n".join(lines)


def test_the_tag_table_in_the_docs_is_the_field_tables():
    text = DOC.read_text()
    generated = text[text.index(START) + len(START) : text.index(END)].strip()
    assert generated == table(), f"docs/tags.md is stale; between the markers put:\n{table()}"
