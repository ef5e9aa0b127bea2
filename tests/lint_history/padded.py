"""Family 1, padded sizes (GR001; GR101 its strict form): a size derived from a padded count
reaches a kernel, or a backend pads for CUDA graphs itself.

Each entry was checked on the published wheels (``/work/corpus`` extracts): the rule reports
inside ``function`` in ``buggy`` and nothing there in ``fixed``. Not here, because no release
holds a fix yet: open SGLang #37785 (FA3 ``k_descale`` / ``v_descale`` sized from
``forward_batch.batch_size`` in ``FlashAttentionBackend.prepare_paged_mha_query``; GR001
reports it in ``forward_extend`` / ``forward_decode`` of 0.5.16-0.5.23, see
``tests/test_lint_padded_descale.py``).
"""

from __future__ import annotations

from tests.lint_history.ledger import HistoricalBug

BUGS: list[HistoricalBug] = [
    HistoricalBug(
        engine="sglang",
        buggy="0.5.9",
        fixed="0.5.10",
        path="sglang/srt/layers/attention/trtllm_mha_backend.py",
        function="TRTLLMHAAttnBackend.forward_extend",
        rule="GR001",
        source="sglang#21649",
        summary="trtllm_batch_context_with_kv_cache got batch_size=forward_batch.batch_size (DP-padded) "
        "instead of cu_seqlens_q.shape[0] - 1",
    ),
    HistoricalBug(
        engine="vllm",
        buggy="0.11.2",
        fixed="0.12.0",
        path="vllm/v1/attention/backends/flashinfer.py",
        function="FlashInferMetadataBuilder.build",
        rule="GR101",
        source="vllm#28579",
        summary="the builder padded the decode batch itself (pad_for_cudagraph) after the model runner "
        "had built CommonAttentionMetadata unpadded; padding moved before metadata building",
    ),
    HistoricalBug(
        engine="vllm",
        buggy="0.12.0",
        fixed="0.13.0",
        path="vllm/v1/attention/backends/mamba2_attn.py",
        function="Mamba2AttentionMetadataBuilder.build",
        rule="GR101",
        source="vllm#29352",
        summary="CUDA-graph padding (pad_for_cudagraph) inside the Mamba2 metadata builder, left over "
        "after #28579 moved padding before metadata building",
    ),
    HistoricalBug(
        engine="vllm",
        buggy="0.12.0",
        fixed="0.13.0",
        path="vllm/v1/attention/backends/mamba1_attn.py",
        function="Mamba1AttentionMetadataBuilder.build",
        rule="GR101",
        source="vllm#29352",
        summary="CUDA-graph padding (pad_for_cudagraph) inside the Mamba1 metadata builder",
    ),
    HistoricalBug(
        engine="vllm",
        buggy="0.12.0",
        fixed="0.13.0",
        path="vllm/v1/attention/backends/gdn_attn.py",
        function="GDNAttentionMetadataBuilder.build",
        rule="GR101",
        source="vllm#29352",
        summary="CUDA-graph padding of num_actual_tokens (pad_for_cudagraph) inside the GDN metadata builder",
    ),
    HistoricalBug(
        engine="vllm",
        buggy="0.12.0",
        fixed="0.13.0",
        path="vllm/v1/attention/backends/short_conv_attn.py",
        function="ShortConvAttentionMetadataBuilder.build",
        rule="GR101",
        source="vllm#29352",
        summary="CUDA-graph padding (pad_for_cudagraph) inside the ShortConv metadata builder",
    ),
]
