"""GR008 fresh-tensor-on-graph-metadata: both SGLang CUDA-graph APIs, and what must stay silent."""

from __future__ import annotations

import textwrap

from lint_rules import LintConfig, find_rule, lint_source

GR008 = find_rule("GR008")


def lint(code: str, config: LintConfig | None = None):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [GR008], config or LintConfig())
    assert errors == []
    return findings


CAPTURE = """
class FooBackend(AttentionBackend):
    def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
        metadata = FooMetadata()
        metadata.cache_seqlens_int32 = seq_lens.to(torch.int32)
        metadata.page_table = self.decode_cuda_graph_metadata["page_table"][:bs, :]
        self.decode_cuda_graph_metadata[bs] = metadata

    def {replay}(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info, seq_lens_cpu):
        metadata = self.decode_cuda_graph_metadata[bs]
{body}
"""


def backend(body: str, replay: str = "init_forward_metadata_replay_cuda_graph") -> str:
    return CAPTURE.replace("{replay}", replay).replace("{body}", textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8))


def test_fresh_cast_rebound_at_replay():
    (finding,) = lint(backend("metadata.cache_seqlens_int32 = seq_lens[:bs].to(torch.int32)"))
    assert finding.symbol == "FooBackend.init_forward_metadata_replay_cuda_graph"
    assert "cache_seqlens_int32" in finding.message and "decode_cuda_graph_metadata" in finding.message


def test_fresh_tensor_in_a_replay_helper():
    code = backend("self._set_page_table(metadata, req_pool_indices)") + textwrap.indent(
        textwrap.dedent(
            """
            def _set_page_table(self, metadata, req_pool_indices):
                metadata = self.decode_cuda_graph_metadata[req_pool_indices.shape[0]]
                metadata.page_table = torch.zeros(req_pool_indices.shape[0], self.max_pages, dtype=torch.int32)
            """
        ),
        " " * 4,
    )
    (finding,) = lint(code)
    assert finding.symbol == "FooBackend._set_page_table"


def test_in_place_writes_and_views_pass():
    code = backend(
        """
        metadata.cache_seqlens_int32.copy_(seq_lens[:bs].to(torch.int32))
        metadata.page_table = self.decode_cuda_graph_metadata["page_table"][:bs, :]
        metadata.max_seq_len_k = int(seq_lens_cpu.max().item())
        """
    )
    assert lint(code) == []


def test_a_field_never_bound_at_capture_is_left_to_gr004():
    assert lint(backend("metadata.encoder_page_table = torch.zeros(bs, 8)")) == []


def test_a_fresh_metadata_object_is_not_captured_metadata():
    code = backend(
        """
        metadata = FooMetadata()
        metadata.page_table = torch.zeros(bs, 8)
        self.forward_metadata = metadata
        """
    )
    assert lint(code) == []


def test_replay_method_names_from_the_config():
    code = backend("metadata.page_table = self.req_to_token[req_pool_indices].clone()", replay="refresh_graph_metadata")
    assert lint(code) == []
    config = LintConfig.extended(graph_replay_methods=["refresh_graph_metadata"])
    assert len(lint(code, config)) == 1
