"""Published SGLang wheels (pip download, cached under .cache/, never committed).

GR001 must find the bug SGLang #21649 fixed in 0.5.9 and stay silent on 0.5.10's fix;
GR004 the #21987 bug in 0.5.9's TRTLLMMLABackend replay and not 0.5.10's fix; GR003
must see 0.5.23's draft-extend-v2 decode routing and stay silent because the class
builds draft-extend-v2 metadata (no published release has #24856's unfixed form); a
whole recent release must audit without a crash.
"""

from __future__ import annotations

import zipfile

import pytest

from lint_rules import LintConfig, audit_paths, find_rule, lint_source, select_rules

from .conftest import published_wheel

TRTLLM_MHA = "sglang/srt/layers/attention/trtllm_mha_backend.py"
TRTLLM_MLA = "sglang/srt/layers/attention/trtllm_mla_backend.py"

pytestmark = pytest.mark.network


def _context_kernel_findings(version: str):
    result = audit_paths([published_wheel("sglang", version)], select_rules(["GR001"]))
    assert result.errors == []
    return [
        f for f in result.findings
        if f.path == TRTLLM_MHA and f.symbol == "TRTLLMHAAttnBackend.forward_extend"
    ], result


def test_gr001_finds_the_21649_bug_in_sglang_0_5_9():
    findings, result = _context_kernel_findings("0.5.9")
    assert len(findings) == 1
    (finding,) = findings
    assert "batch_size=forward_batch.batch_size" in finding.message
    assert "trtllm_batch_context_with_kv_cache" in finding.message
    assert result.lines[(finding.path, finding.line)] == "batch_size=forward_batch.batch_size,"


def test_gr001_is_silent_on_the_fixed_form_in_sglang_0_5_10():
    findings, _ = _context_kernel_findings("0.5.10")
    assert findings == []


def test_whole_sglang_0_5_23_audits_without_a_crash():
    wheel = published_wheel("sglang", "0.5.23")
    result = audit_paths([wheel], select_rules())
    srt = [p for p in result.findings if p.path.startswith("sglang/srt/")]
    assert result.files_scanned >= 2141
    assert result.errors == []
    assert {f.rule for f in srt} <= {"GR001", "GR002", "GR003", "GR004"}
    assert all(f.symbol.count(".") == 1 for f in srt)
    assert not [f for f in srt if f.rule == "GR003"]
    # GR003 does see the routing: ignore the CUDA-graph metadata and it fires.
    text = zipfile.ZipFile(wheel).read(TRTLLM_MHA).decode()
    eager_only = LintConfig(planning_methods=("init_forward_metadata",))
    findings, errors, _ = lint_source(TRTLLM_MHA, text, [find_rule("GR003")], eager_only)
    assert errors == [] and [f.symbol for f in findings] == ["TRTLLMHAAttnBackend.forward_extend"]


def _gr004_findings(version: str):
    result = audit_paths([published_wheel("sglang", version)], select_rules(["GR004"]))
    assert result.errors == []
    return [f for f in result.findings if f.path == TRTLLM_MLA], result


def test_gr004_finds_the_21987_replay_layout_in_sglang_0_5_9():
    findings, result = _gr004_findings("0.5.9")
    assert {f.symbol for f in findings} == {"TRTLLMMLABackend.init_forward_metadata_replay_cuda_graph"}
    lines = [result.lines[(f.path, f.line)] for f in findings]
    assert any(line.startswith("metadata.cu_seqlens_q[1:].copy_(") for line in lines)
    assert any(line.startswith("metadata.max_seq_len_q = max(spec_info.accept_length_cpu") for line in lines)


def test_gr004_is_silent_on_the_21987_fix_in_sglang_0_5_10():
    findings, _ = _gr004_findings("0.5.10")
    assert findings == []
