"""``fmha-guard audit`` and ``fmha-guard lint``: the lint engine over paths, its reports.

Both share the rule selection (``--select`` / ``--ignore`` replace each file's config;
``--config FILE`` forces one config file), the result cache (``--cache-dir`` /
``--no-cache``), ``--baseline``, ``--fix`` / ``--diff`` (:mod:`lint_rules.autofix`) and
the report options: ``--output-format`` (:mod:`fmha_guard.formats`), ``--output-file``,
``--statistics``, ``-q`` and ``--exit-zero``. rich, libcst and the rules are imported
only when needed: an audit answered from the cache with ``--output-format json`` loads
none of them.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from lint_rules.config import ConfigResolver, LintConfig
from lint_rules.engine import AuditResult, RuleSelection, audit_paths
from lint_rules.sources import is_archive

from .broken_pipe import reader_may_close
from .exit_status import EXIT_CLEAN, EXIT_FINDINGS, UsageError
from .formats import ALIASES, FORMATS

CACHE_SUBDIR = Path(".cache") / "fmha-guard"


def add_common_options(parser: argparse.ArgumentParser, default_format: str) -> None:
    """The options ``audit`` and ``lint`` share."""
    parser.add_argument("--select", metavar="CODES", help="comma-separated rules to run (replaces the config's select)")
    parser.add_argument("--ignore", metavar="CODES", help="comma-separated rules to skip (replaces the config's ignore)")
    parser.add_argument(
        "--config", metavar="FILE",
        help="use this config file for every path (default: the nearest pyproject.toml / setup.cfg above each file)",
    )
    parser.add_argument(
        "--baseline", metavar="FILE", help="report only the findings FILE does not hold (FILE must exist)"
    )
    parser.add_argument(
        "--write-baseline", metavar="FILE",
        help="write (or replace) FILE with the current findings, which then pass; its directory must exist",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="result cache (default: <root>/.cache/fmha-guard)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    parser.add_argument("--fix", action="store_true", help="apply the autofixes in place (never interactive)")
    parser.add_argument("--diff", action="store_true", help="print the autofixes as unified diffs; change nothing")
    report = parser.add_argument_group("report")
    report.add_argument(
        "--output-format", "--format", dest="output_format", default=default_format,
        choices=[*FORMATS, *ALIASES], metavar="{" + ",".join(FORMATS) + "}",
        help=f"full: findings with source line and evidence; concise: one line each; json; sarif; "
        f"github: workflow commands; gitlab: Code Quality JSON; junit: JUnit XML (default: {default_format})",
    )
    report.add_argument(
        "--output-file", "-o", metavar="FILE", help="write the report to FILE (atomically); the summary goes to stderr"
    )
    report.add_argument("--statistics", action="store_true", help="print how many findings each rule has, not the findings")
    report.add_argument("-q", "--quiet", action="store_true", help="print the findings only: no summary, no progress")
    report.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings or file errors")


def _codes(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _selection(args: argparse.Namespace) -> RuleSelection:
    """``--select`` / ``--ignore`` where given; each file's config elsewhere."""
    select = _codes(args.select) if args.select is not None else None
    ignore = _codes(args.ignore) if args.ignore is not None else None
    return RuleSelection(select, ignore, from_config=True)


def _resolver(args: argparse.Namespace) -> ConfigResolver:
    if args.config is None:
        return ConfigResolver()
    path = Path(args.config)
    if not path.is_file():
        raise UsageError(f"--config: no such file: {path}")
    return ConfigResolver(path)


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
        elif not is_archive(target):
            if changed_python_files(target, ref):
                kept.append(target)
                only.append(None)
        else:
            raise UsageError(f"--since works on directories and files, not on an archive: {target}")
    return kept, only


def _info(args: argparse.Namespace, message: str) -> None:
    """A note on stderr (``-q`` silences it)."""
    if not args.quiet:
        print(f"fmha-guard: {message}", file=sys.stderr)


def _load_baseline(args: argparse.Namespace) -> "Counter | None":
    """``--baseline FILE``, read before the audit: a missing or corrupt FILE is an error
    that names it (never a fresh baseline that passes)."""
    if args.baseline and args.write_baseline:
        raise UsageError("--baseline and --write-baseline are exclusive: one reads FILE, the other writes it")
    if args.write_baseline and not Path(args.write_baseline).parent.is_dir():  # checked before a long audit
        raise UsageError(f"--write-baseline {args.write_baseline}: no such directory {Path(args.write_baseline).parent}")
    if not args.baseline:
        return None
    from lint_rules.baseline import load_baseline

    return load_baseline(Path(args.baseline))


def _apply_baseline(args: argparse.Namespace, result: AuditResult, baseline: "Counter | None") -> None:
    from lint_rules.baseline import filter_new, load_baseline, write_baseline

    if args.write_baseline:
        path = Path(args.write_baseline)
        written = write_baseline(path, result)
        _info(args, f"wrote baseline {path} with {written} findings; audit with --baseline {path} to report only new ones")
        filter_new(result, load_baseline(path))
    elif baseline is not None:
        filter_new(result, baseline)


class _Run:
    """One ``audit`` / ``lint`` invocation: its targets, configs and selection, rerunnable
    after ``--fix`` rewrote files."""

    def __init__(
        self, args: argparse.Namespace, targets: list[Path], resolver: ConfigResolver, *, cache: bool = True, **audit
    ) -> None:
        self.args = args
        self.targets = targets
        self.resolver = resolver
        self.selection = _selection(args)
        self.use_cache = cache
        self.audit_options = audit
        self.baseline = _load_baseline(args)

    @property
    def root(self) -> Path:
        """The first directory audited, else the current one (cache, ``--fix``, SARIF)."""
        return next((t for t in self.targets if t.is_dir()), Path.cwd())

    def audit(self) -> AuditResult:
        from .progress import progress_for

        progress = progress_for(self.args.quiet)
        try:
            result = audit_paths(
                self.targets,
                self.selection,
                cache_dir=_cache_dir(self.args, self.root) if self.use_cache else None,
                resolver=self.resolver,
                progress=progress,
                **self.audit_options,
            )
        finally:
            if progress is not None:
                progress.close()
        _apply_baseline(self.args, result, self.baseline)
        return result

    def config_for(self, path: Path) -> LintConfig:
        return self.resolver.for_path(path)

    def fix_or_diff(self, result: AuditResult) -> tuple[AuditResult, list[str] | None]:
        """Apply ``--fix`` (then audit again) or compute ``--diff``; the result to report,
        and the diffs when ``--diff`` was asked (``None`` otherwise)."""
        if not (self.args.fix or self.args.diff):
            return result, None
        try:
            from lint_rules.autofix import apply_fixes
        except ImportError as exc:
            raise UsageError(f"--fix/--diff need lint_rules.autofix, which cannot be imported here: {exc}") from None
        root = self._fix_root()
        diffs = apply_fixes(result, root, write=bool(self.args.fix), config=self.config_for(root))
        if self.args.diff:
            return result, diffs
        if diffs:
            _info(self.args, f"fixed {len(diffs)} file{'s' if len(diffs) != 1 else ''}")
            result = self.audit()
        return result, None

    def _fix_root(self) -> Path:
        dirs = [t for t in self.targets if t.is_dir()]
        if len(dirs) > 1 or (dirs and len(self.targets) > 1):
            raise UsageError("--fix/--diff take one directory, or files")
        return dirs[0] if dirs else Path.cwd()

    def report(self, result: AuditResult) -> int:
        """Write the report as the options ask; the exit status."""
        import guardrails

        from .formats import Report
        from .report_output import write_report

        def rules() -> list[object]:
            from lint_rules.suppressions import PSEUDO_RULES

            selection = self.selection.resolve(self.config_for(self.root))
            return [*selection.rules, *(PSEUDO_RULES[c] for c in sorted(selection.pseudo))]

        sarif_root = self.root if any(t.is_dir() for t in self.targets) else None
        if sarif_root is None and not any(is_archive(t) for t in self.targets):
            sarif_root = Path.cwd()
        status = exit_status(result, self.args)
        with reader_may_close():
            write_report(self.args, Report(result, guardrails.__version__, rules, sarif_root))
        return status


def exit_status(result: AuditResult, args: argparse.Namespace) -> int:
    """0 clean (always with ``--exit-zero``), 1 findings or files that could not be
    linted (``result.errors``: unreadable, unparsable, refused)."""
    if args.exit_zero:
        return EXIT_CLEAN
    return EXIT_FINDINGS if result.findings or result.errors else EXIT_CLEAN


def _check_flags(args: argparse.Namespace) -> None:
    if args.fix and args.diff:
        raise UsageError("--fix and --diff are exclusive: --diff shows the fixes, --fix writes them")
    fmt = ALIASES.get(args.output_format, args.output_format)
    if args.statistics and fmt not in ("full", "concise", "json"):
        raise UsageError(f"--statistics prints text or json, not --output-format {fmt}")


def _print_diffs(diffs: list[str], result: AuditResult, args: argparse.Namespace) -> int:
    with reader_may_close():
        sys.stdout.write("".join(d if d.endswith("\n") else d + "\n" for d in diffs))
    if args.exit_zero:
        return EXIT_CLEAN
    return EXIT_FINDINGS if diffs or result.findings or result.errors else EXIT_CLEAN


def _check_fix_targets(args: argparse.Namespace, targets: list[Path]) -> None:
    """``--fix`` / ``--diff`` never reach into an archive (its member names are not paths)."""
    if args.fix or args.diff:
        for target in targets:
            if target.is_file() and is_archive(target):
                raise UsageError(f"--fix/--diff: cannot fix inside a wheel/sdist: {target}")


def _audit_targets(args: argparse.Namespace) -> tuple[list[Path], bool]:
    """The paths to audit (the current directory when none is given, the bundled example
    backends with ``--examples``), and whether they are the examples."""
    if args.examples:
        if args.paths:
            raise UsageError("--examples audits the bundled example backends; give it no PATH")
        if args.fix:
            raise UsageError("--examples are read-only: copy them out to try --fix (--diff shows the fix)")
        from .bundled_examples import example_files

        return example_files(), True
    targets = [Path(p) for p in args.paths] or [Path(".")]
    for target in targets:
        if not target.exists():
            raise UsageError(f"no such file or directory: {target}")
    return targets, False


def run_audit(args: argparse.Namespace) -> int:
    """``fmha-guard audit [PATH...]``: the exit status."""
    _check_flags(args)
    targets, examples = _audit_targets(args)
    # the bundled examples get the defaults, not whatever config lies above site-packages
    resolver = ConfigResolver.fixed(LintConfig()) if examples and args.config is None else _resolver(args)
    _check_fix_targets(args, targets)
    only = None
    if args.since:
        targets, only = _since(targets, args.since)
    run = _Run(args, targets, resolver, cache=not examples, jobs=args.jobs, only=only)
    result, diffs = run.fix_or_diff(run.audit())
    if diffs is not None:
        return _print_diffs(diffs, result, args)
    return run.report(result)


def run_lint(args: argparse.Namespace) -> int:
    """``fmha-guard lint FILE...``: one ``path:line:col: CODE message`` line a finding."""
    _check_flags(args)
    files = [Path(p) for p in args.files]
    for file in files:
        if not file.exists() or file.is_dir():  # a FIFO is reported for itself, never opened
            raise UsageError(f"not a file: {file}")
    _check_fix_targets(args, files)
    run = _Run(args, files, _resolver(args), display=list(args.files))
    result, diffs = run.fix_or_diff(run.audit())
    if diffs is not None:
        return _print_diffs(diffs, result, args)
    return run.report(result)
