"""The release before this one, as a tree of its own: what an upgrade in place starts from.

"The release before" is the code just before the newest schema migration was added (git history of
backend_worker/migrations/); while that migration is not committed yet, HEAD is. Its package runs
from the venv of this one (same dependencies) by putting the tree first on PYTHONPATH (`export`),
or its whole tree is deployed by its own playbooks (`export_tree`, then a converge with
`release=` that tree: testkit.testhost, testkit.testnet)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from backend_worker import db

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


def previous_release() -> str:
    """The commit before the one that added the newest migration (HEAD if it is not committed)."""
    newest = db.migrations()[-1][1]
    added = _git("log", "-1", "--format=%H", "--diff-filter=A", "--", f"backend_worker/migrations/{newest}")
    return _git("rev-parse", f"{added.strip()}^" if added.strip() else "HEAD").strip()


def _extract(commit: str, dest: Path, *paths: str) -> Path:
    """`paths` of `commit` (all of it without) under dest, readable by every user: the workers run
    unprivileged."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, *paths], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
    return dest


def export(commit: str, dest: Path) -> Path:
    """backend_worker of `commit` under dest; returns dest, the PYTHONPATH that runs it."""
    return _extract(commit, dest, "backend_worker")


def export_tree(commit: str, dest: Path) -> Path:
    """The whole tree of `commit` under dest (its playbooks, roles, templates, plugins, ansible.cfg,
    and what its wheelhouse is built from): what `make deploy` of that release would run. Kept if
    it is there already (a commit's tree never changes)."""
    if (dest / "ansible.cfg").exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    _extract(commit, partial)
    partial.rename(dest)
    return dest
