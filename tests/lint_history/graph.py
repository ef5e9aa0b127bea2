"""Family 3, CUDA-graph capture/replay (GR004, GR009): what replay writes disagrees with what
the captured graph reads.

Verified in the published wheels:

- GR004: ``TRTLLMMLABackend.init_forward_metadata_replay_cuda_graph`` of
  ``sglang/srt/layers/attention/trtllm_mla_backend.py`` fills the draft-extend
  ``cu_seqlens_q`` from ``cumsum(accept_length + 1)`` and rebinds ``max_seq_len_q`` /
  ``sum_seq_lens_q`` from ``accept_length_cpu`` in 0.5.9, while capture laid it out with a
  uniform ``num_tokens_per_bs`` stride; 0.5.10 replays the capture stride from
  ``self.num_draft_tokens`` (#21987).
- GR009: ``FlashMLAMetadataBuilder._build_decode`` of
  ``vllm/v1/attention/backends/mla/flashmla.py`` zeroes the tail of the persistent
  ``cg_buf_num_splits`` buffer (``self.cg_buf_num_splits[n:].fill_(0)``) in 0.10.0; 0.10.1
  fills it with ``num_splits[-1]`` ("Num splits needs to monotonically increasing", #21691,
  with vllm-project/FlashMLA#3).

No verified fix backs GR008 (no published release pair holds a replay that rebinds a
captured metadata field to a fresh tensor and its fix); GR007 was not shipped.
"""

from __future__ import annotations

from tests.lint_history.ledger import HistoricalBug

BUGS: list[HistoricalBug] = [
    HistoricalBug(
        engine="sglang",
        buggy="0.5.9",
        fixed="0.5.10",
        path="sglang/srt/layers/attention/trtllm_mla_backend.py",
        function="TRTLLMMLABackend.init_forward_metadata_replay_cuda_graph",
        rule="GR004",
        source="sglang#21987",
        summary="draft-extend replay filled cu_seqlens_q from cumsum(accept_length + 1) and rebound the baked "
        "max_seq_len_q, while capture used a uniform num_draft_tokens stride (rows read as another request's)",
    ),
    HistoricalBug(
        engine="vllm",
        buggy="0.10.0",
        fixed="0.10.1",
        path="vllm/v1/attention/backends/mla/flashmla.py",
        function="FlashMLAMetadataBuilder._build_decode",
        rule="GR009",
        source="vllm#21691",
        summary="the padded tail of the persistent num_splits buffer was zeroed, so a full CUDA graph captured "
        "for a larger batch read non-monotonic split offsets (illegal memory access in the combine kernel)",
    ),
]
