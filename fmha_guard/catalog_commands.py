"""``fmha-guard rules``, ``fmha-guard invariants`` and ``fmha-guard explain``: what the
command knows, listed or explained.

A rule's text is :class:`lint_rules.rule_info.RuleInfo`'s (its summary in the listing,
its whole Markdown documentation for ``explain``); an invariant's is its entry in
:data:`guardrails.invariants.CATALOG`.
"""

from __future__ import annotations

import argparse

from .console import console, print_table
from .exit_status import EXIT_CLEAN, UsageError


def run_rules() -> int:
    """The rules and pseudo-rules, one row each: code, name, default, summary."""
    from lint_rules.registry import ALL_RULES
    from lint_rules.suppressions import PSEUDO_RULES

    rows = [
        (rule.CODE, rule.NAME, "on" if rule.DEFAULT_ENABLED else "opt-in", rule.summary())
        for rule in [*ALL_RULES, *PSEUDO_RULES.values()]
    ]
    print_table(console(), "fmha-guard rules", ("code", "name", "default", "what it flags"), rows)
    return EXIT_CLEAN


def run_invariants() -> int:
    """The invariant catalog, one row each: id, level, statement, source."""
    from guardrails import invariants

    rows = [(e.id, str(e.level), e.statement, e.source) for e in invariants.CATALOG.values()]
    print_table(
        console(), "Invariant catalog (FmhaInvariantError.invariant ids)", ("id", "level", "statement", "source"), rows
    )
    return EXIT_CLEAN


def describe_invariant(entry) -> str:
    """A catalog entry as text: id, level, statement, likely cause, fix, source, and the
    module that defines it."""
    parts = [
        f"{entry.id} (level: {entry.level})",
        "",
        entry.statement,
        "",
        f"Likely cause: {entry.cause}",
        f"Fix: {entry.fix}",
        f"Source: {entry.source}",
        *([f"Measured: {entry.measured}"] if entry.measured else []),
        f"Defined in: {entry.module}",
    ]
    if entry.values_part:
        parts.insert(4, f"At the values level: {entry.values_part}")
    return "\n".join(parts)


def run_explain(args: argparse.Namespace) -> int:
    """A rule's documentation (by code or name, pseudo-rules included), else an invariant's entry."""
    from lint_rules.config import normalize_code
    from lint_rules.registry import UnknownRuleError, find_rule
    from lint_rules.suppressions import PSEUDO_RULES

    rule = PSEUDO_RULES.get(normalize_code(args.key)) or next(
        (r for r in PSEUDO_RULES.values() if args.key == r.NAME), None
    )
    if rule is None:
        try:
            rule = find_rule(args.key)
        except UnknownRuleError as exc:
            from guardrails import invariants

            entry = invariants.CATALOG.get(args.key)
            if entry is None:
                raise UsageError(f"{exc}; invariant ids: {', '.join(invariants.CATALOG)}") from None
            print(describe_invariant(entry))
            return EXIT_CLEAN
    print(rule.explanation())
    return EXIT_CLEAN
