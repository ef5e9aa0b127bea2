"""FlashInfer's TRT-LLM FMHAv2 prefill: ``flashinfer.prefill.trtllm_fmha_v2_prefill``.

SGLang 0.5.23's trtllm_mha backend runs its extend path through it on SM90 / SM120
(``Q_PAGED_KV_NHD``, the query and the pool's K / V halves as ``(q, (k_cache,
v_cache))``, pre-expanded ``[batch_size, 2, max_pages]`` block offsets whose V row is
``page + delta``, ``delta`` the distance from K's base to V's in blocks), and still passes
``batch_size=forward_batch.batch_size`` (the DP-padded value of SGLang #21649). The
kernel (``csrc/fmha_v2_run.cu``) takes each request's KV length from the
``cum_seq_lens_kv`` differences (``Single_cta``: ``actual_kv_seqlen = cu_kv_seqlens[b + 1]
- cu_kv_seqlens[b]``), the row pitch of the block table from its last dim, and
``batch_size`` from the argument.
"""

from __future__ import annotations

from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch
from guardrails.tensor_facts import data_ptr_of, shape_of, strides_of

from .base import EntryPoint, LaunchSpec, paged_cache

__all__ = ["ENTRY_POINTS", "FmhaV2PrefillSpec", "v_block_offset"]

_PAGED = ("Q_PAGED_KV_NHD", "Q_PAGED_KV_HND")


def v_block_offset(k_cache: Any, v_cache: Any) -> int:
    """Blocks from ``k_cache``'s base pointer to ``v_cache``'s (0 when V does not sit at
    a positive block-aligned offset, which FlashInfer rejects itself)."""
    k_ptr, v_ptr = data_ptr_of(k_cache), data_ptr_of(v_cache)
    strides = strides_of(k_cache)
    if k_ptr is None or v_ptr is None or not strides:
        return 0
    block_bytes = strides[0] * k_cache.element_size()
    delta, rem = divmod(v_ptr - k_ptr, block_bytes) if block_bytes > 0 else (0, 1)
    return delta if rem == 0 and delta > 0 else 0


class FmhaV2PrefillSpec(LaunchSpec):
    """``trtllm_fmha_v2_prefill(qkv, input_layout, ...)``.

    qkv by input_layout: ``Q_PAGED_KV_NHD`` / ``Q_PAGED_KV_HND``: ``(q, paged_kv)``, q
    ``[num_tokens, num_qo_heads, head_dim]``, paged_kv ``[num_pages, 2, ...page dims]``
    with block_tables ``[batch_size, max_pages]`` int32 (page ids shared by K and V), or
    ``(k_cache, v_cache)`` each ``[num_pages, ...page dims]`` with block_tables
    ``[batch_size, 2, max_pages]`` (K block offsets, V block offsets counted from K's
    base); ``CONTIGUOUS_Q_KV``: ``(q, kv)``, kv ``[num_kv_tokens, 2, num_kv_heads,
    head_dim]``; ``SEPARATE_Q_K_V``: ``(q, k, v)``, k / v ``[num_kv_tokens, num_kv_heads,
    head_dim]``; ``PACKED_QKV``: ``[num_tokens, 3, num_heads, head_dim]``. seq_lens
    ``[batch_size]`` int32 KV tokens; cum_seq_lens_q / cum_seq_lens_kv ``[batch_size +
    1]`` int32 token offsets (the kernel reads the KV lengths from the latter);
    max_q_len / max_kv_len; batch_size; mask_mode (``"padding"``: not causal).
    """

    TENSORS = ("qkv", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv", "block_tables")
    INDEX_TENSORS = ("seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv", "block_tables")
    SCALARS = ("input_layout", "max_q_len", "max_kv_len", "batch_size", "mask_mode")

    def describe(self, ns):
        layout = str(ns["input_layout"] or "")
        qkv = ns["qkv"]
        fields: dict[str, Any] = {}
        cache = None
        if layout == "PACKED_QKV":
            fields["num_query_rows"] = fields["num_kv_rows"] = shape_of(qkv)[0]
        else:
            fields["query"] = qkv[0]
        if layout in _PAGED:
            paged = qkv[1]
            cache = paged_cache(paged, layout[-3:])
            fields["page_table"] = ns["block_tables"]
            fields["page_table_rows_contiguous"] = True
            if isinstance(paged, (tuple, list)):
                fields["v_page_id_offset"] = v_block_offset(*paged)
        elif layout == "CONTIGUOUS_Q_KV" or layout == "SEPARATE_Q_K_V":
            fields["num_kv_rows"] = shape_of(qkv[1])[0]
        mask = str(ns["mask_mode"] or "causal").lower()
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            batch_size=ns["batch_size"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            cu_seqlens_kv=ns["cum_seq_lens_kv"],
            max_seq_len_q=ns["max_q_len"],
            max_seq_len_kv=ns["max_kv_len"],
            causal=mask != "padding",
            **fields,
        )
        return batch, cache


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.prefill", "trtllm_fmha_v2_prefill", FmhaV2PrefillSpec),
)
"""The fmha_v2 entry point."""
