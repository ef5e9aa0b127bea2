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
from guardrails.tensor_facts import device_name, dtype_name, shape_of, strides_of

from .base import EntryPoint, LaunchSpec, paged_cache

__all__ = [
    "ENTRY_POINTS",
    "TrtllmDecodeSpec",
    "TrtllmContextSpec",
    "TrtllmRaggedDeepseekSpec",
    "TrtllmMlaDecodeSpec",
    "mla_cache",
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
        page_table_rows_contiguous=True,
    )


class TrtllmDecodeSpec(LaunchSpec):
    """``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` (trtllm-gen / xqa decode).

    query ``[batch_size * q_len_per_req, num_qo_heads, head_dim]``; kv_cache
    ``[num_pages, 1 or 2, ...]`` (1: K and V share the pages) or ``(k, v)`` each
    ``[num_pages, num_kv_heads, page_size, head_dim]`` (HND) / ``[num_pages, page_size,
    num_kv_heads, head_dim]`` (NHD); block_tables ``[batch_size, max_pages]`` int32,
    or ``[batch_size, 2, max_pages]`` (``uses_shared_paged_kv_idx=False``: separate K
    and V ids), rows at a pitch of their width (the kernel reads ``block_tables.size(-1)``
    and the data pointer only); seq_lens ``[batch_size]`` int32 (tokens, new ones
    included; 0 on a padding row); max_seq_len (tokens); q_len_per_req (uniform query
    rows per request; ``None`` with ``cum_seq_lens_q`` ``[batch_size + 1]`` int32 and
    ``max_q_len`` for a ragged launch, FlashInfer >= 0.6). A block-sparse launch
    (``enable_block_sparse_attention``: per-KV-head tables) is not described.
    """

    TENSORS = ("query", "block_tables", "seq_lens", "cum_seq_lens_q", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_seq_len", "q_len_per_req", "max_q_len", "kv_layout", "enable_block_sparse_attention")

    def describe(self, ns):
        if ns["enable_block_sparse_attention"]:
            return None, paged_cache(ns["kv_cache"], ns["kv_layout"])
        ragged = ns["cum_seq_lens_q"] is not None and not ns["q_len_per_req"]
        q_len = None if ragged else (ns["q_len_per_req"] or 1)
        batch = _decode_kernel_batch(ns, ragged, q_len, query=ns["query"])
        return batch, paged_cache(ns["kv_cache"], ns["kv_layout"])


class TrtllmContextSpec(LaunchSpec):
    """``flashinfer.prefill.trtllm_batch_context_with_kv_cache`` (trtllm-gen context).

    query ``[cum_seq_lens_q[-1], num_qo_heads, head_dim]``; kv_cache and block_tables
    as the decode kernel; seq_lens ``[batch_size]`` int32; max_q_len / max_kv_len
    (tokens); batch_size (requests: SGLang #21649 passed the DP-padded value);
    cum_seq_lens_q ``[batch_size + 1]`` int32 query token offsets; causal.

    cum_seq_lens_kv (``[batch_size + 1]`` int32) is not read as token offsets: the
    paged-KV context kernel takes each request's KV length from ``seq_lens`` (the
    trtllm-gen ``KernelParams``: "ptrSeqLensKv ... Required by pagedKv kernels") and
    its pages from the block table, and FlashInfer's own paged prefill wrapper hands it
    the page-granular ``_paged_kv_indptr_buf`` there (flashinfer/prefill.py), as vLLM
    does with ``paged_kv_indptr_prefill_gpu``. It is left out of the checks.
    """

    TENSORS = ("query", "block_tables", "seq_lens", "cum_seq_lens_q", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_q_len", "max_kv_len", "batch_size", "kv_layout", "causal")

    def describe(self, ns):
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            batch_size=ns["batch_size"],
            query=ns["query"],
            page_table=ns["block_tables"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            max_seq_len_q=ns["max_q_len"],
            max_seq_len_kv=ns["max_kv_len"],
            causal=None if ns["causal"] is None else bool(ns["causal"]),
            page_table_rows_contiguous=True,
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
        return batch, mla_cache(ns["kv_cache"])


def mla_cache(kv: Any) -> PagedKVCache | None:
    """The sizes of an MLA latent cache (one KV head): ``[num_pages, page_size,
    head_dim]`` or ``[num_pages, 1, page_size, head_dim]``; of a ``(ckv, kpe)`` pair its
    first tensor. ``None`` for no cache or another rank."""
    if isinstance(kv, (tuple, list)):
        kv = kv[0] if kv else None
    if kv is None or len(shape_of(kv)) not in (3, 4):
        return None
    shape, strides = shape_of(kv), strides_of(kv)
    return PagedKVCache(
        num_pages=shape[0], page_size=shape[-2], num_kv_heads=1, head_dim=shape[-1], layout="NHD",
        device=device_name(kv), dtype=dtype_name(kv), head_dim_stride=strides[-1] if strides else None,
    )


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.decode", "trtllm_batch_decode_with_kv_cache", TrtllmDecodeSpec),
    EntryPoint("flashinfer.prefill", "trtllm_batch_context_with_kv_cache", TrtllmContextSpec),
    EntryPoint("flashinfer.prefill", "trtllm_ragged_attention_deepseek", TrtllmRaggedDeepseekSpec),
    EntryPoint("flashinfer.mla", "trtllm_batch_decode_with_kv_cache_mla", TrtllmMlaDecodeSpec),
)
"""The trtllm-family entry points, in the order the guard patches them."""
