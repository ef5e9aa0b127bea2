"""The ``fmha-guard`` command line: argument parsing and dispatch.

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
    Markdown sections: "What it does", "Why is this bad?", "Known problems",
    "Example", "Use instead", "Options", "References") or an invariant's entry.

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
needed (:mod:`fmha_guard.audit_command`, :mod:`fmha_guard.catalog_commands`), so an
audit answered from the cache with ``--format json`` loads none of them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lint_rules.config import ConfigError

from .audit_command import add_common_options, run_audit, run_lint
from .catalog_commands import run_explain, run_invariants, run_rules
from .exit_status import EXIT_ERROR, UsageError


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
    add_common_options(audit)

    lint = sub.add_parser("lint", help="lint files, one line a finding (for pre-commit)")
    lint.add_argument("files", nargs="+", metavar="FILE")
    add_common_options(lint)

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


_COMMANDS = {
    "audit": run_audit,
    "lint": run_lint,
    "rules": lambda _: run_rules(),
    "invariants": lambda _: run_invariants(),
    "explain": run_explain,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; the exit status (argparse exits 2 itself on a bad command line)."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        print(f"fmha-guard: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
