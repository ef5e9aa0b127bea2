"""The kernel entry points the runtime guard wraps, one module per kernel family.

Each family module declares its entry points (:class:`~.base.EntryPoint`: where the
callable is defined, its name, its aliases) together with the
:class:`~.base.LaunchSpec` that reads a call's arguments by name from the installed
library's real signature and maps them onto the typed metadata:

* :mod:`.flashinfer_trtllm`: ``trtllm_batch_decode_with_kv_cache``,
  ``trtllm_batch_context_with_kv_cache``, ``trtllm_ragged_attention_deepseek``,
  ``trtllm_batch_decode_with_kv_cache_mla``;
* :mod:`.flashinfer_wrappers`: ``BatchPrefillWithPagedKVCacheWrapper`` and
  ``BatchDecodeWithPagedKVCacheWrapper`` ``plan`` / ``run``.

:data:`ENTRY_POINTS` collects them in family order. A new family is a new module
whose ``ENTRY_POINTS`` is added to :data:`FAMILIES`.
"""

from __future__ import annotations

from . import flashinfer_trtllm, flashinfer_wrappers
from .base import EntryPoint, LaunchSpec

__all__ = ["ENTRY_POINTS", "FAMILIES", "EntryPoint", "LaunchSpec"]

FAMILIES = (flashinfer_trtllm, flashinfer_wrappers)
"""The family modules, each with an ``ENTRY_POINTS`` tuple."""

ENTRY_POINTS: tuple[EntryPoint, ...] = tuple(entry for family in FAMILIES for entry in family.ENTRY_POINTS)
"""Every guarded entry point."""
