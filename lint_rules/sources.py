"""Python sources to audit: a directory, a ``.py`` file, or a wheel / sdist read in place."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
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


def _decode(path: str, data: bytes) -> SourceText:
    try:
        return SourceText(path, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return SourceText(path, None, f"not UTF-8: {exc.reason} at byte {exc.start}")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def _walk_dir(root: Path) -> Iterator[Path]:
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            if entry.name not in SKIPPED_DIRS and not entry.name.endswith(".egg-info"):
                yield from _walk_dir(entry)
        elif entry.suffix == ".py":
            yield entry


def iter_sources(target: Path, display: str | None = None) -> Iterator[SourceText]:
    """Every ``.py`` file under ``target``, in a stable order.

    Paths are relative to a directory target, archive member paths for a wheel or an
    sdist (``sglang/srt/layers/attention/trtllm_mha_backend.py``), and ``display`` (the
    path as the user typed it) for a single file. Raises ``FileNotFoundError`` for a
    missing target and ``ValueError`` for a file that is neither Python nor an archive.
    """
    if not target.exists():
        raise FileNotFoundError(f"no such file or directory: {target}")
    if target.is_dir():
        for file in _walk_dir(target):
            yield _decode(file.relative_to(target).as_posix(), file.read_bytes())
    elif target.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(target) as archive:
            for name in sorted(n for n in archive.namelist() if n.endswith(".py")):
                yield _decode(name, archive.read(name))
    elif target.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(target) as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".py")), key=lambda m: m.name)
            for member in members:
                handle = archive.extractfile(member)
                if handle is not None:
                    yield _decode(member.name, handle.read())
    elif target.suffix == ".py":
        yield _decode(display or target.as_posix(), target.read_bytes())
    else:
        raise ValueError(f"{target}: not a directory, a .py file, a wheel or an sdist")
