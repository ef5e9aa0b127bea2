"""The base class every lint rule derives from, and what a rule reports.

Modeled on Fixit's rule files: one class per rule, its docstring in ruff's
"What it does / Why is this bad? / Example / Use instead" form, a code (``GR001``),
a kebab-case name, a ``MESSAGE``, and ``VALID`` / ``INVALID`` code examples that the
test suite runs against the rule.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterable

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from .backend_scope import BACKEND_CLASS_TEXT, iter_classes, iter_methods
from .config import LintConfig
from .finding import Finding

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True)
class Valid:
    """Code the rule must not flag."""

    code: str


@dataclass(frozen=True)
class Invalid:
    """Code the rule must flag; ``line`` (1-based, after dedent) pins the finding."""

    code: str
    line: int | None = None


class ModuleContext:
    """What a rule sees of one file: its path, source, tree, config, and node positions.

    Resolving positions over a whole 4,000-line backend costs more than parsing it, so
    positions are computed only for the methods that have a finding: each such method
    is laid out alone, and Python's ``ast`` (C-fast) gives where its ``def`` starts.
    """

    def __init__(self, path: str, module: cst.Module, config: LintConfig, source: str) -> None:
        self.path = path
        self.module = module
        self.config = config
        self.source = source
        self._def_starts: dict[int, tuple[int, int]] | None = None
        self._spans: dict[int, tuple[int, int]] = {}
        self._lines: list[str] | None = None
        #: analyses shared between rules on this file (GR003's routings feed GR004)
        self.memo: dict[tuple, object] = {}
        self._layouts: dict[int, tuple[Mapping[cst.CSTNode, CodeRange], int, int]] = {}

    def _index_defs(self) -> dict[int, tuple[int, int]]:
        """id(libcst method) -> (line, col) of its ``def``, matched in source order;
        also fills the methods' line spans for :meth:`method_text`."""
        ours = [fn for cls in iter_classes(self.module.body) for fn in iter_methods(cls)]
        theirs = list(_ast_methods(ast.parse(self.source).body))
        if [fn.name.value for fn in ours] != [name for name, *_ in theirs]:
            raise RuntimeError("libcst and ast disagree on the methods of this file")
        self._spans = {id(fn): (line, end) for fn, (_, line, _, end) in zip(ours, theirs)}
        return {id(fn): (line, col) for fn, (_, line, col, _) in zip(ours, theirs)}

    def method_text(self, fn: cst.FunctionDef) -> str:
        """The source text of method ``fn`` (from its ``def`` line): a cheap textual
        pre-check before a rule walks the method's tree."""
        if self._def_starts is None:
            self._def_starts = self._index_defs()
        if self._lines is None:
            self._lines = self.source.splitlines()
        start, end = self._spans[id(fn)]
        return "\n".join(self._lines[start - 1 : end])

    def position(self, node: cst.CSTNode, scope: cst.FunctionDef) -> tuple[int, int]:
        """1-based line and column of ``node``, a node inside method ``scope``."""
        if self._def_starts is None:
            self._def_starts = self._index_defs()
        if id(scope) not in self._layouts:
            alone = cst.Module(
                body=[scope],
                default_indent=self.module.default_indent,
                default_newline=self.module.default_newline,
            )
            layout = MetadataWrapper(alone, unsafe_skip_copy=True).resolve(PositionProvider)
            def_line, def_col = self._def_starts[id(scope)]
            self._layouts[id(scope)] = (layout, def_line - layout[scope.name].start.line, def_col)
        layout, line_shift, col_shift = self._layouts[id(scope)]
        start = layout[node].start
        return start.line + line_shift, start.column + col_shift + 1

    def code(self, node: cst.CSTNode) -> str:
        """The node's source text, on one line."""
        return " ".join(self.module.code_for_node(node).split())

    def code_of_arg(self, arg: cst.Arg) -> str:
        """``keyword=value`` / ``*value`` / ``value``, without the trailing comma or comment."""
        value = self.code(arg.value)
        if arg.keyword is not None:
            return f"{arg.keyword.value}={value}"
        return f"{arg.star}{value}"


class LintRule:
    """Base class: subclasses set the class attributes and implement :meth:`check`."""

    CODE: ClassVar[str]
    NAME: ClassVar[str]
    MESSAGE: ClassVar[str]
    #: A file must contain every one of these words, or it is never parsed for this rule.
    WORDS: ClassVar[tuple[str, ...]] = ()
    #: Opt-in rules (the strict GR1xx forms) run only when selected.
    DEFAULT_ENABLED: ClassVar[bool] = True
    VALID: ClassVar[list[Valid]] = []
    INVALID: ClassVar[list[Invalid]] = []

    def __init__(self, config: LintConfig | None = None) -> None:
        self.config = config or LintConfig()

    def words(self) -> tuple[str, ...]:
        """The words a file must contain (the config may add kernel names later)."""
        return self.WORDS

    #: The rule looks only inside attention-backend classes (a textual pre-filter too).
    BACKEND_SCOPED: ClassVar[bool] = True

    def wants(self, source: str) -> bool:
        """Whether the file can hold a finding: every word, and a backend class if scoped."""
        if not all(w in source for w in self.words()):
            return False
        return not self.BACKEND_SCOPED or BACKEND_CLASS_TEXT.search(source) is not None

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    def finding(
        self, ctx: ModuleContext, node: cst.CSTNode, scope: cst.FunctionDef, symbol: str, detail: str
    ) -> Finding:
        """A finding at ``node``, which lies inside method ``scope`` named ``symbol``."""
        line, col = ctx.position(node, scope)
        return Finding(
            path=ctx.path,
            line=line,
            col=col,
            rule=self.CODE,
            name=self.NAME,
            symbol=symbol,
            message=f"{self.MESSAGE} {detail}".strip(),
        )

    @classmethod
    def doc(cls) -> str:
        """The rule's documentation (its docstring, dedented)."""
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        return cls.doc().splitlines()[0] if cls.doc() else cls.MESSAGE


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


def iter_calls(node: cst.CSTNode) -> "Iterator[cst.Call]":
    """Every call inside ``node``, not descending into nested functions, lambdas or classes."""
    found: list[cst.Call] = []

    class _Calls(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            found.append(call)

        def visit_FunctionDef(self, _: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, _: cst.ClassDef) -> bool:
            return False

        def visit_Lambda(self, _: cst.Lambda) -> bool:
            return False

    node.visit(_Calls())
    return iter(found)


def callee_name(call: cst.Call) -> str | None:
    """The last name of the called expression: ``flashinfer.decode.f(...)`` -> ``f``."""
    func = call.func
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None
