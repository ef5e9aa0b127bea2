"""GR101 forward-batch-size-in-backend (opt-in strict form of GR001)."""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from .backend_scope import iter_backend_classes, iter_methods
from .forward_batch_facts import forward_batch_params, is_batch_size_read
from .rule import Finding, LintRule, ModuleContext
from .rule_info import Invalid, Valid


class ForwardBatchSizeInBackend(LintRule):
    """Any read of `forward_batch.batch_size` inside an attention backend (opt-in).

    ## What it does
    Flags every `forward_batch.batch_size` read in any method of an attention backend
    class, planners and forward-time code alike. It is the strict form of GR001 for
    teams that ban the field outright; select it with `--select GR101`.

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
    None.

    ## References
    - [SGLang #21649](https://github.com/sgl-project/sglang/pull/21649): the padded size
      reached the trtllm context kernel.
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
    ]

    def check(self, ctx: ModuleContext) -> Iterable[Finding]:
        findings: list[Finding] = []
        for cls in iter_backend_classes(ctx.module):
            for fn in iter_methods(cls):
                holders = forward_batch_params(fn)
                if not holders:
                    continue
                reads: list[cst.Attribute] = []

                class _Reads(cst.CSTVisitor):
                    def visit_Attribute(self, node: cst.Attribute) -> None:
                        if is_batch_size_read(node, holders):
                            reads.append(node)

                fn.body.visit(_Reads())
                findings.extend(self.finding(ctx, node, fn, "") for node in reads)
        return findings
