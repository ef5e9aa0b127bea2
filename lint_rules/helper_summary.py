"""Which results of a ``self`` helper method carry a tainted argument (one class, bounded depth).

``q, q_rope, k_rope, k_descale, v_descale = self.prepare_query(q, ..., logical_batch_size=bs)``
taints only what the helper's ``return`` derives from ``logical_batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from .backend_scope import param_names
from .dataflow import Classifier, FlowState, FlowWalker


def _is_static(fn: cst.FunctionDef) -> bool:
    return any(
        isinstance(d.decorator, cst.Name) and d.decorator.value in ("staticmethod", "classmethod")
        for d in fn.decorators
    )


def bound_params(fn: cst.FunctionDef, call: cst.Call, is_tainted: Callable[[cst.CSTNode], bool]) -> frozenset[str] | None:
    """The helper's parameter names that receive a tainted argument; None if unmappable."""
    params = [p.name.value for p in param_names(fn)]
    if params and not _is_static(fn):
        params = params[1:]  # self
    positional = [p.name.value for p in [*fn.params.posonly_params, *fn.params.params]]
    if positional and not _is_static(fn):
        positional = positional[1:]
    tainted: set[str] = set()
    index = 0
    for arg in call.args:
        if arg.star:
            return None
        if arg.keyword is not None:
            name = arg.keyword.value
            if name not in params:
                return None if fn.params.star_kwarg is None else frozenset(tainted | {"**"})
        else:
            if index >= len(positional):
                return None
            name = positional[index]
            index += 1
        if is_tainted(arg.value):
            tainted.add(name)
    return frozenset(tainted)


class HelperSummaries:
    """Per-element taint of ``self.<helper>(...)`` results, memoized per tainted-parameter set."""

    MAX_DEPTH = 2

    def __init__(self, methods: dict[str, cst.FunctionDef], make_classifier: Callable[[cst.FunctionDef], Classifier]) -> None:
        self.methods = methods
        self.make_classifier = make_classifier
        self._cache: dict[tuple[str, frozenset[str]], list[bool] | None] = {}
        self._depth = 0

    def helper_of(self, call: cst.Call) -> cst.FunctionDef | None:
        func = call.func
        if (
            isinstance(func, cst.Attribute)
            and isinstance(func.value, cst.Name)
            and func.value.value == "self"
        ):
            return self.methods.get(func.attr.value)
        return None

    def summarize(self, call: cst.Call, state: FlowState, classify: Classifier) -> list[bool] | None:
        fn = self.helper_of(call)
        if fn is None or self._depth >= self.MAX_DEPTH:
            return None
        walker = FlowWalker(classify, lambda *_: None)
        tainted = bound_params(fn, call, lambda node: walker.is_tainted(node, state))
        if tainted is None or "**" in tainted:
            return None
        key = (fn.name.value, tainted)
        if key not in self._cache:
            self._cache[key] = None  # recursion guard
            self._depth += 1
            try:
                self._cache[key] = self._returns(fn, tainted)
            finally:
                self._depth -= 1
        return self._cache[key]

    def _returns(self, fn: cst.FunctionDef, tainted: frozenset[str]) -> list[bool]:
        inner = self.make_classifier(fn)
        returns: list[list[bool]] = []

        def on_statement(node: cst.CSTNode, st: FlowState) -> None:
            if isinstance(node, cst.Return) and node.value is not None:
                value = node.value
                if isinstance(value, cst.Tuple):
                    returns.append([walker.is_tainted(el.value, st) for el in value.elements])
                else:
                    returns.append([walker.is_tainted(value, st)])

        walker = FlowWalker(inner, on_statement, call_summary=lambda c, st: self.summarize(c, st, inner))
        walker.run(fn.body.body, FlowState(tainted=tainted))
        if not returns:
            return [False]
        width = len(returns[0])
        if all(len(r) == width for r in returns):
            return [any(r[i] for r in returns) for i in range(width)]
        return [any(any(r) for r in returns)]
