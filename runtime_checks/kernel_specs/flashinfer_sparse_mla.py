"""FlashInfer's DeepSeek-V4 sparse MLA decode: ``trtllm_batch_decode_sparse_mla_dsv4``.

Defined in ``flashinfer.mla._core`` (FlashInfer 0.7.2; re-exported by ``flashinfer.mla``
and ``flashinfer.decode``); SGLang 0.5.23's ``deepseek_v4_trtllm_backend`` calls it for
decode (dense query) and prefill (varlen query with ``cum_seq_lens_q`` / ``max_q_len``),
vLLM 0.33 / 0.34 through ``vllm.utils.flashinfer``. Its KV access goes through
``sparse_indices`` (token rows of the SWA / compressed pools, ``-1`` slots skipped), not
a page table, so of the catalog the batch-shape invariants apply: the batch size stated
by the query / ``cum_seq_lens_q`` / ``seq_lens``, the query rows ``cum_seq_lens_q`` ends
at, ``max_q_len``, int32 index tensors on the query's device. Not checked: the range of
``sparse_indices`` (no catalog invariant covers token-row indices yet).
"""

from __future__ import annotations

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch
from guardrails.tensor_facts import shape_of

from .base import EntryPoint, LaunchSpec

__all__ = ["ENTRY_POINTS", "SparseMlaDsv4Spec"]


class SparseMlaDsv4Spec(LaunchSpec):
    """``trtllm_batch_decode_sparse_mla_dsv4(query, swa_kv_cache, workspace_buffer, ...)``.

    query ``[batch_size, q_len_per_request, num_heads, 512]`` (dense) or ``[sum_q,
    num_heads, 512]`` with cum_seq_lens_q ``[batch_size + 1]`` int32 and max_q_len
    (varlen); seq_lens ``[batch_size]`` int32: the original KV length bounding the 128
    SWA columns (``clamp(seq_lens[b] - (q_len_b - 1 - q_off), 0, 128)`` of them are
    attended, so a length below the query's is legal: not read as a causal mask). The
    ``cake`` backend may be given metadata for fewer tokens than the query holds.
    """

    TENSORS = ("query", "seq_lens", "cum_seq_lens_q")
    INDEX_TENSORS = ("seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_q_len", "backend")

    def describe(self, ns):
        q = ns["query"]
        shape = shape_of(q)
        ragged = ns["cum_seq_lens_q"] is not None
        common = dict(seq_lens=ns["seq_lens"], causal=False, padded_query=ns["backend"] == "cake")
        if ragged:
            batch = AttentionBatch(forward_mode=ForwardMode.EXTEND, kernel=Kernel.PREFILL, num_query_rows=shape[0],
                                   cu_seqlens_q=ns["cum_seq_lens_q"], max_seq_len_q=ns["max_q_len"], **common)
        elif len(shape) == 4:
            q_len = shape[1]
            batch = AttentionBatch(
                forward_mode=ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY, kernel=Kernel.DECODE,
                batch_size=shape[0], num_query_rows=shape[0] * q_len, q_len_per_req=q_len, **common)
        else:
            return None, None
        return batch, None


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.mla", "trtllm_batch_decode_sparse_mla_dsv4", SparseMlaDsv4Spec),
)
"""The sparse-MLA entry point."""
