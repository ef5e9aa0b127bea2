"""Runs the rules over many files: keyword pre-filter, parallel parse, sorted output.

A file is parsed only if it contains every word one of the selected rules declares
(``LintRule.WORDS``); on SGLang's ``srt/`` tree that skips most files unparsed. Files
are linted in worker processes; a file that fails to parse, or a rule that fails on a
file, becomes an error entry for that file and never aborts the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from .config import LintConfig
from .registry import find_rule
from .rule import Finding, LintRule, ModuleContext
from .sources import SourceText, iter_sources

#: Below this many files to parse, worker start-up costs more than it saves.
PARALLEL_THRESHOLD = 24


@dataclass(frozen=True, order=True)
class FileError:
    """A file that could not be read or parsed, or on which a rule failed."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass
class AuditResult:
    """Everything one audit found; ``findings`` and ``errors`` are sorted."""

    files_scanned: int = 0
    files_parsed: int = 0
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    #: (path, line) -> that source line, for display.
    lines: dict[tuple[str, int], str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "files_scanned": self.files_scanned,
            "findings": [f.as_dict() for f in self.findings],
            "errors": [e.as_dict() for e in self.errors],
        }


def lint_source(
    path: str, text: str, rules: Sequence[type[LintRule]], config: LintConfig
) -> tuple[list[Finding], list[FileError], dict[tuple[str, int], str]]:
    """Parse one file and run ``rules`` on it."""
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        return [], [FileError(path, f"cannot parse: {exc.message} (line {exc.raw_line}, col {exc.raw_column})")], {}
    except Exception as exc:  # libcst raises other errors on exotic input
        return [], [FileError(path, f"cannot parse: {type(exc).__name__}: {exc}")], {}
    ctx = ModuleContext(path, module, config, text)
    findings: list[Finding] = []
    errors: list[FileError] = []
    for rule_cls in rules:
        try:
            findings.extend(rule_cls(config).check(ctx))
        except Exception as exc:  # a rule bug must not sink the audit
            errors.append(FileError(path, f"internal error in {rule_cls.CODE}: {type(exc).__name__}: {exc}"))
    source_lines = text.splitlines()
    lines = {
        (f.path, f.line): source_lines[f.line - 1].strip()
        for f in findings
        if 0 < f.line <= len(source_lines)
    }
    return findings, errors, lines


def _lint_job(job: tuple[str, str, tuple[str, ...], LintConfig]):
    path, text, codes, config = job
    return lint_source(path, text, [find_rule(c) for c in codes], config)


def audit_sources(
    sources: Iterable[SourceText],
    rules: Sequence[type[LintRule]],
    config: LintConfig | None = None,
    jobs: int | None = None,
) -> AuditResult:
    """Lint already-read sources. ``jobs``: worker processes (default: CPU count; 1: in-process)."""
    config = config or LintConfig()
    instances = [r(config) for r in rules]
    result = AuditResult()
    work: list[tuple[str, str, tuple[str, ...], LintConfig]] = []
    for src in sources:
        result.files_scanned += 1
        if src.text is None:
            result.errors.append(FileError(src.path, src.error or "unreadable"))
            continue
        codes = tuple(r.CODE for r in instances if r.wants(src.text))
        if codes:
            work.append((src.path, src.text, codes, config))
    result.files_parsed = len(work)
    workers = jobs or os.cpu_count() or 1
    if workers > 1 and len(work) >= PARALLEL_THRESHOLD:
        chunk = max(1, len(work) // (workers * 4))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            outputs = list(pool.map(_lint_job, work, chunksize=chunk))
    else:
        outputs = [_lint_job(job) for job in work]
    for findings, errors, lines in outputs:
        result.findings.extend(findings)
        result.errors.extend(errors)
        result.lines.update(lines)
    result.findings.sort()
    result.errors.sort()
    return result


def audit_paths(
    targets: Sequence[Path],
    rules: Sequence[type[LintRule]],
    config: LintConfig | None = None,
    jobs: int | None = None,
    display: Sequence[str] | None = None,
) -> AuditResult:
    """Audit directories, ``.py`` files and archives (see :func:`iter_sources`)."""

    def _all() -> Iterable[SourceText]:
        for i, target in enumerate(targets):
            yield from iter_sources(target, display[i] if display else None)

    return audit_sources(_all(), rules, config, jobs)


