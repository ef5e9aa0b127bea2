"""Each rule against the real bugs it models, in the published releases that hold them.

For every entry of the history ledger (``tests/lint_history/<family>.py``, collected by
:func:`tests.lint_history.ledger.all_bugs`): the rule (:func:`lint_rules.find_rule`) run on
``path`` (:func:`lint_rules.lint_source`, default config) reports at least one finding
inside ``function`` in release ``buggy``, and none inside it in release ``fixed``. The
releases' ``.py`` trees come from :func:`tests.lint_history.release_sources.release_tree`
(one download per wheel, cached under ``.cache/``; ``FMHA_GUARD_CORPUS`` points at
already-extracted trees). ``function``'s line span comes from Python's ``ast`` (libcst
where the running ``ast`` cannot parse the file).
"""

from __future__ import annotations

import ast
import functools

import pytest

from lint_rules import LintConfig, find_rule, lint_source
from lint_rules.registry import UnknownRuleError

from .lint_history.ledger import HistoricalBug, all_bugs
from .lint_history.release_sources import release_file

BUGS = all_bugs()


def _defs(body, name):
    """Class / function definitions called ``name`` in ``body``, looking into if/try/with blocks."""
    for stmt in body:
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if stmt.name == name:
                yield stmt
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _defs(getattr(stmt, field, []) or [], name)
        for handler in getattr(stmt, "handlers", []) or []:
            yield from _defs(handler.body, name)


def _ast_spans(text: str, dotted: str) -> list[tuple[int, int]]:
    nodes = [ast.parse(text)]
    for part in dotted.split("."):
        nodes = [d for n in nodes for d in _defs(n.body, part)]
    return [(n.lineno, n.end_lineno) for n in nodes]


def _cst_spans(text: str, dotted: str) -> list[tuple[int, int]]:
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    wrapper = MetadataWrapper(cst.parse_module(text))
    layout = wrapper.resolve(PositionProvider)
    spans: list[tuple[int, int]] = []

    class _Find(cst.CSTVisitor):
        def __init__(self) -> None:
            self.stack: list[str] = []

        def _enter(self, node) -> None:
            self.stack.append(node.name.value)
            if ".".join(self.stack) == dotted:
                pos = layout[node]
                spans.append((pos.start.line, pos.end.line))

        def visit_ClassDef(self, node) -> None:
            self._enter(node)

        def leave_ClassDef(self, node) -> None:
            self.stack.pop()

        def visit_FunctionDef(self, node) -> None:
            self._enter(node)

        def leave_FunctionDef(self, node) -> None:
            self.stack.pop()

    wrapper.module.visit(_Find())
    return spans


def function_spans(text: str, dotted: str) -> list[tuple[int, int]]:
    """1-based (first, last) lines of every definition of ``Class.method`` / ``function``
    (a method defined under ``if``/``else`` twice gives two spans)."""
    try:
        return _ast_spans(text, dotted)
    except SyntaxError:  # newer syntax than this interpreter's ast reads: libcst does
        return _cst_spans(text, dotted)


@functools.cache
def _findings_in_function(bug: HistoricalBug, version: str):
    """(findings of ``bug.rule`` inside ``bug.function`` in ``version``, spans, every finding of the rule)."""
    text = release_file(bug.engine, version, bug.path)
    spans = function_spans(text, bug.function)
    assert spans, f"[{bug.key}] {bug.function} is not defined in {bug.path} of {bug.engine}=={version}"
    findings, errors, _ = lint_source(bug.path, text, [find_rule(bug.rule)], LintConfig())
    assert errors == [], f"[{bug.key}] {bug.engine}=={version} {bug.path} did not lint: {errors}"
    mine = [f for f in findings if f.rule == bug.rule]
    inside = [f for f in mine if any(lo <= f.line <= hi for lo, hi in spans)]
    return inside, spans, mine


def _ids(bug: HistoricalBug) -> str:
    return bug.key.replace(" ", "-")


def test_ledger_entries_are_well_formed():
    problems = [f"[{bug.key}] {p}" for bug in BUGS for p in bug.problems()]
    for bug in BUGS:
        try:
            find_rule(bug.rule)
        except UnknownRuleError as exc:
            problems.append(f"[{bug.key}] {exc}")
    assert problems == []
    assert len({(b.engine, b.path, b.function, b.rule, b.buggy) for b in BUGS}) == len(BUGS), "duplicate ledger entries"


network = pytest.mark.network


@network
@pytest.mark.parametrize("bug", BUGS, ids=_ids)
def test_rule_finds_the_bug_in_the_buggy_release(bug: HistoricalBug):
    inside, spans, mine = _findings_in_function(bug, bug.buggy)
    assert inside, (
        f"[{bug.key}] {bug.rule} reports nothing inside {bug.function} (lines {spans}) of {bug.path} "
        f"in {bug.engine}=={bug.buggy}, which holds the bug {bug.source} fixed ({bug.summary}); "
        f"its findings elsewhere in the file: {[(f.line, f.symbol) for f in mine]}"
    )


@network
@pytest.mark.parametrize("bug", BUGS, ids=_ids)
def test_rule_is_silent_on_the_fixed_release(bug: HistoricalBug):
    inside, spans, _ = _findings_in_function(bug, bug.fixed)
    assert inside == [], (
        f"[{bug.key}] {bug.rule} still reports inside {bug.function} (lines {spans}) of {bug.path} "
        f"in {bug.engine}=={bug.fixed}, the release with the fix {bug.source}: "
        + "; ".join(f"line {f.line}: {f.message}" for f in inside)
    )
