"""What every format renders: the audit result, where its paths are shown from, the rules."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lint_rules.engine import AuditResult
from lint_rules.finding import FileError, Finding

from ..display_paths import shown_path


@dataclass
class Report:
    """One audit's report.

    ``rules``: the rule classes that ran (only SARIF asks; importing them loads libcst);
    ``sarif_root``: the audited directory (SARIF's ``%SRCROOT%``); ``cwd``: the
    directory paths are shown relative to.
    """

    result: AuditResult
    version: str
    rules: Callable[[], Sequence[object]] = lambda: ()
    sarif_root: Path | None = None
    cwd: str = field(default_factory=os.getcwd)

    def path(self, item: Finding | FileError) -> str:
        """Where ``item`` is, as the user opens it (:func:`~fmha_guard.display_paths.shown_path`)."""
        return shown_path(item.path, item.root, self.cwd)

    def findings(self) -> list[Finding]:
        """The findings in the order they are shown: by shown path, then position."""
        return sorted(self.result.findings, key=lambda f: (self.path(f), f.line, f.col, f.rule))

    def errors(self) -> list[FileError]:
        return sorted(self.result.errors, key=lambda e: (self.path(e), e.message))

    def source_line(self, finding: Finding) -> str | None:
        return self.result.lines.get((finding.path, finding.line))
