"""``page-id-range``: every page id the kernel reads lies inside the KV cache passed.

Statement: the first ``ceil(seq_lens[i] / page_size)`` entries of each page-table row
(of both the K and the V row of a 3-D ``[batch_size, 2, max_pages]`` table), and in
FlashInfer's CSR form every used ``kv_indices[kv_indptr[0]:kv_indptr[-1]]``, are in
``[0, num_pages)`` (negative ids included); unread entries are not checked.

Source: the H200 xqa measurement: a page id 3 past the pool read silently, 100000 past
crashed.

Shape part: none. Value part (:func:`check_page_id_range`): scans the used entries of
the host copy of ``page_table`` (vectorized when it came through torch) and of
``kv_indices``.
"""

from __future__ import annotations

import sys

from bisect import bisect_right
from typing import Any, Optional, Sequence

from ..catalog_entry import H200_XQA_MEASUREMENT, Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..models import pages_needed
from ..tensor_facts import HostRows, shape_of

INVARIANT = Invariant(
    id="page-id-range",
    statement=(
        "Every page id the kernel will read, i.e. the first ceil(seq_lens[i] / "
        "page_size) entries of each page-table row, or in FlashInfer's CSR form every "
        "used kv_indices[kv_indptr[0]:kv_indptr[-1]], lies in [0, num_pages) of the KV "
        "cache actually passed (a negative id too is out of range). A 3-D page table "
        "[batch_size, 2, max_pages] holds K and V ids separately; its V ids lie in "
        "[v_page_id_offset, v_page_id_offset + num_pages) (fmha_v2's pre-expanded "
        "block offsets count V's blocks from K's base pointer). Entries past a "
        "request's last page (or outside kv_indptr[0]:kv_indptr[-1] in a longer "
        "kv_indices buffer) are not read and are not checked."
    ),
    level=Level.VALUES,
    source=H200_XQA_MEASUREMENT,
    measured="a page id 3 past the pool: xqa returned wrong attention without crashing; 100000 past: it crashed",
    cause=(
        "the page table indexes a different pool (a draft or SWA pool of another "
        "size), holds token indices instead of page indices (missing // page_size), "
        "or holds stale ids from an earlier batch"
    ),
    fix=(
        "build the page table (or kv_indices) from req_to_token of the pool whose "
        "buffer is passed, dividing token locations by page_size"
    ),
)


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "kv-layout"))
def check_page_id_range(ctx: CheckContext) -> Optional[Finding]:
    """``page-id-range`` (H200 xqa measurement): the first ceil(seq_lens[i] /
    page_size) entries of each page-table row, and FlashInfer's used
    ``kv_indices[:kv_indptr[-1]]``, are in [0, kv_cache.num_pages)."""
    if ctx.kv_cache is None:
        return None
    finding = _page_table_range(ctx)
    return finding if finding is not None else _csr_page_range(ctx)


def _page_table_range(ctx: CheckContext) -> Optional[Finding]:
    """Page-table part of ``page-id-range``."""
    kv = ctx.kv_cache
    seq_lens = ctx.host.get("seq_lens")
    table = ctx.host.get("page_table")
    if seq_lens is None or table is None:
        return None
    if len(shape_of(ctx.batch.page_table)) == 3:
        return _kv_table_range(ctx, table, seq_lens)
    first: Optional[tuple[int, int, int]] = None
    count = 0
    if isinstance(table, HostRows):
        first, count = _table_out_of_range(table, seq_lens, kv.page_size, kv.num_pages)
        rows: Sequence[Any] = ()
    else:
        rows = table
    for i, (row, s) in enumerate(zip(rows, seq_lens)):
        used = row[: pages_needed(s, kv.page_size)]
        # min/max run in C: a 64 x 256 decode table costs ~0.1 ms, not ~1.5 ms
        if not used or (min(used) >= 0 and max(used) < kv.num_pages):
            continue
        for j, page in enumerate(used):
            if not 0 <= page < kv.num_pages:
                count += 1
                if first is None:
                    first = (i, j, page)
    if first is None:
        return None
    i, j, page = first
    return Finding(
        "the page table points outside the KV cache",
        {
            f"page_table[{i}][{j}]": page,
            "kv_cache.num_pages": kv.num_pages,
            f"seq_lens[{i}]": seq_lens[i],
            "page_size": kv.page_size,
            "out-of-range page ids": count,
        },
    )


def _kv_table_range(ctx: CheckContext, table: Sequence[Any], seq_lens: Sequence[int]) -> Optional[Finding]:
    """``page-id-range`` of a 3-D ``[batch_size, 2, max_pages]`` table (separate K and V
    page ids): K ids in ``[0, num_pages)``, V ids in ``[v_page_id_offset,
    v_page_id_offset + num_pages)`` (fmha_v2 counts V's blocks from K's base pointer)."""
    kv = ctx.kv_cache
    offset = ctx.batch.v_page_id_offset
    bad: list[tuple[int, int, int, int, int]] = []
    for i, (rows, s) in enumerate(zip(table, seq_lens)):
        need = pages_needed(s, kv.page_size)
        for k, lo in ((0, 0), (1, offset)):
            used = rows[k][:need]
            if used and not (min(used) >= lo and max(used) < lo + kv.num_pages):
                bad.extend((i, k, j, page, lo) for j, page in enumerate(used) if not lo <= page < lo + kv.num_pages)
    if not bad:
        return None
    i, k, j, page, lo = bad[0]
    fields = {
        f"page_table[{i}][{k}][{j}]": page,
        "kv_cache.num_pages": kv.num_pages,
        f"seq_lens[{i}]": seq_lens[i],
        "page_size": kv.page_size,
        "out-of-range page ids": len(bad),
    }
    if k == 1 and offset:
        fields["v_page_id_offset"] = offset
    return Finding(f"the page table's {'V' if k else 'K'} ids point outside the KV cache", fields)


def _table_out_of_range(
    table: HostRows, seq_lens: Sequence[int], page_size: int, num_pages: int
) -> tuple[Optional[tuple[int, int, int]], int]:
    """Vectorized scan of the used entries of a host page table: the first
    out-of-range (row, column, page id) and how many there are (~40 us for a
    64 x 256 decode table, where a Python loop takes ~1.5 ms)."""
    torch = sys.modules["torch"]  # a HostRows only comes from torch tensors: torch is loaded

    t = table.tensor
    needed = torch.tensor([pages_needed(s, page_size) for s in seq_lens], dtype=torch.int64)
    used = torch.arange(t.shape[1]).unsqueeze(0) < needed.unsqueeze(1)
    bad = used & ((t < 0) | (t >= num_pages))
    count = int(bad.sum())
    if not count:
        return None, 0
    i, j = (int(x) for x in bad.nonzero()[0])
    return (i, j, int(t[i, j])), count


def _csr_page_range(ctx: CheckContext) -> Optional[Finding]:
    """CSR part of ``page-id-range``; skipped when kv_indptr is malformed or
    ends past kv_indices (``cu-seqlens-monotone`` reports both)."""
    kv = ctx.kv_cache
    offsets = ctx.host.get("kv_indptr")
    indices = ctx.host.get("kv_indices")
    if offsets is None or indices is None or ctx.prefix_lens("kv_indptr") is None:
        return None
    start, end = offsets[0], offsets[-1]
    if end > len(indices):
        return None
    used = indices[start:end]  # kv_indptr may start at an offset (cu-seqlens-monotone)
    if not used or (min(used) >= 0 and max(used) < kv.num_pages):  # C-speed fast path
        return None
    bad = [k for k in range(start, end) if not 0 <= indices[k] < kv.num_pages]
    k = bad[0]
    i = bisect_right(offsets, k) - 1  # request whose pages hold position k
    return Finding(
        "kv_indices points outside the KV cache",
        {
            f"kv_indices[{k}]": indices[k],
            "kv_cache.num_pages": kv.num_pages,
            f"kv_indptr[{i}]": offsets[i],
            f"kv_indptr[{i + 1}]": offsets[i + 1],
            "out-of-range page ids": len(bad),
        },
    )
