"""GR001 padded-batch-size-in-kernel-call (SGLang #21649)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .cst_analysis import iter_calls, keyword_arg
from .dataflow import Classifier, FlowState, FlowWalker, Verdict, taint_chain, tainted_parts
from .finding import Evidence
from .forward_batch_facts import forward_batch_params, is_batch_size_read
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


class PaddedBatchSizeInKernelCall(LintRule):
    """A DP-padded `forward_batch.batch_size` reaches an FMHA kernel at forward time.

    ## What it does
    In an attention backend's forward-time methods (`forward_extend`, `forward_decode`,
    `_forward_*`), flags a kernel-call argument whose value is derived from
    `forward_batch.batch_size`: the attribute itself, a local alias
    (`bs = forward_batch.batch_size`), arithmetic on it, or a tensor sized or sliced by
    it (`out = torch.empty(bs, ...)`). Metadata planners (`init_forward_metadata*`,
    CUDA-graph metadata methods) are not forward-time code. A dominating guard that
    re-plans or raises when the sizes disagree
    (`if metadata.batch_size < forward_batch.batch_size: self.init_forward_metadata(forward_batch)`)
    makes later uses safe. The value is followed into `self` helper methods (two
    levels): a call `self._helper(..., batch_size=bs)` whose helper hands that
    parameter on to a kernel is reported at the call site, under the calling method's
    symbol. Kernels are recognized by name, import aliases resolved
    (`from flashinfer.prefill import trtllm_batch_context_with_kv_cache as context_kernel`).

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
    The value is followed through local names, both arms of an `if`, loops and `self`
    helpers two levels deep; not through attributes of other objects, containers
    filled elsewhere, or functions of other modules. A guard counts only when it
    re-plans (`extra-replan-calls`) or raises.

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

    ## References
    - [SGLang #21649](https://github.com/sgl-project/sglang/pull/21649): the trtllm
      context kernel takes its batch size from `cu_seqlens_q`.
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

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            methods = {fn.name.value: fn for fn in iter_methods(cls)}
            helpers = HelperSummaries(methods, lambda fn: self._classifier(fn, helpers), ctx.callee)
            per_method: dict[str, list[Finding]] = {}
            #: method name -> guard state at each forward-time `self.<method>(...)` call
            call_sites: dict[str, list[bool]] = defaultdict(list)
            for fn in methods.values():
                if not self.config.is_forward_method(fn.name.value):
                    continue
                if forward_batch_params(fn):
                    per_method[fn.name.value] = self._check_method(ctx, fn, helpers, call_sites)
            for name, found in per_method.items():
                sites = call_sites.get(name, [])
                if name.startswith("_") and sites and all(sites):
                    continue  # a private helper reached only after its callers' re-plan guard
                findings.extend(found)
        return findings

    @staticmethod
    def _classifier(
        fn: cst.FunctionDef, helpers: HelperSummaries, *, reads_forward_batch: bool = True
    ) -> Classifier:
        """Sources: ``forward_batch.batch_size`` reads (unless ``reads_forward_batch`` is
        off: inside a helper only its tainted parameters count) and ``self`` helpers whose
        result carries one. Comparisons are flags, not sizes."""
        holders = forward_batch_params(fn) if reads_forward_batch else frozenset()

        def classify(node: cst.CSTNode, state: FlowState) -> Verdict:
            if holders and is_batch_size_read(node, holders):
                return "source"
            if isinstance(node, cst.Comparison) or (
                isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Not)
            ):
                return "clean"  # `bs <= 8` is a policy flag, not a size
            if isinstance(node, cst.Call):
                summary = helpers.summarize(node, state, classify)
                if summary is not None:
                    return "source" if any(summary) else "clean"
            return None

        return classify

    def _check_method(
        self,
        ctx: ModuleContext,
        fn: cst.FunctionDef,
        helpers: HelperSummaries,
        call_sites: dict[str, list[bool]],
    ) -> list[Finding]:
        findings: list[Finding] = []
        classify = self._classifier(fn, helpers)

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
                        findings.extend(self._helper_sinks(ctx, fn, call, state, classify, helpers))
                    continue
                tainted = self._tainted_kernel_args(call, state, classify)
                if tainted:
                    shown = ", ".join(f"`{ctx.code_of_arg(a)}`" for a in tainted)
                    detail = (
                        f"{shown} passed to `{kernel}()`; take the size from the metadata "
                        "the kernel reads (e.g. `cu_seqlens_q.shape[0] - 1`)."
                    )
                    evidence = _evidence(
                        ctx, fn, taint_chain(tainted[0].value, state, classify), tainted, [("kernel", call, f"{kernel}()")]
                    )
                    findings.append(self.finding(ctx, tainted[0], fn, detail, self._fix(call), evidence))
            return None

        holders = forward_batch_params(fn)

        def size_read(node: cst.CSTNode, _: FlowState) -> Verdict:
            return "source" if is_batch_size_read(node, holders) else None

        def after_if(stmt: cst.If, before: FlowState, after: FlowState) -> FlowState:
            # `if metadata.batch_size < forward_batch.batch_size: <re-plan or raise>`
            if tainted_parts(stmt.test, before, size_read) and self._replans_or_raises(ctx, stmt.body):
                return replace(after, guarded=True)
            return after

        walker = FlowWalker(
            classify, on_statement, after_if, call_summary=lambda c, st: helpers.summarize(c, st, classify)
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
            param_classifier=lambda helper: self._classifier(helper, helpers, reads_forward_batch=False),
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
        return [self.finding(ctx, anchor, fn, detail, evidence=evidence)]

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
