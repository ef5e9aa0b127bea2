"""GR003 draft-extend-routed-to-decode-kernel (SGLang #24856)."""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .cst_analysis import iter_ifs
from .draft_extend_routing import routings
from .forward_mode_predicates import is_mode_only_test, positive_modes
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid

_MODE_NAMES = {"v1": "DRAFT_EXTEND", "v2": "DRAFT_EXTEND_V2"}


class DraftExtendRoutedToDecodeKernel(LintRule):
    """A draft-extend batch goes to a fixed-`q_len` decode kernel without draft-extend metadata.

    ## What it does
    In an attention backend's forward-time methods (`forward_extend`, ...), finds a
    branch taken for `forward_mode.is_draft_extend*()` (alone, or combined as in
    `is_target_verify() or is_draft_extend_v2()`, directly or through a local flag such
    as `uses_decode_kernel = ...`) that calls a decode kernel assuming one uniform
    `q_len_per_req` (`trtllm_batch_decode_with_kv_cache[_mla]`, `xqa*`,
    `_run_fixed_q_len_decode`-style helpers, or a `self` helper that calls one).

    It reports the call only when no metadata method of the class
    (`init_forward_metadata*`, `*_metadata`, CUDA-graph `_build_*` / `_apply_*` bodies)
    has a branch dedicated to that draft-extend mode: a test made only of forward-mode
    predicates. A generic extend branch such as
    `if any(extend_prefix_lens) or is_draft_extend_v2():` builds extend-shaped metadata
    and does not count.

    ## Why is this bad?
    Draft extend carries a variable number of accepted tokens per request. The decode
    kernel reads `q_len_per_req` rows per request and a `seq_lens` that already counts
    them; extend-shaped metadata (`cu_seqlens_q` from a cumsum, KV-only
    `cache_seqlens`) makes it read other requests' queries or past the page table: an
    illegal memory access on Blackwell (SGLang #24566, reverted by #24856; re-landed in
    #28241 once draft-extend metadata was built per mode).

    ## Known problems
    The mode is recognized through `forward_mode.is_*()` predicates and local flags
    bound to them; a mode passed on as a value, or a routing decided in another module,
    is not seen. `self` helpers are followed one level deep. A dedicated metadata
    branch counts whatever it builds.

    ## Example
    ```python
    def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_target_verify():
            self.forward_metadata = self._verify_metadata(forward_batch)

    def forward_extend(self, q, k, v, layer, forward_batch):
        if forward_mode.is_target_verify() or forward_mode.is_draft_extend_v2():
            return trtllm_batch_decode_with_kv_cache(
                query=q, q_len_per_req=self.forward_metadata.max_seq_len_q
            )
    ```

    ## Use instead
    Build decode-shaped metadata for the mode (a uniform `num_tokens_per_req` stride,
    `seq_lens` including the new tokens) in a dedicated branch, or keep draft extend
    on the context kernel:
    ```python
    def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_target_verify():
            self.forward_metadata = self._verify_metadata(forward_batch)
        elif forward_batch.forward_mode.is_draft_extend_v2():
            self.forward_metadata = self._draft_extend_metadata(forward_batch)
    ```

    ## Options
    - `extra-decode-kernels`: more kernels that assume one uniform `q_len_per_req`.
    - `extra-planning-methods`: more metadata methods whose branches count.
    - `extra-forward-methods`: more forward-time methods to look in.

    ## References
    - [SGLang #24856](https://github.com/sgl-project/sglang/pull/24856): reverts #24566,
      which routed DRAFT_EXTEND_V2 to the decode kernel.
    - [SGLang #28241](https://github.com/sgl-project/sglang/pull/28241): the re-landed
      routing, with draft-extend metadata built per mode.
    """

    CODE = "GR003"
    NAME = "draft-extend-routed-to-decode-kernel"
    MESSAGE = "draft-extend batch routed to a fixed-q_len decode kernel (SGLang #24856):"
    WORDS = ("is_draft_extend", "forward_extend")

    VALID = [
        Valid(  # the re-landed form (#28241): the metadata has a draft-extend-v2 branch
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        self.forward_metadata = self._verify_metadata(forward_batch)
                    elif forward_batch.forward_mode.is_draft_extend_v2():
                        self.forward_metadata = self._draft_extend_metadata(forward_batch)
                    else:
                        self.forward_metadata = self._extend_metadata(forward_batch)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    uses_decode_kernel = (
                        forward_batch.forward_mode.is_target_verify()
                        or forward_batch.forward_mode.is_draft_extend_v2()
                    )
                    if uses_decode_kernel:
                        return self._run_fixed_q_len_decode(q, q_len_per_req=self.forward_metadata.max_seq_len_q)
                    return trtllm_batch_context_with_kv_cache(query=q)
            """
        ),
        Valid(  # a CUDA-graph metadata body with a dedicated draft-extend branch counts
            """
            class TRTLLMMLABackend(FlashInferMLAAttnBackend):
                def _apply_cuda_graph_metadata(self, bs, forward_mode, spec_info):
                    if forward_mode.is_target_verify():
                        self._verify(bs)
                    elif forward_mode.is_draft_extend(include_v2=True):
                        self._draft_extend(bs, spec_info)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if forward_batch.forward_mode.is_draft_extend(include_v2=True):
                        return flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla(query=q)
                    return trtllm_ragged_attention_deepseek(query=q)
            """
        ),
        Valid(  # draft extend stays on the context kernel (#24856's fix)
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        return trtllm_batch_decode_with_kv_cache(query=q)
                    return trtllm_batch_context_with_kv_cache(query=q)
            """
        ),
        Valid(  # the negated test: the decode kernel runs for everything but draft extend
            """
            class FooBackend(AttentionBackend):
                def forward_extend(self, q, k, v, layer, forward_batch):
                    if not forward_batch.forward_mode.is_draft_extend_v2():
                        return trtllm_batch_decode_with_kv_cache(query=q)
                    return trtllm_batch_context_with_kv_cache(query=q)
            """
        ),
    ]
    INVALID = [
        Invalid(  # SGLang #24566 as #24856 reverted it
            """
            class TRTLLMHAAttnBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        self.forward_metadata = self._verify_metadata(forward_batch)
                    elif any(forward_batch.extend_prefix_lens_cpu) or forward_batch.forward_mode.is_draft_extend_v2():
                        self.forward_metadata = self._extend_metadata(forward_batch)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    if (
                        forward_batch.forward_mode.is_target_verify()
                        or forward_batch.forward_mode.is_draft_extend_v2()
                    ):
                        o = flashinfer.decode.trtllm_batch_decode_with_kv_cache(
                            query=q, q_len_per_req=self.forward_metadata.max_seq_len_q
                        )
                    else:
                        o = flashinfer.prefill.trtllm_batch_context_with_kv_cache(query=q)
                    return o
            """,
            line=13,
        ),
        Invalid(  # through a local flag and a private fixed-q_len helper
            """
            class FooBackend(AttentionBackend):
                def init_forward_metadata(self, forward_batch):
                    if forward_batch.forward_mode.is_target_verify():
                        self.forward_metadata = self._verify_metadata(forward_batch)

                def forward_extend(self, q, k, v, layer, forward_batch):
                    use_decode = forward_batch.forward_mode.is_draft_extend(include_v2=True)
                    if use_decode:
                        return self._decode(q)
                    return trtllm_batch_context_with_kv_cache(query=q)

                def _decode(self, q):
                    return xqa_batch_decode_with_kv_cache(query=q)
            """,
            line=9,
        ),
    ]

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            methods = {fn.name.value: fn for fn in iter_methods(cls)}
            covered: set[str] | None = None  # computed on the first routing branch
            for fn in methods.values():
                if not self.config.is_forward_method(fn.name.value):
                    continue
                for routing in routings(fn, methods, ctx):
                    if covered is None:
                        covered = self._covered_modes(methods)
                    missing = routing.modes - covered
                    if not missing:
                        continue
                    modes = " / ".join(_MODE_NAMES[m] for m in sorted(missing))
                    findings.append(
                        self.finding(
                            ctx,
                            routing.call,
                            fn,
                            f"{modes} reaches `{routing.kernel}()` but no metadata method of "
                            f"`{cls.name.value}` has a branch for {modes}; build decode-shaped "
                            "metadata for the mode or keep it on the context kernel.",
                        )
                    )
        return findings

    def _covered_modes(self, methods: dict[str, cst.FunctionDef]) -> set[str]:
        """Draft-extend modes that a metadata method has a dedicated branch for."""
        covered: set[str] = set()
        for name, fn in methods.items():
            if not self.config.is_planning_method(name) or self.config.is_forward_method(name):
                continue
            for stmt in iter_ifs(fn.body):
                if is_mode_only_test(stmt.test):
                    covered |= positive_modes(stmt.test)
        return covered
