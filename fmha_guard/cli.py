"""The ``fmha-guard`` command line: argument parsing and dispatch.

``fmha-guard audit [PATH...]``
    Audit directories, ``.py`` files, or wheels / sdists (read in place) with the lint
    rules. With no PATH it audits the current directory; ``--examples`` audits the
    example backends shipped in the package. The report (:mod:`fmha_guard.formats`):
    ``--output-format full`` (default: ``path:line:col: CODE [*] message``, the source
    line, the evidence, a summary last), ``concise``, ``json`` (``{"files_scanned",
    "findings": [{"rule", "name", "path", "line", "col", "symbol", "message",
    "fixable", "evidence", "file"}], "errors": [{"path", "message", "file"}]}``),
    ``sarif`` (:mod:`lint_rules.sarif`), ``github``, ``gitlab``, ``junit``. Paths are
    shown relative to the current directory (absolute outside it; ``x.whl!member``).
    Findings of the pseudo-rules GR900 unused-suppression / GR901 invalid-suppression
    are findings like any other.
``fmha-guard lint FILE...``
    The same engine for pre-commit: one ``path:line:col: CODE [*] message`` line a
    finding (``--output-format concise`` by default).
``fmha-guard coverage PATH|WHEEL``
    Every FMHA call site of a codebase and whether the installed runtime guard checks it
    (:mod:`fmha_guard.coverage_command`): ``N of M FMHA call sites checked (P%)``.
``fmha-guard rules`` / ``fmha-guard invariants`` / ``fmha-guard explain RULE-OR-INVARIANT``
    List the rules or the invariant catalog; print a rule's documentation (ruff's
    Markdown sections: "What it does", "Why is this bad?", "Known problems",
    "Example", "Use instead", "Options", "References") or an invariant's entry.
``fmha-guard run [--level L] [--action A] -- CMD ...``
    Run CMD with the runtime guard on in it and its children, ``.pth`` installed or not
    (:mod:`fmha_guard.run_command`); the exit status is CMD's.
``fmha-guard status [--format json]``
    Whether this interpreter activates the runtime guard, and what it would patch
    (:mod:`fmha_guard.status_command`).

``audit`` and ``lint`` share: ``--select`` / ``--ignore`` (replace the config's; each
file's config is the nearest ``pyproject.toml`` / ``setup.cfg`` above it, or
``--config FILE``), ``--output-format`` (alias ``--format``), ``--output-file FILE``,
``--statistics``, ``-q`` / ``--quiet``, ``--exit-zero``,
``--baseline FILE`` (report only findings FILE does not hold; FILE must exist),
``--write-baseline FILE`` (write FILE with the current findings),
``--cache-dir DIR`` / ``--no-cache`` (per-file result cache, default
``<root>/.cache/fmha-guard``), ``--fix`` (rewrite files in place) / ``--diff`` (print
the fixes as unified diffs, change nothing). ``audit`` also takes ``--since GITREF``
(only ``.py`` files changed since GITREF, plus untracked ones) and ``--jobs``.

Exit status: 0 no findings (or ``--exit-zero``), 1 findings (with ``--baseline``: new
findings; with ``--diff``: a fix to show; files that could not be read or parsed, listed
as errors: the others are still audited), 2 usage or internal error (one line, never a
traceback). A broken pipe (``| head``) keeps the status.

Start-up is kept cheap: rich, libcst, pydantic and the rules are imported only when
needed (:mod:`fmha_guard.audit_command`, :mod:`fmha_guard.catalog_commands`), so an
audit answered from the cache with ``--format json`` loads none of them.
``fmha-guard --version`` prints ``fmha-guard <version>``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lint_rules.config import ConfigError

from .audit_command import add_common_options, run_audit, run_lint
from .catalog_commands import run_explain, run_invariants, run_rules
from .coverage_command import add_coverage_parser, run_coverage
from .broken_pipe import reader_may_close
from .exit_status import EXIT_CLEAN, EXIT_ERROR, UsageError
from .run_command import add_run_parser, run_run
from .status_command import add_status_parser, run_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmha-guard",
        description="Find attention-metadata bugs before they reach FMHA kernels.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    audit = sub.add_parser("audit", help="audit directories, .py files, wheels or sdists")
    audit.add_argument("paths", nargs="*", metavar="PATH", help="default: the current directory")
    audit.add_argument(
        "--examples", action="store_true", help="audit the example backends shipped with the package (the seed bugs)"
    )
    audit.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    audit.add_argument("--since", metavar="GITREF", help="audit only .py files changed since GITREF (plus untracked)")
    add_common_options(audit, default_format="full")

    lint = sub.add_parser("lint", help="lint files, one line a finding (for pre-commit)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    add_common_options(lint, default_format="concise")
    lint.set_defaults(summary=False)  # one line a finding, nothing else (pre-commit's output)

    sub.add_parser("rules", help="list the rules")
    sub.add_parser("invariants", help="list the invariant catalog")
    explain = sub.add_parser("explain", help="print a rule's documentation or an invariant's entry")
    explain.add_argument("key", metavar="RULE-OR-INVARIANT", help="GR001, padded-batch-size-in-kernel-call, batch-size, ...")
    add_run_parser(sub)
    add_status_parser(sub)
    add_coverage_parser(sub)
    return parser


class _Version(argparse.Action):
    """``--version``: ``fmha-guard <guardrails.__version__>`` (read only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_) -> None:
        import guardrails

        print(f"fmha-guard {guardrails.__version__}")
        parser.exit()


def _is_usage_error(exc: Exception) -> bool:
    kinds: tuple[type[BaseException], ...] = (UsageError, ConfigError, ValueError, OSError)
    registry = sys.modules.get("lint_rules.registry")
    if registry is not None:
        kinds += (registry.UnknownRuleError,)
    return isinstance(exc, kinds)


_COMMANDS = {
    "audit": run_audit,
    "lint": run_lint,
    "rules": lambda _: run_rules(),
    "invariants": lambda _: run_invariants(),
    "explain": run_explain,
    "run": run_run,
    "status": run_status,
    "coverage": run_coverage,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status (argparse exits 2 itself on a bad command line)."""
    args = build_parser().parse_args(argv)
    status = EXIT_CLEAN  # what a command that only prints gives, should its reader leave early
    try:
        with reader_may_close():  # `fmha-guard audit | head -1` keeps the findings' status
            status = _COMMANDS[args.command](args)
        return status
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        print(f"fmha-guard: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
