"""GR001 on open SGLang #37785: FA3's k/v descale sized from ``forward_batch.batch_size``.

In SGLang 0.5.16-0.5.23 ``FlashAttentionBackend.forward_extend`` calls
``self.prepare_paged_mha_query(..., logical_batch_size=forward_batch.batch_size)``, which
returns ``layer.k_scale.expand((logical_batch_size, kv_head_num))``; the result goes into
``kwargs["k_descale"]`` and on to ``flash_attn_with_kvcache(..., **kwargs)`` (and directly
as ``k_descale=`` in the cascade path). FlashAttention checks the descale's first dimension
against the batch ``cu_seqlens_q`` implies, so under DP padding (DRAFT_EXTEND_V2, FP8 KV
cache) the call is rejected. Issue 13 recorded that GR001 missed it and only strict GR101
flagged it. The default rule must find it now, and be silent once the descale batch comes
from ``cu_seqlens_q`` (the PR's fix).
"""

from __future__ import annotations

import pytest

from lint_rules import LintConfig, find_rule, lint_source

from .lint_history.release_sources import release_file

GR001 = find_rule("GR001")
PATH = "sglang/srt/layers/attention/flashattention_backend.py"
BUGGY = "logical_batch_size=forward_batch.batch_size,"


def findings_in(text: str, symbol: str):
    findings, errors, _ = lint_source(PATH, text, [GR001], LintConfig())
    assert errors == []
    return [f for f in findings if f.symbol == symbol]


@pytest.mark.network
def test_gr001_finds_the_descale_sized_from_the_padded_batch_in_sglang_0_5_23():
    text = release_file("sglang", "0.5.23", PATH)
    found = findings_in(text, "FlashAttentionBackend.forward_extend")
    assert found, "GR001 misses SGLang #37785 in FlashAttentionBackend.forward_extend"
    messages = " ".join(f.message for f in found)
    assert "**kwargs" in messages and "k_descale=fa_k_descale" in messages
    evidence = [step.code for f in found for step in f.evidence]
    assert any("prepare_paged_mha_query" in code for code in evidence)  # the chain names the helper


@pytest.mark.network
def test_gr001_is_silent_once_the_descale_batch_comes_from_cu_seqlens_q():
    text = release_file("sglang", "0.5.23", PATH)
    assert text.count(BUGGY) == 2  # forward_extend, forward_decode
    head, sep, tail = text.partition(BUGGY)  # the first one: forward_extend (#37785's scope)
    fixed = head + "logical_batch_size=metadata.cu_seqlens_q.shape[0] - 1," + tail
    assert findings_in(fixed, "FlashAttentionBackend.forward_extend") == []
    assert findings_in(fixed, "FlashAttentionBackend.forward_decode")  # the latent copy stays
