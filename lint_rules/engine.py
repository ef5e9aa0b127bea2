"""Runs the rules over many files: cache, keyword pre-filter, parallel parse, suppressions, sorted output.

A file is parsed only if it contains every word one of the selected rules declares
(``LintRule.WORDS``); on SGLang's ``srt/`` tree that skips most files unparsed. Files
are linted in worker processes; a file that fails to parse, or a rule that fails on a
file, becomes an error entry for that file and never aborts the run. Suppression
comments (:mod:`lint_rules.suppressions`) are applied per file, per-path ignores
(``LintConfig.per_path_ignores``) before a file is linted.

With a cache directory (:mod:`lint_rules.result_cache`) a file whose content is
unchanged is not parsed again. This module imports neither libcst nor the rules until
a file actually has to be linted: a fully cached audit never loads them.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .config import LintConfig, normalize_code
from .finding import FileError, Finding
from .result_cache import ResultCache, content_hash, context_key
from .sources import SourceFile, SourceText, decode, iter_source_files
from .suppressions import MARKER, PSEUDO_RULES, apply_suppressions

if TYPE_CHECKING:
    from .rule import LintRule

__all__ = ["AuditResult", "FileError", "RuleSelection", "audit_files", "audit_paths", "audit_sources", "lint_source"]

#: Below this many files to parse, worker start-up costs more than it saves.
PARALLEL_THRESHOLD = 24
#: ...or when there is this much source to lint: a pre-commit run over a few large
#: backends (4,000-line files) gains more from a second worker than it pays to fork one.
PARALLEL_MIN_BYTES = 256 * 1024
ALL_PSEUDO = frozenset(PSEUDO_RULES)


@dataclass
class AuditResult:
    """Everything one audit found; ``findings`` and ``errors`` are sorted."""

    files_scanned: int = 0
    files_parsed: int = 0
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    #: (path, line) -> that source line, stripped, for display and baselines.
    lines: dict[tuple[str, int], str] = field(default_factory=dict)
    #: Files whose result came from the cache (not in ``as_dict``: the JSON keys are fixed).
    cache_hits: int = 0
    #: Findings dropped because the baseline holds them.
    baselined: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "files_scanned": self.files_scanned,
            "findings": [f.as_dict() for f in self.findings],
            "errors": [e.as_dict() for e in self.errors],
        }


class RuleSelection:
    """``select`` / ``ignore`` (codes or names), resolved to rule classes only when needed.

    The pseudo-rules GR900 / GR901 (suppression comments) are on unless ignored; a
    ``select`` that names only pseudo-rules runs no real rule.
    """

    def __init__(self, select: Sequence[str] | None = None, ignore: Sequence[str] | None = None) -> None:
        self.select = tuple(normalize_code(s) for s in select) if select else None
        self.ignore = tuple(normalize_code(s) for s in ignore) if ignore else ()
        ignored = set(self.ignore)
        self.pseudo = frozenset(c for c, r in PSEUDO_RULES.items() if c not in ignored and r.NAME not in ignored)
        self._given: list[type[LintRule]] | None = None

    @classmethod
    def of(cls, rules: "Sequence[type[LintRule]] | RuleSelection") -> "RuleSelection":
        if isinstance(rules, RuleSelection):
            return rules
        sel = cls([r.CODE for r in rules] or None)
        sel._given = list(rules)
        return sel

    @property
    def key(self) -> str:
        return f"select={self.select}|ignore={tuple(sorted(self.ignore))}|pseudo={sorted(self.pseudo)}"

    @cached_property
    def rules(self) -> "list[type[LintRule]]":
        """The real rules (imports them). Raises ``UnknownRuleError`` for a bad code."""
        if self._given is not None:
            return self._given
        from .registry import select_rules

        real_select = [s for s in self.select or () if not _is_pseudo(s)]
        real_ignore = [s for s in self.ignore if not _is_pseudo(s)]
        if self.select and not real_select:
            return []
        return select_rules(real_select or None, real_ignore)

    @cached_property
    def known(self) -> frozenset[str]:
        from .registry import ALL_RULES

        return frozenset(r.CODE for r in ALL_RULES)

    def validate(self, config: LintConfig) -> None:
        """Resolve the selection and check every code the config names."""
        from .registry import find_rule

        self.rules  # noqa: B018 - raises for an unknown code
        for _, codes in config.per_path_ignores:
            for code in codes:
                if not _is_pseudo(code):
                    find_rule(code)


def _is_pseudo(key: str) -> bool:
    return key in PSEUDO_RULES or any(r.NAME == key for r in PSEUDO_RULES.values())


def lint_source(
    path: str,
    text: str,
    rules: "Sequence[type[LintRule]]",
    config: LintConfig,
    *,
    judged: Collection[str] | None = None,
    known: Collection[str] | None = None,
    pseudo: Collection[str] = ALL_PSEUDO,
) -> tuple[list[Finding], list[FileError], dict[tuple[str, int], str]]:
    """Parse one file, run ``rules`` on it, apply its suppression comments.

    ``judged``: codes whose unused suppressions are reported (default: ``rules``);
    ``known``: every valid code (default: all shipped rules); ``pseudo``: enabled
    pseudo-rules.
    """
    import libcst as cst

    from .rule import ModuleContext

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
    if known is None:
        from .registry import ALL_RULES

        known = frozenset(r.CODE for r in ALL_RULES)
    findings = apply_suppressions(
        path, text, findings, judged if judged is not None else {r.CODE for r in rules}, known, pseudo
    )
    return findings, errors, _lines(text, findings)


def _lines(text: str, findings: Sequence[Finding]) -> dict[tuple[str, int], str]:
    if not findings:
        return {}
    source_lines = text.splitlines()
    return {
        (f.path, f.line): source_lines[f.line - 1].strip()
        for f in findings
        if 0 < f.line <= len(source_lines)
    }


_Job = tuple[str, str, tuple[str, ...], LintConfig, frozenset, frozenset, frozenset]


def _lint_job(job: _Job):
    from .registry import find_rule

    path, text, codes, config, judged, known, pseudo = job
    return lint_source(path, text, [find_rule(c) for c in codes], config, judged=judged, known=known, pseudo=pseudo)


def _entry(parsed: bool, findings: Sequence[Finding], errors: Sequence[FileError], lines: dict) -> dict:
    entry: dict[str, object] = {}
    if parsed:
        entry["p"] = 1
    if findings:
        entry["f"] = [[f.line, f.col, f.rule, f.name, f.symbol, f.message] for f in findings]
        entry["l"] = [[line, text] for (_, line), text in lines.items()]
    if errors:
        entry["e"] = [e.message for e in errors]
    return entry


def _add_entry(result: AuditResult, path: str, entry: dict) -> None:
    if entry.get("p"):
        result.files_parsed += 1
    for line, col, rule, name, symbol, message in entry.get("f", ()):
        result.findings.append(Finding(path, line, col, rule, name, symbol, message))
    for line, text in entry.get("l", ()):
        result.lines[(path, line)] = text
    for message in entry.get("e", ()):
        result.errors.append(FileError(path, message))


def audit_files(
    files: Iterable[SourceFile],
    rules: "Sequence[type[LintRule]] | RuleSelection",
    config: LintConfig | None = None,
    jobs: int | None = None,
    cache: ResultCache | None = None,
    result: AuditResult | None = None,
) -> AuditResult:
    """Lint files not read yet, using ``cache`` (see :mod:`lint_rules.result_cache`) if given."""
    config = config or LintConfig()
    selection = RuleSelection.of(rules)
    result = result if result is not None else AuditResult()
    pending: list[tuple[str, str, tuple[int, int] | None, str]] = []  # path, text, sig, digest
    for src in files:
        result.files_scanned += 1
        if cache is not None:
            entry = cache.by_sig(src.path, src.sig)
            if entry is not None:
                _add_entry(result, src.path, entry)
                continue
        try:
            data = src.read()
        except OSError as exc:
            result.errors.append(FileError(src.path, f"cannot read: {exc}"))
            continue
        digest = content_hash(data)
        if cache is not None:
            entry = cache.by_hash(src.path, digest, src.sig)
            if entry is not None:
                _add_entry(result, src.path, entry)
                continue
        decoded = decode(src.path, data)
        if decoded.text is None:
            err = FileError(src.path, decoded.error or "unreadable")
            result.errors.append(err)
            if cache is not None:
                cache.put(src.path, src.sig, digest, _entry(False, [], [err], {}))
            continue
        pending.append((src.path, decoded.text, src.sig, digest))
    if pending:
        _lint_pending(pending, selection, config, jobs, cache, result)
    if cache is not None:
        result.cache_hits += cache.hits
    result.findings.sort()
    result.errors.sort()
    return result


def _lint_pending(pending, selection: RuleSelection, config: LintConfig, jobs, cache, result: AuditResult) -> None:
    selection.validate(config)
    instances = [r(config) for r in selection.rules]
    known = selection.known
    work: list[_Job] = []
    meta: list[tuple[str, tuple[int, int] | None, str]] = []
    for path, text, sig, digest in pending:
        off = config.ignored_for(path)
        active = [r for r in instances if r.CODE not in off] if off else instances
        pseudo = selection.pseudo - off
        judged = frozenset(r.CODE for r in active)
        codes = tuple(r.CODE for r in active if r.wants(text))
        if codes:
            work.append((path, text, codes, config, judged, known, pseudo))
            meta.append((path, sig, digest))
            continue
        findings: list[Finding] = []
        if pseudo and MARKER in text:  # suppressions in a file no rule looks at are all unused
            findings = apply_suppressions(path, text, [], judged, known, pseudo)
        lines = _lines(text, findings)
        entry = _entry(False, findings, [], lines)
        _add_entry(result, path, entry)
        if cache is not None:
            cache.put(path, sig, digest, entry)
    workers = jobs or os.cpu_count() or 1
    size = sum(len(job[1]) for job in work)
    if workers > 1 and len(work) > 1 and (len(work) >= PARALLEL_THRESHOLD or size >= PARALLEL_MIN_BYTES):
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, len(work) // (workers * 4))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            outputs = list(pool.map(_lint_job, work, chunksize=chunk))
    else:
        outputs = [_lint_job(job) for job in work]
    for (path, sig, digest), (findings, errors, lines) in zip(meta, outputs):
        entry = _entry(True, findings, errors, lines)
        _add_entry(result, path, entry)
        if cache is not None:
            cache.put(path, sig, digest, entry)


def audit_sources(
    sources: Iterable[SourceText],
    rules: "Sequence[type[LintRule]] | RuleSelection",
    config: LintConfig | None = None,
    jobs: int | None = None,
) -> AuditResult:
    """Lint already-read sources. ``jobs``: worker processes (default: CPU count; 1: in-process)."""
    result = AuditResult()

    def _files() -> Iterable[SourceFile]:
        for src in sources:
            if src.text is None:
                result.files_scanned += 1
                result.errors.append(FileError(src.path, src.error or "unreadable"))
                continue
            data = src.text.encode("utf-8")
            yield SourceFile(src.path, lambda data=data: data)

    return audit_files(_files(), rules, config, jobs, result=result)


def cache_context(selection: RuleSelection, config: LintConfig) -> str:
    """The part of every cache key that does not depend on the file."""
    return context_key(selection.key, config.cache_key())


def audit_paths(
    targets: Sequence[Path],
    rules: "Sequence[type[LintRule]] | RuleSelection",
    config: LintConfig | None = None,
    jobs: int | None = None,
    display: Sequence[str] | None = None,
    cache_dir: Path | None = None,
    only: Sequence[Collection[str] | None] | None = None,
) -> AuditResult:
    """Audit directories, ``.py`` files and archives (see :func:`iter_source_files`).

    ``cache_dir``: where per-file results are cached (``None``: no cache); ``only``:
    per target, the relative paths to audit (``--since``), ``None`` for all.
    """
    config = config or LintConfig()
    selection = RuleSelection.of(rules)
    result = AuditResult()
    context = cache_context(selection, config) if cache_dir is not None else ""
    loose: list[SourceFile] = []  # single files share one cache section
    for i, target in enumerate(targets):
        subset = only[i] if only else None
        files = iter_source_files(target, display[i] if display else None, subset)
        if target.is_dir() or target.suffix != ".py":
            cache = None
            if cache_dir is not None:
                cache = ResultCache(cache_dir, context, f"{'dir' if target.is_dir() else 'archive'}:{target.resolve()}")
            audit_files(files, selection, config, jobs, cache, result)
            if cache is not None:
                cache.save(complete=subset is None)
        else:
            loose.extend(files)
    if loose:
        cache = ResultCache(cache_dir, context, f"files:{Path.cwd()}") if cache_dir is not None else None
        audit_files(loose, selection, config, jobs, cache, result)
        if cache is not None:
            cache.save(complete=False)
    result.findings.sort()
    result.errors.sort()
    return result
