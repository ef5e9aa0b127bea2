"""FlashInfer's xqa decode: ``flashinfer.decode.xqa_batch_decode_with_kv_cache`` (vLLM's Hopper path).

vLLM 0.33 / 0.34 call it (through ``vllm.utils.flashinfer``) for every decode step on
SM90; ``trtllm_batch_decode_with_kv_cache(backend="auto")`` also routes there on SM90 /
SM120. It reshapes the query to ``[batch_size, 1, q_len_per_req, num_heads, head_dim]``
(or ``[batch_size, 1, num_heads, head_dim]``) and seq_lens to ``[batch_size, 1]`` for
``flashinfer.xqa.xqa``, whose kernel reads the block table through its data pointer with
a row pitch of ``block_tables.shape[-1]`` (``csrc/xqa/xqa_wrapper.cu``): a column-sliced
table returned wrong attention on an H200 (relative error 1.29), so its rows must be
contiguous.
"""

from __future__ import annotations

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch

from .base import EntryPoint, LaunchSpec, paged_cache

__all__ = ["ENTRY_POINTS", "XqaDecodeSpec"]


class XqaDecodeSpec(LaunchSpec):
    """``xqa_batch_decode_with_kv_cache``.

    query ``[batch_size * q_len_per_req, num_qo_heads, head_dim]`` (with
    ``q_cu_seq_lens``: ``[sum of draft lengths, ...]``); kv_cache ``(k, v)`` each
    ``[num_pages, page_size, num_kv_heads, head_dim]`` (NHD, the default) /
    ``[num_pages, num_kv_heads, page_size, head_dim]`` (HND), or one ``[num_pages, 1 or
    2, ...]`` tensor; block_tables ``[batch_size, max_pages]`` int32, contiguous rows;
    seq_lens ``[batch_size]`` (tokens, new ones included; 0 on a padding row);
    max_seq_len; q_len_per_req (uniform query rows; the maximum draft length with
    ``q_cu_seq_lens`` ``[batch_size + 1]`` int32, ragged); mask (spec-decode draft mask,
    not index metadata).
    """

    TENSORS = ("query", "block_tables", "seq_lens", "q_cu_seq_lens", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "q_cu_seq_lens")
    SCALARS = ("max_seq_len", "q_len_per_req", "kv_layout")

    def describe(self, ns):
        q_len = ns["q_len_per_req"] or 1
        ragged = ns["q_cu_seq_lens"] is not None
        if ragged:
            mode = {"forward_mode": ForwardMode.EXTEND, "kernel": Kernel.PREFILL, "max_seq_len_q": q_len}
        else:
            mode = {"forward_mode": ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY,
                    "kernel": Kernel.DECODE, "q_len_per_req": q_len}
        batch = AttentionBatch(
            **mode,
            query=ns["query"],
            page_table=ns["block_tables"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["q_cu_seq_lens"],
            max_seq_len_kv=ns["max_seq_len"],
            page_table_rows_contiguous=True,
        )
        return batch, paged_cache(ns["kv_cache"], ns["kv_layout"] or "NHD")


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.decode", "xqa_batch_decode_with_kv_cache", XqaDecodeSpec),
)
"""The xqa entry point."""
