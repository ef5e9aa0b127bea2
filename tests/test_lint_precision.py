"""GR001 / GR002 on the shapes met in real SGLang backends: what must and must not be flagged."""

from __future__ import annotations

import textwrap

from lint_rules import LintConfig, find_rule, lint_source

GR001 = find_rule("GR001")
GR002 = find_rule("GR002")


def lint(code: str, rule, config: LintConfig | None = None):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [rule], config or LintConfig())
    assert errors == []
    return findings


def test_gr001_dict_of_kernel_args_built_from_padded_size():
    # sglang 0.5.9 TRTLLMMLABackend.forward_extend: **common_trtllm_args
    code = """
    class TRTLLMMLABackend(FlashInferMLAAttnBackend):
        def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
            common = {"query": q, "batch_size": forward_batch.batch_size}
            return flashinfer.prefill.trtllm_ragged_attention_deepseek(**common, out=None)
    """
    (finding,) = lint(code, GR001)
    assert finding.line == 4 and "**common" in finding.message


def test_gr001_returned_path_does_not_leak_into_the_other_branch():
    code = """
    class FooBackend:
        def forward_extend(self, q, k, v, layer, forward_batch):
            if forward_batch.forward_mode.is_target_verify():
                q = q.view(forward_batch.batch_size, -1, 8, 64)
                return trtllm_batch_decode_with_kv_cache(query=q)
            return flash_attn_varlen_func(q=q)
    """
    (finding,) = lint(code, GR001)
    assert finding.line == 5


def test_gr001_follows_only_the_tainted_result_of_a_helper():
    # sglang 0.5.23 FlashAttentionBackend.prepare_paged_mha_query: the batch size sizes
    # the descale tensors it returns, not q.
    code = """
    class FlashAttentionBackend:
        def prepare_query(self, q, layer, logical_batch_size):
            k_descale = layer.k_scale.expand((logical_batch_size, 8))
            return q, k_descale

        def forward_extend(self, q, k, v, layer, forward_batch):
            q, k_descale = self.prepare_query(q, layer, logical_batch_size=forward_batch.batch_size)
            return flash_attn_with_kvcache(q=q, block_table=k_descale)
    """
    findings = lint(code, GR001)
    assert [f.line for f in findings] == [8]
    assert "block_table=k_descale" in findings[0].message and "q=q" not in findings[0].message


def test_gr001_scalar_scale_arguments_carry_no_batch_extent():
    code = """
    class TRTLLMHAAttnBackend:
        def forward_decode(self, q, k, v, layer, forward_batch):
            bmm1_scale = layer.k_scale * layer.scaling * forward_batch.batch_size
            return trtllm_batch_decode_with_kv_cache(query=q, bmm1_scale=bmm1_scale, enable_pdl=forward_batch.batch_size > 8)
    """
    assert lint(code, GR001) == []


def test_gr001_descale_sized_from_the_padded_batch_is_a_batch_extent():
    # FA3 checks k_descale's shape against (batch implied by cu_seqlens_q, num_heads_k):
    # sized from forward_batch.batch_size it is rejected under DP padding (SGLang #37785).
    code = """
    class FlashAttentionBackend:
        def forward_decode(self, q, k, v, layer, forward_batch):
            k_descale = layer.k_scale.expand((forward_batch.batch_size, layer.tp_k_head_num))
            return flash_attn_with_kvcache(q=q, k_descale=k_descale)
    """
    (finding,) = lint(code, GR001)
    assert finding.line == 4 and "k_descale=k_descale" in finding.message


def test_gr001_raise_guard_makes_later_uses_safe():
    code = """
    class FooBackend:
        def forward_decode(self, q, k, v, layer, forward_batch):
            if self.forward_metadata.batch_size != forward_batch.batch_size:
                raise RuntimeError("metadata planned for another batch")
            return trtllm_batch_decode_with_kv_cache(query=q.view(forward_batch.batch_size, -1))
    """
    assert lint(code, GR001) == []


def test_gr001_kernel_names_come_from_config():
    code = """
    class FooBackend:
        def forward_decode(self, q, k, v, layer, forward_batch):
            return my_paged_attention(q, forward_batch.batch_size)
    """
    assert lint(code, GR001) == []
    config = LintConfig.extended(kernel_calls=["my_paged_*"])
    assert len(lint(code, GR001, config)) == 1


def test_gr002_immutable_facts_and_trailing_shape_dims_are_not_flagged():
    code = """
    class TritonAttnBackend:
        def __init__(self, model_runner):
            self.v_head_dim = model_runner.token_to_kv_pool.get_value_buffer(0).shape[-1]
            self.kv_cache_dtype = model_runner.token_to_kv_pool.store_dtype
            self.num_tokens = model_runner.token_to_kv_pool.get_value_buffer(0).shape[0]
    """
    (finding,) = lint(code, GR002)
    assert finding.line == 5 and "num_tokens" in finding.message


def test_gr002_reads_through_the_self_alias():
    code = """
    class TritonAttnBackend:
        def __init__(self, model_runner):
            self.token_to_kv_pool = model_runner.token_to_kv_pool
            self.use_sliding_window_kv_pool = isinstance(self.token_to_kv_pool, SWAKVPool)
    """
    (finding,) = lint(code, GR002)
    assert finding.line == 4 and finding.symbol == "TritonAttnBackend.__init__"


def test_gr001_follows_the_size_into_a_private_helper_and_reports_the_call_site():
    # sglang 0.5.23 DeepseekSparseAttnBackend.forward_decode -> _forward_aiter(bs=...)
    code = """
    class DeepseekSparseAttnBackend(AttentionBackend):
        def forward_decode(self, q, k, v, layer, forward_batch):
            return self._forward_aiter(q_all=q, layer=layer, bs=forward_batch.batch_size)

        def _forward_aiter(self, q_all, layer, bs):
            kv_indptr = self.kv_indptr
            kv_indptr[1 : bs + 1] = torch.cumsum(self.counts, dim=0)
            kwargs = self._prepare_persistent(kv_indptr, bs)
            return mla_decode_fwd(q_all, kv_indptr, **kwargs)

        def _prepare_persistent(self, kv_indptr, bs):
            return {"work": torch.empty(bs)}
    """
    (finding,) = lint(code, GR001)
    assert finding.symbol == "DeepseekSparseAttnBackend.forward_decode" and finding.line == 3
    assert "`self._forward_aiter()`" in finding.message and "mla_decode_fwd" in finding.message


def test_gr001_helper_two_levels_deep_and_guarded_caller():
    code = """
    class FooBackend(AttentionBackend):
        def forward_extend(self, q, k, v, layer, forward_batch):
            if self.forward_metadata.batch_size < forward_batch.batch_size:
                self.init_forward_metadata(forward_batch)
            return self._outer(q, n=forward_batch.batch_size)

        def forward_decode(self, q, k, v, layer, forward_batch):
            return self._outer(q, n=forward_batch.batch_size)

        def _outer(self, q, n):
            return self._inner(q, size=n)

        def _inner(self, q, size):
            return trtllm_batch_decode_with_kv_cache(query=q[:size])
    """
    (finding,) = lint(code, GR001)
    assert finding.symbol == "FooBackend.forward_decode"
    assert "`self._outer()` -> `self._inner()`" in finding.message


def test_gr001_resolves_a_kernel_imported_under_an_alias_in_the_method():
    code = """
    class FooBackend(AttentionBackend):
        def forward_decode(self, q, k, v, layer, forward_batch):
            from flashinfer.decode import trtllm_batch_decode_with_kv_cache as decode_kernel
            return decode_kernel(query=q, batch_size=forward_batch.batch_size)
    """
    (finding,) = lint(code, GR001)
    assert finding.line == 4 and "`trtllm_batch_decode_with_kv_cache()`" in finding.message


def test_gr001_an_alias_named_like_a_kernel_is_the_function_it_imports():
    code = """
    from mylib import log_size as trtllm_batch_decode_with_kv_cache

    class FooBackend(AttentionBackend):
        def forward_decode(self, q, k, v, layer, forward_batch):
            return trtllm_batch_decode_with_kv_cache(query=q, batch_size=forward_batch.batch_size)
    """
    assert lint(code, GR001) == []
