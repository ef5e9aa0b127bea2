"""``kv-layout``: the KV cache matches the declared layout and the query.

Statement: the cache's page size equals the page size the page table was built with,
its head_dim equals ``q.shape[-1]``, the query head count is a multiple of
``num_kv_heads`` and the head_dim axis is contiguous. NHD is ``[num_pages, page_size,
num_kv_heads, head_dim]``, HND ``[num_pages, num_kv_heads, page_size, head_dim]``.

Source: the FlashInfer paged KV-cache layout contract (``kv_layout='NHD'/'HND'``).

Shape part (:func:`check_kv_layout`): the :class:`~guardrails.models.PagedKVCache`
sizes against ``batch.page_size`` and the query shape. Value part: none.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..tensor_facts import shape_of

INVARIANT = Invariant(
    id="kv-layout",
    statement=(
        "The KV cache matches the declared layout and the query: its page size equals "
        "the page size the page table was built with, its head_dim equals "
        "q.shape[-1], the query head count is a multiple of num_kv_heads, and the "
        "head_dim axis is contiguous (stride 1). NHD is [num_pages, page_size, "
        "num_kv_heads, head_dim], HND is [num_pages, num_kv_heads, page_size, head_dim]."
    ),
    level=Level.SHAPES,
    source="FlashInfer paged KV-cache layout contract (kv_layout='NHD'/'HND')",
    cause=(
        "an NHD cache was passed where HND is declared (trtllm-gen expects HND) or "
        "vice versa, so page_size and num_kv_heads are swapped; or the per-layer "
        "buffer of another layer/pool was passed"
    ),
    fix=(
        "pass kv_layout matching the tensor (or .permute to it) and the per-layer "
        "buffer of the pool that built the page table"
    ),
)


@register(INVARIANT, Level.SHAPES)
def check_kv_layout(ctx: CheckContext) -> Optional[Finding]:
    """``kv-layout``: the KV cache's page size (tokens) equals
    ``batch.page_size``, its head_dim axis has stride 1, and a given query
    ``[num_tokens, num_qo_heads, head_dim]`` has the cache's head_dim and a
    head count divisible by num_kv_heads."""
    batch, kv = ctx.batch, ctx.kv_cache
    problems: dict[str, Any] = {}
    details: list[str] = []
    if kv is not None:
        if batch.page_size is not None and batch.page_size != kv.page_size:
            details.append(
                f"the KV cache's page size (read under layout {kv.layout.value}) differs from the page size the page table was built with"
            )
            problems.update({"kv_cache.page_size": kv.page_size, "page_size": batch.page_size, "kv_cache.layout": kv.layout.value})
        if kv.head_dim_stride not in (None, 1):
            details.append("the KV cache's head_dim axis is not contiguous")
            problems["kv_cache.stride(-1)"] = kv.head_dim_stride
    if batch.query is not None:
        q_shape = shape_of(batch.query)
        if len(q_shape) != 3:
            details.append("the query must be [num_tokens, num_qo_heads, head_dim]")
            problems["q.shape"] = q_shape
        elif kv is not None:
            if q_shape[-1] != kv.head_dim:
                details.append("the query head_dim differs from the KV cache head_dim")
                problems.update({"q.shape[-1]": q_shape[-1], "kv_cache.head_dim": kv.head_dim, "kv_cache.layout": kv.layout.value})
            if q_shape[1] % kv.num_kv_heads != 0:
                details.append("the query head count is not a multiple of num_kv_heads")
                problems.update({"q.shape[1]": q_shape[1], "kv_cache.num_kv_heads": kv.num_kv_heads, "kv_cache.layout": kv.layout.value})
    if not details:
        return None
    return Finding("; ".join(details), problems)
