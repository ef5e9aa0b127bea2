"""``--output-format gitlab``: a GitLab Code Quality report (``artifacts: reports:
codequality``): a JSON list of issues with ``description``, ``check_name`` (the rule
code), ``fingerprint``, ``severity`` (``major``; ``minor`` for the pseudo-rules;
``critical`` for a file that could not be linted) and ``location.path`` /
``location.lines.begin``.

The fingerprint is the baseline key's hash (rule, shown path, ``Class.method``, source
line: stable when code moves), made unique within the report: GitLab keys issues on it.
"""

from __future__ import annotations

import hashlib
import json

from lint_rules.baseline import finding_key
from lint_rules.finding import Finding
from lint_rules.suppressions import PSEUDO_RULES

from .report import Report


def _unique(seen: set[str], *parts: str) -> str:
    text = "\0".join(parts)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    while digest in seen:  # identical findings (a copied call): still one issue each
        text += "\0"
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    seen.add(digest)
    return digest


def _key(report: Report, f: Finding) -> tuple[str, ...]:
    """The baseline key with the path as shown (relative to the project directory, the
    archive named): the same on every runner, distinct for two wheels."""
    rule, _, symbol, line_hash = finding_key(f, report.result)
    return rule, report.path(f), symbol, line_hash


def render(report: Report) -> str:
    seen: set[str] = set()
    issues = []
    for f in report.findings():
        issues.append(
            {
                "description": f"{f.rule} {f.message}",
                "check_name": f.rule,
                "fingerprint": _unique(seen, *_key(report, f)),
                "severity": "minor" if f.rule in PSEUDO_RULES else "major",
                "location": {"path": report.path(f), "lines": {"begin": f.line}},
            }
        )
    for e in report.errors():
        issues.append(
            {
                "description": e.message,
                "check_name": "fmha-guard/file-error",
                "fingerprint": _unique(seen, "error", report.path(e), e.message),
                "severity": "critical",
                "location": {"path": report.path(e), "lines": {"begin": 1}},
            }
        )
    return json.dumps(issues, indent=2) + "\n"
