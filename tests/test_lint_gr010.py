"""GR010 stale-per-mode-state on the shapes met in real SGLang backends, and the forward-mode
evaluation it rests on (``lint_rules.forward_mode_predicates``)."""

from __future__ import annotations

import textwrap

import libcst as cst
import pytest

from lint_rules import LintConfig, find_rule, lint_source
from lint_rules.forward_mode_predicates import may_be_true, mode_value

GR010 = find_rule("GR010")


def lint(code: str, config: LintConfig | None = None):
    findings, errors, _ = lint_source("b.py", textwrap.dedent(code).strip("\n"), [GR010], config or LintConfig())
    assert errors == []
    return findings


def value(expr: str, mode: str, flags: dict[str, str] | None = None):
    bound = {k: cst.parse_expression(v) for k, v in (flags or {}).items()}
    return mode_value(cst.parse_expression(expr), mode, bound)


@pytest.mark.parametrize(
    ("expr", "mode", "expected"),
    [
        ("fb.forward_mode.is_extend()", "TARGET_VERIFY", True),  # SGLang: verify is an extend
        ("fb.forward_mode.is_extend()", "DRAFT_EXTEND_V2", False),
        ("fb.forward_mode.is_extend(include_draft_extend_v2=True)", "DRAFT_EXTEND_V2", True),
        ("forward_mode.is_draft_extend(include_v2=True)", "DRAFT_EXTEND_V2", True),
        ("not forward_mode.is_decode_or_idle()", "IDLE", False),
        ("forward_mode.is_extend() and not forward_mode.is_target_verify()", "TARGET_VERIFY", False),
        ("forward_mode.is_extend() and not forward_mode.is_target_verify()", "EXTEND", True),
        ("forward_mode.is_extend() and self.use_ragged", "EXTEND", None),  # not decided by the mode
        ("forward_mode.is_extend() and self.use_ragged", "DECODE", False),
        ("self.use_ragged or forward_mode.is_decode()", "DECODE", True),
        ("forward_mode == ForwardMode.DECODE", "DECODE", True),
        ("forward_mode in (ForwardMode.DECODE, ForwardMode.IDLE)", "EXTEND", False),
        ("fb.batch.is_decode()", "DECODE", None),  # not a forward mode
        ("forward_mode.is_some_new_mode()", "DECODE", None),
        ("uses_decode_kernel", "TARGET_VERIFY", True),
    ],
)
def test_mode_value(expr, mode, expected):
    flags = {"uses_decode_kernel": "forward_mode.is_target_verify() or forward_mode.is_draft_extend_v2()"}
    assert value(expr, mode, flags) is expected


def test_may_be_true_keeps_the_undecided_modes():
    test = cst.parse_expression("self.fallback and not forward_mode.is_target_verify()")
    assert may_be_true(test, frozenset({"EXTEND", "TARGET_VERIFY"})) == {"EXTEND"}


_TRTLLM_MLA_0_5_15 = """
class TRTLLMMLABackend(FlashInferMLAAttnBackend):
    def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_extend_without_speculative():
            self.forward_prefill_metadata = TRTLLMMLAPrefillMetadata(fallback_to_flashinfer_impl=True)
        elif forward_batch.forward_mode.is_target_verify():
            self.forward_prefill_metadata = None

    def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
        if not forward_batch.forward_mode.is_target_verify():
            return super().init_forward_metadata_out_graph(forward_batch, in_capture)
        self._apply_cuda_graph_metadata(forward_batch)

    def _apply_cuda_graph_metadata(self, forward_batch):
        self.decode_cuda_graph_kv_indices[: forward_batch.batch_size].fill_(-1)

    def forward_extend(self, q, k, v, layer, forward_batch):
        if self.forward_prefill_metadata is not None and self.forward_prefill_metadata.fallback_to_flashinfer_impl:
            return super().forward_extend(q, k, v, layer, forward_batch)
        return self._run_verify(q)
"""


def test_the_32288_shape_names_the_mode_the_path_and_where_the_state_is_set():
    (finding,) = lint(_TRTLLM_MLA_0_5_15)
    assert finding.symbol == "TRTLLMMLABackend.forward_extend" and finding.line == 17
    assert "`self.forward_prefill_metadata` chooses the path of `forward_extend` for TARGET_VERIFY" in finding.message
    assert "`init_forward_metadata_out_graph` does not set it" in finding.message
    assert [(e.label, e.line) for e in finding.evidence] == [("set per mode", 4), ("planning path", 8), ("read", 17)]


def test_a_helper_that_resets_the_state_on_the_graph_path_fixes_it():
    fixed = _TRTLLM_MLA_0_5_15.replace(
        "        self.decode_cuda_graph_kv_indices[: forward_batch.batch_size].fill_(-1)\n",
        "        self.decode_cuda_graph_kv_indices[: forward_batch.batch_size].fill_(-1)\n"
        "        self.forward_prefill_metadata = None\n",
    )
    assert lint(fixed) == []


def test_a_guard_that_returns_for_the_modes_first_fixes_it():
    guarded = _TRTLLM_MLA_0_5_15.replace(
        "    def forward_extend(self, q, k, v, layer, forward_batch):\n",
        "    def forward_extend(self, q, k, v, layer, forward_batch):\n"
        "        if forward_batch.forward_mode.is_target_verify():\n"
        "            return self._run_verify(q)\n",
    )
    assert lint(guarded) == []


def test_planning_handed_to_another_backend_counts_as_planning():
    # SGLang 0.5.22 TritonAttnBackend: a DLLM backend plans for itself
    code = """
    class TritonAttnBackend(AttentionBackend):
        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
            if self.dllm_attention is not None:
                return self.dllm_attention.init_forward_metadata_out_graph(forward_batch, in_capture)
            self.forward_metadata = ForwardMetadata(custom_mask=None)

        def init_forward_metadata(self, forward_batch):
            if self.dllm_attention is not None:
                self.dllm_attention.graph_mode = False
            self.forward_metadata = ForwardMetadata(custom_mask=forward_batch.spec_info.custom_mask)

        def forward_extend(self, q, k, v, layer, forward_batch):
            if self.dllm_attention is not None:
                return self.dllm_attention.forward_extend(layer, q)
            if self.forward_metadata.custom_mask is not None:
                return self._masked(q)
            return self._causal(q)
    """
    assert lint(code) == []  # and `self.dllm_attention.graph_mode = ...` does not plan `self.dllm_attention`


def test_an_identity_test_against_a_graph_buffer_is_not_a_state_read():
    # SGLang 0.5.23 FlashAttentionBackend: `metadata is self.full_cg_prefill_metadata`
    code = """
    class FlashAttentionBackend(AttentionBackend):
        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
            if forward_batch.forward_mode.is_extend() and in_capture:
                self.full_cg_prefill_metadata = FlashAttentionMetadata()
            self.forward_metadata = self.full_cg_prefill_metadata

        def forward_extend(self, q, k, v, layer, forward_batch):
            metadata = self.forward_metadata
            if metadata is self.full_cg_prefill_metadata:
                return self._graph(q)
            return self._eager(q)
    """
    assert lint(code) == []


def test_buffers_allocated_once_are_not_per_mode_state():
    # SGLang 0.5.15 TRTLLMMLABackend.padded_q_buffer, allocated in init_cuda_graph_state
    code = """
    class TRTLLMMLABackend(FlashInferMLAAttnBackend):
        def init_cuda_graph_state(self, max_bs, max_num_tokens, kv_indices_buf=None):
            self.padded_q_buffer = torch.zeros((max_bs, 8, 16, 576))

        def init_forward_metadata(self, forward_batch):
            if forward_batch.forward_mode.is_target_verify():
                self.forward_decode_metadata = TRTLLMMLADecodeMetadata()

        def forward_extend(self, q, k, v, layer, forward_batch):
            if forward_batch.forward_mode.is_draft_extend_v2():
                if self.padded_q_buffer is not None:
                    return self._padded(q)
            return self._plain(q)
    """
    assert lint(code) == []


def test_state_set_only_before_a_capture_is_planned_for_the_capture():
    # SGLang 0.5.23 FlashInferAttnBackend: `if in_capture: self._prepare_cuda_graph_metadata(...)`;
    # replay runs no Python forward code, so the replay branch need not set it
    code = """
    class FlashInferAttnBackend(AttentionBackend):
        def init_forward_metadata(self, forward_batch):
            if forward_batch.forward_mode.is_decode_or_idle():
                self.forward_metadata = DecodeMetadata(self.decode_wrappers)
            else:
                self.forward_metadata = PrefillMetadata(self.prefill_wrappers_paged, True, False)

        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):
            if in_capture:
                self._prepare_cuda_graph_metadata(forward_batch.forward_mode)
            else:
                self.indices_updater_decode.update(forward_batch.seq_lens)

        def _prepare_cuda_graph_metadata(self, forward_mode):
            if forward_mode.is_decode_or_idle():
                self.forward_metadata = DecodeMetadata(self.decode_cuda_graph_metadata)
            else:
                self.forward_metadata = PrefillMetadata(self.prefill_cuda_graph_metadata, False, False)

        def forward_extend(self, q, k, v, layer, forward_batch):
            if not self.forward_metadata.use_ragged:
                return self._paged(q)
            return self._ragged(q)
    """
    assert lint(code) == []


_CAPTURE_IN_OWN_METHOD = """
class FooBackend(AttentionBackend):
    def init_forward_metadata(self, forward_batch):
        if forward_batch.forward_mode.is_decode():
            self.use_split_kv = forward_batch.batch_size < 8
        else:
            self.use_split_kv = False

    def capture_graph_metadata(self, bs, forward_mode):
        self.decode_metadata = DecodeMetadata(self.cuda_graph_seq_lens[:bs])

    def forward_decode(self, q, k, v, layer, forward_batch):
        if self.use_split_kv:
            return self._split(q)
        return self._single(q)
"""


def test_extra_graph_mode_planners_adds_a_planning_path():
    assert lint(_CAPTURE_IN_OWN_METHOD) == []
    config = LintConfig.extended(graph_mode_planners=["capture_graph_metadata"])
    (finding,) = lint(_CAPTURE_IN_OWN_METHOD, config)
    assert finding.line == 12 and "for DECODE" in finding.message and "`capture_graph_metadata`" in finding.message


def test_speculative_modes_count_only_where_the_class_names_them():
    code = """
    class FooBackend(AttentionBackend):
        def init_forward_metadata(self, forward_batch):
            if forward_batch.forward_mode.is_extend():
                self.use_fallback = True

        def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
            self.decode_metadata = DecodeMetadata(bs)

        def forward_extend(self, q, k, v, layer, forward_batch):
            if self.use_fallback:
                return self._fallback(q)
            return self._main(q)
    """
    assert lint(code) == []  # a decode-only graph: no TARGET_VERIFY capture reaches forward_extend
    speculative = code.replace(
        "self.decode_metadata = DecodeMetadata(bs)",
        "if forward_mode.is_target_verify():\n                self.verify_metadata = VerifyMetadata(bs)",
    )
    (finding,) = lint(speculative)
    assert "for TARGET_VERIFY" in finding.message and "init_forward_metadata_capture_cuda_graph" in finding.message


def test_state_the_forward_method_manages_itself_is_left_alone():
    code = """
    class FooBackend(AttentionBackend):
        def init_forward_metadata(self, forward_batch):
            if forward_batch.forward_mode.is_decode():
                self.plan = None

        def init_forward_metadata_capture_cuda_graph(self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info):
            self.decode_metadata = DecodeMetadata(bs)

        def forward_decode(self, q, k, v, layer, forward_batch):
            if self.plan is None:
                self.plan = self._make_plan(forward_batch)
            return self._run(q, self.plan)
    """
    assert lint(code) == []
