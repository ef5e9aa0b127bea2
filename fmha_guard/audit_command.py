"""``fmha-guard audit`` and ``fmha-guard lint``: the lint engine over paths, its reports.

Both share the rule selection (``--select`` / ``--ignore`` replace the config's), the
result cache (``--cache-dir`` / ``--no-cache``), ``--baseline`` and ``--fix`` /
``--diff`` (:mod:`lint_rules.autofix`). rich, libcst and the rules are imported only
when needed: an audit answered from the cache with ``--format json`` loads none of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from lint_rules.config import LintConfig, load_config
from lint_rules.engine import AuditResult, RuleSelection, audit_paths

from .console import console, print_table
from .exit_status import EXIT_CLEAN, EXIT_FINDINGS, UsageError

if TYPE_CHECKING:
    from rich.console import Console

CACHE_SUBDIR = Path(".cache") / "fmha-guard"


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options ``audit`` and ``lint`` share."""
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


def default_audit_root() -> Path:
    """``./examples`` if present, else the ``examples/`` beside this package (a source checkout)."""
    for candidate in (Path("examples"), Path(__file__).resolve().parent.parent / "examples"):
        if candidate.is_dir():
            return candidate
    raise UsageError("no PATH given and no examples/ directory found; pass a directory, file or wheel")


def _codes(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


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


class _Run:
    """One ``audit`` / ``lint`` invocation: its targets, config and selection, rerunnable
    after ``--fix`` rewrote files."""

    def __init__(self, args: argparse.Namespace, targets: list[Path], config: LintConfig, **audit) -> None:
        self.args = args
        self.targets = targets
        self.config = config
        self.selection = _selection(args, config)
        self.audit_options = audit

    def audit(self) -> AuditResult:
        root = next((t for t in self.targets if t.is_dir()), Path.cwd())
        result = audit_paths(
            self.targets,
            self.selection,
            self.config,
            cache_dir=_cache_dir(self.args, root),
            **self.audit_options,
        )
        _apply_baseline(self.args, result)
        return result

    def fix_or_diff(self, result: AuditResult) -> tuple[AuditResult, list[str] | None]:
        """Apply ``--fix`` (then audit again) or compute ``--diff``; the result to report,
        and the diffs when ``--diff`` was asked (``None`` otherwise)."""
        if not (self.args.fix or self.args.diff):
            return result, None
        try:
            from lint_rules.autofix import apply_fixes
        except ImportError as exc:
            raise UsageError(f"--fix/--diff need lint_rules.autofix, which cannot be imported here: {exc}") from None
        diffs = apply_fixes(result, self._fix_root(), write=bool(self.args.fix), config=self.config)
        if self.args.diff:
            return result, diffs
        if diffs:
            print(f"fmha-guard: fixed {len(diffs)} file{'s' if len(diffs) != 1 else ''}", file=sys.stderr)
            result = self.audit()
        return result, None

    def _fix_root(self) -> Path:
        dirs = [t for t in self.targets if t.is_dir()]
        if len(dirs) > 1 or (dirs and len(self.targets) > 1):
            raise UsageError("--fix/--diff take one directory, or files")
        return dirs[0] if dirs else Path.cwd()


def _check_fix_flags(args: argparse.Namespace) -> None:
    if args.fix and args.diff:
        raise UsageError("--fix and --diff are exclusive: --diff shows the fixes, --fix writes them")


def _print_diffs(diffs: list[str], result: AuditResult) -> int:
    sys.stdout.write("".join(d if d.endswith("\n") else d + "\n" for d in diffs))
    return EXIT_FINDINGS if diffs or result.findings else EXIT_CLEAN


def run_audit(args: argparse.Namespace) -> int:
    """``fmha-guard audit [PATH...]``: the exit status."""
    _check_fix_flags(args)
    targets = [Path(p) for p in args.paths] or [default_audit_root()]
    for target in targets:
        if not target.exists():
            raise UsageError(f"no such file or directory: {target}")
    config = load_config(targets[0] if targets[0].is_dir() else Path.cwd())
    only = None
    if args.since:
        targets, only = _since(targets, args.since)
    run = _Run(args, targets, config, jobs=args.jobs, only=only)
    result, diffs = run.fix_or_diff(run.audit())
    if diffs is not None:
        return _print_diffs(diffs, result)
    if args.format == "json":
        sys.stdout.write(json.dumps(result.as_dict(), indent=2) + "\n")
    elif args.format == "sarif":
        _print_sarif(result, run.selection, targets)
    else:
        _print_audit_text(result, console())
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def run_lint(args: argparse.Namespace) -> int:
    """``fmha-guard lint FILE...``: one ``path:line:col: CODE message`` line a finding."""
    _check_fix_flags(args)
    files = [Path(p) for p in args.files]
    for file in files:
        if not file.is_file():
            raise UsageError(f"not a file: {file}")
    run = _Run(args, files, load_config(Path.cwd()), display=list(args.files))
    result, diffs = run.fix_or_diff(run.audit())
    if diffs is not None:
        return _print_diffs(diffs, result)
    for f in result.findings:
        print(f"{f.path}:{f.line}:{f.col}: {f.rule} {f.message}")
    for e in result.errors:
        print(f"{e.path}: error: {e.message}", file=sys.stderr)
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN


def _print_sarif(result: AuditResult, selection: RuleSelection, targets: list[Path]) -> None:
    import guardrails
    from lint_rules.sarif import to_sarif
    from lint_rules.suppressions import PSEUDO_RULES

    rules = [*selection.rules, *(PSEUDO_RULES[c] for c in sorted(selection.pseudo))]
    root = next((t for t in targets if t.is_dir()), None)
    if root is None and all(t.suffix == ".py" for t in targets):
        root = Path.cwd()
    sys.stdout.write(json.dumps(to_sarif(result, rules, root, guardrails.__version__), indent=2) + "\n")


def _print_audit_text(result: AuditResult, out: "Console") -> None:
    from rich.markup import escape

    by_rule = Counter((f.rule, f.name) for f in result.findings)
    by_file = Counter(f.path for f in result.findings)
    extra = f", {result.cache_hits} from cache" if result.cache_hits else ""
    out.print(
        f"Scanned {result.files_scanned} files ({result.files_parsed} parsed after the keyword "
        f"pre-filter{extra}): {len(result.findings)} findings, {len(result.errors)} file errors."
    )
    if result.baselined:
        out.print(f"{result.baselined} findings are in the baseline and not shown.")
    if result.findings:
        rule_rows = [(code, name, str(n)) for (code, name), n in sorted(by_rule.items())]
        print_table(out, "Findings per rule", ("rule", "name", "findings"), rule_rows, right=("findings",))
        file_rows = [(path, str(n)) for path, n in sorted(by_file.items())]
        print_table(out, "Findings per file", ("file", "findings"), file_rows, right=("findings",))
    for f in result.findings:
        out.print(
            f"[bold]{escape(f.path)}:{f.line}:{f.col}[/bold] [red]{f.rule}[/red] {f.name} "
            f"in [cyan]{escape(f.symbol)}[/cyan]"
        )
        out.print(f"    {escape(f.message)}", soft_wrap=True)
        line = result.lines.get((f.path, f.line))
        if line:
            out.print(f"    [dim]{f.line:>5} |[/dim] {escape(line)}", soft_wrap=True)
    for e in result.errors:
        out.print(f"[yellow]error[/yellow] {escape(e.path)}: {escape(e.message)}", soft_wrap=True)
