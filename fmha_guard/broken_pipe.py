"""Output to a reader that may leave early (``fmha-guard audit | head -1``).

A broken pipe ends the output, not the command: stdout is flushed, then pointed at
``os.devnull`` (the recipe of Python's ``signal`` documentation, "Note on SIGPIPE"), so
that neither a later write nor the flush at exit raises again, and the command exits
with the status its findings give.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def reader_may_close() -> Iterator[None]:
    """Write to stdout inside this block; a reader that closed the pipe ends the output quietly."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # stdout without a file descriptor (captured)
            pass
