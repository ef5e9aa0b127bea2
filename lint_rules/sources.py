"""Python sources to audit: a directory, a file, or a wheel / sdist read in place.

:func:`iter_source_files` yields files not yet read (with their ``stat`` signature for a
file on disk), so that the result cache can skip reading an unchanged file;
:func:`decode` turns one file's bytes into text as Python does.

Whatever cannot be audited becomes a :class:`SourceFile` with an ``error`` (reported for
that path; the others are still audited), never an exception: a FIFO or a device
(never opened), a symlink loop or a dangling ``.py`` symlink, a directory that cannot
be listed, an archive that cannot be read, an archive member whose name is absolute or
holds ``..`` (never resolved against the filesystem). A directory walk follows
symlinks but visits each real directory once, and skips a symlinked file whose target
it already audited; only the walk filters on ``.py``: a file named as a target is
audited whatever its name (pre-commit passes extensionless scripts).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tarfile
import tokenize
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Directories never descended into when auditing a tree.
SKIPPED_DIRS = frozenset({".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".tox", ".cache"})
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar")
#: An archive member declaring more bytes than this is not read (a decompression bomb).
MAX_MEMBER_BYTES = 64 * 1024 * 1024
#: What the zip, tar and compression modules raise on a corrupt or unsupported archive.
ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    OSError,
    ValueError,
    NotImplementedError,  # a zip compression method the zipfile module lacks
    RuntimeError,  # an encrypted zip member
)


@dataclass(frozen=True)
class SourceText:
    """One file's text, or why it could not be read. ``path`` is relative to its root;
    ``encoding``: what the text was decoded from (``utf-8-sig`` when it had a BOM)."""

    path: str
    text: str | None
    error: str | None = None
    encoding: str = "utf-8"


@dataclass(frozen=True)
class SourceFile:
    """One file to audit, not read yet. ``sig``: ``(size, mtime_ns)`` for a file on disk.

    ``error``: why this path cannot be audited (``read`` is then never called); the
    path ``""`` stands for the target itself (an archive that cannot be read).
    """

    path: str
    read: Callable[[], bytes]
    sig: tuple[int, int] | None = None
    #: Where the file lies on disk (``None`` for an archive member).
    location: str | None = None
    error: str | None = None
    #: ``False`` for a file reached through a symlink that leaves the audited
    #: directory: audited, never rewritten by ``--fix``.
    in_tree: bool = True


def decode(path: str, data: bytes) -> SourceText:
    """``data`` as text, decoded as Python decodes a source file: a UTF-8 BOM or a PEP 263
    coding cookie (``# -*- coding: latin-1 -*-``) on one of the first two lines, UTF-8
    otherwise; or a :class:`SourceText` that says why it cannot be."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:  # an unknown codec, or a cookie that contradicts the BOM
        return SourceText(path, None, f"bad encoding declaration: {exc}")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        name = "UTF-8" if encoding.startswith("utf-8") else encoding
        return SourceText(path, None, f"not {name}: {exc.reason} at byte {exc.start}")
    except LookupError as exc:  # a cookie naming a codec that is not a text encoding (rot13)
        return SourceText(path, None, f"bad encoding declaration: {exc}")
    return SourceText(path, text, encoding=encoding)


def is_archive(path: Path) -> bool:
    """A wheel, zip or sdist, by its name (read in place, never edited)."""
    return path.name.endswith(ARCHIVE_SUFFIXES)


def _reader(path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    return read


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _refused(path: str, message: str) -> SourceFile:
    return SourceFile(path, _const(b""), error=message)


def _is_python(name: str) -> bool:
    return name.endswith(".py") and len(name) > 3


def _skipped_dir(name: str) -> bool:
    return name in SKIPPED_DIRS or name.endswith(".egg-info")


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


class _TreeWalk:
    """The ``.py`` files under one directory, each real directory visited once.

    Real entries come first, sorted by name at each level; symlinks are followed after
    the tree they lie in (so a link to a directory the walk visits anyway adds nothing,
    whatever the names), each against the real paths already visited.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.seen_dirs = {self.real_root}
        self.seen_files: set[str] = set()
        #: (rel, full path, real path of the directory holding it, inside the root)
        self.links: deque[tuple[str, str, str, bool]] = deque()

    def __iter__(self) -> Iterator[SourceFile]:
        yield from self._tree("", self.root, self.real_root, True)
        while self.links:
            yield from self._link(*self.links.popleft())

    def _tree(self, rel: str, full: str, real: str, in_tree: bool) -> Iterator[SourceFile]:
        """Depth first, without recursion (a hostile tree may be deeper than Python's stack)."""
        stack = [(rel, full, real)]
        while stack:
            rel, full, real = stack.pop()
            try:
                with os.scandir(full) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                yield _refused(rel.rstrip("/") or "", f"cannot list directory: {exc.strerror or exc}")
                continue
            subdirs = []
            for entry in entries:
                name, child = entry.name, f"{rel}{entry.name}"
                if entry.is_symlink():
                    self.links.append((child, entry.path, real, in_tree))
                elif entry.is_dir(follow_symlinks=False):
                    child_real = os.path.join(real, name)
                    if not _skipped_dir(name) and child_real not in self.seen_dirs:
                        self.seen_dirs.add(child_real)
                        subdirs.append((f"{child}/", entry.path, child_real))
                elif _is_python(name):
                    self.seen_files.add(os.path.join(real, name))
                    yield self._file(child, entry.path, in_tree, follow=False)
            stack.extend(reversed(subdirs))

    def _file(self, rel: str, full: str, in_tree: bool, follow: bool) -> SourceFile:
        try:
            st = os.stat(full, follow_symlinks=follow)
        except OSError as exc:
            return _refused(rel, f"cannot stat: {exc.strerror or exc}")
        if not stat.S_ISREG(st.st_mode):
            return _refused(rel, "not a regular file (a FIFO, socket or device is never opened)")
        return SourceFile(rel, _reader(full), (st.st_size, st.st_mtime_ns), full, in_tree=in_tree)

    def _link(self, rel: str, full: str, parent_real: str, parent_in_tree: bool) -> Iterator[SourceFile]:
        name = os.path.basename(full)
        try:
            st = os.stat(full)
        except OSError as exc:  # nothing to audit behind a link that leads nowhere
            if exc.errno == errno.ELOOP:
                yield _refused(rel, "symlink loop")
            elif _is_python(name) and exc.errno == errno.ENOENT:
                yield _refused(rel, f"dangling symlink to {_link_target(full)!r}")
            elif _is_python(name):
                yield _refused(rel, f"cannot stat: {exc.strerror or exc}")
            return
        real = os.path.realpath(full)
        in_tree = parent_in_tree and _inside(real, self.real_root)
        if stat.S_ISDIR(st.st_mode):
            if _skipped_dir(name):
                return
            if _inside(parent_real, real):
                yield _refused(rel, f"symlink loop: it points to {_link_target(full)!r}, a directory that holds it")
            elif real not in self.seen_dirs:
                self.seen_dirs.add(real)
                yield from self._tree(f"{rel}/", full, real, in_tree)
        elif _is_python(name) and real not in self.seen_files:
            self.seen_files.add(real)
            yield self._file(rel, full, in_tree, follow=True)


def iter_source_files(
    target: Path, display: str | None = None, only: Collection[str] | None = None
) -> Iterator[SourceFile]:
    """Every file to audit under ``target``, in a stable order; nothing is read until
    ``SourceFile.read()``.

    A directory yields its ``.py`` files, paths relative to it; a wheel or an sdist its
    ``.py`` members (``sglang/srt/layers/attention/trtllm_mha_backend.py``); any other
    file itself, as Python whatever its name, under ``display`` (the path as the user
    typed it). ``only``: for a directory target, the relative paths to keep
    (``--since``). Raises ``FileNotFoundError`` for a missing target; everything else
    that cannot be audited is a :class:`SourceFile` with an ``error``.
    """
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file or directory: {target}") from None
    except OSError as exc:
        yield _refused(display or target.as_posix(), f"cannot stat: {exc.strerror or exc}")
        return
    if stat.S_ISDIR(st.st_mode):
        for src in _TreeWalk(str(target)):
            if only is None or src.path in only:
                yield src
    elif not stat.S_ISREG(st.st_mode):
        yield _refused(display or target.as_posix(), "not a regular file (a FIFO, socket or device is never opened)")
    elif is_archive(target):
        yield from _archive_files(target)
    else:
        yield SourceFile(display or target.as_posix(), _reader(str(target)), (st.st_size, st.st_mtime_ns), str(target))


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member's name must not be used as a path (absolute, a drive, a
    ``..`` component), or ``None``."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in parts:
        return "a path with a '..' component"
    return None


def _member(name: str, size: int, read: Callable[[], bytes | None]) -> SourceFile:
    problem = unsafe_member_name(name)
    if problem is not None:
        return _refused(name, f"archive member not audited: its name is {problem}")
    if size > MAX_MEMBER_BYTES:
        return _refused(name, f"archive member not read: {size} bytes (limit {MAX_MEMBER_BYTES})")
    try:
        data = read()
    except ARCHIVE_ERRORS as exc:
        return _refused(name, f"cannot read archive member: {type(exc).__name__}: {exc}")
    if data is None:
        return _refused(name, "cannot read archive member")
    return SourceFile(name, _const(data))


def _archive_files(target: Path) -> Iterator[SourceFile]:
    """The ``.py`` members of a wheel / zip / sdist; an archive that cannot be opened or
    listed is one error (path ``""``: the archive itself)."""
    zipped = target.name.endswith((".whl", ".zip"))
    try:
        archive = zipfile.ZipFile(target) if zipped else tarfile.open(target)
    except ARCHIVE_ERRORS as exc:
        yield _unreadable(target, zipped, exc)
        return
    with archive:
        try:
            members = _zip_members(archive) if zipped else _tar_members(archive)
        except ARCHIVE_ERRORS as exc:
            yield _unreadable(target, zipped, exc)
            return
        for name, size, read in members:
            yield _member(name, size, read)


def _unreadable(target: Path, zipped: bool, exc: Exception) -> SourceFile:
    kind = "zip archive" if zipped else "tar archive"
    detail = " ".join(str(exc).split())  # tarfile lists each compression it tried on its own line
    return _refused("", f"not a readable {kind} ({type(exc).__name__}: {detail})")


def _zip_members(archive: zipfile.ZipFile) -> list[tuple[str, int, Callable[[], bytes | None]]]:
    infos = [i for i in archive.infolist() if i.filename.endswith(".py") and not i.is_dir()]
    return [(i.filename, i.file_size, lambda i=i: archive.read(i)) for i in sorted(infos, key=lambda i: i.filename)]


def _tar_members(archive: tarfile.TarFile) -> list[tuple[str, int, Callable[[], bytes | None]]]:
    infos = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".py")]
    return [(m.name, m.size, lambda m=m: _tar_read(archive, m)) for m in sorted(infos, key=lambda m: m.name)]


def _tar_read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | None:
    handle = archive.extractfile(member)
    return None if handle is None else handle.read()
