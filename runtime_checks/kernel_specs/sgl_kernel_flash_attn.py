"""SGLang's FlashAttention-3 / -4 through ``sgl_kernel.flash_attn`` (PyPI ``sgl-kernel`` /
``sglang-kernel``): ``flash_attn_with_kvcache``, ``flash_attn_varlen_func``,
``get_scheduler_metadata``.

SGLang's ``FlashAttentionBackend`` (``--attention-backend fa3`` / ``fa4``) launches
``flash_attn_with_kvcache`` for every forward mode: q ``[total_q, num_heads, head_dim]``
with ``cu_seqlens_q`` ``[batch_size + 1]`` int32 (or q ``[batch_size, seqlen_q,
num_heads, head_dim]`` without it), the paged caches k_cache / v_cache ``[num_blocks,
page_size, num_kv_heads, head_dim]`` (page size 1: one token per block),
``page_table`` ``[batch_size, max_pages]`` int32 (rows may be a row-strided slice of
the CUDA-graph buffer), ``cache_seqlens`` ``[batch_size]`` int32 (KV length per
request in tokens, the new tokens included; or one int), ``max_seqlen_q``, FA3's
``q_descale`` / ``k_descale`` / ``v_descale`` ``[batch_size, num_kv_heads]`` float32.
``cu_seqlens_k_new`` (``[batch_size + 1]``) is read only with new keys ``k`` to append,
which SGLang never passes (it fills it with the prefix sum of ``cache_seqlens``, or
zeros at capture): not checked. Neither is ``scheduler_metadata`` (its size is
FA3-build specific and FA3 checks it). With new keys ``k`` the kernel reads
``cache_seqlens`` plus the appended tokens: the per-request lengths are then not
checked.

``flash_attn_varlen_func`` (ragged prefill, MLA's ``forward_extend``): the FA3 path
of sgl-kernel drops ``page_table`` (it passes ``None`` to the op), so K/V are ragged
(``cu_seqlens_k``); sgl-kernel 0.3.x's FA4 path (``ver=4``) reads ``page_table`` with
``seqused_k``. Argument names and shapes follow sgl-kernel 0.3.21 and sglang-kernel
0.4.10 (``tests/engines/kernel_recorders.py`` holds both signatures); positions come
from the installed signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch

from .base import EntryPoint, read_args
from .flash_attn_common import SchedulerMetadataSpec, ShapeOnlySpec, VarlenSpec, descales_of, fa_paged_cache

__all__ = ["ENTRY_POINTS", "FlashAttnWithKVCacheSpec", "SglVarlenSpec"]

_DESCALES = ("q_descale", "k_descale", "v_descale")


class FlashAttnWithKVCacheSpec(ShapeOnlySpec):
    """``sgl_kernel.flash_attn.flash_attn_with_kvcache`` (FA3, and FA4 with ``ver=4``); the
    arguments are those of the module docstring."""

    TENSORS = ("q", "k_cache", "cache_seqlens", "page_table", "cu_seqlens_q")
    SHAPE_ONLY = ("qv", "v_cache", "k", *_DESCALES)
    INDEX_TENSORS = ("cache_seqlens", "page_table", "cu_seqlens_q")
    SCALARS = ("max_seqlen_q", "ver", "cache_seqlens_value")

    def read(self, args, kwargs):
        ns = read_args(self._arg_plan, args, kwargs)
        seqlens = ns["cache_seqlens"]
        if seqlens is not None and not hasattr(seqlens, "shape"):  # one int for every request
            ns["cache_seqlens"], ns["cache_seqlens_value"] = None, seqlens
        return ns

    def describe(self, ns: Mapping[str, Any]):
        q, cu_q = ns["q"], ns["cu_seqlens_q"]
        rows = q if q is not None else ns["qv"]  # only_qv launches (sglang-kernel 0.4) pass no q
        if cu_q is not None or rows.dim() != 4:
            shape = {"forward_mode": ForwardMode.EXTEND, "kernel": Kernel.PREFILL, "cu_seqlens_q": cu_q,
                     "max_seq_len_q": ns["max_seqlen_q"]}
            if rows.dim() == 3 and q is not None:
                shape["query"] = q
            elif rows.dim() == 3:
                shape["num_query_rows"] = rows.shape[0]
        else:  # [batch_size, seqlen_q, ...]: every request has seqlen_q query rows
            b, s = rows.shape[0], rows.shape[1]
            shape = {"forward_mode": ForwardMode.DECODE if s == 1 else ForwardMode.TARGET_VERIFY,
                     "kernel": Kernel.DECODE, "batch_size": b, "num_query_rows": b * s, "q_len_per_req": s or None}
        table = ns["page_table"]
        batch = AttentionBatch(
            **shape,
            seq_lens=ns["cache_seqlens"] if ns["k"] is None else None,
            page_table=table,
            descales=descales_of(ns, _DESCALES) if ns["ver"] in (None, 3) else None,
        )
        k_cache = ns["k_cache"] if ns["k_cache"] is not None else ns["v_cache"]
        return batch, fa_paged_cache(k_cache, ns["v_cache"]) if table is not None else None


class SglVarlenSpec(VarlenSpec):
    """``sgl_kernel.flash_attn.flash_attn_varlen_func``: ragged K/V on FA3 (its page table is
    not passed to the kernel), paged with ``seqused_k`` on FA4 (``ver=4``, sgl-kernel 0.3.x)."""

    DESCALES = _DESCALES
    VERSION = "ver"
    BLOCK_TABLE = "page_table"

    def block_table(self, ns):
        return ns["page_table"] if ns["ver"] == 4 else None


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("sgl_kernel.flash_attn", "flash_attn_with_kvcache", FlashAttnWithKVCacheSpec),
    EntryPoint("sgl_kernel.flash_attn", "flash_attn_varlen_func", SglVarlenSpec),
    EntryPoint("sgl_kernel.flash_attn", "get_scheduler_metadata", SchedulerMetadataSpec),
)
"""The sgl_kernel FlashAttention entry points, in the order the guard patches them."""
