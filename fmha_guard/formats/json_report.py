"""``--output-format json``: ``{"files_scanned", "findings", "errors"}``, the keys of
:meth:`lint_rules.engine.AuditResult.as_dict` (each finding: ``rule``, ``name``,
``path`` (relative to the audited root), ``line``, ``col``, ``symbol``, ``message``,
``fixable``, ``evidence``), plus ``file`` on each finding and error: the path to open
from the current directory (``wheel.whl!member`` for an archive member)."""

from __future__ import annotations

import json

from .report import Report


def render(report: Report) -> str:
    data = report.result.as_dict()
    for item, row in zip(report.result.findings, data["findings"]):
        row["file"] = report.path(item)
    for item, row in zip(report.result.errors, data["errors"]):
        row["file"] = report.path(item)
    return json.dumps(data, indent=2) + "\n"
