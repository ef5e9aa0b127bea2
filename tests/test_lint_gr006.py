"""GR006 token-slots-in-page-table: units followed through fields, helpers and page-size branches."""

from __future__ import annotations

import textwrap

import libcst as cst

from lint_rules import lint_source
from lint_rules.config import LintConfig
from lint_rules.gr006_token_slots_in_page_table import TokenSlotsInPageTable
from lint_rules.page_units import is_page_conversion, is_page_size_test

HELPER = """
class FooBackend(AttentionBackend):
    def init_forward_metadata(self, forward_batch):
        metadata = Metadata()
        metadata.page_table = forward_batch.req_to_token_pool.req_to_token[forward_batch.req_pool_indices]
        {between}
        self._local(metadata)

    def _local(self, md):
        make_local_attention_virtual_batches(chunk, cu_q, seq_lens, md.page_table, self.page_size)
"""


def _lint(code: str, config: LintConfig | None = None):
    findings, errors, _ = lint_source("x.py", textwrap.dedent(code), [TokenSlotsInPageTable], config or LintConfig())
    assert not errors
    return findings


def test_field_units_follow_the_helper_parameter():
    found = _lint(HELPER.format(between="pass"))
    assert [(f.symbol, f.line) for f in found] == [("FooBackend._local", 10)]
    assert "md.page_table" in found[0].message


def test_conversion_before_the_call_clears_the_field():
    converted = "metadata.page_table = metadata.page_table[:, self.strided_indices] // self.page_size"
    assert _lint(HELPER.format(between=converted)) == []


def test_page_size_one_branch_is_not_a_path_of_the_bug():
    code = """
    class FooBackend(AttentionBackend):
        def forward_decode(self, q, k, v, layer, forward_batch):
            page_table = forward_batch.req_to_token_pool.req_to_token[forward_batch.req_pool_indices]
            if self.page_size != 1:
                page_table = page_table[:, :: self.page_size] // self.page_size
            return flash_attn_with_kvcache(q, k, v, page_table=page_table)
    """
    assert _lint(code) == []
    assert len(_lint(code.replace("!= 1", "> 64"))) == 1  # not a page-size-1 test: both paths count


def test_extra_page_table_args_are_configurable():
    code = """
    class FooBackend(AttentionBackend):
        def forward_decode(self, q, k, v, layer, forward_batch):
            return my_kernel(q, pages=forward_batch.out_cache_loc, page_size=self.page_size)
    """
    assert _lint(code) == []
    assert _lint(code, LintConfig.extended(page_table_args=["pages"])) == []  # not a kernel
    assert len(_lint(code, LintConfig.extended(page_table_args=["pages"], kernel_calls=["my_kernel"]))) == 1


def test_conversion_and_page_size_tests():
    config = LintConfig()
    expr = lambda s: cst.parse_expression(s)  # noqa: E731
    assert is_page_conversion(expr("x // self.page_size"), config)
    assert is_page_conversion(expr("torch.div(x, page_size, rounding_mode='floor')"), config)
    assert not is_page_conversion(expr("x // 2"), config)
    assert is_page_size_test(expr("self.page_size > 1"), config) == "paged"
    assert is_page_size_test(expr("page_size == 1"), config) == "unit"
    assert is_page_size_test(expr("page_size == 16"), config) is None
