"""Runs the rules over many files: cache, keyword pre-filter, parallel parse, suppressions, sorted output.

A file is parsed only if it contains every word one of the selected rules declares
(``LintRule.WORDS``); on SGLang's ``srt/`` tree that skips most files unparsed. Files
are linted in worker processes. A file that cannot be listed, read, decoded or parsed
(:mod:`lint_rules.sources`; one nested too deep for the parser, :mod:`lint_rules.nesting`),
or a rule that fails on a file, becomes an error entry for that file
(``AuditResult.errors``: they fail the run like findings) and never aborts it. Suppression
comments (:mod:`lint_rules.suppressions`) are applied per file, per-path ignores
(``LintConfig.per_path_ignores``) before a file is linted.

With a cache directory (:mod:`lint_rules.result_cache`) a file whose content is
unchanged is not parsed again. This module imports neither libcst nor the rules until
a file actually has to be linted: a fully cached audit never loads them.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .config import ConfigError, ConfigResolver, LintConfig, normalize_code
from .finding import FileError, Finding
from .result_cache import ResultCache, content_hash, context_key
from .sources import SourceFile, SourceText, decode, is_archive, iter_source_files
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
    #: path -> the file on disk it was read from, for the files ``--fix`` may rewrite;
    #: ``None`` for one reached through a symlink that leaves the audited directory.
    #: Archive members are never listed.
    locations: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "files_scanned": self.files_scanned,
            "findings": [f.as_dict() for f in self.findings],
            "errors": [e.as_dict() for e in self.errors],
        }


class Progress(Protocol):
    """Told how many files are to be linted (parsed) and when each is done."""

    def add(self, total: int) -> None: ...

    def advance(self) -> None: ...


class RuleSelection:
    """``select`` / ``ignore`` (codes or names), resolved to rule classes only when needed.

    The pseudo-rules GR900 / GR901 (suppression comments) are on unless ignored; a
    ``select`` that names only pseudo-rules runs no real rule. With ``from_config``
    (the command line), a ``select`` / ``ignore`` left ``None`` is each file's
    configuration's (:meth:`resolve`).
    """

    def __init__(
        self, select: Sequence[str] | None = None, ignore: Sequence[str] | None = None, *, from_config: bool = False
    ) -> None:
        self.select = tuple(normalize_code(s) for s in select) if select else None
        self.ignore = tuple(normalize_code(s) for s in ignore) if ignore else ()
        ignored = set(self.ignore)
        self.pseudo = frozenset(c for c, r in PSEUDO_RULES.items() if c not in ignored and r.NAME not in ignored)
        self._given: list[type[LintRule]] | None = None
        self.from_config = from_config
        self._ignore_given = ignore is not None
        #: ``select`` / ``ignore`` -> where the config file set it (error messages).
        self.config_keys: dict[str, str] = {}
        self._resolved: dict[str, RuleSelection] = {}

    def resolve(self, config: LintConfig) -> "RuleSelection":
        """The selection for files under ``config``: this one, or with ``from_config``
        the config's ``select`` / ``ignore`` where this one sets none."""
        if not self.from_config:
            return self
        key = config.cache_key()
        if key not in self._resolved:
            take_select = self.select is None and config.select is not None
            take_ignore = not self._ignore_given and config.ignore is not None
            sel = RuleSelection(
                config.select if take_select else self.select, config.ignore if take_ignore else self.ignore
            )
            sel.config_keys = {k: config.where(k) for k, taken in (("select", take_select), ("ignore", take_ignore)) if taken}
            self._resolved[key] = sel
        return self._resolved[key]

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
        """Resolve the selection and check every code the config names; an unknown code
        the config file set is a :class:`ConfigError` naming the file and the key."""
        from .registry import UnknownRuleError, find_rule

        def check(codes: Sequence[str], where: str | None) -> None:
            for code in codes:
                if not _is_pseudo(code):
                    try:
                        find_rule(code)
                    except UnknownRuleError as exc:
                        if where is None:
                            raise
                        raise ConfigError(f"{where}: {exc}") from None

        for key, where in self.config_keys.items():
            check(getattr(self, key) or (), where)
        self.rules  # noqa: B018 - raises for an unknown code
        for _, codes in config.per_path_ignores:
            check(codes, config.where("per-path-ignores") if config.origin else None)


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

    from .nesting import nesting_problem
    from .rule import ModuleContext

    problem = nesting_problem(text)  # before libcst, whose memory grows with its square
    if problem is not None:
        return [], [FileError(path, problem)], {}
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
        entry["f"] = [f.to_row() for f in findings]
        entry["l"] = [[line, text] for (_, line), text in lines.items()]
    if errors:
        entry["e"] = [e.message for e in errors]
    return entry


def _add_entry(result: AuditResult, path: str, entry: dict) -> None:
    if entry.get("p"):
        result.files_parsed += 1
    for row in entry.get("f", ()):
        result.findings.append(Finding.from_row(path, row))
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
    progress: Progress | None = None,
) -> AuditResult:
    """Lint files not read yet, using ``cache`` (see :mod:`lint_rules.result_cache`) if
    given; ``progress`` hears about the files that must be parsed."""
    config = config or LintConfig()
    selection = RuleSelection.of(rules)
    result = result if result is not None else AuditResult()
    pending: list[tuple[str, str, tuple[int, int] | None, str]] = []  # path, text, sig, digest
    for src in files:
        result.files_scanned += 1
        if src.error is not None:
            result.errors.append(FileError(src.path, src.error))
            continue
        if src.location is not None:
            result.locations[src.path] = src.location if src.in_tree else None
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
        _lint_pending(pending, selection, config, jobs, cache, result, progress)
    if cache is not None:
        result.cache_hits += cache.hits
    result.findings.sort()
    result.errors.sort()
    return result


def _lint_pending(
    pending, selection: RuleSelection, config: LintConfig, jobs, cache, result: AuditResult, progress: Progress | None
) -> None:
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
    if progress is not None and work:
        progress.add(len(work))
    outputs = []
    if workers > 1 and len(work) > 1 and (len(work) >= PARALLEL_THRESHOLD or size >= PARALLEL_MIN_BYTES):
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, len(work) // (workers * 4))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for output in pool.map(_lint_job, work, chunksize=chunk):
                outputs.append(output)
                if progress is not None:
                    progress.advance()
    else:
        for job in work:
            outputs.append(_lint_job(job))
            if progress is not None:
                progress.advance()
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
    *,
    resolver: ConfigResolver | None = None,
    progress: Progress | None = None,
) -> AuditResult:
    """Audit directories, ``.py`` files and archives (see :func:`iter_source_files`).

    ``cache_dir``: where per-file results are cached (``None``: no cache); ``only``:
    per target, the relative paths to audit (``--since``), ``None`` for all;
    ``resolver``: each file gets the configuration of the nearest config file above it
    (``config`` is then unused; a ``RuleSelection(from_config=True)`` takes each one's
    ``select`` / ``ignore``); ``progress``: told about the files being parsed. Each
    finding and error records the directory or archive it came from (``root``).
    """
    config = config or LintConfig()
    selection = RuleSelection.of(rules)
    result = AuditResult()
    loose: list[SourceFile] = []  # single files share one cache section
    for i, target in enumerate(targets):
        subset = only[i] if only else None
        files = iter_source_files(target, display[i] if display else None, subset)
        if target.is_dir() or is_archive(target):
            section = f"{'dir' if target.is_dir() else 'archive'}:{target.resolve()}"
            anchor = os.path.abspath(target) if target.is_dir() else None
            before = _ids(result)
            for group_config, group in _config_groups(files, config, resolver, anchor, target):
                _audit_group(group, selection, group_config, jobs, cache_dir, section, result, subset is None, progress)
            _set_root(result, before, os.path.abspath(target), display[i] if display else target.as_posix())
        else:
            loose.extend(files)
    if loose:
        for group_config, group in _config_groups(loose, config, resolver, os.getcwd(), None):
            _audit_group(group, selection, group_config, jobs, cache_dir, f"files:{Path.cwd()}", result, False, progress)
    result.findings.sort()
    result.errors.sort()
    return result


def _config_groups(
    files: Iterable[SourceFile], config: LintConfig, resolver: ConfigResolver | None, anchor: str | None, archive: Path | None
) -> list[tuple[LintConfig, Iterable[SourceFile]]]:
    """``files`` grouped by the configuration each gets (one group without a resolver;
    an archive's members share the configuration of the archive's directory)."""
    if resolver is None:
        return [(config, files)]
    if archive is not None and not archive.is_dir():
        return [(resolver.for_path(archive).anchored(None), files)]
    groups: dict[str, tuple[LintConfig, list[SourceFile]]] = {}
    anchored: dict[int, tuple[LintConfig, str]] = {}
    for src in files:
        found = resolver.for_path(src.location or src.path)
        if id(found) not in anchored:
            cfg = found.anchored(anchor)
            anchored[id(found)] = (cfg, cfg.cache_key())
        cfg, key = anchored[id(found)]
        groups.setdefault(key, (cfg, []))[1].append(src)
    return list(groups.values())


def _audit_group(
    files: Iterable[SourceFile],
    selection: RuleSelection,
    config: LintConfig,
    jobs: int | None,
    cache_dir: Path | None,
    section: str,
    result: AuditResult,
    complete: bool,
    progress: Progress | None,
) -> None:
    """Audit files that share one configuration, with their own cache section."""
    selection = selection.resolve(config)
    cache = None
    if cache_dir is not None:
        cache = ResultCache(cache_dir, cache_context(selection, config), section)
    audit_files(files, selection, config, jobs, cache, result, progress)
    if cache is not None:
        cache.save(complete=complete)


def _ids(result: AuditResult) -> set[int]:
    return {id(x) for x in (*result.findings, *result.errors)}


def _set_root(result: AuditResult, before: set[int], root: str, target: str) -> None:
    """Record ``root`` on the findings and errors added since ``before`` (:func:`_ids`);
    an error about the target itself (path ``""``: an archive that cannot be read) gets
    the target's path as given, as a single file's would."""
    result.findings = [f if id(f) in before else replace(f, root=root) for f in result.findings]
    result.errors = [
        e if id(e) in before else replace(e, path=target) if not e.path else replace(e, root=root) for e in result.errors
    ]
