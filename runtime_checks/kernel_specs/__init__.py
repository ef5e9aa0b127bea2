"""The kernel entry points the runtime guard wraps, one module per kernel family.

Each family module declares its entry points (:class:`~.base.EntryPoint`: where the
callable is defined, its name, its aliases) together with the
:class:`~.base.LaunchSpec` that reads a call's arguments by name from the installed
library's real signature and maps them onto the typed metadata:

* :mod:`.flashinfer_trtllm`: ``trtllm_batch_decode_with_kv_cache``,
  ``trtllm_batch_context_with_kv_cache``, ``trtllm_ragged_attention_deepseek``,
  ``trtllm_batch_decode_with_kv_cache_mla``;
* :mod:`.flashinfer_wrappers`: ``BatchPrefillWithPagedKVCacheWrapper``,
  ``BatchDecodeWithPagedKVCacheWrapper`` and ``BatchPrefillWithRaggedKVCacheWrapper``
  ``plan`` (``begin_forward``) / ``run``, and ``fast_decode_plan``;
* :mod:`.flashinfer_mla`: ``BatchMLAPagedAttentionWrapper`` ``plan`` / ``run``;
* :mod:`.flashinfer_xqa`: ``xqa_batch_decode_with_kv_cache``;
* :mod:`.flashinfer_fmha_v2`: ``trtllm_fmha_v2_prefill``;
* :mod:`.flashinfer_sparse_mla`: ``trtllm_batch_decode_sparse_mla_dsv4``;
* :mod:`.sgl_kernel_flash_attn`: SGLang's FA3 / FA4 (``sgl_kernel.flash_attn``
  ``flash_attn_with_kvcache``, ``flash_attn_varlen_func``, ``get_scheduler_metadata``);
* :mod:`.vllm_flash_attn`: vLLM's FA2 / FA3 / FA4 (``vllm.vllm_flash_attn``
  ``flash_attn_varlen_func``, ``get_scheduler_metadata``);
* :mod:`.flash_mla`: FlashMLA (``flash_mla_with_kvcache`` and its schedule metadata) of
  ``sgl_kernel.flash_mla``, ``flash_mla`` and ``vllm.third_party.flashmla``.

A family whose library is not installed is simply not patched (its modules are
patched if they are ever imported; :mod:`runtime_checks.activation`). What the
FlashAttention families share is in :mod:`.flash_attn_common`.

:data:`ENTRY_POINTS` collects them in family order. A new family is a new module
whose ``ENTRY_POINTS`` is added to :data:`FAMILIES`.
"""

from __future__ import annotations

from . import (
    flash_mla,
    flashinfer_fmha_v2,
    flashinfer_mla,
    flashinfer_sparse_mla,
    flashinfer_trtllm,
    flashinfer_wrappers,
    flashinfer_xqa,
    sgl_kernel_flash_attn,
    vllm_flash_attn,
)
from .base import EntryPoint, LaunchSpec

__all__ = ["ENTRY_POINTS", "FAMILIES", "EntryPoint", "LaunchSpec"]

FAMILIES = (flashinfer_trtllm, flashinfer_wrappers, flashinfer_mla, flashinfer_xqa, flashinfer_fmha_v2, flashinfer_sparse_mla, sgl_kernel_flash_attn, vllm_flash_attn, flash_mla)
"""The family modules, each with an ``ENTRY_POINTS`` tuple."""

ENTRY_POINTS: tuple[EntryPoint, ...] = tuple(entry for family in FAMILIES for entry in family.ENTRY_POINTS)
"""Every guarded entry point."""
