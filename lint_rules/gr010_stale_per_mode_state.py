"""GR010 stale-per-mode-state (SGLang #32288)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .cst_analysis import iter_nodes
from .forward_mode_predicates import GRAPH_MODES, MODES, may_be_false, may_be_true, mode_value
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid

#: Modes every backend plans; the speculative ones only where the class names them.
_ALWAYS = frozenset({"EXTEND", "MIXED", "DECODE", "IDLE"})
#: How deep ``self`` helpers of a planner are followed.
_HELPER_DEPTH = 3
#: Outcomes of a path through a planner: the attribute was set (or the path raised),
#: the path returned without setting it, it went on without setting it.
_SET, _EXIT, _FALL = "set", "exit", "fall"
#: ``.is_<word>(`` / keyword texts that show a class plans a speculative mode.
_SPECULATIVE_TEXT = re.compile(r"\.is_(target_verify|draft_extend_v2|draft_extend)\(|(include_v2=True|include_draft_extend_v2=True)")
_SPECULATIVE_WORDS = {
    ("target_verify", ""): frozenset({"TARGET_VERIFY"}),
    ("draft_extend_v2", ""): frozenset({"DRAFT_EXTEND_V2"}),
    ("draft_extend", ""): frozenset({"DRAFT_EXTEND"}),
    ("", "include_v2=True"): frozenset({"DRAFT_EXTEND_V2"}),
    ("", "include_draft_extend_v2=True"): frozenset({"DRAFT_EXTEND_V2"}),
}
#: ``self.helper(`` in a method's text.
_SELF_CALL = re.compile(r"\bself\.(\w+)\(")
#: A line assigning to ``self.a``, ``self.a.f`` or a tuple of them: its targets (group 1).
_SELF_ASSIGN = re.compile(
    r"\s*((?:self\.\w+(?:\.\w+)?\s*,\s*)*self\.\w+(?:\.\w+)?)\s*,?\s*(?::[^=]*)?=(?!=)"
)
_SELF_TARGET = re.compile(r"self\.(\w+)(?:\.(\w+))?")
#: ``name = ...`` at the start of a line: a local a test may name.
_NAME_ASSIGN = re.compile(r"^\s*(\w+)\s*=(?!=)", re.MULTILINE)
#: A conditional expression's ``else`` (not an ``else:`` block).
_IFEXP_TEXT = re.compile(r"\belse\b(?!\s*:)")
#: Parameters of a planner with the value they have on the paths a forward runs after:
#: ``init_forward_metadata_out_graph(..., in_capture=True)`` before a CUDA-graph capture.
_CAPTURE_BINDINGS = {"in_capture": "True"}


@dataclass(frozen=True)
class _Read:
    """``self.<attr>[.<field>]`` read in a test of forward method ``fn``, for ``modes``."""

    attr: str
    field: str | None
    node: cst.Attribute
    modes: frozenset[str]


def _self_chain(node: cst.BaseExpression) -> tuple[str, str | None] | None:
    """``self.a`` -> (``a``, None); ``self.a.b[...]`` -> (``a``, ``b``); else None."""
    if not isinstance(node, cst.Attribute):
        return None
    if isinstance(node.value, cst.Name) and node.value.value == "self":
        return node.attr.value, None
    inner = node.value
    if isinstance(inner, cst.Attribute) and isinstance(inner.value, cst.Name) and inner.value.value == "self":
        return inner.attr.value, node.attr.value
    return None


def _local_flags(fn: cst.FunctionDef) -> dict[str, cst.BaseExpression]:
    """Local names bound exactly once in ``fn`` to a value (``use_decode = mode.is_decode()``)."""
    seen: dict[str, int] = {}
    values: dict[str, cst.BaseExpression] = {}
    for assign in iter_nodes(fn.body, cst.Assign):
        for target in assign.targets:
            if isinstance(target.target, cst.Name):
                name = target.target.value
                seen[name] = seen.get(name, 0) + 1
                values[name] = assign.value
    return {n: v for n, v in values.items() if seen[n] == 1}


class _LazyFlags(dict):
    """:func:`_local_flags` of ``fn`` (plus fixed ``bindings``), computed on first use:
    most tests never name a local flag, and collecting them walks the whole method."""

    def __init__(
        self, fn: cst.FunctionDef, bindings: dict[str, cst.BaseExpression] | None = None, text: str | None = None
    ) -> None:
        super().__init__()
        self._fn = fn
        self._bindings = bindings or {}
        self._loaded = False
        #: names some line of the method's text binds (``name = ...``): only those can be flags
        self._candidates = None if text is None else set(_NAME_ASSIGN.findall(text)) | set(self._bindings)

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            found = _local_flags(self._fn)
            for name, value in self._bindings.items():
                found.setdefault(name, value)
            dict.update(self, found)

    def __contains__(self, key) -> bool:
        if self._candidates is not None and key not in self._candidates:
            return False
        self._load()
        return dict.__contains__(self, key)

    def pop(self, key, *default):
        self._load()
        return dict.pop(self, key, *default)


class _Planner:
    """Whether a planner sets ``self.<attr>`` on every path a batch of one mode takes."""

    def __init__(self, methods: dict[str, cst.FunctionDef], texts: dict[str, str] | None = None) -> None:
        self.methods = methods
        self.texts = texts or {}
        self._memo: dict[tuple[str, str, str | None, str], frozenset[str]] = {}
        self._flags: dict[str, dict[str, cst.BaseExpression]] = {}
        #: id(expression) -> its attribute calls (the tree is walked once per statement)
        self._call_cache: dict[int, list[cst.Call]] = {}

    def outcomes(self, name: str, attr: str, field: str | None, mode: str, depth: int = 0) -> frozenset[str]:
        key = (name, attr, field, mode)
        if key not in self._memo:
            self._memo[key] = frozenset({_FALL})  # a recursive helper sets nothing
            fn = self.methods[name]
            if name not in self._flags:
                params = {p.name.value for p in fn.params.params}
                bindings = {b: cst.Name(v) for b, v in _CAPTURE_BINDINGS.items() if b in params}
                self._flags[name] = _LazyFlags(fn, bindings, self.texts.get(name))
            self._memo[key] = self._block(fn.body.body, attr, field, mode, self._flags[name], depth)
        return self._memo[key]

    def _block(self, stmts, attr, field, mode, flags, depth) -> frozenset[str]:
        outs = {_FALL}
        for stmt in stmts:
            if _FALL not in outs:
                break
            outs = (outs - {_FALL}) | self._stmt(stmt, attr, field, mode, flags, depth)
        return frozenset(outs)

    def _stmt(self, stmt, attr, field, mode, flags, depth) -> frozenset[str]:
        if isinstance(stmt, cst.SimpleStatementLine):
            return self._block(stmt.body, attr, field, mode, flags, depth)
        if isinstance(stmt, cst.If):
            value = mode_value(stmt.test, mode, flags)
            outs: set[str] = set()
            if value is not False:
                outs |= self._block(stmt.body.body, attr, field, mode, flags, depth)
            if value is not True:
                orelse = stmt.orelse
                if orelse is None:
                    outs.add(_FALL)
                elif isinstance(orelse, cst.If):
                    outs |= self._stmt(orelse, attr, field, mode, flags, depth)
                else:
                    outs |= self._block(orelse.body.body, attr, field, mode, flags, depth)
            return frozenset(outs)
        if isinstance(stmt, (cst.With, cst.Try)):
            return self._block(stmt.body.body, attr, field, mode, flags, depth)
        if isinstance(stmt, (cst.For, cst.While)):
            return self._block(stmt.body.body, attr, field, mode, flags, depth) | {_FALL}
        if isinstance(stmt, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
            targets = [t.target for t in stmt.targets] if isinstance(stmt, cst.Assign) else [stmt.target]
            if any(self._sets(t, attr, field) for t in targets):
                return frozenset({_SET})
            return self._calls(stmt.value, attr, field, mode, depth) if stmt.value is not None else frozenset({_FALL})
        if isinstance(stmt, cst.Raise):
            return frozenset({_SET})  # no forward follows a raise: nothing stale is read
        if isinstance(stmt, cst.Return):
            if stmt.value is not None and self._calls(stmt.value, attr, field, mode, depth) == {_SET}:
                return frozenset({_SET})
            return frozenset({_EXIT})
        if isinstance(stmt, cst.Expr):
            return self._calls(stmt.value, attr, field, mode, depth)
        return frozenset({_FALL})

    def _sets(self, target: cst.BaseExpression, attr: str, field: str | None) -> bool:
        if isinstance(target, (cst.Tuple, cst.List)):
            return any(self._sets(e.value, attr, field) for e in target.elements)
        chain = _self_chain(target)
        return chain is not None and chain[0] == attr and (chain[1] is None or chain[1] == field)

    def _calls(self, expr: cst.BaseExpression, attr, field, mode, depth) -> frozenset[str]:
        """{set} when a call in ``expr`` sets the attribute on all its paths: a ``super()``
        planner (trusted: the base class plans its own state) or a ``self`` helper."""
        calls = self._call_cache.get(id(expr))
        if calls is None:
            calls = self._call_cache[id(expr)] = [c for c in iter_nodes(expr, cst.Call) if isinstance(c.func, cst.Attribute)]
        for call in calls:
            func = call.func
            receiver = func.value
            if isinstance(receiver, cst.Call) and isinstance(receiver.func, cst.Name) and receiver.func.value == "super":
                return frozenset({_SET})
            is_self = isinstance(receiver, cst.Name) and receiver.value == "self"
            if func.attr.value.startswith("init_forward_metadata") and not is_self:
                return frozenset({_SET})  # planning handed to another backend (a DLLM / wrapped one)
            if (
                isinstance(receiver, cst.Name)
                and receiver.value == "self"
                and func.attr.value in self.methods
                and depth < _HELPER_DEPTH
                and self.outcomes(func.attr.value, attr, field, mode, depth + 1) == {_SET}
            ):
                return frozenset({_SET})
        return frozenset({_FALL})


class StalePerModeState(LintRule):
    """Per-mode metadata chooses a forward path in a mode whose planning path never set it.

    ## What it does
    In an attention backend, finds a `self.<attr>` (or `self.<attr>.<field>`) that a
    metadata planner sets only in some forward modes (a prefill plan, a fallback flag
    such as `fallback_to_flashinfer_impl` or `use_ragged`, a wrapper picked per mode)
    and that a forward method (`forward_extend`, `forward_decode`, `forward`) tests to
    choose its path, for a mode in which some planning path of the class leaves the
    attribute as an earlier batch set it.

    The planning paths are the eager `init_forward_metadata` (every mode), the pair
    `init_forward_metadata_out_graph` + `init_forward_metadata_in_graph` (every mode),
    run with `in_capture=True` before a CUDA-graph capture, and
    `init_forward_metadata_capture_cuda_graph` (the graph modes DECODE, IDLE,
    TARGET_VERIFY, DRAFT_EXTEND, DRAFT_EXTEND_V2). Replay planners are no path: a
    replay runs no Python forward code, so no state is tested after them. Only paths
    the class defines count.
    A path sets the attribute for a mode when every branch the mode can take assigns it
    (`None` counts), calls a `self` helper that does, delegates to `super()`, or raises.
    `forward_extend` is reached by every mode but DECODE and IDLE, `forward_decode` by
    DECODE; tests of the forward method (`if forward_mode.is_target_verify(): return
    ...`, `is_extend() and not is_target_verify() and ...`) narrow the modes of the read.
    TARGET_VERIFY and the draft-extend modes count only where the class names them.

    ## Why is this bad?
    The backend instance outlives the batch. State one mode planned stays on `self`
    until a planner overwrites it, so a forward of another mode that tests it takes the
    path of the last batch of the first mode: SGLang's `TRTLLMMLABackend.forward_extend`
    followed `forward_prefill_metadata.fallback_to_flashinfer_impl`, left by the last
    (piecewise-CUDA-graph) prefill, into the FlashInfer MLA kernel for a TARGET_VERIFY
    batch planned by the CUDA-graph path, which never cleared it: an illegal memory
    access recorded into the verify graph (SGLang #32288, #31198).

    ## Known problems
    Only attributes read in an `if` / `while` / conditional-expression test are checked
    (the state picks a path); a read feeding a kernel argument is not. Modes come from
    `forward_mode.is_*()` predicates, `ForwardMode.X` comparisons and local flags bound
    once to them; any other condition may be true or false. `self` helpers are followed
    three levels deep; a `super()` call is trusted to set the state. vLLM's builders
    plan per batch (`build` returns a fresh metadata object) and are not checked.

    ## Example
    ```python
    def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_extend_without_speculative():
            self.forward_prefill_metadata = PrefillMetadata(fallback_to_flashinfer_impl=...)
        else:
            self.forward_prefill_metadata = None

    def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, ...):
        self._init_cuda_graph_metadata(bs, num_tokens, forward_mode)  # TARGET_VERIFY too

    def forward_extend(self, q, k, v, layer, forward_batch):
        if self.forward_prefill_metadata is not None and self.forward_prefill_metadata.fallback_to_flashinfer_impl:
            return super().forward_extend(q, k, v, layer, forward_batch)
    ```

    ## Use instead
    Test the mode next to the state (SGLang #32288), or reset the state on every
    planning path:
    ```python
    def forward_extend(self, q, k, v, layer, forward_batch):
        if (
            forward_batch.forward_mode.is_extend()
            and not forward_batch.forward_mode.is_target_verify()
            and not forward_batch.forward_mode.is_draft_extend_v2()
            and self.forward_prefill_metadata is not None
            and self.forward_prefill_metadata.fallback_to_flashinfer_impl
        ):
            return super().forward_extend(q, k, v, layer, forward_batch)
    ```

    ## Options
    - `extra-mode-planners`: more planning paths that run for every mode (`a+b`: one
      path made of two methods).
    - `extra-graph-mode-planners`: more planning paths that run for the CUDA-graph modes.
    - `extra-forward-methods`: more forward-time methods to look in.

    ## References
    - [SGLang #32288](https://github.com/sgl-project/sglang/pull/32288): the fallback flag
      of the last prefill is consulted only for plain extend batches (in 0.5.16).
    - [SGLang #31198](https://github.com/sgl-project/sglang/pull/31198): the diagnosis, a
      stale prefill fallback recorded into the spec-verify graphs.
    """

    CODE = "GR010"
    NAME = "stale-per-mode-state"
    MESSAGE = "per-mode metadata tested in a mode whose planning path does not set it (SGLang #32288):"
    WORDS = ("init_forward_metadata",)

    VALID = [
        Valid(  # SGLang 0.5.16 TRTLLMMLABackend.forward_extend (#32288): the read is mode-guarded
            """
            class TRTLLMMLABackend(FlashInferMLAAttnBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_extend_without_speculative():
                        self.forward_prefill_metadata = TRTLLMMLAPrefillMetadata(fallback_to_flashinfer_impl=True)
                    else:
                        self.forward_prefill_metadata = None

                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    if not forward_batch.forward_mode.is_target_verify():
                        return super().init_forward_metadata_out_graph(forward_batch, in_capture)
                    self._apply_cuda_graph_metadata(forward_batch.batch_size, forward_batch.forward_mode)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if (
                        forward_batch.forward_mode.is_extend()
                        and not forward_batch.forward_mode.is_target_verify()
                        and not forward_batch.forward_mode.is_draft_extend_v2()
                        and self.forward_prefill_metadata is not None
                        and self.forward_prefill_metadata.fallback_to_flashinfer_impl
                    ):
                        return super().forward_extend(q, k, v, layer, forward_batch)
                    return self._run_verify(q)
            """
        ),
        Valid(  # every planning path sets the flag: FlashInfer's forward_metadata.use_ragged
            """
            class FlashInferAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_decode_or_idle():
                        self.forward_metadata = DecodeMetadata(self.decode_wrappers)
                    elif forward_batch.forward_mode.is_draft_extend():
                        self.forward_metadata = PrefillMetadata(self.prefill_wrappers_paged, False, False)
                    else:
                        self.forward_metadata = PrefillMetadata(self.prefill_wrappers_paged, True, False)

                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    if forward_mode.is_decode_or_idle():
                        self.forward_metadata = DecodeMetadata(self.decode_wrappers)
                    elif forward_mode.is_target_verify():
                        self.forward_metadata = PrefillMetadata(self.prefill_wrappers_verify, False, False)
                    else:
                        raise ValueError(f"Invalid mode: {forward_mode=}")

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if not self.forward_metadata.use_ragged:
                        return self._paged(q)
                    return self._ragged(q)
            """
        ),
        Valid(  # the forward method returns for the speculative modes before the read
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_extend_without_speculative():
                        self.use_fallback = True

                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    self._capture(bs)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        return self._verify(q)
                    if self.use_fallback:
                        return self._fallback(q)
                    return self._main(q)
            """
        ),
    ]
    INVALID = [
        Invalid(  # SGLang 0.5.15 TRTLLMMLABackend (#32288): the out-graph path leaves the flag
            """
            class TRTLLMMLABackend(FlashInferMLAAttnBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_extend_without_speculative():
                        self.forward_prefill_metadata = TRTLLMMLAPrefillMetadata(fallback_to_flashinfer_impl=True)
                    elif forward_batch.forward_mode.is_target_verify():
                        self.forward_prefill_metadata = None

                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    if not forward_batch.forward_mode.is_target_verify():
                        return super().init_forward_metadata_out_graph(forward_batch, in_capture)
                    self._apply_cuda_graph_metadata(forward_batch.batch_size, forward_batch.forward_mode)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if (
                        self.forward_prefill_metadata is not None
                        and self.forward_prefill_metadata.fallback_to_flashinfer_impl
                    ):
                        return super().forward_extend(q, k, v, layer, forward_batch)
                    return self._run_verify(q)
            """,
            line=15,
        ),
        Invalid(  # a kernel path chosen by eager planning; the capture records the last one
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_decode():
                        self.use_split_kv = forward_batch.batch_size < 8
                    else:
                        self.use_split_kv = False

                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    self.decode_metadata = DecodeMetadata(self.cuda_graph_seq_lens[:bs])

                def forward_decode(self, q, k, v, layer, forward_batch):
                    return self._split(q) if self.use_split_kv else self._single(q)
            """,
            line=12,
        ),
    ]

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            methods: dict[str, cst.FunctionDef] = {}
            for fn in iter_methods(cls):
                methods[fn.name.value] = fn
            findings.extend(self._check_class(ctx, cls, methods))
        return findings

    # -- the class ---------------------------------------------------------------

    def _paths(self, methods: dict[str, cst.FunctionDef]) -> list[tuple[tuple[str, ...], frozenset[str]]]:
        """Planning paths the class defines (at least one method of it): (methods, modes)."""
        paths = []
        for spec, modes in [(s, frozenset(MODES)) for s in self.config.mode_planners] + [
            (s, GRAPH_MODES) for s in self.config.graph_mode_planners
        ]:
            names = tuple(n.strip() for n in spec.split("+") if n.strip())
            defined = tuple(n for n in names if n in methods)
            if defined:
                paths.append((defined, modes))
        return paths

    def _known_modes(self, texts: dict[str, str]) -> frozenset[str]:
        """The always-planned modes, and the speculative modes the class names
        (``is_target_verify()``, ``is_draft_extend*()``, ``include_*v2=True``): a text scan."""
        known = set(_ALWAYS)
        for text in texts.values():
            for word in _SPECULATIVE_TEXT.findall(text):
                known |= _SPECULATIVE_WORDS[word]
        return frozenset(known)

    def _planned_attrs(
        self, texts: dict[str, str], paths
    ) -> tuple[dict[tuple[str, str | None], str], set[str]]:
        """``self`` attributes the per-batch planners (the planning paths and the ``self``
        helpers they call) assign: (attr, field or None) -> the method of the first
        assignment, ``self.a.f = ...`` planning only reads of ``self.a.f``; and those a
        forward method assigns (lazily managed state, not planned). One-time setup
        (``__init__``, ``init_cuda_graph_state``) allocates buffers, not per-mode state.
        Read from the methods' text (one regex per line), not their trees."""
        reached: list[str] = []
        frontier = [n for names, _ in paths for n in names]
        for _ in range(_HELPER_DEPTH + 1):
            nxt: list[str] = []
            for name in frontier:
                if name in reached:
                    continue
                reached.append(name)
                nxt.extend(
                    callee
                    for callee in _SELF_CALL.findall(texts[name])
                    if callee in texts and not self.config.is_forward_method(callee)
                )
            frontier = nxt
        planned: dict[tuple[str, str | None], str] = {}
        in_forward: set[str] = set()
        for name, text in texts.items():
            forward = self.config.is_forward_method(name)
            if not forward and name not in reached:
                continue
            for line in text.splitlines()[1:]:
                lhs = _SELF_ASSIGN.match(line)
                if lhs is None:
                    continue
                for attr, field in _SELF_TARGET.findall(lhs.group(1)):
                    if forward:
                        in_forward.add(attr)
                    else:
                        planned.setdefault((attr, field or None), name)
        return planned, in_forward

    def _setter_node(self, fn: cst.FunctionDef, read: _Read) -> cst.CSTNode:
        """The first assignment in ``fn`` of ``read``'s attribute (evidence), else ``fn``'s name."""
        for assign in iter_nodes(fn.body, (cst.Assign, cst.AnnAssign)):
            targets = [t.target for t in assign.targets] if isinstance(assign, cst.Assign) else [assign.target]
            flat: list[cst.BaseExpression] = []
            for t in targets:
                flat.extend(e.value for e in t.elements) if isinstance(t, (cst.Tuple, cst.List)) else flat.append(t)
            for t in flat:
                chain = _self_chain(t)
                if chain is not None and chain[0] == read.attr and chain[1] in (None, read.field):
                    return assign
        return fn.name

    def _check_class(self, ctx: ModuleContext, cls: cst.ClassDef, methods: dict[str, cst.FunctionDef]) -> list[Finding]:
        paths = self._paths(methods)
        if not paths:
            return []
        texts = {name: ctx.method_text(fn) for name, fn in methods.items()}
        planned, in_forward = self._planned_attrs(texts, paths)
        if not planned:
            return []
        attrs = {attr for attr, _ in planned} - in_forward
        known = self._known_modes(texts)
        planner = _Planner(methods, texts)
        findings: list[Finding] = []
        for name, fn in methods.items():
            if not self.config.is_forward_method(name):
                continue
            if not any(f"self.{attr}" in texts[name] for attr in attrs):
                continue  # reads no planned state: no tree walk
            reach = _reached_by(name) & known
            reads: list[_Read] = []
            ifexps = _ifexps_by_statement(fn) if _IFEXP_TEXT.search(texts[name]) else {}
            _block_reads(fn.body.body, reach, _LazyFlags(fn, text=texts[name]), reads, ifexps)
            reported: set[str] = set()
            for read in reads:
                setter = planned.get((read.attr, None)) or (planned.get((read.attr, read.field)) if read.field else None)
                if setter is None or read.attr in in_forward or read.attr in reported:
                    continue
                stale = self._stale(planner, paths, read)
                if stale is None:
                    continue
                mode, path = stale
                reported.add(read.attr)
                setter_fn = methods[setter]
                findings.append(self._report(ctx, fn, read, mode, path, (self._setter_node(setter_fn, read), setter_fn), methods))
        return findings

    def _stale(self, planner: _Planner, paths, read: _Read) -> tuple[str, tuple[str, ...]] | None:
        """The first (mode, planning path) that leaves ``read``'s attribute unset."""
        for names, path_modes in paths:
            for mode in MODES:
                if mode not in read.modes or mode not in path_modes:
                    continue
                if not any(planner.outcomes(n, read.attr, read.field, mode) == {_SET} for n in names):
                    return mode, names
        return None

    def _report(self, ctx, fn, read: _Read, mode, path, setter, methods) -> Finding:
        target = f"self.{read.attr}" + (f".{read.field}" if read.field else "")
        set_node, set_fn = setter
        path_text = " + ".join(f"`{n}`" for n in path)
        evidence = [
            ctx.evidence("set per mode", set_node, set_fn),
            ctx.evidence("planning path", methods[path[0]].name, methods[path[0]], f"def {path[0]}(...)"),
            ctx.evidence("read", read.node, fn),
        ]
        return self.finding(
            ctx,
            read.node,
            fn,
            f"`{target}` chooses the path of `{fn.name.value}` for {mode}, but {path_text} does not "
            f"set it for {mode}: it keeps what an earlier batch planned; test the mode next to it or "
            "reset it on every planning path.",
            evidence=evidence,
        )


def _reached_by(method: str) -> frozenset[str]:
    """Modes SGLang's ``AttentionBackend.forward`` sends to a forward method."""
    if "decode" in method:
        return frozenset({"DECODE"})
    if "extend" in method or "prefill" in method:
        return frozenset(MODES) - {"DECODE", "IDLE"}
    return frozenset(MODES)


def _test_reads(expr: cst.BaseExpression, modes: frozenset[str], flags, out: list[_Read]) -> None:
    """``self.<attr>`` reads in a test; ``a and b`` reads ``b`` only where ``a`` may hold."""
    if not modes:
        return
    if isinstance(expr, cst.BooleanOperation):
        _test_reads(expr.left, modes, flags, out)
        narrowed = may_be_true(expr.left, modes, flags) if isinstance(expr.operator, cst.And) else may_be_false(
            expr.left, modes, flags
        )
        _test_reads(expr.right, narrowed, flags, out)
        return
    if isinstance(expr, cst.UnaryOperation):
        _test_reads(expr.expression, modes, flags, out)
        return
    called = {id(c.func) for c in iter_nodes(expr, cst.Call)}
    for comparison in iter_nodes(expr, cst.Comparison):  # `metadata is self.graph_metadata`: which object, not state
        operands = [comparison.left, *(c.comparator for c in comparison.comparisons)]
        if all(isinstance(c.operator, (cst.Is, cst.IsNot)) for c in comparison.comparisons) and not any(
            isinstance(o, cst.Name) and o.value == "None" for o in operands
        ):
            called.update(id(o) for o in operands)
    for node in iter_nodes(expr, cst.Attribute):
        chain = _self_chain(node)
        if chain is None or id(node) in called:
            continue
        if isinstance(node.value, cst.Attribute) and id(node.value) in called:
            continue
        out.append(_Read(chain[0], chain[1], node, modes))


def _ifexps_by_statement(fn: cst.FunctionDef) -> dict[int, list[cst.IfExp]]:
    """id(simple statement line) -> the conditional expressions inside it, in one walk of ``fn``."""
    found: dict[int, list[cst.IfExp]] = {}
    line: list[cst.SimpleStatementLine] = []

    class _Walk(cst.CSTVisitor):
        def visit_SimpleStatementLine(self, node: cst.SimpleStatementLine) -> None:
            line.append(node)

        def leave_SimpleStatementLine(self, original_node: cst.SimpleStatementLine) -> None:
            line.pop()

        def visit_IfExp(self, node: cst.IfExp) -> None:
            if line:
                found.setdefault(id(line[-1]), []).append(node)

        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return node is fn

        def visit_Lambda(self, node: cst.Lambda) -> bool:
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

    fn.visit(_Walk())
    return found


def _block_reads(stmts, modes: frozenset[str], flags, out: list[_Read], ifexps: dict[int, list[cst.IfExp]]) -> frozenset[str]:
    """Reads in tests of a block, tracking the modes that reach each statement; returns
    the modes that leave the block by falling through."""
    for stmt in stmts:
        if not modes:
            break
        if isinstance(stmt, cst.If):
            modes = _if_reads(stmt, modes, flags, out, ifexps)
        elif isinstance(stmt, cst.While):
            _test_reads(stmt.test, modes, flags, out)
            _block_reads(stmt.body.body, may_be_true(stmt.test, modes, flags), flags, out, ifexps)
        elif isinstance(stmt, (cst.For, cst.With, cst.Try)):
            _block_reads(stmt.body.body, modes, flags, out, ifexps)
        elif isinstance(stmt, cst.SimpleStatementLine):
            for ifexp in ifexps.get(id(stmt), ()):
                _test_reads(ifexp.test, modes, flags, out)
            if any(isinstance(s, (cst.Return, cst.Raise)) for s in stmt.body):
                return frozenset()
    return modes


def _if_reads(stmt: cst.If, modes: frozenset[str], flags, out: list[_Read], ifexps) -> frozenset[str]:
    _test_reads(stmt.test, modes, flags, out)
    body_modes = may_be_true(stmt.test, modes, flags)
    else_modes = may_be_false(stmt.test, modes, flags)
    after = set(_block_reads(stmt.body.body, body_modes, flags, out, ifexps))
    orelse = stmt.orelse
    if orelse is None:
        after |= else_modes
    elif isinstance(orelse, cst.If):
        after |= _if_reads(orelse, else_modes, flags, out, ifexps)
    else:
        after |= _block_reads(orelse.body.body, else_modes, flags, out, ifexps)
    return frozenset(after)
