"""The lines that close a report (ruff's): how many findings, per rule, how many
``--fix`` can fix, what the baseline hid, which files could not be linted."""

from __future__ import annotations

from collections import Counter

from lint_rules.engine import AuditResult


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_lines(result: AuditResult) -> list[str]:
    """Plain text (no markup) lines."""
    scanned = f"{_plural(result.files_scanned, 'file')} scanned, {result.files_parsed} parsed"
    if result.cache_hits:
        scanned += f", {result.cache_hits} from cache"
    if result.findings:
        per_rule = Counter(f.rule for f in result.findings)
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(per_rule.items()))
        lines = [f"Found {_plural(len(result.findings), 'finding')} ({counts}); {scanned}."]
    elif result.errors:
        lines = [f"No findings in the files that could be linted ({scanned})."]
    else:
        lines = [f"All checks passed! ({scanned})"]
    fixable = sum(1 for f in result.findings if f.fixable)
    if fixable:
        lines.append(f"[*] {fixable} fixable with --fix.")
    if result.baselined:
        lines.append(f"{result.baselined} findings are in the baseline and not shown.")
    if result.errors:
        lines.append(f"{_plural(len({(e.root, e.path) for e in result.errors}), 'file')} could not be linted.")
    return lines
