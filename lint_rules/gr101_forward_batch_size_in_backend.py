"""GR101 forward-batch-size-in-backend (opt-in strict form of GR001)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import cached_property

import libcst as cst

from .backend_scope import has_backend_class_text, iter_backend_classes, iter_methods
from .engine_profile import SGLANG, VLLM, engines_for, module_engines_for, padded_words
from .forward_batch_facts import forward_batch_params, is_batch_size_read
from .padded_count_facts import is_padded_count_read, padded_params
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid


#: The message of a padded-count read (vLLM profile).
VLLM_MESSAGE = "CUDA-graph-padded count read inside an attention backend (strict form of GR001):"


class ForwardBatchSizeInBackend(LintRule):
    """Any read of a padded size inside an attention backend (opt-in).

    ## What it does
    Flags every `forward_batch.batch_size` read in any method of an attention backend
    class, planners and forward-time code alike. It is the strict form of GR001 for
    teams that ban the field outright; select it with `--select GR101`.

    In the vLLM profile (`profile = "vllm"`, or `auto` on a file that imports vLLM) it
    flags every read of a CUDA-graph-padded count instead (`padded-counts`:
    `attn_metadata.num_input_tokens`, a `num_reqs_padded` parameter) and every call of a
    padding function (`padding-calls`: `self.vllm_config.pad_for_cudagraph(n)`) in the
    backends, `*AttentionImpl` and `*MetadataBuilder` classes alike.

    ## Why is this bad?
    `forward_batch.batch_size` is the scheduler's (possibly DP-padded) size; the
    kernel's truth is the metadata it reads. Every read is a place where the two can
    disagree (SGLang #21649).

    ## Known problems
    By design it also flags reads that are correct (a planner sizing the metadata, a
    log line); suppress those with `# fmha-guard: ignore[GR101] reason`. Only
    parameters named `forward_batch` or annotated `ForwardBatch` are recognized.

    ## Example
    ```python
    def init_forward_metadata(self, forward_batch):
        bs = forward_batch.batch_size
    ```

    ## Use instead
    Size from the planned metadata, or from a tensor the planner owns:
    ```python
    def init_forward_metadata(self, forward_batch):
        bs = forward_batch.seq_lens.shape[0]
    ```

    ## Options
    - `profile`: `sglang`, `vllm` or `auto` (per file, from its imports).
    - `extra-padded-counts` / `extra-padding-calls`: the vLLM profile's padded counts.

    ## References
    - [SGLang #21649](https://github.com/sgl-project/sglang/pull/21649): the padded size
      reached the trtllm context kernel.
    - [vLLM #28579](https://github.com/vllm-project/vllm/pull/28579): pad for CUDA
      graphs before the attention metadata is built, not inside the backends.
    """

    CODE = "GR101"
    NAME = "forward-batch-size-in-backend"
    MESSAGE = "`forward_batch.batch_size` read inside an attention backend (strict form of GR001)."
    WORDS = ("batch_size", "forward_batch")
    DEFAULT_ENABLED = False

    VALID = [
        Valid(
            """
            class FooBackend:
                def init_forward_metadata(self, forward_batch):
                    bs = forward_batch.seq_lens.shape[0]
            """
        ),
        Valid(
            """
            class Scheduler:
                def step(self, forward_batch):
                    return forward_batch.batch_size
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooBackend:
                def init_forward_metadata(self, forward_batch):
                    bs = forward_batch.batch_size
            """,
            line=3,
        ),
        Invalid(  # vLLM 0.11 FlashInferMetadataBuilder.build: padding inside the builder
            """
            from vllm.v1.attention.backends.utils import AttentionMetadataBuilder

            class FlashInferMetadataBuilder(AttentionMetadataBuilder):
                def build(self, common_prefix_len, common_attn_metadata, fast_build=False):
                    num_decodes = common_attn_metadata.num_reqs
                    num_input_tokens = self.vllm_config.pad_for_cudagraph(num_decodes)
                    return num_input_tokens
            """,
            line=6,
        ),
    ]

    @cached_property
    def _padded_words(self) -> tuple[str, ...]:
        return padded_words(self.config.padded_counts + self.config.padding_calls)

    def wants(self, source: str) -> bool:
        engines = engines_for(self.config.profile, source)
        sglang = SGLANG in engines and all(w in source for w in self.WORDS)
        vllm = VLLM in engines and any(w in source for w in self._padded_words)
        return (sglang or vllm) and has_backend_class_text(source, self.config.profile)

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        engines = module_engines_for(self.config.profile, ctx.module)
        config = self.config
        for cls in iter_backend_classes(ctx.module, config.profile):
            for fn in iter_methods(cls):
                holders = forward_batch_params(fn) if SGLANG in engines else frozenset()
                vllm = VLLM in engines
                if not holders and not vllm:
                    continue
                params = padded_params(fn, config.is_padded_count) if vllm else frozenset()
                reads: list[cst.CSTNode] = []
                padded: list[cst.CSTNode] = []

                class _Reads(cst.CSTVisitor):
                    def on_visit(self, node: cst.CSTNode) -> bool:
                        if holders and is_batch_size_read(node, holders):
                            reads.append(node)
                        elif vllm and is_padded_count_read(node, config.is_padded_count, params, config.is_padding_call):
                            padded.append(node)
                        return True

                fn.body.visit(_Reads())
                findings.extend(self.finding(ctx, node, fn, "") for node in reads)
                for node in padded:
                    found = self.finding(ctx, node, fn, "")
                    code = ctx.evidence("", node, fn).code
                    findings.append(replace(found, message=f"{VLLM_MESSAGE} `{code}`."))
        return findings
