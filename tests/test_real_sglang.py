"""Published SGLang wheels (pip download, cached under .cache/, never committed).

GR001 must find the bug SGLang #21649 fixed in 0.5.9 and stay silent on 0.5.10's fix,
and a whole recent release must audit without a crash.
"""

from __future__ import annotations

import pytest

from lint_rules import audit_paths, select_rules

from .conftest import published_wheel

TRTLLM_MHA = "sglang/srt/layers/attention/trtllm_mha_backend.py"

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
    assert {f.rule for f in srt} <= {"GR001", "GR002"}
    assert all(f.symbol.count(".") == 1 for f in srt)
