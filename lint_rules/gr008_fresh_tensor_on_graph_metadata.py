"""GR008 fresh-tensor-on-graph-metadata (SGLang #26019 review, #27664, #37975)."""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .config import matches
from .cst_analysis import callee_name, iter_nodes, self_attribute
from .gr004_cuda_graph_replay_layout import CAPTURE, REPLAY, CudaGraphReplayLayout, _dedupe, _Write
from .rule import Finding, ModuleContext
from .rule_info import Invalid, Valid

#: Calls whose result is a new tensor (a new address), when they are the whole value.
FRESH_TENSOR_CALLS: tuple[str, ...] = (
    "zeros",
    "zeros_like",
    "empty",
    "empty_like",
    "ones",
    "full",
    "full_like",
    "arange",
    "tensor",
    "cumsum",
    "pad",
    "cat",
    "stack",
    "clone",
    "contiguous",
    "to",
    "repeat_interleave",
    "index_select",
)


def _fresh(value: cst.BaseExpression) -> str | None:
    """The builder call when ``value`` as a whole makes a new tensor, else None."""
    while isinstance(value, cst.Call) and callee_name(value) in ("int", "bool"):
        return None
    if isinstance(value, cst.Call):
        name = callee_name(value)
        if name in FRESH_TENSOR_CALLS:
            return name
    return None


def _persistent_bindings(fn: cst.FunctionDef, at: cst.Assign) -> dict[str, str]:
    """Local names (and ``self.x`` attributes) bound, in source order before ``at``, to an
    entry of a ``self`` cache: ``m = self.decode_cuda_graph_metadata[bs]`` /
    ``self._meta_cg.get(key)`` -> ``{"m": "decode_cuda_graph_metadata"}``; a later binding
    to anything else (``m = FooMetadata()``) drops the name."""
    out: dict[str, str] = {}
    for assign in iter_nodes(fn.body, cst.Assign):
        if assign is at:
            break
        cache = _cache_of(assign.value)
        for t in assign.targets:
            key = t.target.value if isinstance(t.target, cst.Name) else None
            if key is None and self_attribute(t.target) is not None:
                key = "self." + self_attribute(t.target)  # type: ignore[operator]
            if key is None:
                continue
            if cache is None:
                out.pop(key, None)
            else:
                out[key] = cache
    return out


def _cache_of(value: cst.BaseExpression) -> str | None:
    """``self.X[...]`` (any depth of subscripts) or ``self.X.get(...)`` -> ``X``."""
    if isinstance(value, cst.Call) and callee_name(value) == "get" and isinstance(value.func, cst.Attribute):
        return self_attribute(value.func.value)
    if isinstance(value, cst.Subscript):
        while isinstance(value, cst.Subscript):
            value = value.value
        return self_attribute(value)
    return None


def _base_key(target: cst.BaseExpression) -> str | None:
    if not isinstance(target, cst.Attribute):
        return None
    base = target.value
    if isinstance(base, cst.Name):
        return base.value
    name = self_attribute(base)
    return None if name is None else "self." + name


class FreshTensorOnGraphMetadata(CudaGraphReplayLayout):
    """CUDA-graph replay attaches a fresh tensor to the metadata the graph was captured with.

    ## What it does
    On the replay path of an attention backend's CUDA-graph metadata code (SGLang's
    `init_forward_metadata_replay_cuda_graph`, the replay arm of
    `init_forward_metadata_out_graph`, and the body that runs on both paths, with the
    `self` helpers they call: the paths of GR004), flags a field of a *persistent*
    metadata object (one taken from a per-batch-size cache, `self.X[bs]` /
    `self.X.get(key)`) rebound to a newly built tensor (`torch.zeros(...)`,
    `x[:bs].clone()`, `(...).to(torch.int32)`, `torch.cumsum(...)`) when the capture
    path binds the same field too (another write than this one).

    ## Why is this bad?
    A CUDA graph records the device addresses its kernels read at capture. Rebinding
    `metadata.page_table` to a new tensor at replay leaves the captured kernels
    reading the capture-time tensor: its stale contents, or memory the caching
    allocator has since handed to someone else (garbage pages, wrong KV, an illegal
    memory access). The replay must write into the captured buffer in place:
    `metadata.page_table[:bs].copy_(...)`. SGLang's review of #26019 and #27664 (DSV4
    metadata rebuilt per replay, garbled greedy output) describe this failure; #37975
    (FlashInfer MLA `kv_indptr` rebuilt outside the graph-bound buffer) is its sibling.

    ## Known problems
    The object is judged persistent only when the method takes it from a `self` cache
    by subscript or `.get`; a field rebound to a view of a persistent buffer
    (`self.buf[:bs]`) is no fresh tensor and passes. vLLM's builders create their
    metadata anew on every `build` from views of `self` buffers; that shape is not
    judged here.

    ## Example
    ```python
    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, ...):
        metadata = self.decode_cuda_graph_metadata[bs]
        metadata.page_table = self.req_to_token[req_pool_indices[:bs], :max_len].clone()
    ```

    ## Use instead
    ```python
    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, ...):
        metadata = self.decode_cuda_graph_metadata[bs]
        metadata.page_table[:, :max_len].copy_(self.req_to_token[req_pool_indices[:bs], :max_len])
    ```

    ## Options
    - `extra-graph-capture-methods`, `extra-graph-replay-methods`,
      `extra-graph-shared-methods`: the CUDA-graph metadata methods (as GR004).

    ## References
    - [SGLang #26019](https://github.com/sgl-project/sglang/pull/26019): review of the
      capture/replay unification: rebuilding at replay gives the kernels capture-time
      pointers.
    - [SGLang #27664](https://github.com/sgl-project/sglang/pull/27664): DSV4 metadata
      allocated anew each replay; copy into pre-allocated buffers instead.
    - [SGLang #37975](https://github.com/sgl-project/sglang/pull/37975): FlashInfer MLA
      graph `kv_indptr` rebuilt outside the graph-bound buffer.
    """

    CODE = "GR008"
    NAME = "fresh-tensor-on-graph-metadata"
    MESSAGE = "CUDA-graph replay rebinds captured metadata to a fresh tensor (SGLang #27664):"
    FIXABLE = False

    VALID = [
        Valid(  # SGLang FlashAttentionBackend replay: in-place copies into the captured buffers
            """
            class FlashAttentionBackend(AttentionBackend):
                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    metadata = FlashAttentionMetadata()
                    metadata.cache_seqlens_int32 = seq_lens.to(torch.int32)
                    metadata.page_table = self.decode_cuda_graph_metadata["page_table"][:bs, :]
                    self.decode_cuda_graph_metadata[bs] = metadata

                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    metadata = self.decode_cuda_graph_metadata[bs]
                    metadata.cache_seqlens_int32.copy_(seq_lens.to(torch.int32))
                    metadata.page_table[:, :max_seq_pages].copy_(page_indices // self.page_size)
                    metadata.max_seq_len_k = seq_lens_cpu.max().item()
                    self.forward_metadata = metadata
            """
        ),
        Valid(  # a metadata object built anew and never cached is no captured metadata
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    metadata = FooMetadata()
                    metadata.cu_seqlens_q = torch.arange(0, forward_batch.batch_size + 1, dtype=torch.int32)
                    self.forward_metadata = metadata
            """
        ),
        Valid(  # the capture path allocates the buffer the first time; replay copies into it
            """
            class DualChunkFlashAttentionBackend(AttentionBackend):
                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    metadata = self.decode_metadata[bs]
                    metadata.block_tables = torch.zeros(bs, self.max_blocks, dtype=torch.int32)

                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    metadata = self.decode_metadata[bs]
                    metadata.block_tables[:bs].copy_(self.req_to_token[req_pool_indices[:bs]])
            """
        ),
        Valid(  # SGLang 0.5.18-0.5.23 MiniMaxSparseAttnBackend: the verify metadata is built by
            # captured in-graph ops (refreshed by the replay itself); no capture-path binding
            """
            class MiniMaxSparseAttnBackend(AttentionBackend):
                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    if forward_batch.forward_mode.is_target_verify():
                        _vmeta = self._verify_meta_cg.get((forward_batch.seq_lens.shape[0], self.ndt))
                        if _vmeta is not None:
                            _vmeta.per_query_req.copy_(forward_batch.req_pool_indices.long().repeat_interleave(self.ndt))
                            _vmeta.native_bt = (self.req_to_token[_vmeta.per_query_req][:, cols] // self.page_size).to(torch.int32)
            """,
        ),
    ]
    INVALID = [
        Invalid(  # the >= 0.5.13 API: the capture arm binds the buffer view, the replay arm a clone
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
                    bs = forward_batch.batch_size
                    metadata = self.decode_cuda_graph_metadata[bs]
                    if in_capture:
                        metadata.page_table = self.page_table_buf[:bs, :]
                    else:
                        metadata.page_table = self.req_to_token[forward_batch.req_pool_indices, :].clone()
            """,
            line=8,
        ),
        Invalid(  # legacy API: capture binds the buffer, replay rebinds a clone
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
                    metadata = FooMetadata()
                    metadata.page_table = self.decode_cuda_graph_metadata["page_table"][:bs, :]
                    self.decode_cuda_graph_metadata[bs] = metadata

                def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
                    metadata = self.decode_cuda_graph_metadata[bs]
                    metadata.page_table = self.req_to_token[req_pool_indices[:bs], :max_len].clone()
            """,
            line=9,
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
                findings.extend(self._fresh_rebinds(ctx, _dedupe(writes)))
        return findings

    def _fresh_rebinds(self, ctx: ModuleContext, writes: list[_Write]) -> list[Finding]:
        # field -> the capture-path writes that bind it: the flagged write itself does not
        # count (a shared body that rebinds a field on both paths, before the object is
        # cached at capture, binds nothing the graph reads: SGLang's MiniMax verify
        # metadata is built by captured in-graph ops, so its replay rebinding is dead)
        captured: dict[str, set[int]] = {}
        for w in writes:
            if CAPTURE in w.paths:
                captured.setdefault(w.field, set()).add(id(w.node))
        findings = []
        for w in writes:
            if REPLAY not in w.paths or not w.rebinds or not isinstance(w.node, cst.Assign):
                continue
            if not captured.get(w.field, set()) - {id(w.node)}:
                continue  # GR004 reports a field the capture path never binds
            builder = _fresh(w.node.value)
            if builder is None:
                continue
            bound = _persistent_bindings(w.fn, w.node)
            keys = {_base_key(t.target) for t in w.node.targets}
            cache = next((bound[k] for k in keys if k in bound), None)
            if cache is None:
                continue
            findings.append(
                self.finding(
                    ctx,
                    w.node,
                    w.fn,
                    f"`{w.field}` of the metadata cached in `self.{cache}` is rebound to a new tensor "
                    f"(`{builder}(...)`) on the replay path; the captured kernels keep reading the "
                    f"tensor bound at capture. Copy into it in place: `....{w.field}[...].copy_(...)`.",
                    evidence=[ctx.evidence("replay rebinds", w.node, w.fn)],
                )
            )
        return findings
