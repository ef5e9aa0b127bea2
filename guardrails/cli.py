"""The ``fmha-guard`` command line.

``fmha-guard audit [PATH...]``
    Audit directories, ``.py`` files, or wheels / sdists (read in place) with the lint
    rules. With no PATH it audits ``examples/``. ``--format json`` prints
    ``{"files_scanned", "findings": [{"rule", "name", "path", "line", "col", "symbol",
    "message"}], "errors": [{"path", "message"}]}``.
``fmha-guard lint FILE...``
    The same engine for pre-commit: one ``path:line:col: CODE message`` line a finding.
``fmha-guard rules`` / ``fmha-guard invariants`` / ``fmha-guard explain RULE-OR-INVARIANT``
    List the rules or the invariant catalog; print a rule's documentation (ruff's
    "What it does / Why is this bad? / Example / Use instead") or an invariant's entry.

Exit status: 0 no findings, 1 findings, 2 usage or internal error. Files that fail
to parse are listed as errors and do not change the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lint_rules import ALL_RULES, AuditResult, UnknownRuleError, audit_paths, find_rule, load_config, select_rules
from lint_rules.config import ConfigError

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: reported on stderr with exit status 2."""


def default_audit_root() -> Path:
    """``./examples`` if present, else the ``examples/`` beside this package (a source checkout)."""
    for candidate in (Path("examples"), Path(__file__).resolve().parent.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise UsageError("no PATH given and no examples/ directory found; pass a directory, file or wheel")


def _codes(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _print_audit_text(result: AuditResult, console: Console) -> None:
    by_rule = Counter((f.rule, f.name) for f in result.findings)
    by_file = Counter(f.path for f in result.findings)
    console.print(
        f"Scanned {result.files_scanned} files ({result.files_parsed} parsed after the keyword "
        f"pre-filter): {len(result.findings)} findings, {len(result.errors)} file errors."
    )
    if result.findings:
        rules = Table(title="Findings per rule")
        rules.add_column("rule")
        rules.add_column("name")
        rules.add_column("findings", justify="right")
        for (code, name), count in sorted(by_rule.items()):
            rules.add_row(code, name, str(count))
        console.print(rules)
        files = Table(title="Findings per file")
        files.add_column("file")
        files.add_column("findings", justify="right")
        for path, count in sorted(by_file.items()):
            files.add_row(escape(path), str(count))
        console.print(files)
    for f in result.findings:
        console.print(
            f"[bold]{escape(f.path)}:{f.line}:{f.col}[/bold] [red]{f.rule}[/red] {f.name} "
            f"in [cyan]{escape(f.symbol)}[/cyan]"
        )
        console.print(f"    {escape(f.message)}", soft_wrap=True)
        line = result.lines.get((f.path, f.line))
        if line:
            console.print(f"    [dim]{f.line:>5} |[/dim] {escape(line)}", soft_wrap=True)
    for e in result.errors:
        console.print(f"[yellow]error[/yellow] {escape(e.path)}: {escape(e.message)}", soft_wrap=True)


def _run_audit(args: argparse.Namespace, console: Console) -> int:
    targets = [Path(p) for p in args.paths] or [default_audit_root()]
    for target in targets:
        if not target.exists():
            raise UsageError(f"no such file or directory: {target}")
    config = load_config(targets[0] if targets[0].is_dir() else Path.cwd())
    rules = select_rules(_codes(args.select), _codes(args.ignore))
    result = audit_paths(targets, rules, config, jobs=args.jobs)
    if args.format == "json":
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    else:
        _print_audit_text(result, console)
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def _run_lint(args: argparse.Namespace) -> int:
    files = [Path(p) for p in args.files]
    for file in files:
        if not file.is_file():
            raise UsageError(f"not a file: {file}")
    config = load_config(Path.cwd())
    rules = select_rules(_codes(args.select), _codes(args.ignore))
    result = audit_paths(files, rules, config, jobs=1, display=list(args.files))
    for f in result.findings:
        print(f"{f.path}:{f.line}:{f.col}: {f.rule} {f.message}")
    for e in result.errors:
        print(f"{e.path}: error: {e.message}", file=sys.stderr)
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def _run_rules(console: Console) -> int:
    table = Table(title="fmha-guard rules")
    table.add_column("code")
    table.add_column("name")
    table.add_column("default")
    table.add_column("what it flags")
    for rule in ALL_RULES:
        table.add_row(rule.CODE, rule.NAME, "on" if rule.DEFAULT_ENABLED else "opt-in", escape(rule.summary()))
    console.print(table)
    return EXIT_CLEAN


def describe_invariant(entry) -> str:
    """A catalog entry as text: id, level, statement, likely cause, fix, source."""
    parts = [
        f"{entry.id} (level: {entry.level})",
        "",
        entry.statement,
        "",
        f"Likely cause: {entry.cause}",
        f"Fix: {entry.fix}",
        f"Source: {entry.source}",
    ]
    if getattr(entry, "values_part", None):
        parts.insert(4, f"At the values level: {entry.values_part}")
    return "\n".join(parts)


def _run_invariants(console: Console) -> int:
    from guardrails import invariants

    table = Table(title="Invariant catalog (FmhaInvariantError.invariant ids)")
    table.add_column("id")
    table.add_column("level")
    table.add_column("statement")
    table.add_column("source")
    for entry in invariants.CATALOG.values():
        table.add_row(entry.id, str(entry.level), escape(entry.statement), escape(entry.source))
    console.print(table)
    return EXIT_CLEAN


def _run_explain(args: argparse.Namespace) -> int:
    try:
        rule = find_rule(args.key)
    except UnknownRuleError as exc:
        from guardrails import invariants

        entry = invariants.CATALOG.get(args.key)
        if entry is None:
            ids = ", ".join(invariants.CATALOG)
            raise UsageError(f"{exc}; invariant ids: {ids}") from None
        print(describe_invariant(entry))
        return EXIT_CLEAN
    print(f"{rule.CODE} {rule.NAME}\n")
    print(rule.doc())
    return EXIT_CLEAN


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmha-guard",
        description="Find attention-metadata bugs before they reach FMHA kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    audit = sub.add_parser("audit", help="audit directories, .py files, wheels or sdists")
    audit.add_argument("paths", nargs="*", metavar="PATH", help="default: examples/")
    audit.add_argument("--format", choices=("text", "json"), default="text")
    audit.add_argument("--select", metavar="CODES", help="comma-separated rules to run (e.g. GR001,GR101)")
    audit.add_argument("--ignore", metavar="CODES", help="comma-separated rules to skip")
    audit.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")

    lint = sub.add_parser("lint", help="lint files, one line a finding (for pre-commit)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--select", metavar="CODES")
    lint.add_argument("--ignore", metavar="CODES")

    sub.add_parser("rules", help="list the rules")
    sub.add_parser("invariants", help="list the invariant catalog")
    explain = sub.add_parser("explain", help="print a rule's documentation or an invariant's entry")
    explain.add_argument("key", metavar="RULE-OR-INVARIANT", help="GR001, padded-batch-size-in-kernel-call, batch-size, ...")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    try:
        if args.command == "audit":
            return _run_audit(args, console)
        if args.command == "lint":
            return _run_lint(args)
        if args.command == "rules":
            return _run_rules(console)
        if args.command == "invariants":
            return _run_invariants(console)
        return _run_explain(args)
    except (UsageError, UnknownRuleError, ConfigError, ValueError, OSError) as exc:
        print(f"fmha-guard: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
