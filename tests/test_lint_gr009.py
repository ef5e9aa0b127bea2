"""GR009 cumulative-tail-breaks-monotonicity: which tail writes break the prefix sums, the fix, the config."""

from __future__ import annotations

import textwrap

import pytest

from lint_rules import LintConfig, find_rule, lint_source
from lint_rules.autofix import fix_source

GR009 = find_rule("GR009")


def lint(code: str, config: LintConfig | None = None):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [GR009], config or LintConfig())
    assert errors == []
    return findings


def builder(body: str) -> str:
    return "class FooMetadataBuilder(AttentionMetadataBuilder):\n    def build(self, common_prefix_len, m):\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), " " * 8
    )


@pytest.mark.parametrize(
    "write",
    [
        "self.kv_indptr[bs + 1 :].fill_(0)",
        "self.qo_indptr[1 + num_reqs :].zero_()",
        "self.query_start_loc.cpu[num_reqs + 1 :] = 0",
        "self.cu_seqlens_k.gpu[n : self.max_bs + 1].fill_(0.0)",
    ],
)
def test_zero_tail_of_a_cumulative_array_is_flagged(write):
    (finding,) = lint(builder(write))
    assert finding.rule == "GR009" and finding.symbol == "FooMetadataBuilder.build" and finding.fixable


@pytest.mark.parametrize(
    "write",
    [
        "self.kv_indptr[bs + 1 :].fill_(self.kv_indptr[bs])",  # repeats the last offset
        "self.seq_lens[num_reqs:].fill_(0)",  # no cumulative array: zero lengths are padding
        "self.kv_indptr[:1].zero_()",  # element 0 of an indptr
        "self.kv_indptr[0] = 0",
        "self.kv_indptr.zero_()",  # a whole-buffer reset
        "self.kv_indptr[::2].fill_(0)",  # a strided view is no tail
    ],
)
def test_other_writes_pass(write):
    assert lint(builder(write)) == []


def test_autofix_repeats_the_last_written_value():
    code = builder(
        """
        self.paged_kv_indptr[1 : 1 + num_reqs].copy_(paged_kv_indptr[1:])
        self.paged_kv_indptr[1 + num_reqs :].zero_()
        """
    )
    fixed = fix_source(code, lint(code), LintConfig())
    assert "self.paged_kv_indptr[1 + num_reqs :].fill_(self.paged_kv_indptr[1 + num_reqs - 1])" in fixed
    assert lint(fixed) == []


def test_extra_cumulative_arrays_from_the_config():
    code = builder("self.seg_offsets[bs + 1 :].fill_(0)")
    assert lint(code) == []
    assert len(lint(code, LintConfig.extended(cumulative_arrays=["seg_offsets"]))) == 1


def test_prefilter_skips_files_without_a_textual_tail_zero():
    rule = GR009(LintConfig())
    assert rule.wants("x.kv_indptr[bs + 1 :].fill_(0)\n")
    assert not rule.wants("x.kv_indptr[bs + 1 :].fill_(last)\nself.seq_lens[n:].fill_(0)\n")
