"""GR004 cuda-graph-replay-layout (SGLang #21987)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .config import matches
from .cst_analysis import callee_name, iter_calls, param_names, self_attribute, self_method, target_names
from .draft_extend_routing import routes_draft_extend
from .forward_mode_predicates import mode_predicates
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid

CAPTURE, REPLAY = "capture", "replay"

#: SGLang's TRTLLMMLABackend (0.5.9 / 0.5.10): draft extend captured with a uniform
#: stride and routed to the MLA decode kernel; ``{replay}`` is the replay-time draft-extend body.
_TRTLLM_MLA = """
class TRTLLMMLABackend(FlashInferMLAAttnBackend):
    def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
        metadata = TRTLLMMLADecodeMetadata()
        if forward_mode.is_draft_extend(include_v2=True):
            num_tokens_per_bs = num_tokens // bs
            metadata.max_seq_len_q = num_tokens_per_bs
            metadata.cu_seqlens_q = torch.arange(0, bs * num_tokens_per_bs + 1, num_tokens_per_bs)
        self.decode_cuda_graph_metadata[bs] = metadata

    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
        metadata = self.decode_cuda_graph_metadata[bs]
        if forward_mode.is_draft_extend(include_v2=True):
{replay}

    def forward_extend(self, q, k, v, layer, forward_batch):
        if forward_batch.forward_mode.is_draft_extend(include_v2=True):
            return flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla(query=q)
        return trtllm_ragged_attention_deepseek(query=q)
"""


def _trtllm_mla_replaying(body: str) -> str:
    """:data:`_TRTLLM_MLA` with ``body`` (any indentation) as its replay-time draft-extend body."""
    return _TRTLLM_MLA.replace("{replay}", textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 12))


@dataclass(frozen=True)
class _Write:
    """One write of a metadata field on a CUDA-graph path."""

    paths: frozenset[str]
    modes: frozenset[str]
    field: str
    #: "uniform" (arange with a stride, full, fill_), "cumsum" (data-dependent), or None.
    layout: str | None
    #: A rebinding ``m.F = ...`` (not an in-place ``copy_`` / ``fill_``).
    rebinds: bool
    per_step: bool
    node: cst.CSTNode
    fn: cst.FunctionDef


class CudaGraphReplayLayout(LintRule):
    """CUDA-graph replay writes metadata the captured graph does not read that way.

    ## What it does
    Compares what an attention backend's CUDA-graph metadata code writes on the capture
    path with what it writes on the replay path, per forward mode. Both SGLang APIs:
    the legacy pair `init_forward_metadata_capture_cuda_graph` /
    `init_forward_metadata_replay_cuda_graph`, and
    `init_forward_metadata_out_graph(forward_batch, in_capture)` whose
    `if in_capture:` / `else:` arms are the two paths (`self` helpers such as
    `_apply_*` are followed two levels; code outside the arms runs on both). It
    reports, on the replay side:

    - a metadata tensor filled with a different layout than at capture: a uniform
      stride (`torch.arange(0, n, step)`, `torch.full`, `fill_`) on one path, a
      data-dependent `torch.cumsum` on the other;
    - a scalar the graph bakes in at capture (`max_seq_len_q`, `sum_seq_lens_q`, ...)
      rebound at replay from per-step data (`spec_info`, accept lengths,
      `seq_lens_cpu`, `.item()`);
    - a metadata field rebound at replay that the capture path never sets: the
      captured kernels never read it.

    Draft-extend writes are judged only in a class that routes draft extend to a
    fixed-`q_len` decode kernel (GR003's analysis): a varlen kernel reads `cu_seqlens_q`
    from device memory and takes the baked `max_seq_len_q` as an upper bound.

    ## Why is this bad?
    A replayed graph re-runs the captured kernels with the captured pointers and Python
    scalars. If capture laid `cu_seqlens_q` out with a uniform stride and baked
    `max_seq_len_q = num_draft_tokens`, a replay that fills it from
    `cumsum(accept_length + 1)` gives the kernel offsets that disagree with the baked
    `q_len`: rows of one request are read as another's (SGLang #21987, trtllm_mla draft
    extend; same root cause as #19807).

    ## Known problems
    The paths are found by method name (the two SGLang APIs) and `if in_capture:`-style
    flags; helpers are followed two levels. Layouts are recognized only as `arange`
    with a step, `full` / `fill_`, or `cumsum`; a layout computed elsewhere is unknown
    and never compared.

    ## Example
    ```python
    def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, ...):
        metadata.cu_seqlens_q = torch.arange(0, bs * n + 1, n, dtype=torch.int32)

    def init_forward_metadata_replay_cuda_graph(self, bs, ..., spec_info, ...):
        metadata.max_seq_len_q = max(spec_info.accept_length_cpu[:bs]) + 1
        metadata.cu_seqlens_q[1:].copy_(torch.cumsum(accept_length + 1, dim=0))
    ```

    ## Use instead
    Replay with the capture layout, both from the fixed `num_draft_tokens`:
    ```python
    def init_forward_metadata_replay_cuda_graph(self, bs, ..., spec_info, ...):
        n = self.num_draft_tokens
        metadata.max_seq_len_q = n
        metadata.cu_seqlens_q[: bs + 1].copy_(torch.arange(0, bs * n + 1, step=n))
    ```

    ## Options
    - `extra-forward-methods`, `extra-planning-methods`, `extra-decode-kernels`: which
      forward methods route draft extend to a decode kernel (see GR003).
    - `extra-graph-capture-methods`, `extra-graph-replay-methods`,
      `extra-graph-shared-methods`: the CUDA-graph metadata methods of each path.

    ## References
    - [SGLang #21987](https://github.com/sgl-project/sglang/pull/21987): trtllm_mla
      draft extend replays the capture layout.
    - [SGLang #19807](https://github.com/sgl-project/sglang/pull/19807): the same root
      cause.
    """

    CODE = "GR004"
    NAME = "cuda-graph-replay-layout"
    MESSAGE = "CUDA-graph replay disagrees with capture (SGLang #21987):"
    WORDS = ("cuda_graph",)
    #: Python scalars a captured graph bakes in (fnmatch patterns).
    BAKED_SCALARS: tuple[str, ...] = (
        "max_seq_len_q",
        "max_seqlen_q",
        "sum_seq_lens_q",
        "max_q_len",
        "max_query_len",
    )
    #: Names / attributes whose value changes every step (substrings).
    PER_STEP_MARKERS: tuple[str, ...] = ("accept", "spec_info", "extend_seq_lens", "seq_lens_cpu")
    #: ``spec_info`` fields fixed for the whole run (the draft width), not per step.
    STATIC_SPEC_FIELDS: tuple[str, ...] = ("num_tokens_per_req", "num_tokens_for_logprob_per_req", "topk", "num_draft_tokens")
    #: Calls that read device data back to the host (per-step by construction).
    PER_STEP_CALLS: tuple[str, ...] = ("item", "tolist")
    #: Legacy CUDA-graph API (SGLang <= 0.5.12): one method per path.
    CAPTURE_METHODS: tuple[str, ...] = ("init_forward_metadata_capture_cuda_graph",)
    REPLAY_METHODS: tuple[str, ...] = ("init_forward_metadata_replay_cuda_graph",)
    #: Current API (SGLang >= 0.5.13): one method, ``if in_capture:`` splits the paths.
    OUT_GRAPH_METHODS: tuple[str, ...] = ("init_forward_metadata_out_graph",)
    IN_CAPTURE_FLAGS: tuple[str, ...] = ("in_capture", "is_capture", "capturing")
    MAX_DEPTH = 2

    VALID = [
        Valid(  # SGLang 0.5.10's fix of #21987: replay with the capture stride
            _trtllm_mla_replaying(
                """
                num_tokens_per_bs = self.num_draft_tokens
                metadata.max_seq_len_q = num_tokens_per_bs
                metadata.cu_seqlens_q[: bs + 1].copy_(
                    torch.arange(0, bs * num_tokens_per_bs + 1, step=num_tokens_per_bs)
                )
                """
            )
        ),
        Valid(  # a cumsum layout on both paths (cu_seqlens_k follows the KV lengths)
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    metadata = self.metadata[bs]
                    metadata.cu_seqlens_k[1:].copy_(torch.cumsum(seq_lens, dim=0))

                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    metadata = self.metadata[bs]
                    metadata.cu_seqlens_k[1:].copy_(torch.cumsum(seq_lens[:bs], dim=0))
                    metadata.max_seq_len_k = seq_lens_cpu.max().item()
            """
        ),
        Valid(  # the >= 0.5.13 API: one shared body for capture and replay
            """
            class TRTLLMMLABackend(FlashInferMLAAttnBackend):
                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    if in_capture:
                        self._build_cuda_graph_metadata(forward_batch.batch_size)
                    self._apply_cuda_graph_metadata(forward_batch.batch_size, forward_batch.forward_mode)

                def _apply_cuda_graph_metadata(self, bs, forward_mode):
                    metadata = self.decode_cuda_graph_metadata[bs]
                    if forward_mode.is_draft_extend(include_v2=True):
                        n = self.num_draft_tokens
                        metadata.max_seq_len_q = n
                        metadata.cu_seqlens_q[: bs + 1].copy_(torch.arange(0, bs * n + 1, step=n))
            """
        ),
        Valid(  # draft extend on a varlen kernel: a replay cumsum within the baked bound is read
            """
            class FlashAttentionBackend(AttentionBackend):
                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    if forward_mode.is_draft_extend():
                        metadata.max_seq_len_q = num_tokens // bs
                        metadata.cu_seqlens_q = torch.arange(0, bs * (num_tokens // bs) + 1, num_tokens // bs)

                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    if forward_mode.is_draft_extend():
                        metadata.max_seq_len_q = max(spec_info.accept_length_cpu) + 1
                        metadata.cu_seqlens_q[1:].copy_(torch.cumsum(spec_info.accept_length + 1, dim=0))

                def forward_extend(self, q, k, v, layer, forward_batch):
                    return flash_attn_with_kvcache(q=q, cu_seqlens_q=self.forward_metadata.cu_seqlens_q)
            """
        ),
        Valid(  # the fixed draft width of spec_info is no per-step value
            """
            class XPUAttentionBackend(AttentionBackend):
                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    q_len_per_req = self._q_layout(forward_batch.forward_mode, forward_batch.spec_info)
                    metadata = self.decode_cuda_graph_metadata[forward_batch.batch_size]
                    if q_len_per_req > 1:
                        metadata.max_seq_len_q = q_len_per_req
                    if forward_batch.forward_mode.is_target_verify():
                        metadata.max_seq_len_q = forward_batch.spec_info.num_tokens_per_req
            """
        ),
    ]
    INVALID = [
        Invalid(  # SGLang 0.5.9 TRTLLMMLABackend (#21987)
            _trtllm_mla_replaying(
                """
                accept_length = spec_info.accept_length[:bs]
                metadata.max_seq_len_q = max(spec_info.accept_length_cpu[:bs]) + 1
                metadata.cu_seqlens_q[1:].copy_(torch.cumsum(accept_length + 1, dim=0))
                """
            ),
            line=15,
        ),
        Invalid(  # the >= 0.5.13 API: the `else` arm of `if in_capture:` is the replay path
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    metadata = self.graph_metadata[forward_batch.batch_size]
                    if in_capture:
                        metadata.cu_seqlens_q.copy_(torch.arange(0, self.n * forward_batch.batch_size + 1, self.n))
                    else:
                        self._apply_replay(metadata, forward_batch.spec_info)

                def _apply_replay(self, metadata, spec_info):
                    metadata.sum_seq_lens_q = spec_info.num_accept_tokens_cpu.sum().item()
            """,
            line=10,
        ),
    ]

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            methods = {fn.name.value: fn for fn in iter_methods(cls)}
            writes: list[_Write] = []
            for name, fn in methods.items():
                if matches(name, self.capture_methods()):
                    self._walk(fn, fn.body, frozenset({CAPTURE}), frozenset(), methods, writes, 0)
                elif matches(name, self.replay_methods()):
                    self._walk(fn, fn.body, frozenset({REPLAY}), frozenset(), methods, writes, 0)
                elif matches(name, self.shared_methods()):
                    self._walk(fn, fn.body, frozenset({CAPTURE, REPLAY}), frozenset(), methods, writes, 0)
            if writes:
                routed = routes_draft_extend(methods, ctx)
                kept = [w for w in _dedupe(writes) if routed or not _is_draft_extend(w.modes)]
                findings.extend(self._compare(ctx, kept))
        return findings

    # -- which methods are which path (the class defaults plus the config's lists) --

    def capture_methods(self) -> tuple[str, ...]:
        """Capture-path method names: :attr:`CAPTURE_METHODS` + ``extra-graph-capture-methods``."""
        return self.CAPTURE_METHODS + self.config.graph_capture_methods

    def replay_methods(self) -> tuple[str, ...]:
        """Replay-path method names: :attr:`REPLAY_METHODS` + ``extra-graph-replay-methods``."""
        return self.REPLAY_METHODS + self.config.graph_replay_methods

    def shared_methods(self) -> tuple[str, ...]:
        """Both-path method names (``if in_capture:`` splits them): :attr:`OUT_GRAPH_METHODS`
        + ``extra-graph-shared-methods``."""
        return self.OUT_GRAPH_METHODS + self.config.graph_shared_methods

    # -- collecting writes per path --

    def _walk(
        self,
        fn: cst.FunctionDef,
        block: cst.CSTNode,
        paths: frozenset[str],
        modes: frozenset[str],
        methods: dict[str, cst.FunctionDef],
        out: list[_Write],
        depth: int,
    ) -> None:
        per_step_names = self._per_step_names(fn)
        body = block.body if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else []
        for stmt in body:
            if isinstance(stmt, cst.If):
                self._walk_if(fn, stmt, paths, modes, methods, out, depth)
                continue
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
                continue
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    self._record(fn, small, paths, modes, per_step_names, out)
                for call in iter_calls(stmt):
                    self._follow(call, paths, modes, methods, out, depth)
                continue
            for name in ("body", "orelse", "finalbody"):
                sub = getattr(stmt, name, None)
                if isinstance(sub, (cst.Else, cst.Finally)):
                    sub = sub.body
                if isinstance(sub, cst.BaseSuite):
                    self._walk(fn, sub, paths, modes, methods, out, depth)
            for handler in getattr(stmt, "handlers", ()) or ():
                self._walk(fn, handler.body, paths, modes, methods, out, depth)

    def _walk_if(self, fn, stmt: cst.If, paths, modes, methods, out, depth) -> None:
        flag = self._capture_flag(stmt.test)
        if flag is not None and paths == frozenset({CAPTURE, REPLAY}):
            then_paths = frozenset({CAPTURE}) if flag else frozenset({REPLAY})
            else_paths = frozenset({REPLAY}) if flag else frozenset({CAPTURE})
        else:
            then_paths = else_paths = paths
        words = frozenset(w for w, _ in mode_predicates(stmt.test))
        for call in iter_calls(stmt.test):
            self._follow(call, paths, modes, methods, out, depth)
        self._walk(fn, stmt.body, then_paths, words or modes, methods, out, depth)
        if isinstance(stmt.orelse, cst.If):
            self._walk_if(fn, stmt.orelse, else_paths, modes, methods, out, depth)
        elif isinstance(stmt.orelse, cst.Else):
            self._walk(fn, stmt.orelse.body, else_paths, modes, methods, out, depth)

    def _capture_flag(self, test: cst.BaseExpression) -> bool | None:
        """True for ``if in_capture:``, False for ``if not in_capture:``, None otherwise."""
        if isinstance(test, cst.Name) and matches(test.value, self.IN_CAPTURE_FLAGS):
            return True
        if (
            isinstance(test, cst.UnaryOperation)
            and isinstance(test.operator, cst.Not)
            and isinstance(test.expression, cst.Name)
            and matches(test.expression.value, self.IN_CAPTURE_FLAGS)
        ):
            return False
        return None

    def _follow(self, call, paths, modes, methods, out, depth) -> None:
        helper = self_method(call, methods)
        if helper is None or depth >= self.MAX_DEPTH:
            return
        # A helper that takes the capture flag splits the paths again, by its own `if`s.
        self._walk(helper, helper.body, paths, modes, methods, out, depth + 1)

    def _record(self, fn, small: cst.CSTNode, paths, modes, per_step_names, out) -> None:
        if isinstance(small, cst.Assign):
            for t in small.targets:
                field = _metadata_field(t.target)
                if field is not None:
                    out.append(
                        _Write(paths, modes, field, _layout(small.value), True,
                               self._is_per_step(small.value, per_step_names), small, fn)
                    )
            return
        if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
            call = small.value
            name = callee_name(call)
            if name not in ("copy_", "fill_") or not isinstance(call.func, cst.Attribute):
                return
            target = call.func.value
            while isinstance(target, cst.Subscript):
                target = target.value
            field = _metadata_field(target)
            if field is None:
                return
            layout = "uniform" if name == "fill_" else (_layout(call.args[0].value) if call.args else None)
            out.append(_Write(paths, modes, field, layout, False, False, small, fn))

    # -- per-step values --

    def _is_per_step(self, expr: cst.CSTNode, names: frozenset[str]) -> bool:
        refs, intrinsic = self._scan_per_step(expr)
        return intrinsic or not refs.isdisjoint(names)

    def _scan_per_step(self, expr: cst.CSTNode) -> tuple[frozenset[str], bool]:
        """(names ``expr`` reads, whether it is per-step by itself: a marker name or a
        per-step call), scanned once per expression."""
        memo = self.__dict__.setdefault("_scan_memo", {})
        hit = memo.get(id(expr))
        if hit is not None and hit[0] is expr:
            return hit[1]
        refs: set[str] = set()
        intrinsic = False
        markers, calls, static = self.PER_STEP_MARKERS, self.PER_STEP_CALLS, self.STATIC_SPEC_FIELDS

        class _Scan(cst.CSTVisitor):
            def visit_Name(self, node: cst.Name) -> None:
                nonlocal intrinsic
                refs.add(node.value)
                if any(m in node.value for m in markers):
                    intrinsic = True

            def visit_Attribute(self, node: cst.Attribute) -> bool:
                nonlocal intrinsic
                if node.attr.value in static:
                    return False  # spec_info.num_tokens_per_req: the fixed draft width
                if any(m in node.attr.value for m in markers):
                    intrinsic = True
                return True

            def visit_Call(self, node: cst.Call) -> bool:
                nonlocal intrinsic
                if callee_name(node) in calls:
                    intrinsic = True
                # a `self` helper's result is judged by its name, not by what it is given
                return self_attribute(node.func) is None

        expr.visit(_Scan())
        result = (frozenset(refs), intrinsic)
        memo[id(expr)] = (expr, result)
        return result

    def _per_step_names(self, fn: cst.FunctionDef) -> frozenset[str]:
        """Local names bound (anywhere in ``fn``) to a per-step value; parameters named so."""
        memo = self.__dict__.setdefault("_per_step_memo", {})
        if id(fn) not in memo:
            memo[id(fn)] = (fn, self._compute_per_step_names(fn))
        return memo[id(fn)][1]

    def _compute_per_step_names(self, fn: cst.FunctionDef) -> frozenset[str]:
        names = {p.name.value for p in param_names(fn) if any(m in p.name.value for m in self.PER_STEP_MARKERS)}
        assigns: list[tuple[cst.Assign, frozenset[str]]] = []
        guards: list[frozenset[str]] = []

        class _Assigns(cst.CSTVisitor):
            def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
                return node is fn

            def visit_If(self, node: cst.If) -> None:
                guards.append(_unset_names(node.test))

            def leave_If(self, original_node: cst.If) -> None:
                guards.pop()

            def visit_Assign(self, node: cst.Assign) -> None:
                assigns.append((node, frozenset().union(*guards)))

        fn.visit(_Assigns())
        changed = True
        while changed:
            changed = False
            for a, unset in assigns:
                if self._is_per_step(a.value, frozenset(names)):
                    for t in a.targets:
                        # `if n <= 0: n = ...item()`: a fallback for an unset value (SGLang
                        # 0.5.14 infers the draft stride at capture), not what replay reads
                        new = set(target_names(t.target)) - names - unset
                        if new:
                            names |= new
                            changed = True
        return frozenset(names)

    # -- comparing the paths --

    def _compare(self, ctx: ModuleContext, writes: list[_Write]) -> list[Finding]:
        findings: list[Finding] = []
        reported: set[int] = set()
        replay = [w for w in writes if REPLAY in w.paths]
        capture = [w for w in writes if CAPTURE in w.paths]

        def report(w: _Write, detail: str) -> None:
            if id(w.node) in reported:
                return
            reported.add(id(w.node))
            findings.append(self.finding(ctx, w.node, w.fn, detail))

        for w in replay:
            if w.layout is not None and CAPTURE not in w.paths:
                other = {c.layout for c in capture if c.field == w.field and _overlap(c.modes, w.modes) and c.layout}
                if other and w.layout not in other:
                    report(
                        w,
                        f"replay fills `{w.field}` with a {_describe(w.layout)} layout, capture with a "
                        f"{' / '.join(_describe(o) for o in sorted(other))} one; replay with the capture layout.",
                    )
                    continue
            if w.rebinds and w.per_step and matches(w.field, self.BAKED_SCALARS):
                report(
                    w,
                    f"`{w.field}` is baked into the graph at capture; rebinding it at replay from "
                    "per-step data does not reach the captured kernels. Keep the capture value "
                    "(a fixed upper bound) and a layout that matches it.",
                )
                continue
            if (
                w.rebinds
                and CAPTURE not in w.paths
                and _builds_tensor(w.node)
                and not any(c.field == w.field for c in capture)
            ):
                report(
                    w,
                    f"`{w.field}` is set at replay but never on the capture path: the captured "
                    "kernels never read it. Bind it at capture (a view of a persistent buffer) "
                    "and update it in place at replay.",
                )
        return findings


#: Calls that make a fresh tensor: rebinding a field to one at replay swaps the pointer.
_TENSOR_BUILDERS = ("cumsum", "arange", "full", "full_like", "zeros", "zeros_like", "empty", "ones", "pad", "tensor")


def _builds_tensor(node: cst.CSTNode) -> bool:
    value = node.value if isinstance(node, cst.Assign) else node
    return any(callee_name(c) in _TENSOR_BUILDERS for c in iter_calls(value))


def _unset_names(test: cst.BaseExpression) -> frozenset[str]:
    """Names an ``if`` test finds unset: ``n <= 0`` / ``n == 0`` / ``n < 1`` / ``n is None`` / ``not n``."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not) and isinstance(test.expression, cst.Name):
        return frozenset({test.expression.value})
    if isinstance(test, cst.Comparison) and isinstance(test.left, cst.Name) and len(test.comparisons) == 1:
        comp = test.comparisons[0]
        op, right = comp.operator, comp.comparator
        if isinstance(op, cst.Is) and isinstance(right, cst.Name) and right.value == "None":
            return frozenset({test.left.value})
        if isinstance(right, cst.Integer) and (
            (isinstance(op, (cst.LessThanEqual, cst.Equal)) and right.value == "0")
            or (isinstance(op, cst.LessThan) and right.value == "1")
        ):
            return frozenset({test.left.value})
    return frozenset()


def _is_draft_extend(modes: frozenset[str]) -> bool:
    return any(m.startswith("draft_extend") for m in modes)


def _overlap(a: frozenset[str], b: frozenset[str]) -> bool:
    if not a or not b or a & b:
        return True
    norm = {"draft_extend+v2": {"draft_extend", "draft_extend_v2"}}
    ea = set().union(*(norm.get(x, {x}) for x in a))
    eb = set().union(*(norm.get(x, {x}) for x in b))
    return bool(ea & eb)


def _describe(layout: str) -> str:
    return "uniform-stride" if layout == "uniform" else "data-dependent cumsum"


def _dedupe(writes: list[_Write]) -> list[_Write]:
    """One write per node; a node reached on both paths (a shared helper) keeps both."""
    by_node: dict[int, _Write] = {}
    for w in writes:
        prev = by_node.get(id(w.node))
        if prev is None:
            by_node[id(w.node)] = w
        else:
            by_node[id(w.node)] = _Write(
                prev.paths | w.paths, prev.modes | w.modes, w.field, w.layout, w.rebinds, w.per_step, w.node, w.fn
            )
    return list(by_node.values())


def _metadata_field(target: cst.CSTNode) -> str | None:
    """``metadata.F`` / ``self.forward_metadata.F`` -> ``F``; ``self.F`` and others -> None."""
    if not isinstance(target, cst.Attribute) or self_attribute(target) is not None:
        return None
    base = target.value
    if isinstance(base, cst.Name):
        return target.attr.value
    if isinstance(base, cst.Attribute) and "metadata" in base.attr.value:
        return target.attr.value
    return None


def _layout(expr: cst.CSTNode) -> str | None:
    """``uniform`` (strided arange, full), ``cumsum``, or None (a slice, a copy, unknown)."""
    kinds: set[str] = set()
    for call in iter_calls(expr):  # `expr` itself too, when it is a call
        name = callee_name(call)
        if name == "cumsum":
            kinds.add("cumsum")
        elif name in ("full", "full_like"):
            kinds.add("uniform")
        elif name == "arange":
            positional = [a for a in call.args if a.keyword is None and not a.star]
            if len(positional) >= 3 or any(a.keyword is not None and a.keyword.value == "step" for a in call.args):
                kinds.add("uniform")
    if len(kinds) == 1:
        return kinds.pop()
    return None
