"""``--output-format sarif``: SARIF 2.1.0 (:mod:`lint_rules.sarif`)."""

from __future__ import annotations

import json

from lint_rules.sarif import to_sarif

from .report import Report


def render(report: Report) -> str:
    return json.dumps(to_sarif(report.result, report.rules(), report.sarif_root, report.version), indent=2) + "\n"
