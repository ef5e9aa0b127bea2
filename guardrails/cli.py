"""The ``fmha-guard`` command line.

``fmha-guard audit [PATH...]``
    Audit directories, ``.py`` files, or wheels / sdists (read in place) with the lint
    rules. With no PATH it audits ``examples/``. ``--format json`` prints
    ``{"files_scanned", "findings": [{"rule", "name", "path", "line", "col", "symbol",
    "message"}], "errors": [{"path", "message"}]}``; ``--format sarif`` prints a SARIF
    2.1.0 log (see :mod:`lint_rules.sarif`). Findings of the pseudo-rules GR900
    unused-suppression / GR901 invalid-suppression are findings like any other.
``fmha-guard lint FILE...``
    The same engine for pre-commit: one ``path:line:col: CODE message`` line a finding.
``fmha-guard rules`` / ``fmha-guard invariants`` / ``fmha-guard explain RULE-OR-INVARIANT``
    List the rules or the invariant catalog; print a rule's documentation (ruff's
    "What it does / Why is this bad? / Example / Use instead") or an invariant's entry.

``audit`` and ``lint`` share: ``--select`` / ``--ignore`` (replace the config's),
``--baseline FILE`` (write it when missing, else report only findings not in it),
``--cache-dir DIR`` / ``--no-cache`` (per-file result cache, default
``<root>/.cache/fmha-guard``), ``--fix`` (rewrite files in place) / ``--diff`` (print
the fixes as unified diffs, change nothing). ``audit`` also takes ``--since GITREF``
(only ``.py`` files changed since GITREF, plus untracked ones) and ``--jobs``.

Exit status: 0 no findings, 1 findings (with ``--baseline``: new findings; with
``--diff``: a fix to show), 2 usage or internal error. Files that fail to parse are
listed as errors and do not change the exit status.

Start-up is kept cheap: rich, libcst, pydantic and the rules are imported only when
needed, so an audit answered from the cache with ``--format json`` loads none of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lint_rules.config import ConfigError, LintConfig, load_config
from lint_rules.engine import AuditResult, RuleSelection, audit_paths

if TYPE_CHECKING:
    from rich.console import Console

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
CACHE_SUBDIR = Path(".cache") / "fmha-guard"


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


def _console() -> "Console":
    from rich.console import Console

    return Console(highlight=False)


def _print_audit_text(result: AuditResult, console: "Console") -> None:
    from rich.markup import escape
    from rich.table import Table

    by_rule = Counter((f.rule, f.name) for f in result.findings)
    by_file = Counter(f.path for f in result.findings)
    extra = f", {result.cache_hits} from cache" if result.cache_hits else ""
    console.print(
        f"Scanned {result.files_scanned} files ({result.files_parsed} parsed after the keyword "
        f"pre-filter{extra}): {len(result.findings)} findings, {len(result.errors)} file errors."
    )
    if result.baselined:
        console.print(f"{result.baselined} findings are in the baseline and not shown.")
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


def _selection(args: argparse.Namespace, config: LintConfig) -> RuleSelection:
    """``--select`` / ``--ignore`` when given, else the config's."""
    select = _codes(args.select) if args.select is not None else config.select
    ignore = _codes(args.ignore) if args.ignore is not None else config.ignore
    return RuleSelection(select, ignore)


def _cache_dir(args: argparse.Namespace, root: Path) -> Path | None:
    if args.no_cache:
        return None
    return Path(args.cache_dir) if args.cache_dir else root / CACHE_SUBDIR


def _since(targets: list[Path], ref: str) -> tuple[list[Path], list[set[str] | None]]:
    from lint_rules.changed_files import changed_python_files

    kept: list[Path] = []
    only: list[set[str] | None] = []
    for target in targets:
        if target.is_dir():
            kept.append(target)
            only.append(changed_python_files(target, ref))
        elif target.suffix == ".py":
            if changed_python_files(target, ref):
                kept.append(target)
                only.append(None)
        else:
            raise UsageError(f"--since works on directories and .py files, not on {target}")
    return kept, only


def _apply_baseline(args: argparse.Namespace, result: AuditResult) -> None:
    if not args.baseline:
        return
    from lint_rules.baseline import filter_new, load_baseline, write_baseline

    path = Path(args.baseline)
    if not path.exists():
        written = write_baseline(path, result)
        print(
            f"fmha-guard: wrote baseline {path} with {written} findings; later runs report only new ones",
            file=sys.stderr,
        )
    filter_new(result, load_baseline(path))


def _autofix():
    try:
        from lint_rules.autofix import apply_fixes
    except ImportError as exc:
        raise UsageError(f"--fix/--diff need lint_rules.autofix, which cannot be imported here: {exc}") from None
    return apply_fixes


def _fix_root(targets: list[Path]) -> Path:
    dirs = [t for t in targets if t.is_dir()]
    if len(dirs) > 1 or (dirs and len(targets) > 1):
        raise UsageError("--fix/--diff take one directory, or files")
    return dirs[0] if dirs else Path.cwd()


def _audit(args, targets, config, selection, only, display=None, jobs=None) -> AuditResult:
    root = next((t for t in targets if t.is_dir()), Path.cwd())
    result = audit_paths(
        targets, selection, config, jobs=jobs, display=display, cache_dir=_cache_dir(args, root), only=only
    )
    _apply_baseline(args, result)
    return result


def _fix_or_diff(args, targets, result, config) -> tuple[list[str], bool]:
    """Run the autofix; returns (diffs, whether files were rewritten)."""
    apply_fixes = _autofix()
    diffs = apply_fixes(result, _fix_root(targets), write=bool(args.fix))
    if args.fix and diffs:
        print(f"fmha-guard: fixed {len(diffs)} file{'s' if len(diffs) != 1 else ''}", file=sys.stderr)
    return diffs, bool(args.fix and diffs)


def _check_fix_flags(args: argparse.Namespace) -> None:
    if args.fix and args.diff:
        raise UsageError("--fix and --diff are exclusive: --diff shows the fixes, --fix writes them")


def _run_audit(args: argparse.Namespace) -> int:
    _check_fix_flags(args)
    targets = [Path(p) for p in args.paths] or [default_audit_root()]
    for target in targets:
        if not target.exists():
            raise UsageError(f"no such file or directory: {target}")
    config = load_config(targets[0] if targets[0].is_dir() else Path.cwd())
    selection = _selection(args, config)
    only = None
    if args.since:
        targets, only = _since(targets, args.since)
    result = _audit(args, targets, config, selection, only, jobs=args.jobs)
    if args.fix or args.diff:
        diffs, rewritten = _fix_or_diff(args, targets, result, config)
        if args.diff:
            sys.stdout.write("".join(d if d.endswith("\n") else d + "\n" for d in diffs))
            return EXIT_FINDINGS if diffs else (EXIT_FINDINGS if result.findings else EXIT_CLEAN)
        if rewritten:
            result = _audit(args, targets, config, selection, only, jobs=args.jobs)
    if args.format == "json":
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    elif args.format == "sarif":
        from lint_rules.result_cache import package_version
        from lint_rules.sarif import to_sarif
        from lint_rules.suppressions import PSEUDO_RULES

        rules = [*selection.rules, *(PSEUDO_RULES[c] for c in sorted(selection.pseudo))]
        root = next((t for t in targets if t.is_dir()), None)
        if root is None and all(t.suffix == ".py" for t in targets):
            root = Path.cwd()
        sys.stdout.write(json.dumps(to_sarif(result, rules, root, package_version()), indent=2) + "\n")
    else:
        _print_audit_text(result, _console())
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def _run_lint(args: argparse.Namespace) -> int:
    _check_fix_flags(args)
    files = [Path(p) for p in args.files]
    for file in files:
        if not file.is_file():
            raise UsageError(f"not a file: {file}")
    config = load_config(Path.cwd())
    selection = _selection(args, config)
    display = list(args.files)
    result = _audit(args, files, config, selection, None, display=display, jobs=None)
    if args.fix or args.diff:
        diffs, rewritten = _fix_or_diff(args, files, result, config)
        if args.diff:
            sys.stdout.write("".join(d if d.endswith("\n") else d + "\n" for d in diffs))
            return EXIT_FINDINGS if diffs or result.findings else EXIT_CLEAN
        if rewritten:
            result = _audit(args, files, config, selection, None, display=display, jobs=None)
    for f in result.findings:
        print(f"{f.path}:{f.line}:{f.col}: {f.rule} {f.message}")
    for e in result.errors:
        print(f"{e.path}: error: {e.message}", file=sys.stderr)
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def _run_rules() -> int:
    from rich.markup import escape
    from rich.table import Table

    from lint_rules.registry import ALL_RULES
    from lint_rules.suppressions import PSEUDO_RULES

    table = Table(title="fmha-guard rules")
    table.add_column("code")
    table.add_column("name")
    table.add_column("default")
    table.add_column("what it flags")
    for rule in [*ALL_RULES, *PSEUDO_RULES.values()]:
        table.add_row(rule.CODE, rule.NAME, "on" if rule.DEFAULT_ENABLED else "opt-in", escape(rule.summary()))
    _console().print(table)
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


def _run_invariants() -> int:
    from rich.markup import escape
    from rich.table import Table

    from guardrails import invariants

    table = Table(title="Invariant catalog (FmhaInvariantError.invariant ids)")
    table.add_column("id")
    table.add_column("level")
    table.add_column("statement")
    table.add_column("source")
    for entry in invariants.CATALOG.values():
        table.add_row(entry.id, str(entry.level), escape(entry.statement), escape(entry.source))
    _console().print(table)
    return EXIT_CLEAN


def _run_explain(args: argparse.Namespace) -> int:
    from lint_rules.registry import UnknownRuleError, find_rule
    from lint_rules.suppressions import PSEUDO_RULES

    pseudo = next((r for r in PSEUDO_RULES.values() if args.key.upper() == r.CODE or args.key == r.NAME), None)
    if pseudo is not None:
        print(f"{pseudo.CODE} {pseudo.NAME}\n")
        print(pseudo.doc())
        return EXIT_CLEAN
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


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--select", metavar="CODES", help="comma-separated rules to run (replaces the config's select)")
    parser.add_argument("--ignore", metavar="CODES", help="comma-separated rules to skip (replaces the config's ignore)")
    parser.add_argument(
        "--baseline", metavar="FILE",
        help="write FILE with the current findings if it does not exist; else report only findings not in it",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="result cache (default: <root>/.cache/fmha-guard)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    parser.add_argument("--fix", action="store_true", help="apply the autofixes in place (never interactive)")
    parser.add_argument("--diff", action="store_true", help="print the autofixes as unified diffs; change nothing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmha-guard",
        description="Find attention-metadata bugs before they reach FMHA kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    audit = sub.add_parser("audit", help="audit directories, .py files, wheels or sdists")
    audit.add_argument("paths", nargs="*", metavar="PATH", help="default: examples/")
    audit.add_argument("--format", choices=("text", "json", "sarif"), default="text")
    audit.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    audit.add_argument("--since", metavar="GITREF", help="audit only .py files changed since GITREF (plus untracked)")
    _add_common(audit)

    lint = sub.add_parser("lint", help="lint files, one line a finding (for pre-commit)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    _add_common(lint)

    sub.add_parser("rules", help="list the rules")
    sub.add_parser("invariants", help="list the invariant catalog")
    explain = sub.add_parser("explain", help="print a rule's documentation or an invariant's entry")
    explain.add_argument("key", metavar="RULE-OR-INVARIANT", help="GR001, padded-batch-size-in-kernel-call, batch-size, ...")
    return parser


def _is_usage_error(exc: Exception) -> bool:
    kinds: tuple[type[BaseException], ...] = (UsageError, ConfigError, ValueError, OSError)
    registry = sys.modules.get("lint_rules.registry")
    if registry is not None:
        kinds += (registry.UnknownRuleError,)
    return isinstance(exc, kinds)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "audit":
            return _run_audit(args)
        if args.command == "lint":
            return _run_lint(args)
        if args.command == "rules":
            return _run_rules()
        if args.command == "invariants":
            return _run_invariants()
        return _run_explain(args)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        print(f"fmha-guard: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
