"""SGLang 0.5.9 cases, built like the wheel's ``sglang/test/attention/*`` tests build them.

``test_flashattn_backend.py`` and ``test_trtllm_mla_backend.py`` construct a duck-typed
``MockModelRunner`` (a model-config type, a ``req_to_token`` pool object, a real
``MHATokenToKVPool`` / ``MLATokenToKVPool``, ``ServerArgs(model_path="dummy")`` made the
global server args), instantiate the backend class directly, hand-build ``ForwardBatch``
objects, write the prefix K/V with ``set_kv_buffer`` and call the backend's forward.
:class:`MockModelRunner09` is that runner with the attributes every backend here reads
(taken from the backends' ``model_runner.*`` accesses). CUDA graphs follow
``test_trtllm_mla_backend.py``: ``init_cuda_graph_state``, then
``init_forward_metadata_capture_cuda_graph`` at the captured batch size with the fill
sequence length, a forward, then ``init_forward_metadata_replay_cuda_graph`` with the real
requests padded to the captured size, and a forward.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from . import cuda_on_cpu
from .sglang_kit import (CAPTURE_BS, DRAFT_TOKENS, EXTEND_LENS, KV_LORA_RANK, MHA_HEAD_DIM, MHA_HEADS,
                         MHA_KV_HEADS, MLA_HEADS, PREFIX_LENS, QK_ROPE_HEAD_DIM, BackendSpec,
                         CaseUnsupported)

MAX_CONTEXT = 128
MAX_BS = 8


def backend_classes():
    return tuple(_classes().values())


def _single_rank_attention() -> None:
    """What ``test_trtllm_mla_backend.py`` does before importing the backends:
    ``dp_attention.get_attention_tp_size = lambda: 1`` (no distributed init)."""
    import sys

    from sglang.srt.layers import dp_attention

    original = dp_attention.get_attention_tp_size
    if getattr(original, "__cpu_kit__", False):
        return
    replacement = lambda: 1  # noqa: E731 - the kit's own form
    replacement.__cpu_kit__ = True
    for name, module in list(sys.modules.items()):
        if name.startswith("sglang") and getattr(module, "get_attention_tp_size", None) is original:
            module.get_attention_tp_size = replacement


def _classes():
    _single_rank_attention()
    from sglang.srt.layers.attention.flashattention_backend import FlashAttentionBackend
    from sglang.srt.layers.attention.flashinfer_backend import FlashInferAttnBackend
    from sglang.srt.layers.attention.flashinfer_mla_backend import FlashInferMLAAttnBackend
    from sglang.srt.layers.attention.flashmla_backend import FlashMLABackend
    from sglang.srt.layers.attention.triton_backend import TritonAttnBackend
    from sglang.srt.layers.attention.trtllm_mha_backend import TRTLLMHAAttnBackend
    from sglang.srt.layers.attention.trtllm_mla_backend import TRTLLMMLABackend

    return {cls.__name__: cls for cls in (FlashInferAttnBackend, FlashInferMLAAttnBackend,
                                          TRTLLMHAAttnBackend, TRTLLMMLABackend, FlashAttentionBackend,
                                          FlashMLABackend, TritonAttnBackend)}


def _server_args(page_size: int, spec_mode: bool):
    from sglang.srt.server_args import ServerArgs, set_global_server_args_for_scheduler

    args = ServerArgs(model_path="dummy")
    args.page_size = page_size
    args.speculative_num_draft_tokens = DRAFT_TOKENS if spec_mode else None
    args.speculative_eagle_topk = 1 if spec_mode else None
    args.speculative_num_steps = DRAFT_TOKENS - 1 if spec_mode else None
    args.disable_cuda_graph = False
    set_global_server_args_for_scheduler(args)
    return args


class MockModelRunner09:
    """``sglang/test/attention/test_flashattn_backend.py``'s MockModelRunner, widened."""

    def __init__(self, spec: BackendSpec, page_size: int, spec_mode: bool):
        from sglang.srt.configs.model_config import AttentionArch
        from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, MLATokenToKVPool

        mla = spec.arch == "mla"
        self.device = "cpu"
        self.dtype = spec.dtype
        self.kv_cache_dtype = spec.dtype
        self.page_size = page_size
        self.gpu_id = 0
        self.is_hybrid_swa = False
        self.sliding_window_size = None
        self.attention_chunk_size = None
        self.hybrid_gdn_config = None
        self.kimi_linear_config = None
        self.is_draft_worker = False
        self.use_mla_backend = mla
        self.server_args = _server_args(page_size, spec_mode)
        heads = MLA_HEADS if mla else MHA_HEADS
        config = {
            "context_len": MAX_CONTEXT,
            "is_multimodal": False,
            "attention_arch": AttentionArch.MLA if mla else AttentionArch.MHA,
            "is_encoder_decoder": False,
            "is_local_attention_model": False,
            "num_attention_heads": heads,
            "hidden_size": heads * (KV_LORA_RANK if mla else MHA_HEAD_DIM),
            "head_dim": KV_LORA_RANK + QK_ROPE_HEAD_DIM if mla else MHA_HEAD_DIM,
            "hf_config": SimpleNamespace(architectures=["LlamaForCausalLM"]),
            "get_num_kv_heads": staticmethod(lambda tp_size: 1 if mla else MHA_KV_HEADS),
        }
        if mla:
            config.update(kv_lora_rank=KV_LORA_RANK, qk_nope_head_dim=128,
                          qk_rope_head_dim=QK_ROPE_HEAD_DIM, v_head_dim=KV_LORA_RANK,
                          scaling=1.0 / (192 ** 0.5))
        self.model_config = type("ModelConfig", (), config)()
        self.req_to_token_pool = SimpleNamespace(
            size=MAX_BS, req_to_token=torch.zeros(MAX_BS, MAX_CONTEXT, dtype=torch.int32))
        size = MAX_BS * MAX_CONTEXT + page_size
        if mla:
            self.token_to_kv_pool = MLATokenToKVPool(
                size=size, page_size=page_size, dtype=spec.dtype, kv_lora_rank=KV_LORA_RANK,
                qk_rope_head_dim=QK_ROPE_HEAD_DIM, layer_num=1, device="cpu",
                enable_memory_saver=False)
        else:
            self.token_to_kv_pool = MHATokenToKVPool(
                size=size, page_size=page_size, dtype=spec.dtype, head_num=MHA_KV_HEADS,
                head_dim=MHA_HEAD_DIM, layer_num=1, device="cpu", enable_memory_saver=False)
        self.token_to_kv_pool_allocator = SimpleNamespace(
            page_size=page_size, size=size, get_kvcache=lambda: self.token_to_kv_pool)


def _loc(page_size: int, req: int, pos: int) -> int:
    return page_size + req * MAX_CONTEXT + pos


def _layer(spec: BackendSpec):
    from sglang.srt.layers.radix_attention import RadixAttention

    if spec.arch == "mla":
        return RadixAttention(num_heads=MLA_HEADS, head_dim=KV_LORA_RANK + QK_ROPE_HEAD_DIM,
                              scaling=1.0 / (192 ** 0.5), num_kv_heads=1, layer_id=0,
                              v_head_dim=KV_LORA_RANK, prefix="attn_mqa")
    return RadixAttention(num_heads=MHA_HEADS, head_dim=MHA_HEAD_DIM, scaling=MHA_HEAD_DIM ** -0.5,
                          num_kv_heads=MHA_KV_HEADS, layer_id=0)


def _qkv(spec: BackendSpec, tokens: int):
    if spec.arch == "mla":
        q = torch.randn(tokens, MLA_HEADS, KV_LORA_RANK + QK_ROPE_HEAD_DIM, dtype=spec.dtype)
        k = torch.randn(tokens, 1, KV_LORA_RANK + QK_ROPE_HEAD_DIM, dtype=spec.dtype)
        return q, k, k[..., :KV_LORA_RANK]
    q = torch.randn(tokens, MHA_HEADS, MHA_HEAD_DIM, dtype=spec.dtype)
    k = torch.randn(tokens, MHA_KV_HEADS, MHA_HEAD_DIM, dtype=spec.dtype)
    return q, k, torch.randn_like(k)


class Case:
    """One batch: requests' prefix lengths and new-token counts, in one forward mode."""

    def __init__(self, spec, mode_name, page_size, prefix_lens=PREFIX_LENS, new_lens=None):
        from sglang.srt.model_executor.forward_batch_info import ForwardMode

        self.spec, self.mode_name, self.page_size = spec, mode_name, page_size
        self.mode = getattr(ForwardMode, mode_name)
        self.prefix_lens = tuple(prefix_lens)
        if new_lens is None:
            new_lens = {"EXTEND": EXTEND_LENS, "DECODE": (1,) * len(prefix_lens),
                        "IDLE": (1,) * len(prefix_lens)}.get(mode_name, (DRAFT_TOKENS,) * len(prefix_lens))
        self.new_lens = tuple(new_lens[: len(prefix_lens)]) + (new_lens[-1],) * (len(prefix_lens) - len(new_lens))

    @property
    def bs(self) -> int:
        return len(self.prefix_lens)


def _write_prefix(runner, layer, case: Case):
    locs = [_loc(case.page_size, r, p) for r, n in enumerate(case.prefix_lens) for p in range(n)]
    if not locs:
        return
    _, k, v = _qkv(case.spec, len(locs))
    loc = torch.tensor(locs, dtype=torch.int64)
    if case.spec.arch == "mla":
        runner.token_to_kv_pool.set_kv_buffer(layer, loc, k, None)
    else:
        runner.token_to_kv_pool.set_kv_buffer(layer, loc, k, v, layer.k_scale, layer.v_scale)


def _spec_info(case: Case, seq_lens: torch.Tensor, positions: torch.Tensor, input_ids: torch.Tensor):
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode
    from sglang.srt.speculative.eagle_info import EagleDraftInput, EagleVerifyInput

    n = DRAFT_TOKENS
    if case.mode_name == "TARGET_VERIFY":
        masks = []
        for prefix in case.prefix_lens:
            mask = torch.ones(n, prefix + n, dtype=torch.bool)
            mask[:, prefix:] = torch.tril(torch.ones(n, n, dtype=torch.bool))
            masks.append(mask.flatten())
        retrive_index = torch.arange(case.bs * n, dtype=torch.long).view(case.bs, n)
        return EagleVerifyInput(
            draft_token=input_ids, custom_mask=torch.cat(masks), positions=positions,
            retrive_index=retrive_index, retrive_next_token=torch.full_like(retrive_index, -1),
            retrive_next_sibling=torch.full_like(retrive_index, -1),
            retrive_cum_len=torch.arange(case.bs + 1, dtype=torch.int32) * n, spec_steps=n - 1,
            topk=1, draft_token_num=n, capture_hidden_mode=CaptureHiddenMode.FULL,
            seq_lens_sum=int(seq_lens.sum()), seq_lens_cpu=seq_lens.clone())
    if case.mode_name == "DRAFT_EXTEND":
        accept = torch.tensor(case.new_lens, dtype=torch.int32)
        info = EagleDraftInput(hidden_states=None, verified_id=input_ids, accept_length=accept,
                               accept_length_cpu=list(case.new_lens),
                               capture_hidden_mode=CaptureHiddenMode.LAST)
        info.num_tokens_per_req = max(case.new_lens)
        info.num_tokens_for_logprob_per_req = 1
        info.positions = positions
        return info
    return None


def _batch(runner, backend, case: Case):
    """A ForwardBatch as the 0.5.9 tests build it; req_to_token filled for every request."""
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    seq, out_locs, positions = [], [], []
    for r, (prefix, new) in enumerate(zip(case.prefix_lens, case.new_lens)):
        total = prefix + new
        for p in range(total):
            runner.req_to_token_pool.req_to_token[r, p] = _loc(case.page_size, r, p)
        # TARGET_VERIFY keeps seq_lens at the prefix (the drafts are not committed yet)
        seq.append(prefix if case.mode_name == "TARGET_VERIFY" else total)
        for p in range(prefix, total):
            out_locs.append(_loc(case.page_size, r, p))
            positions.append(p)
    tokens = len(out_locs)
    seq_lens = torch.tensor(seq, dtype=torch.int32)
    positions_t = torch.tensor(positions, dtype=torch.int64)
    input_ids = torch.randint(0, 100, (tokens,), dtype=torch.int64)
    batch = ForwardBatch(
        forward_mode=case.mode, batch_size=case.bs, input_ids=input_ids,
        req_pool_indices=torch.arange(case.bs, dtype=torch.int64), seq_lens=seq_lens,
        seq_lens_cpu=seq_lens.clone(), out_cache_loc=torch.tensor(out_locs, dtype=torch.int64),
        seq_lens_sum=int(seq_lens.sum()), positions=positions_t, attn_backend=backend)
    if case.mode_name in ("EXTEND", "DRAFT_EXTEND"):
        batch.extend_prefix_lens = torch.tensor(case.prefix_lens, dtype=torch.int32)
        batch.extend_prefix_lens_cpu = list(case.prefix_lens)
        batch.extend_seq_lens = torch.tensor(case.new_lens, dtype=torch.int32)
        batch.extend_seq_lens_cpu = list(case.new_lens)
        batch.extend_num_tokens = tokens
        batch.extend_start_loc = torch.cumsum(torch.tensor((0,) + case.new_lens[:-1]), 0).to(torch.int32)
    batch.req_to_token_pool = runner.req_to_token_pool
    batch.token_to_kv_pool = runner.token_to_kv_pool
    batch.spec_info = _spec_info(case, seq_lens, positions_t, input_ids)
    return batch


#: MLA backends whose forward takes the split form (q_nope/k_nope + q_rope/k_rope), as
#: test_trtllm_mla_backend.py calls them; FlashMLABackend takes the concatenated 576-wide q/k
SPLIT_ROPE_BACKENDS = ("FlashInferMLAAttnBackend", "TRTLLMMLABackend")


def _forward(backend, layer, case: Case, batch):
    tokens = batch.out_cache_loc.shape[0]
    if case.spec.name == "TRTLLMMLABackend" and case.mode_name == "EXTEND":
        # DeepSeek's non-absorbed prefill (forward_normal): per-head q/k of 128 + 64 rope, v 128
        q = torch.randn(tokens, MLA_HEADS, 192, dtype=case.spec.dtype)
        k = torch.randn(tokens, MLA_HEADS, 192, dtype=case.spec.dtype)
        v = torch.randn(tokens, MLA_HEADS, 128, dtype=case.spec.dtype)
        from sglang.srt.layers.radix_attention import RadixAttention

        attn_mha = RadixAttention(num_heads=MLA_HEADS, head_dim=192, scaling=1.0 / (192 ** 0.5),
                                  num_kv_heads=MLA_HEADS, layer_id=0, v_head_dim=128, prefix="attn_mha")
        return backend.forward(q, k, v, attn_mha, batch, save_kv_cache=False)
    q, k, v = _qkv(case.spec, tokens)
    if case.spec.name in SPLIT_ROPE_BACKENDS:
        return backend.forward(q[..., :KV_LORA_RANK], k[..., :KV_LORA_RANK], v, layer, batch,
                               q_rope=q[..., KV_LORA_RANK:], k_rope=k[..., KV_LORA_RANK:])
    return backend.forward(q.reshape(q.shape[0], -1), k, v, layer, batch)


def _build(spec: BackendSpec, page_size: int, spec_mode: bool):
    runner = MockModelRunner09(spec, page_size, spec_mode)
    backend = _classes()[spec.name](runner)
    return runner, backend


def _eager(spec, mode_name, page_size):
    runner, backend = _build(spec, page_size, mode_name in ("TARGET_VERIFY", "DRAFT_EXTEND"))
    layer = _layer(spec)
    case = Case(spec, mode_name, page_size)
    _write_prefix(runner, layer, case)
    batch = _batch(runner, backend, case)
    backend.init_forward_metadata(batch)
    _forward(backend, layer, case, batch)


def _idle(spec, page_size):
    """0.5.9 ``ModelRunner.forward_idle``: metadata re-init only for a padded (bs > 0) IDLE batch."""
    runner, backend = _build(spec, page_size, False)
    layer = _layer(spec)
    fill = int(backend.get_cuda_graph_seq_len_fill_value())
    case = Case(spec, "IDLE", page_size, prefix_lens=(max(fill - 1, 0),) * len(PREFIX_LENS))
    _write_prefix(runner, layer, case)
    batch = _batch(runner, backend, case)
    backend.init_forward_metadata(batch)


def _cuda_graph(spec, mode_name, page_size):
    """Capture at CAPTURE_BS with the fill length, replay the real requests padded to it."""
    spec_mode = mode_name != "DECODE"
    runner, backend = _build(spec, page_size, spec_mode)
    layer = _layer(spec)
    per_req = 1 if mode_name == "DECODE" else DRAFT_TOKENS
    backend.init_cuda_graph_state(CAPTURE_BS, CAPTURE_BS * per_req)
    fill = int(backend.get_cuda_graph_seq_len_fill_value())
    fill_prefix = max(fill - (0 if mode_name == "TARGET_VERIFY" else per_req), 0)
    capture = Case(spec, mode_name, page_size, prefix_lens=(fill_prefix,) * CAPTURE_BS)
    batch = _batch(runner, backend, capture)
    with cuda_on_cpu.capturing():
        backend.init_forward_metadata_capture_cuda_graph(
            CAPTURE_BS, CAPTURE_BS * per_req, batch.req_pool_indices, batch.seq_lens, None,
            batch.forward_mode, batch.spec_info)
        _forward(backend, layer, capture, batch)
    replay = Case(spec, mode_name, page_size,
                  prefix_lens=PREFIX_LENS + (fill_prefix,) * (CAPTURE_BS - len(PREFIX_LENS)))
    _write_prefix(runner, layer, replay)
    batch = _batch(runner, backend, replay)
    backend.init_forward_metadata_replay_cuda_graph(
        CAPTURE_BS, batch.req_pool_indices, batch.seq_lens, int(batch.seq_lens.sum()), None,
        batch.forward_mode, batch.spec_info, batch.seq_lens_cpu)
    _forward(backend, layer, replay, batch)


def run(spec: BackendSpec, mode_name: str, page_size: int) -> None:
    if mode_name in ("EXTEND", "DECODE", "TARGET_VERIFY", "DRAFT_EXTEND"):
        _eager(spec, mode_name, page_size)
    elif mode_name == "IDLE":
        _idle(spec, page_size)
    elif mode_name.startswith("CUDA_GRAPH_"):
        _cuda_graph(spec, mode_name.removeprefix("CUDA_GRAPH_"), page_size)
    else:
        raise CaseUnsupported(f"mode {mode_name} is not in SGLang 0.5.9's ForwardMode")
