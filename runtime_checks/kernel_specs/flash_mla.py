"""FlashMLA: ``flash_mla_with_kvcache`` and its split-KV scheduling metadata, as three
libraries ship it.

* ``sgl_kernel.flash_mla`` (sgl-kernel 0.3.x / sglang-kernel 0.4.x; SGLang 0.5.9's
  ``FlashMLABackend``): ``get_mla_metadata(cache_seqlens, num_q_tokens_per_head_k,
  num_heads_k, ...)`` returns ``(tile_scheduler_metadata [num_sm_parts, 8] int32,
  num_splits [batch_size + 1] int32)``, passed to ``flash_mla_with_kvcache`` as two
  tensors.
* ``flash_mla.flash_mla_interface`` (``sgl-flash-mla``, SGLang 0.5.23; DeepSeek's
  FlashMLA): ``get_mla_decoding_metadata(seqlens_k, ...)`` returns the same two
  tensors, which the caller puts on a ``FlashMLASchedMeta`` (``.tile_scheduler_metadata``,
  ``.num_splits``); the new-API ``get_mla_metadata(*args, **kwargs)`` returns an
  empty ``FlashMLASchedMeta`` that the first ``flash_mla_with_kvcache`` call fills
  (nothing to check there). Also its dense varlen prefill ``flash_attn_varlen_func``
  (``cu_seqlens_qo`` / ``cu_seqlens_kv``).
* ``vllm.third_party.flashmla.flash_mla_interface`` (vLLM's ``FLASHMLA`` backend): the
  new API; ``get_mla_metadata`` takes ``*args`` and is not guarded.

``flash_mla_with_kvcache``: q ``[batch_size, seq_len_q, num_heads_q, head_dim]``
(576 = kv_lora_rank 512 + rope 64 for DeepSeek V3; every request has ``seq_len_q``
query rows), k_cache ``[num_blocks, page_block_size, 1, head_dim]`` (NHD, one latent
head), ``block_table`` ``[batch_size, max_blocks_per_seq]`` int32 (rows may be a
row-strided slice), ``cache_seqlens`` ``[batch_size]`` int32 (KV tokens per request,
the new ones included), the schedule (``tile_scheduler_metadata`` / ``num_splits`` or
a ``FlashMLASchedMeta``). For a dense launch (``indices`` ``None``) the schedule's
``num_splits`` must hold ``batch_size + 1`` entries (``scheduler-metadata``, vLLM
#21691). A sparse launch (``indices`` ``[batch_size, seq_len_q, topk]``, DeepSeek
V3.2) reads token indices instead of the block table: only its batch and query rows
are checked. FlashMLA's FP8 ``descale_q`` / ``descale_k`` are per-tensor (``[1]`` in
vLLM), not per-request: not a batch size.

Invariant sources: ``scheduler-metadata`` (vLLM #21691), ``batch-size`` (SGLang
#21649), ``query-rows``, ``page-table-capacity`` / ``page-id-range`` (the H200 xqa
measurement), ``seq-len-covers-query``, ``metadata-dtype-device``, ``kv-layout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch
from guardrails.tensor_facts import is_tensor_like, shape_of

from .base import EntryPoint, LaunchSpec, read_args
from .flash_attn_common import VarlenSpec, fa_paged_cache

__all__ = ["ENTRY_POINTS", "FlashMlaDecodeSpec", "MlaMetadataSpec", "MlaDecodingMetadataSpec", "FlashMlaVarlenSpec"]


class FlashMlaDecodeSpec(LaunchSpec):
    """``flash_mla_with_kvcache`` of every FlashMLA library (module docstring). The
    schedule is read from the two tensors, or from the ``FlashMLASchedMeta`` passed as
    ``tile_scheduler_metadata`` (its ``num_splits`` is ``None`` until a first launch
    or the caller fills it)."""

    TENSORS = ("q", "k_cache", "block_table", "cache_seqlens", "indices", "sched_tiles", "sched_splits")
    INDEX_TENSORS = ("block_table", "cache_seqlens")

    def arg_names(self) -> tuple[str, ...]:
        return ("q", "k_cache", "block_table", "cache_seqlens", "indices", "tile_scheduler_metadata", "num_splits")

    def read(self, args, kwargs):
        ns = read_args(self._arg_plan, args, kwargs)
        tiles, splits = ns["tile_scheduler_metadata"], ns["num_splits"]
        if tiles is not None and not is_tensor_like(tiles):  # a FlashMLASchedMeta
            splits = getattr(tiles, "num_splits", None) if splits is None else splits
            tiles = getattr(tiles, "tile_scheduler_metadata", None)
        ns["sched_tiles"], ns["sched_splits"] = tiles, splits
        return ns

    def describe(self, ns: Mapping[str, Any]):
        q = ns["q"]
        shape = shape_of(q)
        b, s = shape[0], (shape[1] if len(shape) == 4 else 1)
        dense = ns["indices"] is None
        batch = AttentionBatch(
            forward_mode=ForwardMode.DECODE if s == 1 else ForwardMode.TARGET_VERIFY,
            kernel=Kernel.DECODE,
            batch_size=b,
            num_query_rows=b * s,
            q_len_per_req=s or None,
            seq_lens=ns["cache_seqlens"] if dense else None,
            page_table=ns["block_table"] if dense else None,
            num_splits=ns["sched_splits"] if dense else None,
            tile_scheduler_metadata=ns["sched_tiles"] if dense else None,
        )
        return batch, fa_paged_cache(ns["k_cache"]) if dense else None


class MlaMetadataSpec(LaunchSpec):
    """The legacy ``get_mla_metadata(cache_seqlens, ...)``: the per-request KV lengths
    ``[batch_size]`` int32 the schedule is computed from (``None`` with the new API's
    ``*args`` signature, or ``get_mla_metadata()``: nothing to check)."""

    SEQLENS = "cache_seqlens"

    def __init__(self, fn) -> None:
        self.TENSORS = self.INDEX_TENSORS = (self.SEQLENS,)
        super().__init__(fn)

    def describe(self, ns):
        seqlens = ns[self.SEQLENS]
        if seqlens is None:
            return None, None
        return AttentionBatch(forward_mode=ForwardMode.DECODE, seq_lens=seqlens), None


class MlaDecodingMetadataSpec(MlaMetadataSpec):
    """``flash_mla.get_mla_decoding_metadata(seqlens_k, ...)`` (sgl-flash-mla)."""

    SEQLENS = "seqlens_k"


class FlashMlaVarlenSpec(VarlenSpec):
    """FlashMLA's dense prefill ``flash_attn_varlen_func(q, k, v, cu_seqlens_qo,
    cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, ...)``: ragged Q and K/V."""

    CU_Q, CU_K = "cu_seqlens_qo", "cu_seqlens_kv"
    MAX_Q, MAX_K = "max_seqlen_qo", "max_seqlen_kv"
    SEQUSED_K = None


_SGL = "sgl_kernel.flash_mla"
_FLASH_MLA = "flash_mla.flash_mla_interface"
_VLLM = "vllm.third_party.flashmla.flash_mla_interface"

ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint(_SGL, "get_mla_metadata", MlaMetadataSpec),
    EntryPoint(_SGL, "flash_mla_with_kvcache", FlashMlaDecodeSpec),
    EntryPoint(_FLASH_MLA, "get_mla_metadata", MlaMetadataSpec),
    EntryPoint(_FLASH_MLA, "get_mla_decoding_metadata", MlaDecodingMetadataSpec),
    EntryPoint(_FLASH_MLA, "flash_mla_with_kvcache", FlashMlaDecodeSpec),
    EntryPoint(_FLASH_MLA, "flash_attn_varlen_func", FlashMlaVarlenSpec),
    EntryPoint(_VLLM, "flash_mla_with_kvcache", FlashMlaDecodeSpec),
    EntryPoint(_VLLM, "flash_attn_varlen_func", FlashMlaVarlenSpec),
)
"""The FlashMLA entry points, in the order the guard patches them."""
