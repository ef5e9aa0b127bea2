"""Family 4, mode state (GR010): per-mode metadata set in one forward mode, read in another.

Verified in the published wheels: ``TRTLLMMLABackend.forward_extend`` of
``sglang/srt/layers/attention/trtllm_mla_backend.py`` tests
``self.forward_prefill_metadata.fallback_to_flashinfer_impl`` with no mode guard in
0.5.9 ... 0.5.15 (0.5.9: no planning path clears it for TARGET_VERIFY; 0.5.10 ... 0.5.15:
the eager ``init_forward_metadata`` clears it, the CUDA-graph paths do not); 0.5.16 tests
``is_extend() and not is_target_verify() and not is_draft_extend_v2()`` first (#32288,
cherry-picked to release/v0.5.16 as #32346).
"""

from __future__ import annotations

from tests.lint_history.ledger import HistoricalBug

BUGS: list[HistoricalBug] = [
    HistoricalBug(
        engine="sglang",
        buggy="0.5.15",
        fixed="0.5.16",
        path="sglang/srt/layers/attention/trtllm_mla_backend.py",
        function="TRTLLMMLABackend.forward_extend",
        rule="GR010",
        source="sglang#32288",
        summary="the last prefill's fallback_to_flashinfer_impl routed TARGET_VERIFY / draft-extend forwards "
        "planned by the CUDA-graph path into FlashInfer MLA (illegal memory access in the verify graph)",
    ),
]
