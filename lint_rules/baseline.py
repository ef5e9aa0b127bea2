"""Baseline files: accept today's findings, fail only on new ones.

A finding's key is its rule, path, symbol (``Class.method``) and a hash of its source
line's stripped text; the line number is left out, so code that moves (lines added
above it) stays baselined, while a changed line or a finding in another method is new.
Identical keys are counted: a baseline holding one ``GR001`` on a line accepts one
finding with that key, and a second, copied call is new.

File format (JSON, sorted, meant to be committed)::

    {"tool": "fmha-guard", "version": 1,
     "findings": [{"rule": "GR001", "path": "...", "symbol": "C.forward_extend",
                   "line_hash": "9f1c...", "count": 1}]}
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from .engine import AuditResult
from .finding import Finding

FORMAT_VERSION = 1
Key = tuple[str, str, str, str]


class BaselineError(ValueError):
    """A baseline file that cannot be read."""


def line_hash(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def finding_key(finding: Finding, result: AuditResult) -> Key:
    text = result.lines.get((finding.path, finding.line), "")
    return (finding.rule, finding.path, finding.symbol, line_hash(text))


def write_baseline(path: Path, result: AuditResult) -> int:
    """Write ``result``'s findings to ``path``; the number written."""
    counts = Counter(finding_key(f, result) for f in result.findings)
    rows = [
        {"rule": r, "path": p, "symbol": s, "line_hash": h, "count": n}
        for (r, p, s, h), n in sorted(counts.items())
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"tool": "fmha-guard", "version": FORMAT_VERSION, "findings": rows}, indent=2) + "\n",
        encoding="utf-8",
    )
    return len(result.findings)


def load_baseline(path: Path) -> Counter[Key]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != FORMAT_VERSION:
            raise BaselineError(f"{path}: unsupported baseline version {data.get('version')!r}")
        return Counter({(r["rule"], r["path"], r["symbol"], r["line_hash"]): int(r["count"]) for r in data["findings"]})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, BaselineError):
            raise
        raise BaselineError(f"{path}: not a fmha-guard baseline ({type(exc).__name__}: {exc})") from None


def filter_new(result: AuditResult, baseline: Counter[Key]) -> AuditResult:
    """Keep in ``result`` only the findings the baseline does not hold (in place)."""
    left = Counter(baseline)
    new: list[Finding] = []
    for f in result.findings:
        key = finding_key(f, result)
        if left[key] > 0:
            left[key] -= 1
        else:
            new.append(f)
    result.baselined += len(result.findings) - len(new)
    result.findings = new
    return result
