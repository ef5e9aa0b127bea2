"""The vLLM profile: the rules see vLLM's attention backends (issue 13, family 6).

vLLM's v1 backends plan in ``*MetadataBuilder`` classes (``build``, ``_build_decode``,
``build_for_cudagraph_capture``) from a ``CommonAttentionMetadata`` and launch kernels in
``*AttentionImpl.forward``; the padded sizes are CUDA-graph padding (``num_input_tokens``,
``num_reqs_padded``, ``pad_for_cudagraph(n)``) against ``num_actual_tokens`` / ``num_reqs``.
The profile is chosen per file from its imports (``auto``), or forced by ``profile``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest

from lint_rules import LintConfig, find_rule, lint_source
from lint_rules.backend_scope import has_backend_class_text, iter_backend_classes
from lint_rules.config import ConfigError, read_config_file
from lint_rules.engine_profile import ENGINES, engines_for, imported_engines, module_engines

GR001, GR101 = find_rule("GR001"), find_rule("GR101")

BUILDER = '''
from vllm.v1.attention.backends.utils import AttentionMetadataBuilder, CommonAttentionMetadata


class FlashInferMetadataBuilder(AttentionMetadataBuilder["FlashInferMetadata"]):
    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata, fast_build: bool = False):
        num_decodes = common_attn_metadata.num_reqs
        num_input_tokens = self.vllm_config.pad_for_cudagraph(num_decodes)
        return self._plan(self.paged_kv_indptr[: num_input_tokens + 1])

    def build_for_cudagraph_capture(self, common_attn_metadata: CommonAttentionMetadata):
        return self.build(0, common_attn_metadata)
'''

IMPL = '''
from vllm.v1.attention.backend import AttentionImpl
from vllm.vllm_flash_attn import flash_attn_varlen_func


class FlexAttentionImpl(AttentionImpl):
    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output=None):
        num_tokens = attn_metadata.num_input_tokens
        return self._run(query, output, attn_metadata, num_tokens=num_tokens)

    def _run(self, query, output, attn_metadata, num_tokens):
        return flash_attn_varlen_func(
            q=query[:num_tokens], cu_seqlens_q=attn_metadata.query_start_loc, out=output[:num_tokens]
        )
'''


def lint(code: str, rule, config: LintConfig | None = None):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [rule], config or LintConfig())
    assert errors == []
    return findings


def test_profile_is_taken_from_the_engine_the_file_imports():
    assert imported_engines(BUILDER) == {"vllm"}
    assert imported_engines("from sglang.srt.layers.attention.base_attn_backend import AttentionBackend") == {"sglang"}
    assert imported_engines("import torch\nfrom vllm_flash_attn import x") == frozenset()  # not the engine
    assert engines_for("auto", "import torch") == ENGINES  # neither: both apply
    assert engines_for("sglang", BUILDER) == {"sglang"}  # forced
    assert module_engines(cst.parse_module("try:\n    import vllm.envs as envs\nexcept ImportError:\n    pass\n")) == {
        "vllm"
    }


def test_metadata_builders_are_backend_classes_in_the_vllm_profile_only():
    module = cst.parse_module(BUILDER)
    assert [c.name.value for c in iter_backend_classes(module)] == ["FlashInferMetadataBuilder"]
    assert list(iter_backend_classes(module, profile="sglang")) == []
    assert has_backend_class_text(BUILDER) and not has_backend_class_text(BUILDER, "sglang")
    # SGLang has a LocalAttentionMetadataBuilder helper: not a backend in its profile
    sglang = "from sglang.srt.utils import x\nclass LocalAttentionMetadataBuilder:\n    pass\n"
    assert list(iter_backend_classes(cst.parse_module(sglang))) == []


def test_builder_methods_are_planning_code():
    config = LintConfig()
    for name in ("build", "_build_decode", "_build_prefill", "build_for_cudagraph_capture"):
        assert config.is_planning_method(name), name
    for name in ("forward", "forward_mqa", "forward_mha", "_forward_decode", "_forward_prefill"):
        assert config.is_forward_method(name), name


def test_gr001_passes_the_prefilter_and_follows_a_padded_count_into_a_helper():
    assert GR001(LintConfig()).wants(IMPL)
    (finding,) = lint(IMPL, GR001)
    assert finding.symbol == "FlexAttentionImpl.forward" and finding.line == 8
    assert finding.message.startswith("CUDA-graph-padded count reaches an FMHA kernel")
    assert "`self._run()`" in finding.message and "flash_attn_varlen_func" in finding.message
    assert lint(IMPL, GR001, LintConfig(profile="sglang")) == []  # not a padded size there


def test_gr001_is_silent_on_a_builder_padding_for_its_captured_wrapper():
    assert lint(BUILDER, GR001) == []


def test_gr101_flags_each_padding_in_a_builder():
    (finding,) = lint(BUILDER, GR101)
    assert finding.symbol == "FlashInferMetadataBuilder.build" and finding.line == 7
    assert "pad_for_cudagraph" in finding.message


def test_gr001_padded_count_names_come_from_config():
    code = IMPL.replace("num_input_tokens", "tokens_with_graph_pad")
    assert lint(code, GR001) == []
    assert len(lint(code, GR001, LintConfig.extended(padded_counts=["tokens_with_graph_*"]))) == 1


def test_profile_key_in_the_config_file(tmp_path: Path):
    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[fmha-guard]\nprofile = vllm\nextra-padded-counts = num_graph_tokens\n")
    config = read_config_file(cfg)
    assert config.profile == "vllm" and "num_graph_tokens" in config.padded_counts
    cfg.write_text("[fmha-guard]\nprofile = lmdeploy\n")
    with pytest.raises(ConfigError, match="profile.*expected one of auto, sglang, vllm"):
        read_config_file(cfg)
