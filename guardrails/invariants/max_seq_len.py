"""``max-seq-len``: the scalar bounds cover the data.

Statement: ``max_seq_len_q`` >= the longest per-request query length and
``max_seq_len_kv`` >= the longest KV length (``seq_lens``, else the ``cu_seqlens_kv``
differences, else the CSR length); kernels size grids from these scalars.

Source: SGLang #21987: scalars like ``max_seq_len_q`` were baked in at CUDA-graph
capture.

Shape part: none. Value part (:func:`check_max_seq_len`): the per-request lengths from
the host copy against the two scalars.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level

INVARIANT = Invariant(
    id="max-seq-len",
    statement=(
        "The scalar bounds cover the data: max_seq_len_q >= the longest per-request "
        "query length, max_seq_len_kv >= the longest KV length (seq_lens; when it is "
        "absent, the cu_seqlens_kv differences or the CSR length (kv_indptr[i+1] - "
        "kv_indptr[i] - 1) * page_size + kv_last_page_len[i]). Kernels size grids and "
        "tiles from these scalars and skip whatever lies beyond them."
    ),
    level=Level.VALUES,
    source=sglang_pr(21987),
    url=sglang_url(21987),
    cause=(
        "the scalar was computed at CUDA-graph capture (or from a previous step / "
        "the CPU copy of other lengths) and not updated for this batch"
    ),
    fix=(
        "compute max_seq_len_* from the same lengths that fill the index tensors, or "
        "use a static upper bound (num_draft_tokens, max_context_len) under CUDA "
        "graphs"
    ),
)


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "cu-seqlens-monotone"))
def check_max_seq_len(ctx: CheckContext) -> Optional[Finding]:
    """``max-seq-len`` (SGLang #21987): max_seq_len_q >= every per-request
    query length and max_seq_len_kv >= every KV length (tokens; seq_lens, else
    cu_seqlens_kv differences, else the CSR length)."""
    fields: dict[str, Any] = {}
    details: list[str] = []
    q_lens = ctx.q_lens()
    for scalar, lens, longest_what, length_fields in (
        ("max_seq_len_q", q_lens, "query", lambda i: {ctx.q_len_field(i): q_lens[i]}),
        ("max_seq_len_kv", ctx.kv_lens(), "KV sequence", ctx.kv_len_fields),
    ):
        bound = getattr(ctx.batch, scalar)
        if bound is None or not lens or max(lens) <= bound:
            continue
        details.append(f"{scalar} is below the longest {longest_what}")
        fields[scalar] = bound
        fields.update(length_fields(lens.index(max(lens))))
    if not details:
        return None
    return Finding("; ".join(details), fields)
