"""``--since GITREF``: the ``.py`` files changed since a git revision, plus untracked ones."""

from __future__ import annotations

import subprocess
from pathlib import Path


class ChangedFilesError(ValueError):
    """git is missing, the path is not in a work tree, or the revision is unknown."""


def _git(cwd: Path, *args: str) -> str:
    try:
        run = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ChangedFilesError(f"--since needs git: {exc}") from None
    if run.returncode != 0:
        raise ChangedFilesError(f"git {' '.join(args[:2])} failed in {cwd}: {run.stderr.strip()}")
    return run.stdout


def changed_python_files(target: Path, ref: str) -> set[str]:
    """Paths, relative to directory ``target``, of the ``.py`` files under it that
    ``git diff --name-only REF`` lists (committed, staged or unstaged since REF) or that
    are untracked and not ignored; deleted files are left out."""
    folder = target if target.is_dir() else target.parent
    top = Path(_git(folder, "rev-parse", "--show-toplevel").strip()).resolve()
    names = _git(top, "diff", "--name-only", "-z", ref, "--").split("\0")
    names += _git(top, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    base = target.resolve()
    out: set[str] = set()
    for name in names:
        if not name.endswith(".py"):
            continue
        full = top / name
        if not full.is_file():
            continue
        if target.is_dir():
            try:
                out.add(full.relative_to(base).as_posix())
            except ValueError:
                continue
        elif full == base:
            out.add(full.name)
    return out
