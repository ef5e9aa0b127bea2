"""Text output through rich, imported only when a text report or a table is printed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def console() -> "Console":
    """A console that prints without syntax highlighting."""
    from rich.console import Console

    return Console(highlight=False)


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
