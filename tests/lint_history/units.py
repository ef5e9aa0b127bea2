"""Family 2, units (GR006): token-slot indices handed to a page-table argument at page size > 1.

Verified in the published wheels (/work/corpus extracts): SGLang's XPU backend filled
``metadata.page_table`` from ``req_to_token`` (token slots) and called
``_init_local_attn_metadata`` before converting it to page ids, so
``make_local_attention_virtual_batches`` read a token-granular block table (0.5.12); 0.5.13
strides and divides by the page size first (#23757). FA3's ``_maybe_init_local_attn_metadata``
had the same shape until 0.5.19; 0.5.20 converts ``page_table[:, ::page_size] // page_size``
when ``page_size > 1``.
"""

from __future__ import annotations

from tests.lint_history.ledger import HistoricalBug

BUGS: list[HistoricalBug] = [
    HistoricalBug(
        engine="sglang",
        buggy="0.5.12",
        fixed="0.5.13",
        path="sglang/srt/layers/attention/xpu_backend.py",
        function="XPUAttentionBackend._init_local_attn_metadata",
        rule="GR006",
        source="sglang#23757",
        summary="the eager req_to_token table (token slots) reached make_local_attention_virtual_batches "
        "as a page-granular block table at page_size > 1 (wrong or zeroed local-attention output)",
    ),
    HistoricalBug(
        engine="sglang",
        buggy="0.5.19",
        fixed="0.5.20",
        path="sglang/srt/layers/attention/flashattention_backend.py",
        function="FlashAttentionBackend._maybe_init_local_attn_metadata",
        rule="GR006",
        source="sglang#23757 (FA3 sibling, fixed in 0.5.20)",
        summary="FA3's local-attention block table was built from the token-granular eager page table "
        "(optionally SWA-translated) without the page-size conversion",
    ),
]
