"""``--output-format concise`` (``lint``'s default, what pre-commit shows): one
``path:line:col: CODE [*] message`` line per finding (``[*]``: ``--fix`` fixes it), then
one ``path: error: message`` line per file that could not be linted. Rich markup."""

from __future__ import annotations

from rich.markup import escape

from lint_rules.finding import FileError, Finding

from .report import Report


def finding_line(report: Report, f: Finding) -> str:
    fix = "[cyan]\\[*][/cyan] " if f.fixable else ""
    return f"[bold]{escape(report.path(f))}[/bold]:{f.line}:{f.col}: [bold red]{f.rule}[/bold red] {fix}{escape(f.message)}"


def error_line(report: Report, e: FileError) -> str:
    return f"[bold]{escape(report.path(e))}[/bold]: [bold red]error[/bold red]: {escape(e.message)}"


def render(report: Report) -> str:
    lines = [finding_line(report, f) for f in report.findings()]
    lines += [error_line(report, e) for e in report.errors()]
    return "\n".join(lines) + ("\n" if lines else "")
