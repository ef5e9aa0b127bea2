"""GR001 padded-batch-size-in-kernel-call (SGLang #21649)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cached_property

import libcst as cst

from .backend_scope import has_backend_class_text, iter_backend_classes, iter_methods
from .cst_analysis import iter_calls, keyword_arg
from .dataflow import Classifier, FlowState, FlowWalker, Verdict, taint_chain, tainted_parts
from .engine_profile import SGLANG, VLLM, engines_for, module_engines_for, padded_words
from .finding import Evidence
from .forward_batch_facts import forward_batch_params, is_batch_size_read
from .padded_count_facts import is_padded_count_read, padded_params
from .helper_summary import HelperSummaries
from .rule import Finding, LintRule, ModuleContext, Replacement
from .rule_info import Invalid, Valid

#: The fix: ``batch_size=`` is sized from the ``cum_seq_lens_q=`` the same call passes.
SIZE_KEYWORD = "batch_size"
OFFSETS_KEYWORD = "cum_seq_lens_q"
#: Expressions that may take ``.shape`` without parentheses.
_PRIMARY = (cst.Name, cst.Attribute, cst.Subscript, cst.Call)


def _evidence(
    ctx: ModuleContext,
    fn: cst.FunctionDef,
    chain: Sequence[cst.CSTNode],
    args: Sequence[cst.Arg],
    last: Sequence[tuple[str, cst.CSTNode, str]],
) -> list[Evidence]:
    """Where the padded size is read (``padded size``), each binding that carries it on
    (``derived``), the kernel arguments it reaches (``argument``), then ``last`` (the
    kernel call, or the helper it goes through)."""
    steps = ctx.evidence_chain("padded size", chain, fn)
    steps += [ctx.evidence("argument", arg, fn, ctx.code_of_arg(arg)) for arg in args]
    steps += [ctx.evidence(label, node, fn, code) for label, node, code in last]
    return steps


#: Attributes of a (padded) tensor that carry no extent: ``torch.ones((1,), device=q.device)``.
TENSOR_FACTS = frozenset({"device", "dtype", "layout", "ndim", "is_cuda", "itemsize", "element_size"})

#: The message of a finding whose padded size is a CUDA-graph-padded count (vLLM profile).
VLLM_MESSAGE = (
    "CUDA-graph-padded count reaches an FMHA kernel (vLLM #25265, #28579; "
    "the metadata holds `num_actual_tokens` / `num_reqs`):"
)


class PaddedBatchSizeInKernelCall(LintRule):
    """A padded size (DP: `forward_batch.batch_size`; CUDA graph: `num_input_tokens`) reaches an FMHA kernel.

    ## What it does
    In an attention backend's forward-time methods (`forward_extend`, `forward_decode`,
    `_forward_*`; vLLM: `*AttentionImpl.forward`, `forward_mqa`, `_forward_decode`),
    flags a kernel-call argument whose value is derived from a padded count: the
    attribute itself, a local alias (`bs = forward_batch.batch_size`), arithmetic on it,
    a tensor sized or sliced by it (`out = torch.empty(bs, ...)`,
    `k_descale = layer.k_scale.expand((bs, heads))`), a local dict of kernel arguments
    that holds one (`kwargs["k_descale"] = k_descale; kernel(**kwargs)`), or a `self`
    helper's result derived from it. The padded counts are SGLang's DP-padded
    `forward_batch.batch_size` and, in the vLLM profile (`profile = "vllm"`, or `auto`
    on a file importing vLLM), CUDA-graph-padded counts (`padded-counts`:
    `attn_metadata.num_input_tokens`, `num_reqs_padded`, ...; `padding-calls`:
    `pad_for_cudagraph(n)`), as against `num_actual_tokens` / `num_reqs`. Metadata
    planners (`init_forward_metadata*`, CUDA-graph metadata methods; vLLM's
    `*MetadataBuilder.build`, `_build_decode`, `build_for_cudagraph_capture`) are not
    forward-time code. A dominating guard that
    re-plans or raises when the sizes disagree
    (`if metadata.batch_size < forward_batch.batch_size: self.init_forward_metadata(forward_batch)`)
    makes later uses safe. The value is followed into `self` helper methods (two
    levels): a call `self._helper(..., batch_size=bs)` whose helper hands that
    parameter on to a kernel is reported at the call site, under the calling method's
    symbol. Kernels are recognized by name (FA3/FA4 `flash_attn_with_kvcache`,
    `flash_attn_varlen_func` from `sgl_kernel`, `sglang.kernels.ops.attention` or
    `vllm_flash_attn`; FlashMLA `flash_mla_with_kvcache`; FlashInfer's trtllm / xqa entry
    points), import aliases resolved
    (`from flashinfer.prefill import trtllm_batch_context_with_kv_cache as context_kernel`,
    through libcst's `QualifiedNameProvider`), module attributes (`P.trtllm_...(...)`
    after `import flashinfer.prefill as P`) and module-level aliases
    (`context_kernel = flashinfer.prefill.trtllm_batch_context_with_kv_cache`, or a
    `functools.partial` of it). FA3's `q_descale` / `k_descale` / `v_descale` are batch
    extents (FA checks them against the batch `cu_seqlens_q` implies); scalar scales
    (`softmax_scale`, `bmm1_scale`, `k_scale`) are not.

    Autofix (`--fix` / `--diff`): where the flagged call also passes
    `cum_seq_lens_q=X`, `batch_size=` becomes `X.shape[0] - 1`, with `X` as written; the
    fix is kept only if the call is clean afterwards.

    ## Why is this bad?
    With DP attention, SGLang pads the batch (`prepare_mlp_sync_batch`) after the
    attention metadata is planned: `forward_batch.batch_size` becomes 12 while
    `cu_seqlens_q` still holds 10 requests. The kernel then walks 12 requests' offsets
    and page-table rows: it reads past `cu_seqlens_q` and crashes with an illegal
    memory access, or silently attends over garbage. SGLang #21649 fixed exactly this
    in `TRTLLMHAAttnBackend.forward_extend`.

    ## Known problems
    The value is followed through local names, both arms of an `if`, loops, local
    containers filled in the method, and `self` helpers two levels deep; not through
    attributes of other objects, containers filled elsewhere, or functions of other
    modules. A guard counts only when it re-plans (`extra-replan-calls`) or raises.
    In the vLLM profile only counts *named* as padded are sources: the padded rows of
    `query` / `output` (`num_input_tokens` of them) are not followed, as vLLM passes them
    on deliberately (kernels read `query_start_loc` / `slot_mapping`).

    ## Example
    ```python
    o = flashinfer.prefill.trtllm_batch_context_with_kv_cache(
        query=q,
        batch_size=forward_batch.batch_size,
        cum_seq_lens_q=self.forward_metadata.cu_seqlens_q,
    )
    ```

    ## Use instead
    Take every size from the metadata the kernel reads:
    ```python
    o = flashinfer.prefill.trtllm_batch_context_with_kv_cache(
        query=q,
        batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1,
        cum_seq_lens_q=self.forward_metadata.cu_seqlens_q,
    )
    ```

    ## Options
    - `extra-kernel-calls`: more FMHA kernel entry points.
    - `extra-ignored-kernel-args`: kernel keywords that carry no batch extent.
    - `extra-forward-methods` / `extra-planning-methods`: which methods run at forward time.
    - `extra-replan-calls`: calls after which the metadata matches the batch.
    - `profile`: `sglang`, `vllm` or `auto` (default: per file, from the engine it imports).
    - `extra-padded-counts` / `extra-padding-calls`: the vLLM profile's padded counts.

    ## References
    - [SGLang #21649](https://github.com/sgl-project/sglang/pull/21649): the trtllm
      context kernel takes its batch size from `cu_seqlens_q`.
    - [SGLang #37785](https://github.com/sgl-project/sglang/pull/37785) (open): FA3's
      k/v descale sized from `forward_batch.batch_size` inside `prepare_paged_mha_query`.
    - [vLLM #25265](https://github.com/vllm-project/vllm/pull/25265),
      [#28579](https://github.com/vllm-project/vllm/pull/28579): CUDA-graph padding
      applied after the metadata was built; pad before building it.
    """

    CODE = "GR001"
    NAME = "padded-batch-size-in-kernel-call"
    MESSAGE = "DP-padded `forward_batch.batch_size` reaches an FMHA kernel (SGLang #21649):"
    WORDS = ("batch_size", "forward_batch")
    FIXABLE = True

    VALID = [
        Valid(
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    return flashinfer.prefill.trtllm_batch_context_with_kv_cache(
                        query=q,
                        batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1,
                        cum_seq_lens_q=self.forward_metadata.cu_seqlens_q,
                    )
            """
        ),
        Valid(  # planning code may read the padded size: it builds the metadata
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    bs = forward_batch.batch_size
                    self.forward_metadata = plan(bs)
                    trtllm_batch_decode_with_kv_cache(batch_size=bs)
            """
        ),
        Valid(  # a dominating re-plan guard makes the sizes agree
            """
            class TRTLLMMLABackend(AttentionBackend):
                def forward_decode(self, q, k, v, layer, forward_batch):
                    metadata = forward_batch.decode_trtllm_mla_metadata
                    if metadata.batch_size < forward_batch.batch_size:
                        self.init_forward_metadata(forward_batch)
                        metadata = forward_batch.decode_trtllm_mla_metadata
                    bs = forward_batch.batch_size
                    q = q.view(bs, -1, layer.tp_q_head_num, layer.head_dim)
                    return trtllm_batch_decode_with_kv_cache_mla(query=q)
            """
        ),
        Valid(  # the alias is re-bound to a metadata-derived size before the call
            """
            class FooBackend:
                def forward_extend(self, q, k, v, layer, forward_batch):
                    bs = forward_batch.batch_size
                    log(bs)
                    bs = self.forward_metadata.cu_seqlens_q.shape[0] - 1
                    return trtllm_batch_context_with_kv_cache(query=q, batch_size=bs)
            """
        ),
        Valid(  # a flag derived from the size is not a size
            """
            class FooBackend:
                def forward_decode(self, q, k, v, layer, forward_batch):
                    use_split = forward_batch.batch_size < 8
                    return trtllm_batch_decode_with_kv_cache(query=q, enable_split=use_split)
            """
        ),
        Valid(  # a private helper reached only after its caller's re-plan guard
            """
            class TRTLLMMLABackend:
                def forward_decode(self, q, k, v, layer, forward_batch):
                    metadata = forward_batch.decode_trtllm_mla_metadata
                    batch_size = getattr(metadata, "batch_size", None)
                    if batch_size is not None and batch_size < forward_batch.batch_size:
                        self.init_forward_metadata(forward_batch)
                        metadata = forward_batch.decode_trtllm_mla_metadata
                    return self._forward_decode_dcp(q, layer, forward_batch, metadata)

                def _forward_decode_dcp(self, q, layer, forward_batch, metadata):
                    bs = forward_batch.batch_size
                    return trtllm_batch_decode_with_kv_cache_mla(query=q, seq_lens=metadata.seq_lens_k[:bs])
            """
        ),
        Valid(  # a helper that takes the size but sizes the kernel from the metadata
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    return self._context(q, layer, batch_size=forward_batch.batch_size)

                def _context(self, q, layer, batch_size):
                    logger.debug("padded bs=%d", batch_size)
                    return trtllm_batch_context_with_kv_cache(
                        query=q, batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1
                    )
            """
        ),
        Valid(  # a helper that re-plans before it launches
            """
            class FooBackend(AttentionBackend):
                def forward_decode(self, q, k, v, layer, forward_batch):
                    return self._decode(q, forward_batch, bs=forward_batch.batch_size)

                def _decode(self, q, forward_batch, bs):
                    self.init_forward_metadata(forward_batch)
                    return trtllm_batch_decode_with_kv_cache(query=q[:bs])
            """
        ),
        Valid(  # SGLang #37785's fix: the descale batch comes from cu_seqlens_q
            """
            class FlashAttentionBackend(AttentionBackend):
                def prepare_paged_mha_query(self, q, layer, *, logical_batch_size, kv_head_num):
                    k_descale = layer.k_scale.expand((logical_batch_size, kv_head_num))
                    return q, k_descale

                def forward_extend(self, q, k, v, layer, forward_batch):
                    metadata = self.forward_metadata
                    q, k_descale = self.prepare_paged_mha_query(
                        q, layer, logical_batch_size=metadata.cu_seqlens_q.shape[0] - 1, kv_head_num=layer.tp_k_head_num
                    )
                    kwargs = {}
                    kwargs["k_descale"] = k_descale
                    return flash_attn_with_kvcache(q=q, cu_seqlens_q=metadata.cu_seqlens_q, softmax_scale=layer.scaling, **kwargs)
            """
        ),
        Valid(  # vLLM: sized from the unpadded metadata (FlashAttentionImpl.forward)
            """
            from vllm.v1.attention.backend import AttentionImpl

            class FlashAttentionImpl(AttentionImpl):
                def forward(self, layer, query, key, value, kv_cache, attn_metadata, output=None):
                    num_actual_tokens = attn_metadata.num_actual_tokens
                    flash_attn_varlen_func(
                        q=query[:num_actual_tokens],
                        k=kv_cache[0],
                        v=kv_cache[1],
                        out=output[:num_actual_tokens],
                        cu_seqlens_q=attn_metadata.query_start_loc,
                        seqused_k=attn_metadata.seq_lens,
                        block_table=attn_metadata.block_table,
                    )
                    return output
            """
        ),
        Valid(  # vLLM: a builder pads for the captured decode wrapper (planning code)
            """
            from vllm.v1.attention.backends.utils import AttentionMetadataBuilder

            class FlashInferMetadataBuilder(AttentionMetadataBuilder):
                def build(self, common_prefix_len, common_attn_metadata, fast_build=False):
                    num_input_tokens = self.vllm_config.pad_for_cudagraph(common_attn_metadata.num_reqs)
                    return self._plan(self.paged_kv_indptr[: num_input_tokens + 1])
            """
        ),
        Valid(  # not an attention backend
            """
            class Scheduler:
                def forward_extend(self, forward_batch):
                    trtllm_batch_context_with_kv_cache(batch_size=forward_batch.batch_size)
            """
        ),
        Valid(  # a non-kernel call may take it
            """
            class FooBackend:
                def forward_decode(self, q, k, v, layer, forward_batch):
                    logger.debug("bs=%d", forward_batch.batch_size)
                    return flash_attn_with_kvcache(q, self.k_cache, self.v_cache)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
                    o = flashinfer.prefill.trtllm_batch_context_with_kv_cache(
                        query=q,
                        batch_size=forward_batch.batch_size,  # padded
                        cum_seq_lens_q=self.forward_metadata.cu_seqlens_q,
                    )
                    return o
            """,
            line=5,
            expected_replacement="""
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
                    o = flashinfer.prefill.trtllm_batch_context_with_kv_cache(
                        query=q,
                        batch_size=self.forward_metadata.cu_seqlens_q.shape[0] - 1,  # padded
                        cum_seq_lens_q=self.forward_metadata.cu_seqlens_q,
                    )
                    return o
            """,
        ),
        Invalid(  # the kernel under an import alias
            """
            from flashinfer.prefill import trtllm_batch_context_with_kv_cache as context_kernel

            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    return context_kernel(query=q, batch_size=forward_batch.batch_size)
            """,
            line=5,
        ),
        Invalid(  # the kernel under a module-level alias
            """
            import flashinfer.prefill

            context_kernel = flashinfer.prefill.trtllm_batch_context_with_kv_cache

            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    return context_kernel(query=q, batch_size=forward_batch.batch_size)
            """,
            line=7,
        ),
        Invalid(  # SGLang 0.5.23 FlashAttentionBackend.forward_extend (open SGLang #37785)
            """
            class FlashAttentionBackend(AttentionBackend):
                def prepare_paged_mha_query(self, q, layer, *, logical_batch_size, kv_head_num):
                    k_descale = v_descale = None
                    if layer.k_scale is not None:
                        descale_shape = (logical_batch_size, kv_head_num)
                        k_descale = layer.k_scale.expand(descale_shape)
                        v_descale = layer.v_scale.expand(descale_shape)
                    return q, k_descale, v_descale

                def forward_extend(self, q, k, v, layer, forward_batch):
                    q, fa_k_descale, fa_v_descale = self.prepare_paged_mha_query(
                        q, layer, logical_batch_size=forward_batch.batch_size, kv_head_num=layer.tp_k_head_num
                    )
                    kwargs = {}
                    if fa_k_descale is not None:
                        kwargs["k_descale"] = fa_k_descale
                        kwargs["v_descale"] = fa_v_descale
                    return flash_attn_with_kvcache(
                        q=q, cu_seqlens_q=self.forward_metadata.cu_seqlens_q, softmax_scale=layer.scaling, **kwargs
                    )
            """,
            line=19,
        ),
        Invalid(  # vLLM: a CUDA-graph-padded count sizes the kernel's query
            """
            from vllm.v1.attention.backend import AttentionImpl

            class FlexAttentionImpl(AttentionImpl):
                def forward(self, layer, query, key, value, kv_cache, attn_metadata, output=None):
                    num_tokens = attn_metadata.num_input_tokens
                    return flash_attn_varlen_func(
                        q=query[:num_tokens], cu_seqlens_q=attn_metadata.query_start_loc, out=output
                    )
            """,
            line=7,
        ),
        Invalid(  # through a local alias and arithmetic
            """
            class FooBackend(AttentionBackend):
                def forward_decode(self, q, k, v, layer, forward_batch: "ForwardBatch"):
                    bs = forward_batch.batch_size
                    num_rows = bs * self.q_len_per_req
                    return trtllm_batch_decode_with_kv_cache(query=q[:num_rows])
            """,
            line=5,
        ),
        Invalid(  # as the size of a tensor passed to the kernel
            """
            class FooBackend(AttentionBackend):
                def _forward_padded(self, q, layer, forward_batch):
                    out = torch.empty(forward_batch.batch_size, layer.tp_q_head_num, layer.head_dim)
                    flash_attn_with_kvcache(q, self.k_cache, self.v_cache, out=out)
                    return out
            """,
            line=4,
        ),
        Invalid(  # assigned in one arm of an if: still reaches the call
            """
            class FooBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    if self.use_padding:
                        bs = forward_batch.batch_size
                    else:
                        bs = self.forward_metadata.batch_size
                    return self._run_prefill_kernel(q=q, batch_size=bs)
            """,
            line=7,
        ),
        Invalid(  # into a private helper that passes the parameter on to the kernel
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    bs = forward_batch.batch_size
                    return self._context(q, layer, batch_size=bs)

                def _context(self, q, layer, batch_size):
                    return trtllm_batch_context_with_kv_cache(
                        query=q,
                        batch_size=batch_size,
                        cum_seq_lens_q=self.forward_metadata.cu_seqlens_q,
                    )
            """,
            line=4,
        ),
    ]

    def words(self) -> tuple[str, ...]:
        return self.WORDS

    @cached_property
    def _padded_words(self) -> tuple[str, ...]:
        return padded_words(self.config.padded_counts + self.config.padding_calls)

    def wants(self, source: str) -> bool:
        """SGLang: the file names ``forward_batch`` and ``batch_size``; vLLM profile: it
        names a padded count (``num_input_tokens``, ...); either way, a backend class."""
        engines = engines_for(self.config.profile, source)
        sglang = SGLANG in engines and all(w in source for w in self.WORDS)
        vllm = VLLM in engines and any(w in source for w in self._padded_words)
        return (sglang or vllm) and has_backend_class_text(source, self.config.profile)

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        vllm = VLLM in module_engines_for(self.config.profile, ctx.module)
        sglang = SGLANG in module_engines_for(self.config.profile, ctx.module)
        for cls in iter_backend_classes(ctx.module, self.config.profile):
            methods = {fn.name.value: fn for fn in iter_methods(cls)}
            helpers = HelperSummaries(
                methods,
                lambda fn: self._classifier(fn, helpers, vllm=vllm, sglang=sglang),
                ctx.callee,
                track_containers=True,
            )
            per_method: dict[str, list[Finding]] = {}
            #: method name -> guard state at each forward-time `self.<method>(...)` call
            call_sites: dict[str, list[bool]] = defaultdict(list)
            for fn in methods.values():
                if not self.config.is_forward_method(fn.name.value):
                    continue
                if (sglang and forward_batch_params(fn)) or (vllm and self._names_padded_count(ctx, fn)):
                    per_method[fn.name.value] = self._check_method(ctx, fn, helpers, call_sites, vllm, sglang)
            for name, found in per_method.items():
                sites = call_sites.get(name, [])
                if name.startswith("_") and sites and all(sites):
                    continue  # a private helper reached only after its callers' re-plan guard
                findings.extend(found)
        return findings

    def _names_padded_count(self, ctx: ModuleContext, fn: cst.FunctionDef) -> bool:
        """The method's text names a padded count (cheap, before its tree is walked)."""
        text = ctx.method_text(fn)
        return any(w in text for w in self._padded_words)

    def _classifier(
        self,
        fn: cst.FunctionDef,
        helpers: HelperSummaries,
        *,
        reads_forward_batch: bool = True,
        vllm: bool = False,
        sglang: bool = True,
    ) -> Classifier:
        """Sources: ``forward_batch.batch_size`` reads (SGLang), padded-count reads
        (vLLM profile: ``attn_metadata.num_input_tokens``, a ``num_reqs_padded``
        parameter) -- unless ``reads_forward_batch`` is off: inside a helper only its
        tainted parameters count -- and ``self`` helpers whose result carries one.
        Comparisons are flags, not sizes."""
        holders = forward_batch_params(fn) if reads_forward_batch and sglang else frozenset()
        is_padded = self.config.is_padded_count
        padded = vllm and reads_forward_batch
        params = padded_params(fn, is_padded) if padded else frozenset()

        def classify(node: cst.CSTNode, state: FlowState) -> Verdict:
            if holders and is_batch_size_read(node, holders):
                return "source"
            if padded and is_padded_count_read(node, is_padded, params, self.config.is_padding_call):
                return "source"
            if isinstance(node, cst.Comparison) or (
                isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not)
            ):
                return "clean"  # `bs <= 8` is a policy flag, not a size
            if isinstance(node, cst.Attribute) and node.attr.value in TENSOR_FACTS:
                return "clean"  # `q.device`: where the tensor lives, not how many rows it has
            if isinstance(node, cst.Call):
                summary = helpers.summarize(node, state, classify)
                if summary is not None:
                    return "source" if any(summary) else "clean"
            return None

        return classify

    def _report(
        self,
        ctx: ModuleContext,
        anchor: cst.CSTNode,
        fn: cst.FunctionDef,
        detail: str,
        chain: Sequence[cst.CSTNode],
        replacement: Replacement | None,
        evidence: list[Evidence],
    ) -> Finding:
        """A finding; its message names the padding its source comes from (DP padding:
        ``forward_batch.batch_size``; else a CUDA-graph-padded count, vLLM profile)."""
        cuda_graph = bool(chain) and is_padded_count_read(
            chain[0], self.config.is_padded_count, padded_params(fn, self.config.is_padded_count), self.config.is_padding_call
        )
        if not cuda_graph and (forward_batch_params(fn) or not chain):
            return self.finding(ctx, anchor, fn, detail, replacement, evidence)
        found = self.finding(ctx, anchor, fn, detail, None, evidence)
        detail = detail.replace("(e.g. `cu_seqlens_q.shape[0] - 1`)", "(`num_actual_tokens`, `query_start_loc.shape[0] - 1`)")
        return replace(found, message=f"{VLLM_MESSAGE} {detail}")

    def _check_method(
        self,
        ctx: ModuleContext,
        fn: cst.FunctionDef,
        helpers: HelperSummaries,
        call_sites: dict[str, list[bool]],
        vllm: bool = False,
        sglang: bool = True,
    ) -> list[Finding]:
        findings: list[Finding] = []
        classify = self._classifier(fn, helpers, vllm=vllm, sglang=sglang)

        def on_statement(node: cst.CSTNode, state: FlowState) -> FlowState | None:
            calls = list(iter_calls(node))
            for call in calls:
                helper = helpers.helper_of(call)
                if helper is not None:
                    call_sites[helper.name.value].append(state.guarded)
            if state.guarded:
                return None
            if any(self.config.is_replan_call(ctx.callee(c) or "") for c in calls):
                return replace(state, guarded=True)  # re-planned for the batch as it is now
            for call in calls:
                kernel = ctx.callee(call)
                if kernel is None or not self.config.is_kernel_call(kernel):
                    if helpers.helper_of(call) is not None:
                        findings.extend(self._helper_sinks(ctx, fn, call, state, classify, helpers, vllm))
                    continue
                tainted = self._tainted_kernel_args(call, state, classify)
                if tainted:
                    shown = ", ".join(f"`{ctx.code_of_arg(a)}`" for a in tainted)
                    detail = (
                        f"{shown} passed to `{kernel}()`; take the size from the metadata "
                        "the kernel reads (e.g. `cu_seqlens_q.shape[0] - 1`)."
                    )
                    chain = taint_chain(tainted[0].value, state, classify)
                    evidence = _evidence(ctx, fn, chain, tainted, [("kernel", call, f"{kernel}()")])
                    findings.append(self._report(ctx, tainted[0], fn, detail, chain, self._fix(call), evidence))
            return None

        holders = forward_batch_params(fn) if sglang else frozenset()
        is_padded = self.config.is_padded_count
        params = padded_params(fn, is_padded) if vllm else frozenset()

        def size_read(node: cst.CSTNode, _: FlowState) -> Verdict:
            if holders and is_batch_size_read(node, holders):
                return "source"
            return "source" if vllm and is_padded_count_read(node, is_padded, params, self.config.is_padding_call) else None

        def after_if(stmt: cst.If, before: FlowState, after: FlowState) -> FlowState:
            # `if metadata.batch_size < forward_batch.batch_size: <re-plan or raise>`
            if tainted_parts(stmt.test, before, size_read) and self._replans_or_raises(ctx, stmt.body):
                return replace(after, guarded=True)
            return after

        walker = FlowWalker(
            classify,
            on_statement,
            after_if,
            call_summary=lambda c, st: helpers.summarize(c, st, classify),
            track_containers=True,
        )
        walker.run(fn.body.body if isinstance(fn.body, cst.IndentedBlock) else fn.body.body, FlowState())
        return findings

    def _tainted_kernel_args(self, call: cst.Call, state: FlowState, classify: Classifier) -> list[cst.Arg]:
        return [
            arg
            for arg in call.args
            if not (arg.keyword and self.config.is_ignored_kernel_arg(arg.keyword.value))
            and tainted_parts(arg.value, state, classify)
        ]

    def _helper_sinks(
        self,
        ctx: ModuleContext,
        fn: cst.FunctionDef,
        call: cst.Call,
        state: FlowState,
        classify: Classifier,
        helpers: HelperSummaries,
        vllm: bool = False,
    ) -> list[Finding]:
        """``self._helper(..., batch_size=bs)`` whose body hands ``batch_size`` to a kernel.

        Reported at the call site, in the calling method: the caller holds the padded
        value (and any re-plan guard), the helper is correct for a correct argument.
        Inside the helper only its parameters are sources: its own
        ``forward_batch.batch_size`` reads are reported where they are, if at all.
        """
        config = self.config

        def sink_args(c: cst.Call, st: FlowState, inner: Classifier) -> list[str] | None:
            name = ctx.callee(c)
            if name is None or not config.is_kernel_call(name):
                return None
            return [ctx.code_of_arg(a) for a in self._tainted_kernel_args(c, st, inner)]

        sinks = helpers.kernel_sinks(
            call,
            state,
            classify,
            sink_args,
            lambda c: config.is_replan_call(ctx.callee(c) or ""),
            param_classifier=lambda helper: self._classifier(helper, helpers, reads_forward_batch=False, vllm=vllm),
        )
        if not sinks:
            return []
        walker_args = [a for a in call.args if tainted_parts(a.value, state, classify)]
        anchor: cst.CSTNode = walker_args[0] if walker_args else call
        shown = ", ".join(f"`{ctx.code_of_arg(a)}`" for a in walker_args) or f"`{ctx.code(call)}`"
        first = sinks[0]
        via = " -> ".join(f"`self.{h}()`" for h in first.via)
        inner_args = ", ".join(f"`{a}`" for a in first.args)
        detail = (
            f"{shown} passed to {via}, which passes it to `{first.kernel}()` as {inner_args}; "
            "take the size from the metadata the kernel reads (e.g. `cu_seqlens_q.shape[0] - 1`)."
        )
        chain = taint_chain(walker_args[0].value, state, classify) if walker_args else ()
        evidence = _evidence(ctx, fn, chain, walker_args, [("via", call, f"{via} -> `{first.kernel}()` as {inner_args}")])
        return [self._report(ctx, anchor, fn, detail, chain, None, evidence)]

    @staticmethod
    def _replans_or_raises(ctx: ModuleContext, body: cst.BaseSuite) -> bool:
        """The guard's body re-plans the metadata (``self.init_forward_metadata*``) or raises."""
        replans = False
        is_replan_call = ctx.config.is_replan_call

        class _Scan(cst.CSTVisitor):
            def visit_Raise(self, _: cst.Raise) -> None:
                nonlocal replans
                replans = True

            def visit_Call(self, call: cst.Call) -> None:
                nonlocal replans
                name = ctx.callee(call)
                if name is not None and is_replan_call(name):
                    replans = True

        body.visit(_Scan())
        return replans

    @staticmethod
    def _fix(call: cst.Call) -> Replacement | None:
        """``batch_size=X.shape[0] - 1`` for a call that passes ``cum_seq_lens_q=X``
        (``X`` as written, parenthesized if it must be); None when it cannot, or when the
        call already has that form."""
        size, offsets = keyword_arg(call, SIZE_KEYWORD), keyword_arg(call, OFFSETS_KEYWORD)
        if size is None or offsets is None:
            return None
        base = offsets.value.deep_clone()
        if not isinstance(base, _PRIMARY) and not base.lpar:
            base = base.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])
        shape0 = cst.Subscript(
            value=cst.Attribute(value=base, attr=cst.Name("shape")),
            slice=[cst.SubscriptElement(slice=cst.Index(value=cst.Integer("0")))],
        )
        value = cst.BinaryOperation(left=shape0, operator=cst.Subtract(), right=cst.Integer("1"))
        if size.value.deep_equals(value):
            return None
        args = [arg.with_changes(value=value) if arg is size else arg for arg in call.args]
        return Replacement(call, call.with_changes(args=args))
