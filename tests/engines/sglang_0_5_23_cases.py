"""SGLang 0.5.23 cases, run through the kit the wheel ships (``sglang/test/kits/attention_unittest``).

Eager modes build the kit's fixture (``build_dense_attention_fixture`` /
``build_mla_attention_fixture``: MockModelRunner, real pools, shuffled page layout) and
call ``init_forward_metadata`` + the module forward; TARGET_VERIFY and the CUDA-graph
modes call the kit's runners (``run_*_eagle_verify_case``,
``run_*_cuda_graph_decode_case``, ``run_*_spec_verify_cuda_graph_case`` /
``run_mla_eagle_verify_cuda_graph_case``, ``run_*_draft_extend_v2_cuda_graph_case``),
which capture with a batch of ``CAPTURE_BS`` and replay a smaller, padded one.
"""

from __future__ import annotations

import torch

from .sglang_kit import (CAPTURE_BS, DRAFT_TOKENS, EXTEND_LENS, KV_LORA_RANK, MHA_HEAD_DIM,
                         MHA_HEADS, MHA_KV_HEADS, MLA_HEADS, PREFIX_LENS, QK_ROPE_HEAD_DIM, BackendSpec,
                         CaseUnsupported, _TestCase)


def _kit():
    from sglang.test.kits.attention_unittest.attention_methods import dense_attention, mla_attention
    from sglang.test.kits.attention_unittest.runner_modes import (
        cuda_graph_decode_runner, speculative_draft_extend_runner, speculative_target_verify_runner)

    return (dense_attention, mla_attention, cuda_graph_decode_runner,
            speculative_target_verify_runner, speculative_draft_extend_runner)


def backend_classes():
    from sglang.srt.layers.attention.flashattention_backend import FlashAttentionBackend
    from sglang.srt.layers.attention.flashinfer_backend import FlashInferAttnBackend
    from sglang.srt.layers.attention.flashinfer_mla_backend import FlashInferMLAAttnBackend
    from sglang.srt.layers.attention.flashmla_backend import FlashMLABackend
    from sglang.srt.layers.attention.triton_backend import TritonAttnBackend
    from sglang.srt.layers.attention.trtllm_mha_backend import TRTLLMHAAttnBackend
    from sglang.srt.layers.attention.trtllm_mla_backend import TRTLLMMLABackend

    return (FlashInferAttnBackend, FlashInferMLAAttnBackend, TRTLLMHAAttnBackend, TRTLLMMLABackend,
            FlashAttentionBackend, FlashMLABackend, TritonAttnBackend)


def _mode(name: str):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    return getattr(ForwardMode, name)


def _case(spec: BackendSpec, mode_name: str, page_size: int, prefix_lens=PREFIX_LENS, extend_lens=None):
    dense, mla, *_ = _kit()
    mode = _mode(mode_name)
    if extend_lens is None:
        extend_lens = () if mode_name == "DECODE" else (
            (DRAFT_TOKENS,) * len(prefix_lens) if mode_name in ("TARGET_VERIFY", "DRAFT_EXTEND_V2", "DRAFT_EXTEND")
            else EXTEND_LENS)
    name = f"{spec.registry}_{mode_name.lower()}_p{page_size}"
    if spec.arch == "mha":
        return dense.DenseAttentionCase(name=name, backend=spec.registry, forward_mode=mode,
                                        num_heads=MHA_HEADS, num_kv_heads=MHA_KV_HEADS,
                                        page_size=page_size, prefix_lens=prefix_lens,
                                        extend_lens=extend_lens)
    return mla.MLAAttentionCase(name=name, backend=spec.registry, forward_mode=mode,
                                num_heads=MLA_HEADS, page_size=page_size, prefix_lens=prefix_lens,
                                extend_lens=extend_lens)


def _size_kwargs(spec: BackendSpec) -> dict:
    if spec.arch == "mha":
        return dict(head_dim=MHA_HEAD_DIM, dtype=spec.dtype, device="cpu")
    return dict(kv_lora_rank=KV_LORA_RANK, qk_rope_head_dim=QK_ROPE_HEAD_DIM, dtype=spec.dtype,
                device="cpu")


def _fixture(spec: BackendSpec, case):
    dense, mla, *_ = _kit()
    build = dense.build_dense_attention_fixture if spec.arch == "mha" else mla.build_mla_attention_fixture
    return build(_TestCase(), case, **_size_kwargs(spec))


def _run_eager(spec: BackendSpec, fixture):
    dense, mla, *_ = _kit()
    return (dense.run_dense_fixture_eager if spec.arch == "mha" else mla.run_mla_fixture_eager)(fixture)


def _draft_extend(spec: BackendSpec, mode_name: str, page_size: int):
    *_, draft = _kit()
    case = _case(spec, mode_name, page_size)
    fixture = _fixture(spec, case)
    batch = fixture.forward_batch
    draft._set_draft_extend_v2_prefix_lens(batch, case, device="cpu")
    if mode_name == "DRAFT_EXTEND_V2":
        batch.spec_info = draft._make_eagle_draft_extend_v2_input(case, batch, device="cpu")
    else:
        batch.spec_info = draft._make_eagle_draft_extend_input(case, batch, device="cpu")
    _run_eager(spec, fixture)


def _idle(spec: BackendSpec, page_size: int):
    """IDLE as the 0.5.23 eager runner (``_execute_idle``) handles it.

    An unpadded idle rank (batch_size 0) only drops the backend's forward metadata; a
    padded one (DP attention: the rank carries dummy rows so every rank runs the same
    shape) calls ``init_forward_metadata`` on an IDLE batch with rows at the backend's
    CUDA-graph fill length, then runs the layer.
    """
    case = _case(spec, "DECODE", page_size)
    fixture = _fixture(spec, case)
    fixture.backend.forward_metadata = None  # unpadded idle
    fill = int(fixture.backend.get_cuda_graph_seq_len_fill_value())
    padded = _case(spec, "DECODE", page_size, prefix_lens=(max(fill - 1, 0),) * len(PREFIX_LENS))
    fixture = _fixture(spec, padded)
    fixture.forward_batch.forward_mode = _mode("IDLE")
    _run_eager(spec, fixture)


def run(spec: BackendSpec, mode_name: str, page_size: int) -> None:
    _, _, graph, verify, draft = _kit()
    mha = spec.arch == "mha"
    if mode_name in ("EXTEND", "DECODE"):
        _run_eager(spec, _fixture(spec, _case(spec, mode_name, page_size)))
    elif mode_name == "TARGET_VERIFY":
        case = _case(spec, mode_name, page_size)
        if mha:
            verify.run_dense_eagle_verify_case(_TestCase(), case, topk=1, **_size_kwargs(spec))
        else:
            verify.run_mla_eagle_verify_case(_TestCase(), case, topk=1, **_size_kwargs(spec))
    elif mode_name in ("DRAFT_EXTEND", "DRAFT_EXTEND_V2"):
        _draft_extend(spec, mode_name, page_size)
    elif mode_name == "IDLE":
        _idle(spec, page_size)
    elif mode_name == "CUDA_GRAPH_DECODE":
        case = _case(spec, "DECODE", page_size)
        runner = graph.run_dense_cuda_graph_decode_case if mha else graph.run_mla_cuda_graph_decode_case
        runner(_TestCase(), case, cuda_graph_capture_batch_size=CAPTURE_BS, **_size_kwargs(spec))
    elif mode_name == "CUDA_GRAPH_TARGET_VERIFY":
        case = _case(spec, "TARGET_VERIFY", page_size)
        if mha:
            verify.run_dense_spec_verify_cuda_graph_case(_TestCase(), case, topk=1,
                                                         cuda_graph_capture_batch_size=CAPTURE_BS,
                                                         **_size_kwargs(spec))
        else:
            verify.run_mla_eagle_verify_cuda_graph_case(_TestCase(), case, topk=1,
                                                        cuda_graph_capture_batch_size=CAPTURE_BS,
                                                        **_size_kwargs(spec))
    elif mode_name == "CUDA_GRAPH_DRAFT_EXTEND_V2":
        case = _case(spec, "DRAFT_EXTEND_V2", page_size)
        runner = (draft.run_dense_draft_extend_v2_cuda_graph_case if mha
                  else draft.run_mla_draft_extend_v2_cuda_graph_case)
        runner(_TestCase(), case, cuda_graph_capture_batch_size=CAPTURE_BS, **_size_kwargs(spec))
    else:
        raise CaseUnsupported(f"mode {mode_name}")
