"""Writing a file so that no reader ever sees half of it: a temporary file in the same
directory, then ``os.replace`` (atomic on POSIX and Windows). The result cache, the
report of ``--output-file``, baselines, ``--fix`` and any other file a parallel run may
read go through it.

The temporary file gets the permission bits ``open()`` would give the file: those of
the file it replaces, else ``0o666`` less the umask (``tempfile.mkstemp``'s ``0o600``
would make a committed baseline or a fixed source private).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temporary_copy(path: Path, data: bytes, mode: int | None = None) -> str:
    """A new temporary file (``.tmp-*``) beside ``path`` holding ``data``, for the caller to
    ``os.replace`` over ``path`` (or unlink). ``mode``: its permission bits (default: see
    the module). Raises ``OSError`` (nothing left behind) when it cannot be written."""
    path = Path(path)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = None
    for _ in range(100):
        tmp = path.parent / f".tmp-{secrets.token_hex(6)}{path.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - a hundred random names taken
        raise FileExistsError(f"no free temporary name in {path.parent}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if mode is not None:
                os.chmod(tmp, mode)
    except BaseException:
        discard(str(tmp))
        raise
    return str(tmp)


def discard(tmp: str) -> None:
    """Remove a temporary file of :func:`temporary_copy` that will not be used."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_atomically(path: Path, text: str | bytes, mode: int | None = None) -> None:
    """``text`` (UTF-8 when a ``str``) into ``path``; the temporary file is removed on failure."""
    tmp = temporary_copy(Path(path), text.encode("utf-8") if isinstance(text, str) else text, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise
