"""Where a finding is, as the user opens it: relative to the current directory when it
lies inside it, absolute otherwise; an archive member as ``wheel.whl!member/path.py``.

The engine keeps each finding's ``path`` relative to the audited root (what baselines,
per-path ignores and SARIF use) and its ``root`` (the directory or archive it came from);
only the report turns the two into one path.
"""

from __future__ import annotations

import os
from pathlib import Path

from lint_rules.sources import is_archive


def from_cwd(path: str, cwd: str) -> str:
    """``path`` relative to ``cwd`` if it lies inside it, else absolute (posix slashes)."""
    full = os.path.abspath(path)
    if full == cwd or full.startswith(cwd.rstrip(os.sep) + os.sep):
        full = os.path.relpath(full, cwd)
    return full.replace(os.sep, "/")


def shown_path(path: str, root: str, cwd: str) -> str:
    """The path to print for a finding or error with this ``path`` and ``root``."""
    if not root:
        return from_cwd(path, cwd)
    if is_archive(Path(root)) and not os.path.isdir(root):
        return f"{from_cwd(root, cwd)}!{path}"
    return from_cwd(os.path.join(root, path), cwd)

