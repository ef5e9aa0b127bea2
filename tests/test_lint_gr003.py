"""GR003 draft-extend-routed-to-decode-kernel on the shapes met in real SGLang backends."""

from __future__ import annotations

import textwrap

from lint_rules import LintConfig, find_rule, lint_source

GR003 = find_rule("GR003")


def lint(code: str):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [GR003], LintConfig())
    assert errors == []
    return findings


ROUTING = """
class TRTLLMHAAttnBackend(AttentionBackend):
    {metadata}

    def forward_extend(self, q, k, v, layer, forward_batch):
        uses_decode_kernel = (
            forward_batch.forward_mode.is_target_verify()
            or forward_batch.forward_mode.is_draft_extend_v2()
        )
        if uses_decode_kernel:
            if forward_batch.forward_mode.is_target_verify() and layer.encoder_only:
                return trtllm_batch_decode_with_kv_cache(query=q, q_len_per_req=1)
            return self._run_fixed_q_len_decode(q, q_len_per_req=self.forward_metadata.max_seq_len_q)
        return trtllm_batch_context_with_kv_cache(query=q)
"""


def test_generic_extend_branch_is_not_draft_extend_metadata():
    metadata = """def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_target_verify():
            self.build_verify(forward_batch)
        elif any(forward_batch.extend_prefix_lens_cpu) or forward_batch.forward_mode.is_draft_extend_v2():
            self.build_extend(forward_batch)"""
    (finding,) = lint(ROUTING.format(metadata=metadata))
    assert finding.symbol == "TRTLLMHAAttnBackend.forward_extend"
    assert "DRAFT_EXTEND_V2" in finding.message and "DRAFT_EXTEND " not in finding.message


def test_cuda_graph_builder_with_a_v2_branch_counts_as_mode_metadata():
    # sglang 0.5.14 .. 0.5.23: _build_cuda_graph_metadata has `elif is_draft_extend_v2():`
    metadata = """def _build_cuda_graph_metadata(self, bs, num_tokens, forward_mode, spec_info):
        if forward_mode.is_target_verify():
            self.verify(bs)
        elif forward_mode.is_draft_extend_v2():
            self.draft_extend(bs, spec_info.num_tokens_per_req)"""
    assert lint(ROUTING.format(metadata=metadata)) == []


def test_v1_metadata_does_not_cover_v2_routing():
    metadata = """def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_draft_extend():
            self.build_draft_extend_v1(forward_batch)"""
    (finding,) = lint(ROUTING.format(metadata=metadata))
    assert "DRAFT_EXTEND_V2" in finding.message


def test_include_v2_predicate_covers_both_modes():
    metadata = """def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_draft_extend(include_v2=True):
            self.build_draft_extend(forward_batch)"""
    assert lint(ROUTING.format(metadata=metadata)) == []


def test_a_non_backend_class_is_ignored():
    code = ROUTING.format(metadata="pass").replace("TRTLLMHAAttnBackend(AttentionBackend)", "Runner")
    assert lint(code) == []
