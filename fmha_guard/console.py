"""Text output through rich, imported only when a text report, a table or a progress
bar is printed."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def console(file: IO[str] | None = None, **options) -> "Console":
    """A console that prints without syntax highlighting or emoji codes and never hard-wraps
    (``soft_wrap``): a report piped to a file or a CI log keeps one line per line."""
    from rich.console import Console

    return Console(file=file, highlight=False, emoji=False, soft_wrap=True, **options)


def stderr_terminal() -> "Console | None":
    """A console on stderr if stderr is a terminal, else ``None`` (rich not imported).
    Progress bars draw only on it; the tests replace it with a console that is forced
    to be a terminal."""
    if not sys.stderr.isatty():
        return None
    return console(sys.stderr)


def print_table(
    out: "Console",
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    right: Sequence[str] = (),
) -> None:
    """One table: ``columns`` headed, ``right`` of them right-justified; cells are text
    (escaped, never read as rich markup)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)
