"""A small forward data-flow over one function body: which local names derive from a source.

Both GR001 (values derived from ``forward_batch.batch_size``) and GR002 (facts derived
from ``model_runner.token_to_kv_pool``) ask the same question: "does this expression,
at this point of the method, carry the source?". The walk follows statements in order,
re-binds a name when it is assigned (``bs = forward_batch.batch_size`` taints ``bs``,
``bs = cu_seqlens_q.shape[0] - 1`` clears it), merges both arms of an ``if``, and runs
loop bodies twice so that a name tainted late in the body reaches its start.

Each tainted name also keeps its *origin chain* (:attr:`FlowState.origins`): the source
node, then each binding that carried the taint on (``bs = forward_batch.batch_size``,
``rows = bs * q_len``). Rules report it as evidence (:func:`taint_chain`); it never
changes what is tainted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import libcst as cst

from .cst_analysis import target_names


@dataclass(frozen=True)
class FlowState:
    """What is known before a statement: tainted local names, and a rule-defined flag."""

    tainted: frozenset[str] = frozenset()
    #: Set by a rule hook (GR001: a dominating re-plan guard has run).
    guarded: bool = False
    #: The path returned or raised: it does not flow into what follows a branch.
    dead: bool = False
    #: Tainted name -> the nodes that carried the taint to it, source first (evidence only).
    origins: Mapping[str, tuple[cst.CSTNode, ...]] = field(default_factory=dict, compare=False)

    def merge(self, other: "FlowState") -> "FlowState":
        if self.dead:
            return other
        if other.dead:
            return self
        return FlowState(
            self.tainted | other.tainted, self.guarded and other.guarded, origins={**other.origins, **self.origins}
        )

    def bind(self, names: Sequence[str], tainted: bool, origin: tuple[cst.CSTNode, ...] = ()) -> "FlowState":
        if not names:
            return self
        new = set(self.tainted)
        origins = dict(self.origins)
        if tainted:
            new.update(names)
            for name in names:
                origins[name] = origin[-MAX_CHAIN:]
        else:
            new.difference_update(names)
            for name in names:
                origins.pop(name, None)
        return replace(self, tainted=frozenset(new), origins=origins)


#: Longest origin chain kept (a loop re-binding a name would otherwise grow it).
MAX_CHAIN = 6


Verdict = Literal["source", "clean"] | None
#: Decides a node on its own: "source" (it carries the fact), "clean" (it does not,
#: whatever it contains: an immutable pool fact), or None (look inside).
Classifier = Callable[[cst.CSTNode, FlowState], Verdict]


class _TaintedParts(cst.CSTVisitor):
    """Collects source nodes and tainted names; see :func:`tainted_parts`."""

    def __init__(self, state: FlowState, classify: Classifier) -> None:
        super().__init__()
        self.state = state
        self.classify = classify
        self.hits: list[cst.CSTNode] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        verdict = self.classify(node, self.state)
        if verdict == "source":
            self.hits.append(node)
            return False
        if verdict == "clean":
            return False
        if isinstance(node, cst.Name):
            if node.value in self.state.tainted:
                self.hits.append(node)
            return False
        if isinstance(node, cst.Attribute):  # `x.attr`: the attr is no variable
            node.value.visit(self)
            return False
        if isinstance(node, cst.Arg):  # `f(batch_size=x)`: the keyword is no variable
            node.value.visit(self)
            return False
        return not isinstance(node, (cst.Lambda, cst.FunctionDef, cst.ClassDef, cst.SimpleString))


def tainted_parts(expr: cst.CSTNode, state: FlowState, classify: Classifier) -> list[cst.CSTNode]:
    """The source nodes and tainted names inside ``expr`` (empty: the expression is clean)."""
    walk = _TaintedParts(state, classify)
    expr.visit(walk)
    return walk.hits


def _chain_of(hits: Sequence[cst.CSTNode], state: FlowState) -> tuple[cst.CSTNode, ...]:
    if not hits:
        return ()
    hit = hits[0]
    if isinstance(hit, cst.Name) and hit.value in state.tainted:
        return tuple(state.origins.get(hit.value, ()))
    return (hit,)


def taint_chain(expr: cst.CSTNode, state: FlowState, classify: Classifier) -> tuple[cst.CSTNode, ...]:
    """Where the taint of ``expr`` comes from: the source node, then each binding that
    carried it to the name ``expr`` uses (empty when clean or unknown, e.g. a helper's
    parameter tainted by its caller)."""
    return _chain_of(tainted_parts(expr, state, classify), state)


#: Called for each simple statement and each compound statement's header expression,
#: with the state before it; may return a new state (None keeps it).
StatementHook = Callable[[cst.CSTNode, FlowState], "FlowState | None"]
#: Called after an ``if`` with the state before and after it; returns the state to keep.
AfterIfHook = Callable[[cst.If, FlowState, FlowState], FlowState]
#: Per-element taint of a call's result (``a, b = self.helper(x)``), or None if unknown.
CallSummary = Callable[[cst.Call, FlowState], "list[bool] | None"]


#: Methods that put their arguments into the container they are called on.
CONTAINER_MUTATORS = frozenset({"update", "append", "extend", "insert", "setdefault", "add"})


class FlowWalker:
    """Walks a statement list in order, keeping :class:`FlowState` up to date.

    With ``track_containers``, a local container takes the taint of what is stored into
    it: ``kwargs["k_descale"] = k_descale`` or ``kwargs.update(k_descale=k_descale)``
    taints ``kwargs`` (so ``kernel(**kwargs)`` carries it; SGLang's FA3 backend builds its
    kernel arguments so). It only adds taint: storing a clean value never clears it.
    """

    def __init__(
        self,
        classify: Classifier,
        on_statement: StatementHook,
        after_if: AfterIfHook | None = None,
        call_summary: CallSummary | None = None,
        *,
        track_containers: bool = False,
    ) -> None:
        self.classify = classify
        self.on_statement = on_statement
        self.after_if = after_if
        self.call_summary = call_summary
        self.track_containers = track_containers

    def _store(self, container: cst.BaseExpression, value: cst.CSTNode, state: FlowState, stmt: cst.CSTNode) -> FlowState:
        """``container[...] = value`` / ``container.update(value)``: a local name holding a
        tainted value is tainted from here on."""
        if not isinstance(container, cst.Name) or container.value in state.tainted:
            return state
        origin = self._origin(value, state, stmt)
        return state.bind([container.value], True, origin) if origin else state

    def _bind_target(
        self, target: cst.BaseExpression, value: cst.BaseExpression, state: FlowState, stmt: cst.CSTNode
    ) -> FlowState:
        """Bind one assignment target; unpack a tuple element-wise when the value allows."""
        if isinstance(target, (cst.Tuple, cst.List)):
            parts: list[bool] | None = None
            origins: list[tuple[cst.CSTNode, ...]] = []
            if isinstance(value, (cst.Tuple, cst.List)) and len(value.elements) == len(target.elements):
                origins = [self._origin(el.value, state, stmt) for el in value.elements]
                parts = [bool(o) for o in origins]
            elif isinstance(value, cst.Call) and self.call_summary is not None:
                parts = self.call_summary(value, state)
                origins = [(value, stmt)] * len(parts or ())
            if parts is not None and len(parts) == len(target.elements):
                for el, tainted, origin in zip(target.elements, parts, origins):
                    state = state.bind(target_names(el.value), tainted, origin)
                return state
        origin = self._origin(value, state, stmt)
        return state.bind(target_names(target), bool(origin), origin)

    def _origin(self, value: cst.CSTNode, state: FlowState, stmt: cst.CSTNode) -> tuple[cst.CSTNode, ...]:
        """The origin chain a name bound to ``value`` by ``stmt`` gets; empty when clean."""
        hits = tainted_parts(value, state, self.classify)
        if not hits:
            return ()
        return (*_chain_of(hits, state), stmt)

    def is_tainted(self, expr: cst.CSTNode, state: FlowState) -> bool:
        return bool(tainted_parts(expr, state, self.classify))

    def _visit(self, node: cst.CSTNode, state: FlowState) -> FlowState:
        new = self.on_statement(node, state)
        return state if new is None else new

    def run(self, body: Sequence[cst.CSTNode], state: FlowState) -> FlowState:
        for stmt in body:
            state = self._statement(stmt, state)
        return state

    def _block(self, block: cst.BaseSuite, state: FlowState) -> FlowState:
        if isinstance(block, cst.IndentedBlock):
            return self.run(block.body, state)
        if isinstance(block, cst.SimpleStatementSuite):
            return self.run(block.body, state)
        return state

    def _loop(self, stmt: cst.For | cst.While, before: FlowState, entry: FlowState) -> FlowState:
        """Run the body twice (a name tainted late reaches the top), then the ``else``."""
        once = self._block(stmt.body, entry)
        twice = self._block(stmt.body, entry.merge(once))
        state = before.merge(twice)
        if stmt.orelse is not None:
            state = self._block(stmt.orelse.body, state)
        return state

    def _statement(self, stmt: cst.CSTNode, state: FlowState) -> FlowState:
        if isinstance(stmt, cst.SimpleStatementLine):
            return self.run(stmt.body, state)
        if isinstance(stmt, cst.Assign):
            state = self._visit(stmt, state)
            for t in stmt.targets:
                state = self._bind_target(t.target, stmt.value, state, stmt)
                if self.track_containers and isinstance(t.target, cst.Subscript):
                    state = self._store(t.target.value, stmt.value, state, stmt)
            return state
        if (
            self.track_containers
            and isinstance(stmt, cst.Expr)
            and isinstance(stmt.value, cst.Call)
            and isinstance(stmt.value.func, cst.Attribute)
            and stmt.value.func.attr.value in CONTAINER_MUTATORS
        ):
            state = self._visit(stmt, state)
            call = stmt.value
            for arg in call.args:
                state = self._store(call.func.value, arg.value, state, stmt)  # type: ignore[union-attr]
            return state
        if isinstance(stmt, cst.AnnAssign):
            state = self._visit(stmt, state)
            if stmt.value is not None:
                origin = self._origin(stmt.value, state, stmt)
                state = state.bind(target_names(stmt.target), bool(origin), origin)
            return state
        if isinstance(stmt, cst.AugAssign):
            state = self._visit(stmt, state)
            origin = self._origin(stmt.value, state, stmt)
            if origin:
                state = state.bind(target_names(stmt.target), True, origin)
            return state
        if isinstance(stmt, cst.If):
            before = state
            state = self._visit(stmt.test, state)
            then = self._block(stmt.body, state)
            if stmt.orelse is None:
                other = state
            elif isinstance(stmt.orelse, cst.If):
                other = self._statement(stmt.orelse, state)
            else:
                other = self._block(stmt.orelse.body, state)
            after = then.merge(other)
            if self.after_if is not None:
                after = self.after_if(stmt, before, after)
            return after
        if isinstance(stmt, cst.For):
            state = self._visit(stmt.iter, state)
            origin = self._origin(stmt.iter, state, stmt.iter)
            entry = state.bind(target_names(stmt.target), bool(origin), origin)
            return self._loop(stmt, state, entry)
        if isinstance(stmt, cst.While):
            state = self._visit(stmt.test, state)
            return self._loop(stmt, state, state)
        if isinstance(stmt, cst.With):
            for item in stmt.items:
                state = self._visit(item.item, state)
                if item.asname is not None:
                    origin = self._origin(item.item, state, item)
                    state = state.bind(target_names(item.asname.name), bool(origin), origin)
            return self._block(stmt.body, state)
        if isinstance(stmt, cst.Try):
            body = self._block(stmt.body, state)
            out = body
            for handler in stmt.handlers:
                out = out.merge(self._block(handler.body, state.merge(body)))
            if stmt.orelse is not None:
                out = out.merge(self._block(stmt.orelse.body, body))
            if stmt.finalbody is not None:
                out = self._block(stmt.finalbody.body, out)
            return out
        if isinstance(stmt, cst.Match):
            state = self._visit(stmt.subject, state)
            out = state
            for case in stmt.cases:
                out = out.merge(self._block(case.body, state))
            return out
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            return state  # nested scopes are analysed on their own, if at all
        state = self._visit(stmt, state)
        if isinstance(stmt, (cst.Return, cst.Raise)):
            return replace(state, dead=True)
        # Expr, Assert, Del, ...: inspected, nothing to bind.
        return state
