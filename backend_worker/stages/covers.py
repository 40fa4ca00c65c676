"""Covers: folder images or embedded art, saved once as files named by their content hash."""

from __future__ import annotations

import hashlib
import os
import tempfile

# Folder images, best first; compared case-insensitively without extension.
FOLDER_IMAGE_NAMES = ("cover", "folder", "front")
IMAGE_EXTENSIONS = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".webp": ".webp", ".gif": ".gif"}
MIME_EXTENSIONS = {"image/jpeg": ".jpg", "image/jpg": ".jpg", "image/png": ".png", "image/webp": ".webp",
                   "image/gif": ".gif"}  # fmt: skip


def find_folder_image(folder: str) -> str | None:
    """cover.* before folder.* before front.* (front.* also matches front-cover.jpg and the like)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    ranked = []
    for name in names:
        stem, ext = os.path.splitext(name.lower())
        if ext not in IMAGE_EXTENSIONS:
            continue
        for rank, wanted in enumerate(FOLDER_IMAGE_NAMES):
            if stem == wanted or (wanted == "front" and stem.startswith("front")):
                ranked.append((rank, name))
                break
    if not ranked:
        return None
    return os.path.join(folder, min(ranked)[1])


def image_extension(data: bytes, mime: str | None = None) -> str:
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return MIME_EXTENSIONS.get((mime or "").lower(), ".img")


def store_cover(data: bytes, covers_dir: str, mime: str | None = None) -> str:
    """Save image bytes under covers_dir/<2 hex>/<sha256><ext> once; returns the file name."""
    digest = hashlib.sha256(data).hexdigest()
    name = digest + image_extension(data, mime)
    folder = os.path.join(covers_dir, digest[:2])
    target = os.path.join(folder, name)
    if not os.path.exists(target):
        os.makedirs(folder, exist_ok=True)
        # Write then rename: a reader never sees half a file, two writers end with one.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return name
