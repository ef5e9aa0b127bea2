"""The base class every lint rule derives from, and what a rule sees of one file.

Modeled on Fixit's rule files: one class per rule, its docstring in ruff's Markdown
sections (:mod:`lint_rules.rule_info`), a code (``GR001``), a kebab-case name, a
``MESSAGE``, and ``VALID`` / ``INVALID`` code examples that
:func:`lint_rules.testing.check_examples` runs against the rule. A rule that can fix
what it reports attaches a :class:`Replacement` to the finding (Fixit's
``report(node, replacement=...)``); :mod:`lint_rules.autofix` applies them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Iterable

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from .backend_scope import has_backend_class_text, iter_classes, iter_methods
from .config import LintConfig
from .cst_analysis import CalleeNames
from .finding import Evidence, Finding
from .rule_info import RuleInfo

#: Evidence code longer than this is cut (a whole multi-line call is not evidence).
EVIDENCE_WIDTH = 120
#: ``f( x, y )`` -> ``f(x, y)``: what joining a multi-line call onto one line leaves.
_BRACKET_SPACE = re.compile(r"([(\[{])\s+|\s+(?=[)\]}])")


def _contains(outer: cst.CSTNode, inner: cst.CSTNode) -> bool:
    """Whether ``inner`` (by identity) lies inside ``outer``."""
    found = False

    class _Find(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nonlocal found
            found = found or node is inner
            return not found

    outer.visit(_Find())
    return found


@dataclass(frozen=True)
class Replacement:
    """A rule's fix for one finding: ``node`` (of the linted module) becomes ``new``."""

    node: cst.CSTNode
    new: cst.CSTNode


class ModuleContext:
    """What a rule sees of one file: its path, source, tree, config, and node positions.

    Resolving positions over a whole 4,000-line backend costs more than parsing it, so
    positions are computed only for the methods that have a finding: each such method
    is laid out alone, and Python's ``ast`` (C-fast) gives where its ``def`` starts.
    Where the running interpreter's ``ast`` cannot parse the file (Python 3.12 syntax
    on 3.11: ``type X = ...``, ``def f[T]()``, PEP 701 f-strings; libcst parses them) or
    sees other methods, libcst lays out the whole module instead: slower, same positions.
    """

    def __init__(self, path: str, module: cst.Module, config: LintConfig, source: str) -> None:
        self.path = path
        self.module = module
        self.config = config
        self.source = source
        self._def_starts: dict[int, tuple[int, int]] | None = None
        self._spans: dict[int, tuple[int, int]] = {}
        self._lines: list[str] | None = None
        self._classes: dict[int, str] = {}
        #: analyses shared between rules on this file (draft-extend routings: GR003, GR004)
        self.memo: dict[tuple, object] = {}
        #: fixes the rules attached to their findings (see :meth:`LintRule.finding`)
        self.replacements: dict[Finding, Replacement] = {}
        self._layouts: dict[int, tuple[Mapping[cst.CSTNode, CodeRange], int, int]] = {}
        self._callees: CalleeNames | None = None

    def _index_defs(self) -> dict[int, tuple[int, int]]:
        """id(libcst method) -> (line, col) of its ``def``, matched in source order;
        also fills the methods' line spans for :meth:`method_text` and their classes."""
        ours = [(cls, fn) for cls in iter_classes(self.module.body) for fn in iter_methods(cls)]
        try:
            theirs = list(_ast_methods(ast.parse(self.source).body))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            theirs = []
        if [fn.name.value for _, fn in ours] != [name for name, *_ in theirs]:
            theirs = self._cst_methods([fn for _, fn in ours])
        self._spans = {id(fn): (line, end) for (_, fn), (_, line, _, end) in zip(ours, theirs)}
        self._classes = {id(fn): cls.name.value for cls, fn in ours}
        return {id(fn): (line, col) for (_, fn), (_, line, col, _) in zip(ours, theirs)}

    def _cst_methods(self, methods: Sequence[cst.FunctionDef]) -> list[tuple[str, int, int, int]]:
        """What :func:`_ast_methods` gives, from libcst's layout of the whole module."""
        layout = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        return [
            (fn.name.value, layout[fn].start.line, layout[fn].start.column, layout[fn].end.line) for fn in methods
        ]

    def _defs(self) -> dict[int, tuple[int, int]]:
        if self._def_starts is None:
            self._def_starts = self._index_defs()
        return self._def_starts

    def symbol(self, fn: cst.FunctionDef) -> str:
        """``Class.method`` of method ``fn`` (its innermost class)."""
        self._defs()
        return f"{self._classes[id(fn)]}.{fn.name.value}"

    def _method_texts(self) -> list[tuple[cst.FunctionDef, str]]:
        return [(fn, self.method_text(fn)) for cls in iter_classes(self.module.body) for fn in iter_methods(cls)]

    def callee(self, call: cst.Call) -> str | None:
        """The called function's name, ``from M import f as g`` aliases resolved
        (:class:`~lint_rules.cst_analysis.CalleeNames`) where either name is a kernel,
        decode kernel or re-plan call of the config: the names rules match calls against."""
        if self._callees is None:
            config = self.config
            self._callees = CalleeNames(
                self.module,
                self.source,
                self._method_texts,
                lambda name: config.is_kernel_call(name) or config.is_decode_kernel(name) or config.is_replan_call(name),
            )
        return self._callees.name(call)

    def method_text(self, fn: cst.FunctionDef) -> str:
        """The source text of method ``fn`` (from its ``def`` line): a cheap textual
        pre-check before a rule walks the method's tree."""
        self._defs()
        if self._lines is None:
            self._lines = self.source.splitlines()
        start, end = self._spans[id(fn)]
        return "\n".join(self._lines[start - 1 : end])

    def position(self, node: cst.CSTNode, scope: cst.FunctionDef) -> tuple[int, int]:
        """1-based line and column of ``node``, a node inside method ``scope``."""
        def_starts = self._defs()
        if id(scope) not in self._layouts:
            alone = cst.Module(
                body=[scope],
                default_indent=self.module.default_indent,
                default_newline=self.module.default_newline,
            )
            layout = MetadataWrapper(alone, unsafe_skip_copy=True).resolve(PositionProvider)
            def_line, def_col = def_starts[id(scope)]
            self._layouts[id(scope)] = (layout, def_line - layout[scope.name].start.line, def_col)
        layout, line_shift, col_shift = self._layouts[id(scope)]
        start = layout[node].start
        return start.line + line_shift, start.column + col_shift + 1

    def code(self, node: cst.CSTNode) -> str:
        """The node's source text, on one line."""
        return " ".join(self.module.code_for_node(node).split())

    def evidence(self, label: str, node: cst.CSTNode, scope: cst.FunctionDef, code: str | None = None) -> Evidence:
        """One evidence step: ``label``, the line of ``node`` (inside method ``scope``) and
        ``code`` (default: the node's source on one line, cut at :data:`EVIDENCE_WIDTH`)."""
        text = _BRACKET_SPACE.sub(r"\1", self.code(node)) if code is None else code
        if len(text) > EVIDENCE_WIDTH:
            text = text[: EVIDENCE_WIDTH - 3] + "..."
        return Evidence(label, self.position(node, scope)[0], text)

    def evidence_chain(self, source_label: str, chain: Sequence[cst.CSTNode], scope: cst.FunctionDef) -> list[Evidence]:
        """A taint chain (:func:`lint_rules.dataflow.taint_chain`) as evidence: the source
        (``source_label``), then each binding that carried it on (``derived``); a first
        binding that holds the source (``bs = forward_batch.batch_size``) stands for both,
        on the source's line."""
        steps: list[Evidence] = []
        seen: set[int] = set()
        for i, node in enumerate(chain):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if i == 1 and steps and _contains(node, chain[0]):  # the source read inside its first binding
                steps = [Evidence(source_label, steps[0].line, self.evidence("", node, scope).code)]
                continue
            steps.append(self.evidence("derived" if steps else source_label, node, scope))
        return steps

    def code_of_arg(self, arg: cst.Arg) -> str:
        """``keyword=value`` / ``*value`` / ``value``, without the trailing comma or comment."""
        value = self.code(arg.value)
        if arg.keyword is not None:
            return f"{arg.keyword.value}={value}"
        return f"{arg.star}{value}"


class LintRule(RuleInfo):
    """Base class: subclasses set the class attributes and implement :meth:`check`."""

    #: A file must contain every one of these words, or it is never parsed for this rule.
    WORDS: ClassVar[tuple[str, ...]] = ()
    #: The rule looks only inside attention-backend classes (a textual pre-filter too).
    BACKEND_SCOPED: ClassVar[bool] = True
    #: The rule attaches :class:`Replacement` fixes to (some of) its findings.
    FIXABLE: ClassVar[bool] = False

    def __init__(self, config: LintConfig | None = None) -> None:
        self.config = config or LintConfig()

    def words(self) -> tuple[str, ...]:
        """The words a file must contain (the config may add kernel names later)."""
        return self.WORDS

    def wants(self, source: str) -> bool:
        """Whether the file can hold a finding: every word, and a backend class if scoped."""
        if not all(w in source for w in self.words()):
            return False
        return not self.BACKEND_SCOPED or has_backend_class_text(source, self.config.profile)

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    def finding(
        self,
        ctx: ModuleContext,
        node: cst.CSTNode,
        scope: cst.FunctionDef,
        detail: str,
        replacement: Replacement | None = None,
        evidence: Sequence[Evidence] = (),
    ) -> Finding:
        """A finding at ``node``, which lies inside method ``scope`` (its ``Class.method``
        is the finding's symbol); ``replacement``: the fix, recorded on ``ctx`` (the
        finding is then ``fixable``); ``evidence``: the steps that lead to it
        (:meth:`ModuleContext.evidence` builds one from a node)."""
        line, col = ctx.position(node, scope)
        found = Finding(
            path=ctx.path,
            line=line,
            col=col,
            rule=self.CODE,
            name=self.NAME,
            symbol=ctx.symbol(scope),
            message=f"{self.MESSAGE} {detail}".strip(),
            fixable=replacement is not None,
            evidence=tuple(evidence),
        )
        if replacement is not None:
            ctx.replacements[found] = replacement
        return found


def _ast_methods(body: list[ast.stmt]):
    """(name, def line, def col, last line) of methods, in the order of :func:`iter_classes` x
    :func:`iter_methods` (pre-order over statements, never inside functions)."""
    for stmt in body:
        if isinstance(stmt, ast.ClassDef):
            for item in stmt.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield item.name, item.lineno, item.col_offset, item.end_lineno
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _ast_methods(getattr(stmt, name, []) or [])
        for handler in getattr(stmt, "handlers", []) or []:
            yield from _ast_methods(handler.body)
