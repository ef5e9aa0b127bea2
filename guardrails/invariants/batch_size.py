"""``batch-size``: every place a launch states its batch size agrees.

Statement: the explicit ``batch_size`` argument == ``cu_seqlens_q.shape[0] - 1`` ==
``cu_seqlens_kv.shape[0] - 1`` == ``seq_lens.shape[0]`` == ``page_table.shape[0]``
(== ``swa_page_table.shape[0]``) == ``kv_indptr.shape[0] - 1`` ==
``kv_last_page_len.shape[0]`` == the first dim of FlashAttention-3's ``q_descale`` /
``k_descale`` / ``v_descale`` (``[batch_size, num_kv_heads]``), for those present.

Source: SGLang #21649: ``forward_extend`` passed the DP-padded
``forward_batch.batch_size`` (12) to ``trtllm_batch_context_with_kv_cache`` while
``cu_seqlens_q`` held 10 requests. SGLang #37785 is the same bug on FA3's descales:
``k_descale`` / ``v_descale`` expanded to ``forward_batch.batch_size``, which had
grown past ``cu_seqlens_q``'s batch (DRAFT_EXTEND_V2, FP8 KV cache, DP attention).

Shape part (:func:`check_batch_size`): compares the batch sizes
:meth:`~guardrails.models.AttentionBatch.batch_size_sources` lists (shapes and the
scalar only) and records the agreed one in ``ctx.batch_size`` for the checks that need
``batch-size``. Value part: none.
"""

from __future__ import annotations

from typing import Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level

INVARIANT = Invariant(
    id="batch-size",
    statement=(
        "Every place the launch states the batch size agrees: the explicit batch_size "
        "argument == cu_seqlens_q.shape[0] - 1 == cu_seqlens_kv.shape[0] - 1 == "
        "seq_lens.shape[0] == page_table.shape[0] (== swa_page_table.shape[0]) == "
        "kv_indptr.shape[0] - 1 == kv_last_page_len.shape[0] (FlashInfer's CSR "
        "paged-KV arguments) == the first dim of FlashAttention-3's q_descale / "
        "k_descale / v_descale ([batch_size, num_kv_heads]), for those present."
    ),
    level=Level.SHAPES,
    source=sglang_pr(21649),
    url=sglang_url(21649),
    cause=(
        "a DP-attention padded batch size (forward_batch.batch_size, padded to the "
        "largest rank) was passed while the per-request metadata held only the real "
        "requests, so the kernel walks rows that do not exist; or a "
        "CUDA-graph index buffer sized for the largest batch (e.g. FlashInfer's "
        "kv_indptr with max_bs + 1 entries) was passed without slicing it to this batch; "
        "or FP8 descales were expanded to forward_batch.batch_size (SGLang #37785)"
    ),
    fix=(
        "derive the batch size from the metadata the kernel reads, e.g. "
        "cu_seqlens_q.shape[0] - 1 (also for the descales' shape), instead of "
        "forward_batch.batch_size"
    ),
    measured="on an H200, 2 extra rows in seq_lens/block_tables made xqa return wrong numbers without crashing",
)


@register(INVARIANT, Level.SHAPES)
def check_batch_size(ctx: CheckContext) -> Optional[Finding]:
    """``batch-size`` (SGLang #21649): batch_size == cu_seqlens_q.shape[0] - 1
    == cu_seqlens_kv.shape[0] - 1 == seq_lens.shape[0] == page_table.shape[0]
    (== swa_page_table.shape[0]) == kv_indptr.shape[0] - 1 ==
    kv_last_page_len.shape[0] for those present. Records the agreed value in
    ``ctx.batch_size``."""
    sources = ctx.batch.batch_size_sources()
    negative = {k: v for k, v in sources.items() if v < 0}
    if negative:
        return Finding(
            "an empty indptr tensor (cu_seqlens_q/kv, kv_indptr) states a negative batch size (it needs batch_size + 1 entries)",
            sources,
        )
    if len(set(sources.values())) > 1:
        return Finding("the batch sizes stated by the launch disagree", sources)
    ctx.batch_size = next(iter(sources.values()), None)
    return None
