"""FlashInfer's trtllm-gen / xqa functions: decode, context, MLA decode, ragged DeepSeek prefill.

Argument names and shapes follow FlashInfer 0.7.x (0.6.x has the same names for
these arguments); each spec's docstring lists them. The functions take the batch
size, the query offsets and the page table as separate arguments and check none of
their agreement (SGLang #21649, #24856).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch, PagedKVCache

from .base import EntryPoint, LaunchSpec, paged_cache

__all__ = [
    "ENTRY_POINTS",
    "TrtllmDecodeSpec",
    "TrtllmContextSpec",
    "TrtllmRaggedDeepseekSpec",
    "TrtllmMlaDecodeSpec",
]


def _decode_kernel_batch(ns: Mapping[str, Any], ragged: bool, q_len: int | None, **fields: Any) -> AttentionBatch:
    """A decode-kernel launch: ragged (``cum_seq_lens_q``, ``max_q_len``) reads like an
    extend; a uniform ``q_len_per_req`` of 1 is DECODE, more TARGET_VERIFY."""
    if ragged:
        mode = {"forward_mode": ForwardMode.EXTEND, "kernel": Kernel.PREFILL}
    else:
        mode = {"forward_mode": ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY, "kernel": Kernel.DECODE}
    return AttentionBatch(
        **mode,
        **fields,
        page_table=ns["block_tables"],
        seq_lens=ns["seq_lens"],
        cu_seqlens_q=ns["cum_seq_lens_q"],
        max_seq_len_kv=ns["max_seq_len"],
        max_seq_len_q=ns["max_q_len"] if ragged else None,
        q_len_per_req=q_len,
    )


class TrtllmDecodeSpec(LaunchSpec):
    """``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` (trtllm-gen / xqa decode).

    query ``[batch_size * q_len_per_req, num_qo_heads, head_dim]``; kv_cache
    ``[num_pages, 2, ...]`` or ``(k, v)`` each ``[num_pages, num_kv_heads, page_size,
    head_dim]`` (HND) / ``[num_pages, page_size, num_kv_heads, head_dim]`` (NHD);
    block_tables ``[batch_size, max_pages]`` int32; seq_lens ``[batch_size]`` int32
    (tokens, new ones included); max_seq_len (tokens); q_len_per_req (uniform query
    rows per request; ``None`` with ``cum_seq_lens_q`` ``[batch_size + 1]`` int32 and
    ``max_q_len`` for a ragged launch, FlashInfer >= 0.6).
    """

    TENSORS = ("query", "block_tables", "seq_lens", "cum_seq_lens_q", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_seq_len", "q_len_per_req", "max_q_len", "kv_layout")

    def describe(self, ns):
        ragged = ns["cum_seq_lens_q"] is not None and not ns["q_len_per_req"]
        q_len = None if ragged else (ns["q_len_per_req"] or 1)
        batch = _decode_kernel_batch(ns, ragged, q_len, query=ns["query"])
        return batch, paged_cache(ns["kv_cache"], ns["kv_layout"])


class TrtllmContextSpec(LaunchSpec):
    """``flashinfer.prefill.trtllm_batch_context_with_kv_cache`` (trtllm-gen context).

    query ``[cum_seq_lens_q[-1], num_qo_heads, head_dim]``; kv_cache as the decode
    kernel; block_tables ``[batch_size, max_pages]`` int32; seq_lens ``[batch_size]``
    int32; max_q_len / max_kv_len (tokens); batch_size (requests: SGLang #21649
    passed the DP-padded value); cum_seq_lens_q / cum_seq_lens_kv ``[batch_size + 1]``
    int32 prefix sums of query and KV lengths.
    """

    TENSORS = ("query", "block_tables", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv")
    SCALARS = ("max_q_len", "max_kv_len", "batch_size", "kv_layout")

    def describe(self, ns):
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            batch_size=ns["batch_size"],
            query=ns["query"],
            page_table=ns["block_tables"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            cu_seqlens_kv=ns["cum_seq_lens_kv"],
            max_seq_len_q=ns["max_q_len"],
            max_seq_len_kv=ns["max_kv_len"],
        )
        return batch, paged_cache(ns["kv_cache"], ns["kv_layout"])


class TrtllmRaggedDeepseekSpec(LaunchSpec):
    """``flashinfer.prefill.trtllm_ragged_attention_deepseek`` (ragged MLA prefill, no paging).

    query ``[cum_seq_lens_q[-1], num_heads, head_dim_qk]``; key / value
    ``[num_kv_rows, num_heads, head_dim]``; seq_lens ``[batch_size]`` int32;
    max_q_len / max_kv_len (tokens); batch_size; cum_seq_lens_q / cum_seq_lens_kv
    ``[batch_size + 1]`` int32.
    """

    TENSORS = ("query", "key", "value", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv")
    INDEX_TENSORS = ("seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv")
    SCALARS = ("max_q_len", "max_kv_len", "batch_size")

    def describe(self, ns):
        key = ns["key"]
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            batch_size=ns["batch_size"],
            num_query_rows=ns["query"].shape[0],
            num_kv_rows=None if key is None else key.shape[0],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            cu_seqlens_kv=ns["cum_seq_lens_kv"],
            max_seq_len_q=ns["max_q_len"],
            max_seq_len_kv=ns["max_kv_len"],
        )
        return batch, None


class TrtllmMlaDecodeSpec(LaunchSpec):
    """``flashinfer.mla.trtllm_batch_decode_with_kv_cache_mla`` (trtllm-gen / xqa MLA decode).

    query ``[batch_size, q_len_per_req, num_heads, kv_lora_rank + qk_rope_head_dim]``;
    kv_cache ``[num_pages, page_size, kv_lora_rank + qk_rope_head_dim]`` (or with a
    unit head axis ``[num_pages, 1, page_size, D]``); block_tables ``[batch_size,
    max_pages]`` int32; seq_lens ``[batch_size]`` int32; max_seq_len (tokens).
    """

    TENSORS = ("query", "kv_cache", "block_tables", "seq_lens", "cum_seq_lens_q")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_seq_len", "max_q_len", "kv_lora_rank", "qk_rope_head_dim")

    def describe(self, ns):
        q = ns["query"]
        ragged = ns["cum_seq_lens_q"] is not None
        rows = q.shape[0] * (q.shape[1] if q.dim() == 4 else 1)
        q_len = None if ragged else (q.shape[1] if q.dim() == 4 else 1)
        batch = _decode_kernel_batch(ns, ragged, q_len, batch_size=None if ragged else q.shape[0], num_query_rows=rows)
        kv = ns["kv_cache"]
        cache = None
        if kv is not None and kv.dim() in (3, 4):
            cache = PagedKVCache(
                num_pages=kv.shape[0],
                page_size=kv.shape[-2],
                num_kv_heads=1,
                head_dim=kv.shape[-1],
                layout="NHD",
                device=str(kv.device),
                dtype=str(kv.dtype).removeprefix("torch."),
                head_dim_stride=kv.stride()[-1],
            )
        return batch, cache


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.decode", "trtllm_batch_decode_with_kv_cache", TrtllmDecodeSpec),
    EntryPoint("flashinfer.prefill", "trtllm_batch_context_with_kv_cache", TrtllmContextSpec),
    EntryPoint("flashinfer.prefill", "trtllm_ragged_attention_deepseek", TrtllmRaggedDeepseekSpec),
    EntryPoint("flashinfer.mla", "trtllm_batch_decode_with_kv_cache_mla", TrtllmMlaDecodeSpec),
)
"""The trtllm-family entry points, in the order the guard patches them."""
