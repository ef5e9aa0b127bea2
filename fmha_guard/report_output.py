"""Where the report goes: stdout, or ``--output-file`` (written atomically), and the
summary after it (stdout for the text formats, stderr when the report goes to a file;
none with ``-q``, none on stdout after a machine-readable report)."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from lint_rules.atomic_write import write_atomically

from .formats import ALIASES, MARKUP, Report, render
from .formats.summary import summary_lines


def _body(args: argparse.Namespace, fmt: str, report: Report) -> tuple[str, bool]:
    """The report's text, and whether it is rich markup."""
    if args.statistics:
        from .formats import statistics

        if fmt == "json":
            return statistics.render_json(report.result), False
        return statistics.render_text(report.result), False
    return render(fmt, report), fmt in MARKUP


def _plain(markup: str) -> str:
    """Rich markup as plain text (what a file or a pipe gets)."""
    from .console import console

    buffer = io.StringIO()
    console(buffer, force_terminal=False, color_system=None).print(markup, end="")
    return buffer.getvalue()


def write_report(args: argparse.Namespace, report: Report) -> None:
    fmt = ALIASES.get(args.output_format, args.output_format)
    body, markup = _body(args, fmt, report)
    wanted = getattr(args, "summary", True) and not (args.quiet or args.statistics)
    summary = summary_lines(report.result) if wanted else []
    if args.output_file:
        target = Path(args.output_file).absolute()
        target.parent.mkdir(parents=True, exist_ok=True)  # as ruff's --output-file does
        write_atomically(target, _plain(body) if markup else body)
        for line in summary:
            print(line, file=sys.stderr)
        return
    if not markup:
        sys.stdout.write(body)
        return
    from rich.markup import escape

    from .console import console

    out = console()
    if body:
        out.print(body, end="")
    for line in summary:
        out.print(f"[bold]{escape(line)}[/bold]" if line.startswith("Found") else escape(line))
