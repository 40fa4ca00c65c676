"""Cover files: found in folders, stored once by content hash."""

from __future__ import annotations

import hashlib

from backend_worker.stages import covers

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 64


def test_folder_image_preference(tmp_path):
    assert covers.find_folder_image(str(tmp_path)) is None
    (tmp_path / "front-cover.PNG").write_bytes(PNG)
    assert covers.find_folder_image(str(tmp_path)).endswith("front-cover.PNG")
    (tmp_path / "Folder.jpg").write_bytes(JPEG)
    assert covers.find_folder_image(str(tmp_path)).endswith("Folder.jpg")
    (tmp_path / "cover.jpeg").write_bytes(JPEG)
    (tmp_path / "cover.txt").write_bytes(b"not an image")
    assert covers.find_folder_image(str(tmp_path)).endswith("cover.jpeg")
    assert covers.find_folder_image(str(tmp_path / "missing")) is None


def test_store_cover_names_by_content_and_writes_once(tmp_path):
    name = covers.store_cover(JPEG, str(tmp_path))
    digest = hashlib.sha256(JPEG).hexdigest()
    assert name == digest + ".jpg"
    stored = tmp_path / digest[:2] / name
    assert stored.read_bytes() == JPEG
    first_mtime = stored.stat().st_mtime_ns
    assert covers.store_cover(JPEG, str(tmp_path)) == name
    assert stored.stat().st_mtime_ns == first_mtime
    assert covers.store_cover(PNG, str(tmp_path)).endswith(".png")
    assert covers.store_cover(b"??", str(tmp_path), "image/webp").endswith(".webp")
    assert not [p for p in tmp_path.rglob(".tmp-*")]
