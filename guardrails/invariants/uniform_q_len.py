"""``uniform-q-len``: a decode kernel gets the same number of query rows for every request.

Statement: with a decode kernel every ``cu_seqlens_q[i+1] - cu_seqlens_q[i]`` equals
``q_len_per_req`` (1 when unset).

Source: SGLang #24856: DRAFT_EXTEND_V2's variable accept lengths reached the decode
kernel.

Shape part: none (the forward-mode routing is ``forward-mode-kernel``'s). Value part
(:func:`check_uniform_q_len`): reads ``cu_seqlens_q`` from the host copy.
"""

from __future__ import annotations

from typing import Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..forward_mode import Kernel

INVARIANT = Invariant(
    id="uniform-q-len",
    statement=(
        "A decode kernel given q_len_per_req needs exactly q_len_per_req query rows "
        "per request: every cu_seqlens_q[i+1] - cu_seqlens_q[i] equals q_len_per_req "
        "(1 when unset). Variable accept lengths (DRAFT_EXTEND_V2) violate it."
    ),
    level=Level.VALUES,
    source=sglang_pr(24856),
    url=sglang_url(24856),
    cause=(
        "a ragged batch (speculative draft-extend with per-request accept lengths) "
        "reached a decode kernel that reshapes q as [batch_size, q_len_per_req, ...]; "
        "rows shift into the wrong requests"
    ),
    fix=(
        "send ragged batches to the context/prefill kernel, or pad every request to "
        "q_len_per_req tokens before the decode kernel"
    ),
    measured="on an H200, xqa returned wrong numbers without crashing",
)


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "cu-seqlens-monotone"))
def check_uniform_q_len(ctx: CheckContext) -> Optional[Finding]:
    """``uniform-q-len`` (SGLang #24856): on a decode kernel every
    ``cu_seqlens_q[i+1] - cu_seqlens_q[i]`` equals q_len_per_req (default 1)."""
    if ctx.batch.kernel is not Kernel.DECODE or "cu_seqlens_q" not in ctx.host:
        return None
    q_len = ctx.batch.decode_q_len()
    lens = ctx.q_lens() or []
    bad = [i for i, n in enumerate(lens) if n != q_len]
    if not bad:
        return None
    i = bad[0]
    return Finding(
        "the decode kernel assumes q_len_per_req query rows for every request but the per-request query lengths vary",
        {
            "forward_mode": ctx.batch.forward_mode.name,
            "q_len_per_req": q_len,
            f"cu_seqlens_q[{i + 1}] - cu_seqlens_q[{i}]": lens[i],
            "per-request q lengths": lens,
            "requests off q_len_per_req": len(bad),
        },
    )
