"""What a ``self`` helper method does with a tainted argument (one class, bounded depth).

Two questions, both memoized per (helper, tainted-parameter set):

* :meth:`HelperSummaries.summarize`: which of its results carry the taint.
  ``q, q_rope, k_rope, k_descale, v_descale = self.prepare_query(q, ..., logical_batch_size=bs)``
  taints only what the helper's ``return`` derives from ``logical_batch_size``.
* :meth:`HelperSummaries.kernel_sinks`: which kernel calls inside it (or inside the
  helpers it calls in turn) receive the taint. ``self._run(q, batch_size=bs)`` whose body
  passes ``batch_size`` on to ``trtllm_batch_context_with_kv_cache`` is a sink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import libcst as cst

from .cst_analysis import callee_name, iter_calls, param_names, self_method
from .dataflow import Classifier, FlowState, FlowWalker


@dataclass(frozen=True)
class KernelSink:
    """A kernel call reached through helpers: ``via`` names the helpers, outermost first."""

    kernel: str
    args: tuple[str, ...]
    via: tuple[str, ...]


#: The tainted arguments of one call if it is a kernel call (the rule decides), else None.
SinkArgs = Callable[[cst.Call, FlowState, Classifier], "list[str] | None"]
#: Whether a call re-plans (after it, nothing downstream in the helper is reported).
IsReplan = Callable[[cst.Call], bool]


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

    def __init__(
        self,
        methods: dict[str, cst.FunctionDef],
        make_classifier: Callable[[cst.FunctionDef], Classifier],
        callee: Callable[[cst.Call], str | None] = callee_name,
        *,
        track_containers: bool = False,
    ) -> None:
        """``track_containers``: inside helpers, containers take the taint stored into
        them (:class:`~lint_rules.dataflow.FlowWalker`)."""
        self.track_containers = track_containers
        self.methods = methods
        self.make_classifier = make_classifier
        #: names a kernel call (``ModuleContext.callee``: import aliases resolved)
        self.callee = callee
        self._cache: dict[tuple[str, frozenset[str]], list[bool] | None] = {}
        self._sinks: dict[tuple[str, frozenset[str]], list[KernelSink]] = {}
        self._depth = 0

    def helper_of(self, call: cst.Call) -> cst.FunctionDef | None:
        """The method ``self.<helper>(...)`` calls, if this class defines it."""
        return self_method(call, self.methods)

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

        walker = FlowWalker(
            inner,
            on_statement,
            call_summary=lambda c, st: self.summarize(c, st, inner),
            track_containers=self.track_containers,
        )
        walker.run(fn.body.body, FlowState(tainted=tainted))
        if not returns:
            return [False]
        width = len(returns[0])
        if all(len(r) == width for r in returns):
            return [any(r[i] for r in returns) for i in range(width)]
        return [any(any(r) for r in returns)]

    def kernel_sinks(
        self,
        call: cst.Call,
        state: FlowState,
        classify: Classifier,
        sink_args: SinkArgs,
        is_replan: IsReplan,
        param_classifier: Callable[[cst.FunctionDef], Classifier] | None = None,
    ) -> list[KernelSink]:
        """Kernel calls that receive a tainted argument of ``call`` (a ``self`` helper call).

        ``param_classifier`` gives the classifier used inside a helper (default: the
        summaries' own); a rule passes one that ignores the helper's own sources, which
        are reported where they are read.
        """
        fn = self.helper_of(call)
        if fn is None or self._depth >= self.MAX_DEPTH:
            return []
        walker = FlowWalker(classify, lambda *_: None)
        tainted = bound_params(fn, call, lambda node: walker.is_tainted(node, state))
        if not tainted or "**" in tainted:
            return []
        key = (fn.name.value, tainted)
        if key not in self._sinks:
            self._sinks[key] = []  # recursion guard
            self._depth += 1
            try:
                self._sinks[key] = self._sinks_in(fn, tainted, sink_args, is_replan, param_classifier)
            finally:
                self._depth -= 1
        return self._sinks[key]

    def _sinks_in(
        self,
        fn: cst.FunctionDef,
        tainted: frozenset[str],
        sink_args: SinkArgs,
        is_replan: IsReplan,
        param_classifier: Callable[[cst.FunctionDef], Classifier] | None,
    ) -> list[KernelSink]:
        inner = (param_classifier or self.make_classifier)(fn)
        sinks: list[KernelSink] = []
        name = fn.name.value
        replanned = False

        def on_statement(node: cst.CSTNode, st: FlowState) -> None:
            nonlocal replanned
            if replanned:
                return
            calls = list(iter_calls(node))
            if any(is_replan(c) for c in calls):
                replanned = True  # re-planned for the batch as it is now
                return
            for c in calls:
                args = sink_args(c, st, inner)
                if args:
                    sinks.append(KernelSink(self.callee(c) or "?", tuple(args), (name,)))
                elif args is None and self.helper_of(c) is not None:
                    for deeper in self.kernel_sinks(c, st, inner, sink_args, is_replan, param_classifier):
                        sinks.append(KernelSink(deeper.kernel, deeper.args, (name, *deeper.via)))

        walker = FlowWalker(
            inner,
            on_statement,
            call_summary=lambda c, st: self.summarize(c, st, inner),
            track_containers=self.track_containers,
        )
        walker.run(fn.body.body, FlowState(tainted=tainted))
        return sinks
