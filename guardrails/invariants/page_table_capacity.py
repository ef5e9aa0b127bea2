"""``page-table-capacity``: every request's page-table row holds all its pages.

Statement: ``ceil(seq_lens[i] / page_size) <= page_table.shape[-1]`` (and
``swa_page_table.shape[1]``) for every request (a 3-D ``[batch_size, 2, max_pages]``
table: each of its K and V rows). The CSR form has no counterpart.

Source: the H200 xqa measurement: a ``seq_len`` longer than its page-table row returned
wrong attention without crashing.

Shape part: none. Value part (:func:`check_page_table_capacity`): ``seq_lens`` from the
host copy against each table's width.
"""

from __future__ import annotations

from typing import Optional

from ..catalog_entry import H200_XQA_MEASUREMENT, Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..models import pages_needed
from ..tensor_facts import shape_of

INVARIANT = Invariant(
    id="page-table-capacity",
    statement=(
        "Every request's page-table row is long enough: ceil(seq_lens[i] / page_size) "
        "<= page_table.shape[1] (and swa_page_table.shape[1]) for every request. It "
        "has no CSR counterpart: kv_indptr gives each request exactly its pages (the "
        "CSR bound kv_indptr[-1] <= kv_indices.shape[0] is part of cu-seqlens-monotone)."
    ),
    level=Level.VALUES,
    source=H200_XQA_MEASUREMENT,
    measured="a seq_len longer than its page-table row: xqa returned wrong attention without crashing",
    cause=(
        "the page table was sliced to the pages of a shorter length (max_seq_len "
        "from capture, a previous step, or before the speculative tokens were added)"
    ),
    fix=(
        "size the page table from the max seq_len of this batch (ceil(max_seq_len_kv "
        "/ page_size) columns) or use the full max_context_len-wide buffer"
    ),
)


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "kv-layout"))
def check_page_table_capacity(ctx: CheckContext) -> Optional[Finding]:
    """``page-table-capacity`` (H200 xqa measurement): ceil(seq_lens[i] /
    page_size) <= page_table.shape[1] (and swa_page_table.shape[1]) for
    every request."""
    seq_lens = ctx.host.get("seq_lens")
    if seq_lens is None:
        return None
    for name, page_size in _tables(ctx):
        shape = shape_of(getattr(ctx.batch, name))
        width, axis = shape[-1], len(shape) - 1  # [bs, W] or [bs, 2, W] (separate K and V ids)
        bad = [i for i, s in enumerate(seq_lens) if pages_needed(s, page_size) > width]
        if bad:
            i = bad[0]
            return Finding(
                f"a request needs more pages than its {name} row holds",
                {
                    f"seq_lens[{i}]": seq_lens[i],
                    "page_size": page_size,
                    f"ceil(seq_lens[{i}] / page_size)": pages_needed(seq_lens[i], page_size),
                    f"{name}.shape[{axis}]": width,
                    "requests that overflow their row": len(bad),
                },
            )
    return None


def _tables(ctx: CheckContext) -> list[tuple[str, int]]:
    """(field name, page size in tokens) of each page table present: the KV cache's page
    size for ``page_table``, the SWA pool's (else the same) for ``swa_page_table``."""
    host = ctx.host
    out = []
    if "page_table" in host and ctx.page_size is not None:
        out.append(("page_table", ctx.page_size))
    if "swa_page_table" in host:
        ps = ctx.swa_pool.page_size if ctx.swa_pool is not None else ctx.page_size
        if ps is not None:
            out.append(("swa_page_table", ps))
    return out
