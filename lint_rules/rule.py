"""The base class every lint rule derives from, and what a rule reports.

Modeled on Fixit's rule files: one class per rule, its docstring in ruff's
"What it does / Why is this bad? / Example / Use instead" form, a code (``GR001``),
a kebab-case name, a ``MESSAGE``, and ``VALID`` / ``INVALID`` code examples that the
test suite runs against the rule.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterable

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from .config import LintConfig

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True, order=True)
class Finding:
    """One rule violation.

    ``path`` is relative to the audited root (an archive member path inside a wheel),
    ``line``/``col`` are 1-based, ``symbol`` is ``Class.method``.
    """

    path: str
    line: int
    col: int
    rule: str
    name: str
    symbol: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "name": self.name,
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "symbol": self.symbol,
            "message": self.message,
        }


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
    """What a rule sees of one file: its path, config, and lazily computed positions.

    Positions cost a second pass over the tree, so they are resolved only when a rule
    reports its first finding in the file.
    """

    def __init__(self, path: str, module: cst.Module, config: LintConfig) -> None:
        self.path = path
        self.module = module
        self.config = config
        self._positions: dict[cst.CSTNode, CodeRange] | None = None
        self._wrapper = MetadataWrapper(module, unsafe_skip_copy=True)

    def position(self, node: cst.CSTNode) -> CodeRange:
        if self._positions is None:
            self._positions = dict(self._wrapper.resolve(PositionProvider))
        return self._positions[node]

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

    def wants(self, source: str) -> bool:
        return all(w in source for w in self.words())

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    def finding(self, ctx: ModuleContext, node: cst.CSTNode, symbol: str, detail: str) -> Finding:
        start = ctx.position(node).start
        return Finding(
            path=ctx.path,
            line=start.line,
            col=start.column + 1,
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
