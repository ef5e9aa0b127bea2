"""A progress bar on stderr while an audit parses files (SGLang's ``srt/`` takes 10-30 s
cold): only when stderr is a terminal, never with ``-q``, and only once more than
:data:`MIN_FILES` files are to be parsed (a pre-commit run over three files shows none).

It is the engine's :class:`lint_rules.engine.Progress`; it draws without a refresh
thread (the engine forks worker processes), at most every :data:`REFRESH_S`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import console as consoles

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

#: A handful of files parse in well under a second: no bar for them.
MIN_FILES = 8
REFRESH_S = 0.1


class AuditProgress:
    """``fmha-guard: linting ━━━━━━━ 120/847 0:00:04`` on ``console``."""

    def __init__(self, console: "Console") -> None:
        self.console = console
        self.total = 0
        self.done = 0
        self._bar: Progress | None = None
        self._task = None
        self._drawn = 0.0

    def add(self, total: int) -> None:
        self.total += total
        if self._bar is None and self.total > MIN_FILES:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("fmha-guard: linting"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                auto_refresh=False,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("lint", total=self.total, completed=self.done)
            self._bar.refresh()
        elif self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def advance(self) -> None:
        self.done += 1
        if self._bar is None:
            return
        now = time.monotonic()
        refresh = now - self._drawn >= REFRESH_S or self.done == self.total
        self._bar.update(self._task, completed=self.done, refresh=refresh)
        if refresh:
            self._drawn = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def progress_for(quiet: bool) -> AuditProgress | None:
    """The bar for one audit, or ``None`` (``-q``, or stderr is not a terminal)."""
    if quiet:
        return None
    out = consoles.stderr_terminal()
    return AuditProgress(out) if out is not None and out.is_terminal else None
