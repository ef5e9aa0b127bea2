"""vLLM's FlashAttention (``vllm.vllm_flash_attn.flash_attn_interface``, the wheel's
vendored vllm-flash-attn): ``flash_attn_varlen_func`` (FA2 / FA3 / FA4 by ``fa_version``)
and FA3's ``get_scheduler_metadata``.

vLLM's ``FLASH_ATTN`` backend (and the MLA backends' prefill) launches
``flash_attn_varlen_func`` with q ``[num_tokens, num_heads, head_dim]`` and
``cu_seqlens_q`` ``[num_reqs + 1]`` int32 (``query_start_loc``), and either a paged KV
cache (k / v ``[num_blocks, block_size, num_kv_heads, head_dim]``, strided views of one
``[num_blocks, 2, ...]`` buffer; ``block_table`` ``[num_reqs, max_blocks_per_req]``
int32, rows of the persistent block table; ``seqused_k`` ``[num_reqs]`` int32 KV
lengths in tokens; ``cu_seqlens_k`` ``None``) or a ragged one (k / v ``[total_k,
num_kv_heads, head_dim]`` with ``cu_seqlens_k``); ``max_seqlen_q`` / ``max_seqlen_k``;
FA3's ``q_descale`` / ``k_descale`` / ``v_descale`` ``[num_reqs, num_kv_heads]``
float32 (an ``expand`` of the layer's scale; FA2 ignores them, FA4 takes them only
for FP8 inputs: they are checked on ``fa_version=3`` only).

Under full CUDA graphs vLLM pads the query to the captured token count
(``num_input_tokens``) and pads the requests with zero-length ones, so ``q.shape[0]``
may exceed ``cu_seqlens_q[-1]``: the kernel reads only ``cu_seqlens_q[-1]`` rows, and
the launch is described with ``padded_query`` (``cu_seqlens_q[-1] <= q.shape[0]``).

Argument names follow vLLM 0.33 / 0.34 (the same in both); positions come from the
installed signature. Invariant sources: see :mod:`.flash_attn_common`.
"""

from __future__ import annotations

from .base import EntryPoint
from .flash_attn_common import SchedulerMetadataSpec, VarlenSpec

__all__ = ["ENTRY_POINTS", "VllmVarlenSpec"]


class VllmVarlenSpec(VarlenSpec):
    """``vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func`` (module docstring)."""

    BLOCK_TABLE = "block_table"
    DESCALES = ("q_descale", "k_descale", "v_descale")
    VERSION = "fa_version"
    PADDED_QUERY = True


_INTERFACE = "vllm.vllm_flash_attn.flash_attn_interface"

ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint(_INTERFACE, "flash_attn_varlen_func", VllmVarlenSpec),
    EntryPoint(_INTERFACE, "get_scheduler_metadata", SchedulerMetadataSpec),
)
"""vLLM's FlashAttention entry points, in the order the guard patches them."""
