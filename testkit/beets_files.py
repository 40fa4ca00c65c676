"""Beets' own test audio files (the `test/rsrc` folder of mediafile's source release, made by
iTunes, MediaRage and others, not by our writer), fetched once from the package registry into the
fixture cache and checked against a pinned digest."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from testkit.audio_fixtures import cache_dir

# mediafile's last source release that ships its test files (later ones leave them out).
RELEASE = "mediafile==0.12.0"
ARCHIVE = "mediafile-0.12.0.tar.gz"
SHA256 = "d75d805a06ed56150dbcea76505e700f9809abd9e98f98117ae46f5df2ccf1d7"
AUDIO_SUFFIXES = (
    ".mp3",
    ".m4a",
    ".flac",
    ".ogg",
    ".opus",
    ".ape",
    ".mpc",
    ".wv",
    ".wma",
    ".wav",
    ".aiff",
    ".dsf",
)


def folder() -> Path:
    """The folder of beets' test files (downloaded and unpacked on first use)."""
    target = cache_dir() / f"beets-rsrc-{SHA256[:12]}"
    if target.is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--dest", scratch, RELEASE],
            check=True, timeout=300,
        )  # fmt: skip
        archive = Path(scratch) / ARCHIVE
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != SHA256:
            raise RuntimeError(f"{ARCHIVE}: sha256 {digest}, expected {SHA256}")
        unpacked = Path(scratch) / "rsrc"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and "/test/rsrc/" in m.name]
            for member in members:
                member.name = Path(member.name).name
            tar.extractall(unpacked, members=members)  # plain file names only (set above)
        unpacked.rename(target)
    return target


def audio_files() -> list[Path]:
    return sorted(p for p in folder().iterdir() if p.name.endswith(AUDIO_SUFFIXES))
