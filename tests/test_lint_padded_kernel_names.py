"""GR001: the kernel is recognized however the backend names it (issue 13's aliased-import miss).

Each shape is one SGLang or vLLM backends use: ``from flashinfer.prefill import ... as ...``
(resolved through libcst's ``QualifiedNameProvider``), ``import flashinfer.prefill as P``,
the full module path, a module-level alias, a ``functools.partial`` of the kernel (SGLang's
``_flash_mla_with_kvcache``), and vLLM's ``vllm_flash_attn`` / SGLang's
``sglang.kernels.ops.attention`` imports of FA3.
"""

from __future__ import annotations

import textwrap

import pytest

from lint_rules import LintConfig, find_rule, lint_source

GR001 = find_rule("GR001")

BODY = """
class TRTLLMHAAttnBackend(AttentionBackend):
    def forward_extend(self, q, k, v, layer, forward_batch):
        return {call}(query=q, batch_size=forward_batch.batch_size)
"""


def lint(code: str):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [GR001], LintConfig())
    assert errors == []
    return findings


@pytest.mark.parametrize(
    ("header", "call"),
    [
        ("from flashinfer.prefill import trtllm_batch_context_with_kv_cache as context_kernel", "context_kernel"),
        ("import flashinfer.prefill as P", "P.trtllm_batch_context_with_kv_cache"),
        ("import flashinfer", "flashinfer.prefill.trtllm_batch_context_with_kv_cache"),
        ("from flashinfer import prefill", "prefill.trtllm_batch_context_with_kv_cache"),
        (
            "import flashinfer.prefill\ncontext_kernel = flashinfer.prefill.trtllm_batch_context_with_kv_cache",
            "context_kernel",
        ),
        (
            "import functools\nfrom flashinfer.prefill import trtllm_batch_context_with_kv_cache\n"
            "run_context = functools.partial(trtllm_batch_context_with_kv_cache, out_dtype=None)",
            "run_context",
        ),
        ("from sgl_kernel.flash_attn import flash_attn_with_kvcache as fa3", "fa3"),
        ("from sglang.kernels.ops.attention import flash_attn_varlen_func as fa_varlen", "fa_varlen"),
        ("from flash_mla import flash_mla_with_kvcache as mla_decode", "mla_decode"),
    ],
)
def test_gr001_names_the_kernel_through_imports_and_aliases(header, call):
    (finding,) = lint(header + "\n" + BODY.format(call=call))
    assert finding.line == header.count("\n") + 5
    assert "batch_size=forward_batch.batch_size" in finding.message


@pytest.mark.parametrize(
    "header",
    [
        "from mylib import log_size as context_kernel",  # an alias of something else
        "context_kernel = print",  # a module-level alias of a non-kernel
    ],
)
def test_gr001_an_alias_of_a_non_kernel_is_not_a_kernel(header):
    assert lint(header + "\n" + BODY.format(call="context_kernel")) == []


def test_gr001_names_vllm_flash_attn_under_an_alias_in_a_vllm_file():
    code = """
    from vllm.vllm_flash_attn import flash_attn_varlen_func as fa_varlen
    from vllm.v1.attention.backend import AttentionImpl

    class FlashAttentionImpl(AttentionImpl):
        def forward(self, layer, query, key, value, kv_cache, attn_metadata, output=None):
            n = attn_metadata.num_input_tokens
            return fa_varlen(q=query[:n], cu_seqlens_q=attn_metadata.query_start_loc, out=output[:n])
    """
    (finding,) = lint(code)
    assert finding.line == 7 and "`flash_attn_varlen_func()`" in finding.message
    assert finding.message.startswith("CUDA-graph-padded count")


def test_gr001_a_local_rebinding_inside_the_method_shadows_nothing_it_does_not_see():
    # the module-level alias is a kernel; a method that calls another local name is clean
    code = (
        "context_kernel = flashinfer.prefill.trtllm_batch_context_with_kv_cache\n"
        + BODY.format(call="log_batch")
    )
    assert lint(code) == []
