"""``cu-seqlens-monotone``: the offset tensors are exclusive prefix sums of the lengths the kernel reads.

Statement: ``cu_seqlens_q``, ``cu_seqlens_kv`` (tokens) and FlashInfer's ``kv_indptr``
(pages) never decrease; the token offsets start at 0, ``kv_indptr`` at any offset >= 0
(FlashInfer reads ``kv_indices[kv_indptr[i]:kv_indptr[i+1]]``: vLLM plans a mixed batch's
prefills with a slice of the full indptr); ``cu_seqlens_q`` ends at the query row count
(within it for a ``padded_query`` launch: FlashAttention's varlen kernel under vLLM's
CUDA-graph padding);
the ``cu_seqlens_kv`` differences equal ``seq_lens`` and it ends within a ragged K/V
(``num_kv_rows``); ``kv_indptr`` ends within ``kv_indices`` and gives each request
``ceil(kv_len / page_size)`` pages.

Source: the FlashInfer ragged-indptr contract; SGLang #21649 (ends at the token count).

Shape part: none. Value part (:func:`check_cu_seqlens_monotone`): reads the three
offset tensors and ``seq_lens`` from the host copy.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant, sglang_url
from ..check_context import OFFSET_INDPTRS, CheckContext, Finding, register
from ..config import Level
from ..models import pages_needed
from ..tensor_facts import shape_of

INVARIANT = Invariant(
    id="cu-seqlens-monotone",
    statement=(
        "cu_seqlens_q (qo_indptr), cu_seqlens_kv (token-granular kv indptr) and "
        "kv_indptr (FlashInfer's page-granular paged_kv_indptr) are exclusive prefix "
        "sums: they never decrease, cu_seqlens_q and cu_seqlens_kv start at 0, and "
        "kv_indptr starts at any offset >= 0 (FlashInfer reads request i's page ids as "
        "kv_indices[kv_indptr[i]:kv_indptr[i+1]], so a slice of a larger indptr over "
        "the full kv_indices is legal). cu_seqlens_q ends at the number of "
        "query rows (at or below it when the query carries padding rows the kernel "
        "does not read: padded_query). cu_seqlens_kv[i+1] - cu_seqlens_kv[i] == seq_lens[i] (so it ends "
        "at sum(seq_lens)), and with a ragged K/V cu_seqlens_kv[-1] <= num_kv_rows "
        "(key.shape[0]). kv_indptr[-1] <= kv_indices.shape[0] (only "
        "kv_indices[kv_indptr[0]:kv_indptr[-1]] is read), and when the KV lengths are also given "
        "(seq_lens, else cu_seqlens_kv) each request has exactly the pages they need: "
        "kv_indptr[i+1] - kv_indptr[i] == ceil(seq_lens[i] / page_size). (The "
        "token tail, kv_last_page_len, is checked by last-page-len.)"
    ),
    level=Level.VALUES,
    source=(
        "FlashInfer ragged-indptr contract (kv_indices[kv_indptr[i]:kv_indptr[i+1]], "
        "flashinfer/prefill.py _build_block_tables_from_paged_kv_indices); SGLang "
        "#21649 (ends-at-token-count)"
    ),
    url=sglang_url(21649),
    cause=(
        "offsets were built from stale or padded lengths, built without the leading "
        "0, or only partly refilled (a CUDA-graph buffer holding the previous step's "
        "tail); kv_indptr counted tokens instead of pages, or its kv_indices buffer "
        "was sliced shorter than the pages it points into; a ragged key/value was "
        "sliced to fewer rows than cu_seqlens_kv counts"
    ),
    fix=(
        "rebuild with torch.nn.functional.pad(torch.cumsum(lens, 0, "
        "dtype=torch.int32), (1, 0)) from the same lengths the kernel sees (for "
        "kv_indptr, lens = ceil(seq_lens / page_size) pages), and pass the whole "
        "kv_indices buffer and key/value tensors"
    ),
)


def _indptr_problems(name: str, offsets: list[int], fields: dict, details: list) -> None:
    """Add to ``fields`` / ``details`` where the indptr ``offsets`` (the host copy of
    field ``name``) does not start at 0 (an offset indptr, :data:`OFFSET_INDPTRS`:
    starts below 0), or first decreases."""
    if not offsets:
        return
    if name in OFFSET_INDPTRS and offsets[0] < 0:
        details.append(f"{name} starts below 0 (the kernel reads page ids before kv_indices)")
        fields[f"{name}[0]"] = offsets[0]
    elif name not in OFFSET_INDPTRS and offsets[0] != 0:
        details.append(f"{name} does not start at 0")
        fields[f"{name}[0]"] = offsets[0]
    for i in range(len(offsets) - 1):
        if offsets[i + 1] < offsets[i]:
            details.append(f"{name} decreases")
            fields[f"{name}[{i}]"] = offsets[i]
            fields[f"{name}[{i + 1}]"] = offsets[i + 1]
            break


def _csr_page_count_problems(ctx: CheckContext, offsets: list[int], fields: dict, details: list) -> None:
    """kv_indptr (well-formed) gives request i exactly ceil(kv_len[i] / page_size)
    pages, where kv_len is stated in tokens (seq_lens, else cu_seqlens_kv)."""
    stated = ctx.token_kv_lens()
    page_size = ctx.agreed_page_size()
    if stated is None or page_size is None:
        return
    source, lens = stated
    for i, kv_len in enumerate(lens[: len(offsets) - 1]):
        if kv_len < 0:  # seq-len-covers-query reports negative lengths
            continue
        pages, want = offsets[i + 1] - offsets[i], pages_needed(kv_len, page_size)
        if pages != want:
            details.append(f"kv_indptr gives a request a different number of pages than its {source} needs")
            fields[f"kv_indptr[{i + 1}] - kv_indptr[{i}]"] = pages
            fields.update(ctx.kv_len_fields(i))
            fields["page_size"] = page_size
            fields[f"pages needed for request {i}"] = want
            return


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "query-rows"))
def check_cu_seqlens_monotone(ctx: CheckContext) -> Optional[Finding]:
    """``cu-seqlens-monotone``: cu_seqlens_q / cu_seqlens_kv (int32,
    ``[batch_size + 1]``, tokens) and kv_indptr (int32, ``[batch_size + 1]``,
    pages) start at 0 and never decrease; cu_seqlens_q[-1] equals the query
    rows; cu_seqlens_kv differences equal seq_lens and cu_seqlens_kv[-1] <=
    num_kv_rows (ragged K/V); kv_indptr[-1] <= kv_indices.shape[0] and, when
    KV lengths are stated in tokens, kv_indptr differences equal
    ceil(kv_len / page_size)."""
    host = ctx.host
    fields: dict[str, Any] = {}
    details: list[str] = []
    q_offsets = host.get("cu_seqlens_q")
    if q_offsets:
        _indptr_problems("cu_seqlens_q", q_offsets, fields, details)
        rows = ctx.batch.query_row_count()
        padded = ctx.batch.padded_query
        if rows is not None and (q_offsets[-1] > rows if padded else q_offsets[-1] != rows):
            details.append("cu_seqlens_q ends past the query rows" if padded
                           else "cu_seqlens_q does not end at the number of query rows")
            fields["cu_seqlens_q[-1]"] = q_offsets[-1]
            fields[ctx.query_rows_field()] = rows
    kv_offsets = host.get("cu_seqlens_kv")
    if kv_offsets:
        _indptr_problems("cu_seqlens_kv", kv_offsets, fields, details)
        seq_lens = host.get("seq_lens")
        if seq_lens is not None:
            for i, s in enumerate(seq_lens):
                d = kv_offsets[i + 1] - kv_offsets[i]
                if d != s:
                    details.append("cu_seqlens_kv differences do not match seq_lens")
                    fields[f"cu_seqlens_kv[{i + 1}] - cu_seqlens_kv[{i}]"] = d
                    fields[f"seq_lens[{i}]"] = s
                    fields["cu_seqlens_kv[-1]"] = kv_offsets[-1]
                    fields["sum(seq_lens)"] = sum(seq_lens)
                    break
        num_kv_rows = ctx.batch.num_kv_rows
        if num_kv_rows is not None and kv_offsets[-1] > num_kv_rows:
            details.append("cu_seqlens_kv ends past the rows of the ragged K/V (the kernel reads past key/value)")
            fields["cu_seqlens_kv[-1]"] = kv_offsets[-1]
            fields["num_kv_rows"] = num_kv_rows
    page_offsets = host.get("kv_indptr")
    if page_offsets:
        before = len(details)
        _indptr_problems("kv_indptr", page_offsets, fields, details)
        indices = ctx.batch.kv_indices
        if indices is not None and page_offsets[-1] > shape_of(indices)[0]:
            details.append("kv_indptr ends past kv_indices (the kernel reads page ids beyond the buffer)")
            fields["kv_indptr[-1]"] = page_offsets[-1]
            fields["kv_indices.shape[0]"] = shape_of(indices)[0]
        if len(details) == before:
            _csr_page_count_problems(ctx, page_offsets, fields, details)
    if not details:
        return None
    return Finding("; ".join(dict.fromkeys(details)), fields)
