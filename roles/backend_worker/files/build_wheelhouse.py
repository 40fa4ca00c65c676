#!/usr/bin/env python3
"""Build (or reuse) the SoniqueBay wheelhouse on the controller.

The wheelhouse holds the application wheel and every pinned dependency from the lock file, as
binary wheels for the target's Python version and architecture, so hosts install with
`pip install --no-index` and never reach PyPI. Each build is cached under
CACHE/<key>/wheelhouse.tar where the key hashes the lock file, the application source, the Python
version and the architecture: a second run with nothing changed reuses the same tarball byte for byte.

If the lock file does not exist it is generated first (pip freeze of a clean venv holding the app).

Prints one JSON object: {"key", "tarball", "built", "lock_created", "version"}.
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

# Files of the source tree that do not go into the wheel and must not change its key.
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")


def fail(message: str) -> None:
    print(json.dumps({"failed": True, "msg": message}))
    sys.exit(1)


def run(argv: list[str], *, env: dict[str, str] | None = None, what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        fail(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc.stdout


def project_metadata(source: Path) -> tuple[str, str, list[str]]:
    """Name, version and the package directories that go into the wheel."""
    data = tomllib.loads((source / "pyproject.toml").read_text())
    project = data.get("project", {})
    setuptools_conf = data.get("tool", {}).get("setuptools", {})
    name, version = project.get("name"), project.get("version")
    if not version and "version" in project.get("dynamic", []):
        version = dynamic_version(source, setuptools_conf.get("dynamic", {}).get("version", {}))
    if not name or not version:
        fail(f"{source}/pyproject.toml has no [project] name and version")
    find = setuptools_conf.get("packages", {}).get("find", {})
    includes = find.get("include") or [name.replace("-", "_")]
    dirs = sorted({pattern.split(".")[0].rstrip("*") for pattern in includes})
    return name, version, dirs


def dynamic_version(source: Path, spec: dict) -> str:
    """The version pyproject.toml takes from the source ([tool.setuptools.dynamic] version = {attr =
    "package.__version__"}), read the way setuptools reads it first: the string assigned in the module,
    without importing it (its imports need the app's dependencies, which the controller may lack)."""
    attr = spec.get("attr", "")
    module, _, variable = attr.rpartition(".")
    if not module or not variable:
        fail(f"{source}/pyproject.toml: [tool.setuptools.dynamic] version needs attr = 'module.variable'")
    base = source.joinpath(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not path.is_file():
        fail(f"{source}/pyproject.toml: the version's module {module} ({path}) does not exist")
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        named = any(isinstance(target, ast.Name) and target.id == variable for target in targets)
        if named and isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    fail(f"{path} assigns no string to {variable} (the version pyproject.toml names: {attr})")
    return ""


def source_digest(source: Path, package_dirs: list[str]) -> str:
    digest = hashlib.sha256()
    paths = [source / "pyproject.toml"]
    for name in package_dirs:
        root = source / name
        if not root.is_dir():
            fail(f"package directory {root} named in pyproject.toml does not exist")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            paths.extend(Path(dirpath) / f for f in sorted(filenames) if not f.endswith(SKIP_SUFFIXES))
    for path in paths:
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def clean_pip_env() -> dict[str, str]:
    """Environment for pip runs that must see only the wheelhouse (no configured indexes or links)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def target_args(python_version: str, arch: str) -> list[str]:
    """pip options that resolve and fetch for the target interpreter instead of this one."""
    abi = "cp" + "".join(python_version.split(".")[:2])
    platform_args = [arg for tag in platforms(arch) for arg in ("--platform", tag)]
    return [
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *platform_args,
    ]


def generate_lock(source: Path, lock: Path, name: str, python_version: str, arch: str) -> None:
    """Pin what pip resolves for the app on the target's Python (markers such as python_full_version
    are evaluated for the target, not for the controller)."""
    with tempfile.TemporaryDirectory(prefix="soniquebay-lock-") as tmp:
        report = Path(tmp) / "report.json"
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--dry-run",
                "--ignore-installed",
                *target_args(python_version, arch),
                "--target",
                str(Path(tmp) / "t"),
                "--report",
                str(report),
                str(source),
            ],
            what="resolving the app's dependencies for the lock file",
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted(
        (item["metadata"]["name"], item["metadata"]["version"])
        for item in installs
        if item["metadata"]["name"].lower().replace("_", "-") != name.lower().replace("_", "-")
    )
    header = (
        "# Runtime dependencies of the SoniqueBay app, pinned. The deployment installs exactly these\n"
        f"# (from a wheelhouse) on every host; resolved for CPython {python_version} on {arch}.\n"
        "# Regenerate: delete this file and run make deploy.\n"
    )
    lock.write_text(
        header + "".join(f"{pin}=={ver}\n" for pin, ver in sorted(pins, key=lambda p: p[0].lower()))
    )


def platforms(arch: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in (35, 34, 31, 28, 27, 24, 17)]
    return tags + [
        f"manylinux2014_{arch}",
        f"manylinux2010_{arch}",
        f"manylinux1_{arch}",
        f"manylinux_2_5_{arch}",
    ]


def build(
    source: Path, lock: Path, python_version: str, arch: str, name: str, version: str, dest: Path
) -> None:
    target = target_args(python_version, arch)
    with tempfile.TemporaryDirectory(prefix="soniquebay-wheelhouse-") as tmp:
        wheels = Path(tmp) / "wheelhouse"
        wheels.mkdir()
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--wheel-dir",
                str(wheels),
                str(source),
            ],
            what="building the app wheel",
        )
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                *target,
                "--dest",
                str(wheels),
                "--requirement",
                str(lock),
            ],
            what=f"downloading the pinned wheels of {lock} for Python {python_version} on {arch}",
        )
        # Resolve the app against the wheelhouse alone: a dependency missing from the lock fails here,
        # on the controller, rather than on every host.
        check = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--no-index",
                "--find-links",
                str(wheels),
                *target,
                "--target",
                str(Path(tmp) / "t"),
                "--requirement",
                str(lock),
                f"{name}=={version}",
            ],
            capture_output=True,
            text=True,
            env=clean_pip_env(),
        )
        if check.returncode != 0:
            tail = "\n".join(check.stderr.strip().splitlines()[-10:])
            fail(
                f"{lock} does not pin every dependency of {name} {version} (delete it to regenerate it, "
                f"or add the missing pin):\n{tail}"
            )
        shutil.copyfile(lock, wheels / "requirements.lock")
        partial = dest.with_suffix(".tar.partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(wheels.iterdir()):
                info = tar.gettarinfo(str(path), arcname=path.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = (
                    0,
                    0,
                    0,
                    "root",
                    "root",
                    0o644,
                )
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
        partial.replace(dest)


def prune(cache: Path, keep: Path, newest: int = 5) -> None:
    """Keep the newest builds only (each code change makes one)."""
    builds = sorted((p for p in cache.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    for old in builds[: max(0, len(builds) - (newest - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--lock", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--python-version", required=True)
    parser.add_argument("--arch", required=True)
    args = parser.parse_args()

    source = args.source.resolve()
    name, version, package_dirs = project_metadata(source)
    args.cache.mkdir(parents=True, exist_ok=True)
    with open(args.cache / ".lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        lock_created = False
        if not args.lock.exists():
            generate_lock(source, args.lock, name, args.python_version, args.arch)
            lock_created = True
        key_material = "\0".join(
            [
                hashlib.sha256(args.lock.read_bytes()).hexdigest(),
                source_digest(source, package_dirs),
                args.python_version,
                args.arch,
            ]
        )
        key = (
            f"{version}-py{args.python_version}-{args.arch}-"
            + hashlib.sha256(key_material.encode()).hexdigest()[:16]
        )
        tarball = args.cache / key / "wheelhouse.tar"
        built = False
        if not tarball.exists():
            tarball.parent.mkdir(parents=True, exist_ok=True)
            build(source, args.lock, args.python_version, args.arch, name, version, tarball)
            built = True
            prune(args.cache, keep=tarball.parent)
    print(
        json.dumps(
            {
                "key": key,
                "tarball": str(tarball),
                "built": built,
                "lock_created": lock_created,
                "name": name,
                "version": version,
            }
        )
    )


if __name__ == "__main__":
    main()
