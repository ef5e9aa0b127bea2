"""Per-file lint results keyed on content, so an unchanged file is not parsed again.

Layout under the cache directory (default ``<audited root>/.cache/fmha-guard/``)::

    <context>/<root>.json   {"v": 1, "files": {path: [size, mtime_ns, content_hash, entry]}}

``context`` hashes everything a result depends on besides the file: the package
version, the rule modules' code (name, size, mtime of every ``lint_rules/*.py``, so an
edited rule invalidates without a version bump), the selected rules, the whole
configuration. ``root`` hashes the audited root. A file is a hit when its content hash
(BLAKE2b over its bytes) equals the recorded one; when its ``(size, mtime_ns)`` also
equals the recorded signature the file is not even read (git's index trick; a
signature younger than two seconds at write time is not recorded, so an edit in the
same clock tick cannot hide).

Writes go to a temporary file in the same directory, then ``os.replace``: concurrent
processes or threads never see a torn file; the last writer wins, and an entry lost
that way is just a miss next time. Any ``OSError`` disables the cache for the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import guardrails  # stdlib-only: names load on first use, the version from the package metadata

from .atomic_write import write_atomically

FORMAT_VERSION = 1
#: A file modified less than this long before the index is written is not trusted by stat.
RACY_NS = 2_000_000_000


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _short(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()


def code_fingerprint() -> str:
    """Name, size and mtime of every module of this package (cheap: one directory scan)."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts = []
    with os.scandir(here) as it:
        for entry in it:
            if entry.name.endswith(".py"):
                st = entry.stat()
                parts.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return _short("|".join(sorted(parts)))


def context_key(*parts: str) -> str:
    """The cache context: format, package version, rule code, and ``parts``."""
    return _short("\0".join((str(FORMAT_VERSION), guardrails.__version__, code_fingerprint(), *parts)))


class ResultCache:
    """The cached results of one audited root under one context."""

    def __init__(self, directory: Path, context: str, root_id: str) -> None:
        self.file = Path(directory) / context / f"{_short(root_id)}.json"
        self.hits = 0
        self.enabled = True
        self._old: dict[str, list] = {}
        self._new: dict[str, list] = {}
        self._dirty = False
        try:
            with open(self.file, "rb") as handle:
                data = json.loads(handle.read())
            if data.get("v") == FORMAT_VERSION and isinstance(data.get("files"), dict):
                self._old = data["files"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            self._dirty = True  # unreadable or torn by hand: rewrite it

    def by_sig(self, path: str, sig: tuple[int, int] | None) -> dict | None:
        """The entry of ``path`` if its stat signature is unchanged (no read needed)."""
        if sig is None:
            return None
        row = self._old.get(path)
        if row is not None and row[0] == sig[0] and row[1] == sig[1]:
            self.hits += 1
            self._new[path] = row
            return row[3]
        return None

    def by_hash(self, path: str, digest: str, sig: tuple[int, int] | None) -> dict | None:
        """The entry of ``path`` if its content hash is unchanged; records the new signature."""
        row = self._old.get(path)
        if row is not None and row[2] == digest:
            self.hits += 1
            self.put(path, sig, digest, row[3])
            return row[3]
        return None

    def put(self, path: str, sig: tuple[int, int] | None, digest: str, entry: dict) -> None:
        if sig is not None and sig[1] > time.time_ns() - RACY_NS:
            sig = None
        size, mtime = sig if sig is not None else (-1, -1)
        self._new[path] = [size, mtime, digest, entry]
        self._dirty = True

    def save(self, complete: bool) -> None:
        """Write the index. ``complete``: this run saw every file of the root (drop the rest)."""
        if not self.enabled:
            return
        if complete and set(self._old) - set(self._new):
            self._dirty = True
        if not self._dirty:
            return
        files = dict(self._new) if complete else {**self._old, **self._new}
        if not complete:  # merge what another process wrote meanwhile
            try:
                with open(self.file, "rb") as handle:
                    current = json.loads(handle.read()).get("files", {})
                files = {**current, **self._old, **self._new} if isinstance(current, dict) else files
            except (OSError, ValueError, AttributeError):
                pass
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            gitignore = self.file.parent.parent / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("*\n", encoding="utf-8")
            write_atomically(self.file, json.dumps({"v": FORMAT_VERSION, "files": files}, separators=(",", ":")))
        except OSError:
            self.enabled = False
