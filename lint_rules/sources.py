"""Python sources to audit: a directory, a ``.py`` file, or a wheel / sdist read in place.

:func:`iter_source_files` yields files not yet read (with their ``stat`` signature for a
file on disk), so that the result cache can skip reading an unchanged file;
:func:`decode` turns one file's bytes into text.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Directories never descended into when auditing a tree.
SKIPPED_DIRS = frozenset({".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".tox", ".cache"})
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class SourceText:
    """One file's text, or why it could not be read. ``path`` is relative to its root."""

    path: str
    text: str | None
    error: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """One file to audit, not read yet. ``sig``: ``(size, mtime_ns)`` for a file on disk."""

    path: str
    read: Callable[[], bytes]
    sig: tuple[int, int] | None = None
    #: Where the file lies on disk (``None`` for an archive member).
    location: str | None = None


def decode(path: str, data: bytes) -> SourceText:
    """``data`` as UTF-8 text, or a :class:`SourceText` that says why not."""
    try:
        return SourceText(path, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return SourceText(path, None, f"not UTF-8: {exc.reason} at byte {exc.start}")


def is_archive(path: Path) -> bool:
    """A wheel, zip or sdist, by its name (read in place, never edited)."""
    return path.name.endswith(ARCHIVE_SUFFIXES)


def _scan_dir(root: str, rel: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative posix path, absolute path, stat) of every ``.py`` file, sorted by name at
    each level; :data:`SKIPPED_DIRS` and ``*.egg-info`` are not descended into."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if entry.is_dir():
            if name not in SKIPPED_DIRS and not name.endswith(".egg-info"):
                yield from _scan_dir(entry.path, f"{rel}{name}/")
        elif name.endswith(".py") and len(name) > 3:
            try:
                st = entry.stat()
            except OSError:
                continue
            yield f"{rel}{name}", entry.path, st


def _reader(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    return read


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def iter_source_files(
    target: Path, display: str | None = None, only: Collection[str] | None = None
) -> Iterator[SourceFile]:
    """Every ``.py`` file under ``target``, in a stable order; nothing is read until
    ``SourceFile.read()``.

    Paths are relative to a directory target, archive member paths for a wheel or an
    sdist (``sglang/srt/layers/attention/trtllm_mha_backend.py``), and ``display`` (the
    path as the user typed it) for a single file. ``only``: for a directory target, the
    relative paths to keep (``--since``). Raises ``FileNotFoundError`` for a missing
    target and ``ValueError`` for a file that is neither Python nor an archive.
    """
    if not target.exists():
        raise FileNotFoundError(f"no such file or directory: {target}")
    if target.is_dir():
        for rel, full, st in _scan_dir(str(target), ""):
            if only is None or rel in only:
                yield SourceFile(rel, _reader(full), (st.st_size, st.st_mtime_ns), full)
    elif target.suffix == ".py":
        st = target.stat()
        yield SourceFile(display or target.as_posix(), _reader(str(target)), (st.st_size, st.st_mtime_ns), str(target))
    else:
        for name, data in _archive_members(target):
            yield SourceFile(name, _const(data))


def _archive_members(target: Path) -> Iterator[tuple[str, bytes]]:
    if target.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(target) as archive:
            for name in sorted(n for n in archive.namelist() if n.endswith(".py")):
                yield name, archive.read(name)
    elif target.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(target) as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".py")), key=lambda m: m.name)
            for member in members:
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()
    else:
        raise ValueError(f"{target}: not a directory, a .py file, a wheel or an sdist")
