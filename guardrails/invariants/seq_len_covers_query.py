"""``seq-len-covers-query``: every request's KV length includes its new tokens.

Statement: ``seq_lens[i] >= q_len[i] >= 0``, with ``q_len`` from ``cu_seqlens_q`` (or
``q_len_per_req`` on a decode kernel) and the KV length from ``seq_lens``, else the
``cu_seqlens_kv`` differences, else the CSR length. It is a causal-mask requirement:
a launch with ``causal=False`` (SGLang's paged prefix pass, merged with the ragged new
tokens) only needs ``kv_len >= 0``. On a decode kernel a row with ``seq_len == 0`` is a
dummy row (CUDA-graph / DP padding): the kernel reads no page for it
(``ceil(0 / page_size) == 0``; xqa's ``nbTiles = divUp(cacheSeqLen, tileSize)`` is 0)
and its output rows are garbage the engine discards; it is legal.

Source: the FlashInfer causal-mask contract (query rows are the last ``q_len`` KV
positions); padding rows: flashinfer/data/csrc/xqa/mha_sm90.cu (no tile of a
zero-length sequence is loaded).

Shape part: none. Value part (:func:`check_seq_len_covers_query`): the per-request
lengths from the host copy.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..forward_mode import Kernel

INVARIANT = Invariant(
    id="seq-len-covers-query",
    statement=(
        "Every request's KV length includes its new tokens: seq_lens[i] >= q_len[i] "
        ">= 0, where q_len comes from cu_seqlens_q (or is q_len_per_req on a decode "
        "kernel). Without seq_lens the KV length is the cu_seqlens_kv difference or "
        "the CSR length (kv_indptr[i+1] - kv_indptr[i] - 1) * page_size + "
        "kv_last_page_len[i] (0 with no pages). The causal mask needs it: a launch "
        "with causal=False only needs kv_len >= 0. On a decode kernel a row with "
        "seq_len 0 is a dummy padding row (the kernel reads none of its pages and its "
        "output is discarded) and passes whatever q_len_per_req is."
    ),
    level=Level.VALUES,
    source=(
        "FlashInfer causal-mask contract (query rows are the last q_len KV positions); "
        "zero-length decode rows: flashinfer/data/csrc/xqa/mha_sm90.cu loads "
        "divUp(cacheSeqLen, tileSize) = 0 tiles"
    ),
    cause=(
        "seq_lens was taken before the new tokens were appended (prefix length "
        "instead of prefix + extend length), e.g. missing the + q_len_per_req "
        "for TARGET_VERIFY"
    ),
    fix="pass seq_lens = prefix_lens + extend_lens (cache_seqlens after the write)",
)


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "cu-seqlens-monotone"))
def check_seq_len_covers_query(ctx: CheckContext) -> Optional[Finding]:
    """``seq-len-covers-query``: kv_len[i] >= q_len[i] >= 0 (tokens), with
    kv_len from seq_lens (else cu_seqlens_kv differences, else the CSR
    length) and q_len from cu_seqlens_q or q_len_per_req on a decode kernel."""
    kv_lens = ctx.kv_lens()
    if kv_lens is None:
        return None
    q_lens = ctx.q_lens()
    causal = ctx.batch.causal is not False
    dummy_rows_ok = ctx.batch.kernel is Kernel.DECODE
    bad = []
    for i, s in enumerate(kv_lens):
        q = q_lens[i] if q_lens is not None and i < len(q_lens) else 0
        if s < 0 or (causal and s < q and not (dummy_rows_ok and s == 0)):
            bad.append(i)
    if not bad:
        return None
    i = bad[0]
    fields: dict[str, Any] = ctx.kv_len_fields(i)
    if q_lens is not None:
        fields[ctx.q_len_field(i)] = q_lens[i]
    fields["requests with seq_len < q_len"] = len(bad)
    return Finding("a request's KV length is shorter than its new query tokens", fields)
