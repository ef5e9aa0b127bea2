"""``forward-mode-kernel``: the kernel can run the forward mode's query layout.

Statement: ragged forward modes (EXTEND, MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2) go to a
prefill/context kernel, never to a decode kernel that assumes a uniform
``q_len_per_req``; an IDLE launch is empty.

Source: SGLang #24856: DRAFT_EXTEND_V2 (variable accept lengths) was routed to the
decode kernel.

Shape part (:func:`check_forward_mode_kernel`): the forward mode against the kernel
kind, and an IDLE launch's batch size and query rows (0). Value part: none (varying
per-request query lengths on a decode kernel are ``uniform-q-len``'s).
"""

from __future__ import annotations

from typing import Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..forward_mode import Kernel

INVARIANT = Invariant(
    id="forward-mode-kernel",
    statement=(
        "The kernel can run the forward mode's query layout: ragged modes (EXTEND, "
        "MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2 with variable accept lengths) go to a "
        "prefill/context kernel, never to a decode kernel that assumes a uniform "
        "q_len_per_req; an IDLE launch is empty (batch size 0, no query rows)."
    ),
    level=Level.SHAPES,
    source=sglang_pr(24856),
    url=sglang_url(24856),
    cause=(
        "a dispatch like `if forward_mode.is_decode_or_idle() or "
        "forward_mode.is_draft_extend(...)` sent DRAFT_EXTEND_V2 to the decode "
        "kernel"
    ),
    fix=(
        "route every ragged forward mode to forward_extend / the context kernel "
        "(trtllm_batch_context_with_kv_cache); only DECODE and TARGET_VERIFY may use "
        "the decode kernel"
    ),
    measured="on an H200, variable-length draft-extend queries on xqa returned wrong numbers without crashing",
)


@register(INVARIANT, Level.SHAPES, needs=("batch-size",))
def check_forward_mode_kernel(ctx: CheckContext) -> Optional[Finding]:
    """``forward-mode-kernel`` (SGLang #24856): ragged forward modes (EXTEND,
    MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2) never go to a decode kernel; IDLE
    launches are empty (batch size 0, no query rows)."""
    batch = ctx.batch
    mode = batch.forward_mode
    if batch.kernel is Kernel.DECODE and mode.is_ragged():
        return Finding(
            f"forward mode {mode.name} has ragged per-request query lengths but was routed to the decode kernel",
            {"forward_mode": mode.name, "kernel": batch.kernel.value},
        )
    if mode.is_idle():
        rows = batch.query_row_count()
        if (ctx.batch_size or 0) != 0 or (rows or 0) != 0:
            return Finding(
                "an IDLE launch must be empty",
                {"forward_mode": mode.name, "batch_size": ctx.batch_size, ctx.query_rows_field(): rows},
            )
    return None
