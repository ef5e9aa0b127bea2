"""``query-rows``: the number of query rows matches the metadata.

Statement: on a decode kernel ``q.shape[0]`` (``num_query_rows``) is
``batch_size * q_len_per_req`` (``q_len_per_req`` defaults to 1); a given query tensor
and ``num_query_rows`` agree.

Source: SGLang #21649 (a padded batch) and #24856 (a ragged batch on the decode kernel).

Shape part (:func:`check_query_rows`): the query row count against ``num_query_rows``
and, on a decode kernel, against ``batch_size * q_len_per_req``. Value part: none here;
that a ragged launch's ``cu_seqlens_q[-1]`` equals the row count is checked by
``cu-seqlens-monotone``.
"""

from __future__ import annotations

from typing import Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..forward_mode import Kernel
from ..tensor_facts import shape_of

INVARIANT = Invariant(
    id="query-rows",
    statement=(
        "The number of query rows (q.shape[0], num_query_rows) matches the metadata: "
        "on a decode kernel it is batch_size * q_len_per_req (q_len_per_req defaults "
        "to 1); a given query tensor and num_query_rows agree. For ragged (prefill "
        "kernel) launches the row count must equal cu_seqlens_q[-1]; that value part "
        "is checked by cu-seqlens-monotone ('ends at the token count')."
    ),
    level=Level.SHAPES,
    source=f"{sglang_pr(21649)}, {sglang_pr(24856)}",
    url=sglang_url(21649),
    cause=(
        "the query was padded (CUDA graph or DP padding) or flattened from a "
        "different layout than the metadata describes, or q_len_per_req does not "
        "match the number of draft tokens"
    ),
    fix=(
        "slice the query to the real token count, or pass the q_len_per_req and "
        "batch size that produced it"
    ),
)


@register(INVARIANT, Level.SHAPES, needs=("batch-size",))
def check_query_rows(ctx: CheckContext) -> Optional[Finding]:
    """``query-rows`` (SGLang #21649, #24856): on a decode kernel the query has
    batch_size * q_len_per_req rows (q_len_per_req defaults to 1); a given
    query tensor and num_query_rows agree. (The ragged ``cu_seqlens_q[-1]``
    part runs in ``cu-seqlens-monotone``.)"""
    batch = ctx.batch
    if batch.query is not None and batch.num_query_rows is not None:
        q_rows = shape_of(batch.query)[0] if shape_of(batch.query) else None
        if q_rows != batch.num_query_rows:
            return Finding(
                "the query tensor and num_query_rows disagree",
                {"q.shape[0]": q_rows, "num_query_rows": batch.num_query_rows},
            )
    rows = batch.query_row_count()
    if batch.kernel is Kernel.DECODE and rows is not None and ctx.batch_size is not None:
        q_len = batch.decode_q_len()
        if rows != ctx.batch_size * q_len:
            return Finding(
                "the decode kernel reads batch_size * q_len_per_req query rows but the query has a different count",
                {
                    ctx.query_rows_field(): rows,
                    "batch_size": ctx.batch_size,
                    "q_len_per_req": q_len,
                    "batch_size * q_len_per_req": ctx.batch_size * q_len,
                },
            )
    return None
