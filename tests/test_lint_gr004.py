"""GR004 cuda-graph-replay-layout: both SGLang CUDA-graph APIs, and what must stay silent."""

from __future__ import annotations

import textwrap

from lint_rules import LintConfig, find_rule, lint_source

GR004 = find_rule("GR004")

ROUTE = """
        def forward_extend(self, q, k, v, layer, forward_batch):
            if forward_batch.forward_mode.is_draft_extend_v2():
                return trtllm_batch_decode_with_kv_cache(query=q, q_len_per_req=self.forward_metadata.max_seq_len_q)
            return trtllm_batch_context_with_kv_cache(query=q)
"""


def lint(code: str):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [GR004], LintConfig())
    assert errors == []
    return findings


def test_out_graph_shared_apply_with_capture_override_flags_the_per_step_rebind():
    # sglang 0.5.13 TRTLLMHAAttnBackend: the shared body rebinds max_seq_len_q from
    # num_accept_tokens_cpu; the capture arm restores the baked upper bound afterwards.
    code = """
    class TRTLLMHAAttnBackend(AttentionBackend):
        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
            bs = forward_batch.batch_size
            self._apply_cuda_graph_metadata(bs, forward_batch.forward_mode, forward_batch.spec_info)
            if in_capture:
                self.forward_metadata.max_seq_len_q = forward_batch.positions.numel() // bs

        def _apply_cuda_graph_metadata(self, bs, forward_mode, spec_info):
            metadata = self.draft_extend_metadata[bs]
            if forward_mode.is_draft_extend_v2():
                metadata.max_seq_len_q = max(spec_info.num_accept_tokens_cpu)
    """ + ROUTE
    (finding,) = lint(code)
    assert finding.symbol == "TRTLLMHAAttnBackend._apply_cuda_graph_metadata"
    assert "max_seq_len_q" in finding.message


def test_capture_arm_uniform_replay_arm_cumsum():
    code = """
    class FooBackend(AttentionBackend):
        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
            metadata = self.draft_extend_metadata[forward_batch.batch_size]
            if forward_batch.forward_mode.is_draft_extend_v2():
                if not in_capture:
                    metadata.cu_seqlens_q[1:].copy_(torch.cumsum(forward_batch.extend_seq_lens, dim=0))
                else:
                    metadata.cu_seqlens_q.copy_(torch.arange(0, 4 * forward_batch.batch_size + 1, 4))
    """ + ROUTE
    (finding,) = lint(code)
    assert "data-dependent cumsum" in finding.message and "uniform-stride" in finding.message


#: The legacy CUDA-graph API (SGLang <= 0.5.12): one method per path.
LEGACY_API = """
class {backend}(AttentionBackend):
    def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
{capture}

    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
{replay}
"""


def legacy_api(backend: str, capture: str, replay: str) -> str:
    """A backend on the legacy API with these method bodies (any indentation)."""

    def body(code: str) -> str:
        return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * 8)

    return LEGACY_API.replace("{backend}", backend).replace("{capture}", body(capture)).replace("{replay}", body(replay))


def test_fresh_tensor_bound_only_at_replay():
    code = legacy_api(
        "FooBackend",
        capture="self.forward_metadata = self.graph_metadata[bs]",
        replay="""
        metadata = self.graph_metadata[bs]
        metadata.page_table = torch.zeros(bs, 128)
        metadata.num_splits = self.cuda_graph_num_splits[: bs + 1]
        """,
    )
    (finding,) = lint(code)
    assert "page_table" in finding.message and "never on the capture path" in finding.message


def test_views_of_persistent_buffers_and_kv_side_scalars_are_fine():
    # sglang FlashMLABackend: replay rebinds fields to views of buffers bound at capture
    code = legacy_api(
        "FlashMLABackend",
        capture="""
        self.forward_metadata = FlashMLADecodeMetadata(self.cuda_graph_mla_metadata, self.cuda_graph_num_splits[: bs + 1])
        """,
        replay="""
        self.forward_metadata.mla_metadata = self.cuda_graph_mla_metadata_view
        self.forward_metadata.num_splits = self.cuda_graph_num_splits_view
        self.forward_metadata.max_seq_len_k = seq_lens_cpu.max().item()
        """,
    )
    assert lint(code) == []


def test_a_fallback_for_an_unset_stride_is_no_per_step_value():
    # sglang 0.5.14 TRTLLMHAAttnBackend._apply_cuda_graph_metadata: the synthetic capture
    # input leaves num_tokens_per_req unset; the `.item()` fallback runs only then.
    code = """
    class TRTLLMHAAttnBackend(AttentionBackend):
        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
            self._apply_cuda_graph_metadata(forward_batch.batch_size, forward_batch.forward_mode, forward_batch.spec_info)

        def _apply_cuda_graph_metadata(self, bs, forward_mode, spec_info):
            metadata = self.draft_extend_metadata[bs]
            if forward_mode.is_draft_extend_v2():
                num_tokens_per_bs = spec_info.num_tokens_per_req
                if num_tokens_per_bs <= 0:
                    num_tokens_per_bs = int(spec_info.num_accept_tokens[:bs].max().item())
                metadata.max_seq_len_q = num_tokens_per_bs
    """ + ROUTE
    assert lint(code) == []
    # without the guard, the same rebinding reads per-step data at replay
    assert len(lint(code.replace("if num_tokens_per_bs <= 0:", "if forward_mode.is_draft_extend_v2():"))) == 1


def test_graph_method_names_from_the_config():
    code = legacy_api(
        "FooBackend",
        capture="self.forward_metadata = self.graph_metadata[bs]",
        replay="""
        metadata = self.graph_metadata[bs]
        metadata.page_table = torch.zeros(bs, 128)
        """,
    ).replace("init_forward_metadata_replay_cuda_graph", "refresh_graph")
    findings, errors, _ = lint_source("b.py", code, [GR004], LintConfig.extended(graph_replay_methods=["refresh_graph"]))
    assert errors == [] and len(findings) == 1 and "page_table" in findings[0].message
    assert lint(code) == []
