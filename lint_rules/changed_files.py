"""``--since GITREF``: the ``.py`` files changed since a git revision, plus untracked ones.

The revision is checked before git sees it in any other place: one that starts with
``-`` is refused (``--since=--output=FILE`` would be an option to ``git diff``), and
``git rev-parse --verify --end-of-options REF^{commit}`` turns the rest into a commit
id, which is what ``git diff`` gets.
"""

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
        first = next((line for line in run.stderr.splitlines() if line.strip()), "").strip()
        raise ChangedFilesError(f"git {' '.join(args[:2])} failed in {cwd}: {first}")
    return run.stdout


def resolve_commit(folder: Path, ref: str) -> str:
    """The commit id ``ref`` names in the repository of ``folder``; a
    :class:`ChangedFilesError` (one line) for an option-like or unknown revision."""
    if not ref or ref.startswith("-"):
        raise ChangedFilesError(f"--since {ref!r}: not a git revision (it must not start with '-')")
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
            cwd=folder, capture_output=True, text=True, check=False,
        )
    except OSError as exc:
        raise ChangedFilesError(f"--since needs git: {exc}") from None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        raise ChangedFilesError(f"--since {ref!r}: no such commit in the git repository of {folder}")
    return commit


def changed_python_files(target: Path, ref: str) -> set[str]:
    """For directory ``target``: the paths, relative to it, of the ``.py`` files under it
    that ``git diff --name-only REF`` lists (committed, staged or unstaged since REF) or
    that are untracked and not ignored; deleted files are left out. For a file target:
    its name if it is one of those files, whatever its extension."""
    folder = target if target.is_dir() else target.parent
    top = Path(_git(folder, "rev-parse", "--show-toplevel").strip()).resolve()
    commit = resolve_commit(folder, ref)
    names = _git(top, "diff", "--name-only", "-z", commit, "--").split("\0")
    names += _git(top, "ls-files", "--others", "--exclude-standard", "-z").split("\0")
    base = target.resolve()
    out: set[str] = set()
    for name in names:
        if not name:
            continue
        full = top / name
        if target.is_dir():
            if not name.endswith(".py") or not full.is_file():
                continue
            try:
                out.add(full.relative_to(base).as_posix())
            except ValueError:
                continue
        elif full == base and full.is_file():
            out.add(full.name)
    return out
