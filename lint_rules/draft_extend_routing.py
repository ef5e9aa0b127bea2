"""Where a forward method sends draft extend to a fixed-``q_len`` decode kernel.

GR003 reports such a routing when no metadata method builds draft-extend metadata;
GR004 keeps its draft-extend findings only for classes that have one (a varlen kernel
reads ``cu_seqlens_q`` from device memory, so a replay-time layout change is harmless
there). Both ask through :func:`routings`, memoized on the file's
:class:`~lint_rules.rule.ModuleContext`, so the analysis runs once per method.

A routing is an ``if`` in a forward-time method (``LintConfig.is_forward_method``)
whose test is true for a draft-extend mode (a ``forward_mode.is_draft_extend*()``
predicate, alone or or-ed with others, directly or through a local flag bound to one;
the ``else`` arm of a negated test) and whose branch calls a decode kernel
(``LintConfig.decode_kernels``), directly or through a ``self`` helper one level deep.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import libcst as cst

from .cst_analysis import iter_calls, iter_ifs, self_method, target_names
from .forward_mode_predicates import positive_modes, positive_names

if TYPE_CHECKING:
    from .rule import ModuleContext


@dataclass(frozen=True)
class Routing:
    """One draft-extend branch that calls a decode kernel.

    ``modes``: the draft-extend modes the branch is taken for (``v1``, ``v2``);
    ``call``: the call in the branch (a kernel, or the ``self`` helper that calls one);
    ``kernel``: its name, ``self.<helper>() -> <kernel>`` through a helper.
    """

    modes: frozenset[str]
    call: cst.Call
    kernel: str


def routings(fn: cst.FunctionDef, methods: Mapping[str, cst.FunctionDef], ctx: "ModuleContext") -> list[Routing]:
    """The draft-extend routings of method ``fn`` of a class whose methods are ``methods``."""
    key = ("draft-extend-routings", id(fn))
    if key not in ctx.memo:
        found: list[Routing] = []
        # every draft-extend predicate (and flag bound to one) names the mode
        if "draft_extend" in ctx.method_text(fn):
            found = list(_find_routings(fn, methods, ctx))
        ctx.memo[key] = found
    return ctx.memo[key]  # type: ignore[return-value]


def routes_draft_extend(methods: Mapping[str, cst.FunctionDef], ctx: "ModuleContext") -> bool:
    """Whether any forward-time method of the class routes draft extend to a decode kernel."""
    return any(
        routings(fn, methods, ctx) for name, fn in methods.items() if ctx.config.is_forward_method(name)
    )


def _find_routings(
    fn: cst.FunctionDef, methods: Mapping[str, cst.FunctionDef], ctx: "ModuleContext"
) -> Iterator[Routing]:
    flags = _mode_flags(fn)
    for stmt in iter_ifs(fn.body):
        test = stmt.test
        negated = isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not)
        inner = test.expression if negated else test
        routed = _test_modes(inner, flags)
        if not routed:
            continue
        branch: cst.CSTNode | None = stmt.body
        if negated:
            branch = stmt.orelse if isinstance(stmt.orelse, cst.Else) else None
        if branch is None:
            continue
        hit = _first_decode_call(branch, methods, ctx)
        if hit is not None:
            yield Routing(routed, *hit)


def _mode_flags(fn: cst.FunctionDef) -> dict[str, frozenset[str]]:
    """Local names bound to a draft-extend test: ``uses_decode_kernel = ... or is_draft_extend_v2()``."""
    flags: dict[str, frozenset[str]] = {}

    class _Assigns(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is fn

        def visit_Assign(self, node: cst.Assign) -> None:
            modes = positive_modes(node.value)
            for t in node.targets:
                for n in target_names(t.target):
                    if modes:
                        flags[n] = modes
                    else:
                        flags.pop(n, None)

    fn.visit(_Assigns())
    return flags


def _test_modes(test: cst.BaseExpression, flags: dict[str, frozenset[str]]) -> frozenset[str]:
    modes = set(positive_modes(test))
    for name in positive_names(test):
        modes |= flags.get(name, frozenset())
    return frozenset(modes)


def _first_decode_call(
    branch: cst.CSTNode, methods: Mapping[str, cst.FunctionDef], ctx: "ModuleContext"
) -> tuple[cst.Call, str] | None:
    is_decode_kernel = ctx.config.is_decode_kernel
    for call in iter_calls(branch):
        name = ctx.callee(call)
        if name is not None and is_decode_kernel(name):
            return call, name
        helper = self_method(call, methods)
        if helper is not None:
            for inner in iter_calls(helper.body):
                inner_name = ctx.callee(inner)
                if inner_name is not None and is_decode_kernel(inner_name):
                    return call, f"self.{helper.name.value}() -> {inner_name}"
    return None
