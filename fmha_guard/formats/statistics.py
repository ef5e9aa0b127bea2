"""``--statistics``: how many findings each rule has (ruff's), instead of the findings::

    2	GR001	[*] padded-batch-size-in-kernel-call
    3	GR002	[ ] stale-kv-pool-state

(``[*]``: some are fixable with ``--fix``; the column appears only if any are.) With
``--output-format json``: a list of ``{"code", "name", "count", "fixable"}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lint_rules.engine import AuditResult


@dataclass(frozen=True)
class RuleCount:
    code: str
    name: str
    count: int
    fixable: int


def counts(result: AuditResult) -> list[RuleCount]:
    """Per rule, most findings first (then by code)."""
    by_code: dict[str, list] = {}
    for f in result.findings:
        entry = by_code.setdefault(f.rule, [f.name, 0, 0])
        entry[1] += 1
        entry[2] += f.fixable
    rows = [RuleCount(code, name, n, fix) for code, (name, n, fix) in by_code.items()]
    return sorted(rows, key=lambda r: (-r.count, r.code))


def render_text(result: AuditResult) -> str:
    rows = counts(result)
    if not rows:
        return ""
    width = max(len(str(r.count)) for r in rows)
    code_width = max(len(r.code) for r in rows)
    any_fixable = any(r.fixable for r in rows)
    lines = []
    for r in rows:
        marker = ("[*] " if r.fixable else "[ ] ") if any_fixable else ""
        lines.append(f"{r.count:>{width}}\t{r.code:<{code_width}}\t{marker}{r.name}")
    return "\n".join(lines) + "\n"


def render_json(result: AuditResult) -> str:
    rows = [{"code": r.code, "name": r.name, "count": r.count, "fixable": r.fixable > 0} for r in counts(result)]
    return json.dumps(rows, indent=2) + "\n"
