"""SARIF 2.1.0 output (GitHub code scanning, VS Code's SARIF viewer).

One run; ``tool.driver.rules`` holds one descriptor per rule that ran (the pseudo-rules
GR900 / GR901 included): ``id`` the code, ``name`` the kebab-case name,
``shortDescription`` the doc's first line, ``fullDescription`` / ``help`` the whole doc
as :meth:`~lint_rules.rule_info.RuleInfo.doc` renders it (Markdown with ruff's
sections, never indented: ``help.markdown`` renders as text, not a code block). Each result has
``ruleId`` / ``ruleIndex``, ``level`` (``error``; ``warning`` for the pseudo-rules),
the message, one ``physicalLocation`` (``artifactLocation.uri`` relative to the audited
root with ``uriBaseId`` ``%SRCROOT%``, ``region.startLine`` / ``startColumn``, the source
line as ``snippet``), the ``Class.method`` as a logical location, and
``partialFingerprints["fmhaGuard/v1"]``: the baseline key (rule, path, symbol, line
hash), stable when code moves. Files that could not be linted are
``invocations[0].toolExecutionNotifications``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from .baseline import finding_key
from .engine import AuditResult
from .suppressions import PSEUDO_RULES

SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def _level(code: str) -> str:
    return "warning" if code in PSEUDO_RULES else "error"


def _descriptor(rule) -> dict[str, object]:
    doc = rule.doc() or rule.MESSAGE
    pseudo = rule.CODE in PSEUDO_RULES
    return {
        "id": rule.CODE,
        "name": rule.NAME,
        "shortDescription": {"text": rule.summary()},
        "fullDescription": {"text": doc},
        "help": {"text": doc, "markdown": doc},
        "defaultConfiguration": {"level": _level(rule.CODE), "enabled": bool(rule.DEFAULT_ENABLED)},
        "properties": {"tags": ["fmha", "attention-metadata"] if not pseudo else ["suppression"]},
    }


def to_sarif(result: AuditResult, rules: Sequence[object], root: Path | None, version: str) -> dict[str, object]:
    """``result`` as a SARIF log. ``rules``: rule classes / pseudo-rules that ran;
    ``root``: the audited directory (``originalUriBaseIds``), ``None`` for an archive."""
    by_code = {r.CODE: r for r in rules}
    for f in result.findings:  # a finding of a rule not listed still gets a descriptor
        if f.rule not in by_code:
            from .registry import find_rule

            by_code[f.rule] = find_rule(f.rule)
    codes = sorted(by_code)
    index = {code: i for i, code in enumerate(codes)}
    results = []
    for f in result.findings:
        region: dict[str, object] = {"startLine": f.line, "startColumn": f.col}
        line = result.lines.get((f.path, f.line))
        if line:
            region["snippet"] = {"text": line}
        key = "\0".join(finding_key(f, result))
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": index[f.rule],
                "level": _level(f.rule),
                "message": {"text": f.message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": quote(f.path), "uriBaseId": "%SRCROOT%"},
                            "region": region,
                        },
                        "logicalLocations": [{"fullyQualifiedName": f.symbol, "kind": "function"}],
                    }
                ],
                "partialFingerprints": {"fmhaGuard/v1": hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]},
            }
        )
    notifications = [
        {
            "level": "error",
            "message": {"text": e.message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": quote(e.path), "uriBaseId": "%SRCROOT%"}}}],
        }
        for e in result.errors
    ]
    run: dict[str, object] = {
        "tool": {
            "driver": {
                "name": "fmha-guard",
                "version": version,
                "rules": [_descriptor(by_code[c]) for c in codes],
            }
        },
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    if root is not None:
        run["originalUriBaseIds"] = {"%SRCROOT%": {"uri": root.resolve().as_uri() + "/"}}
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}
