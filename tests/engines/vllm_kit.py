"""vLLM's real attention backends on CPU, built the way vLLM's own tests build them.

Our own rebuild of what vLLM's ``tests/v1/attention/utils.py`` and
``tests/v1/attention/_mla_backends.py`` do (those live in vLLM's repository, not in its
wheel): a ``VllmConfig`` from a local model config (no hub access), a
``CommonAttentionMetadata`` per batch, the backend's own metadata builder and impl,
a KV cache allocated in the layout vLLM resolves for the backend, and one forward per
layer. Kernels are recorded by :mod:`tests.engines.vllm_recorders`; what is stubbed and
why is in :mod:`tests.engines.vllm_stubs`.

Unlike vLLM's test helper (exact-size tensors), the batch tensors here are slices of
persistent, max-sized buffers the way vLLM's GPU model runner hands them to the
builders (``query_start_loc[: num_reqs + 1]`` of a ``max_num_reqs + 1`` buffer, block
table rows of a ``[max_num_reqs, max_blocks_per_req]`` table): that is what the
kernels see in production, and what the guard has to accept.

Imported only inside a driver process that ran :func:`vllm_stubs.install` first.
"""

from __future__ import annotations

import contextlib
import json
import os
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import vllm_recorders as rec
from .engine_wheels import ENGINE_CACHE

DEVICE = torch.device("cpu")
NUM_LAYERS = 2
MODELS_DIR = ENGINE_CACHE / "vllm-models"


# --------------------------------------------------------------------------- batches

@dataclass(frozen=True)
class BatchSpec:
    """Workload shape only (as vLLM's tests' ``BatchSpec``), plus the kind it stands for."""

    name: str
    seq_lens: tuple[int, ...]
    query_lens: tuple[int, ...]

    @property
    def batch_size(self) -> int:
        return len(self.seq_lens)

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)


BATCHES: dict[str, BatchSpec] = {
    "decode": BatchSpec("decode", (32, 40, 57), (1, 1, 1)),
    "prefill": BatchSpec("prefill", (24, 40), (24, 8)),
    "mixed": BatchSpec("mixed", (32, 40, 48, 56), (1, 1, 5, 9)),
    # uniform query length 1 + num_speculative_tokens (vLLM's spec_decode_* specs)
    "spec_decode": BatchSpec("spec_decode", (33, 41, 50), (3, 3, 3)),
}
SPEC_TOKENS = 2  # spec_decode query length - 1
#: CUDA-graph path: capture with a uniform decode batch of GRAPH_BATCH requests, then
#: replay a smaller decode batch padded to it (num_input_tokens > num_actual_tokens)
GRAPH_BATCH = 4
GRAPH_REPLAY = BatchSpec("cudagraph_replay", (30, 45, 61), (1, 1, 1))


# --------------------------------------------------------------------------- backends

@dataclass(frozen=True)
class BackendRun:
    """One backend under one simulated GPU."""

    key: str
    enum: str  # AttentionBackendEnum member
    capability: tuple[int, int]
    mla: bool = False
    block_size: int = 16
    attention_config: dict[str, Any] = field(default_factory=dict)
    dtype: torch.dtype = torch.bfloat16


BACKENDS: tuple[BackendRun, ...] = (
    BackendRun("FLASH_ATTN@sm90", "FLASH_ATTN", (9, 0), attention_config={"flash_attn_version": 3}),
    BackendRun("FLASH_ATTN@sm80", "FLASH_ATTN", (8, 0), attention_config={"flash_attn_version": 2}),
    BackendRun("FLASHINFER@sm90", "FLASHINFER", (9, 0)),
    BackendRun("FLASHINFER@sm100", "FLASHINFER", (10, 0)),
    BackendRun("TRITON_ATTN@sm90", "TRITON_ATTN", (9, 0)),
    BackendRun("FLASHMLA@sm90", "FLASHMLA", (9, 0), mla=True, block_size=64),
    BackendRun("FLASHINFER_MLA@sm100", "FLASHINFER_MLA", (10, 0), mla=True, block_size=64),
    BackendRun("TRITON_MLA@sm90", "TRITON_MLA", (9, 0), mla=True, block_size=16),
    BackendRun("FLASH_ATTN_MLA@sm90", "FLASH_ATTN_MLA", (9, 0), mla=True, block_size=16),
)


# --------------------------------------------------------------------------- model configs

LLAMA = {
    "architectures": ["KitAttentionForCausalLM"], "model_type": "llama",
    "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 128,
    "num_hidden_layers": NUM_LAYERS, "intermediate_size": 4096, "vocab_size": 32000,
    "max_position_embeddings": 4096, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5,
}
DEEPSEEK = {
    "architectures": ["KitAttentionForCausalLM"], "model_type": "deepseek_v3",
    "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
    "num_hidden_layers": NUM_LAYERS, "intermediate_size": 4096, "moe_intermediate_size": 512,
    "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
    "kv_lora_rank": 512, "q_lora_rank": None, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
    "v_head_dim": 128, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
    "first_k_dense_replace": NUM_LAYERS, "rms_norm_eps": 1e-6, "rope_theta": 10000,
}


def model_dir(config: dict[str, Any]) -> Path:
    """A local model directory holding only ``config.json`` (no hub access, no weights)."""
    path = MODELS_DIR / config["model_type"]
    path.mkdir(parents=True, exist_ok=True)
    target = path / "config.json"
    text = json.dumps(config, indent=1, sort_keys=True)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return path


class KitAttentionForCausalLM(torch.nn.Module):
    """Registered as the model class so ModelConfig inspects it in-process (no subprocess
    importing a real model module with its quantization kernels)."""

    def __init__(self, *, vllm_config=None, prefix: str = ""):
        super().__init__()

    def embed_input_ids(self, input_ids):
        return None

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None):
        return None

    def compute_logits(self, hidden_states):
        return None


_REGISTERED = False


def _register_model() -> None:
    global _REGISTERED
    if not _REGISTERED:
        from vllm import ModelRegistry

        ModelRegistry.register_model("KitAttentionForCausalLM", KitAttentionForCausalLM)
        _REGISTERED = True


def create_vllm_config(run: BackendRun, max_model_len: int = 1024, num_gpu_blocks: int = 512,
                       max_num_seqs: int = 16, max_num_batched_tokens: int = 1024,
                       num_speculative_tokens: int = 0):
    """A real VllmConfig (as vLLM's tests' ``create_vllm_config``), model from a local dir."""
    from vllm.config import (
        CacheConfig,
        CompilationConfig,
        DeviceConfig,
        LoadConfig,
        ModelConfig,
        ParallelConfig,
        SchedulerConfig,
        VllmConfig,
    )

    _register_model()
    path = str(model_dir(DEEPSEEK if run.mla else LLAMA))
    model_config = ModelConfig(model=path, tokenizer=path, trust_remote_code=False,
                               dtype=run.dtype, seed=0, max_model_len=max_model_len,
                               skip_tokenizer_init=True)
    cache_config = CacheConfig(block_size=run.block_size, cache_dtype="auto")
    cache_config.num_gpu_blocks = num_gpu_blocks
    cache_config.num_cpu_blocks = 0
    parallel_config = ParallelConfig(tensor_parallel_size=1)
    scheduler_kwargs = dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                            enable_chunked_prefill=True, max_model_len=model_config.max_model_len,
                            is_encoder_decoder=model_config.is_encoder_decoder)
    scheduler_config = SchedulerConfig(**scheduler_kwargs)
    kwargs: dict[str, Any] = dict(
        model_config=model_config, cache_config=cache_config, parallel_config=parallel_config,
        scheduler_config=scheduler_config, device_config=DeviceConfig(device="cpu"),
        load_config=LoadConfig(), compilation_config=CompilationConfig(),
    )
    attention = {"backend": run.enum, **run.attention_config}
    try:
        from vllm.config import AttentionConfig

        kwargs["attention_config"] = AttentionConfig(**_accepted(AttentionConfig, attention))
    except ImportError:
        pass
    # Mock model methods as vLLM's tests do (no real model is built).
    mc = model_config
    mc.get_num_layers = types.MethodType(lambda self, *a, **k: NUM_LAYERS, mc)
    mc.get_sliding_window_for_layer = types.MethodType(lambda self, i: None, mc)
    mc.get_logits_soft_cap_for_layer = types.MethodType(lambda self, i: 0.0, mc)
    mc.get_sm_scale_for_layer = types.MethodType(lambda self, i: 1.0 / mc.get_head_size() ** 0.5, mc)
    vllm_config = VllmConfig(**kwargs)
    if num_speculative_tokens:
        from vllm.config import SpeculativeConfig

        vllm_config.speculative_config = SpeculativeConfig(
            method="ngram", num_speculative_tokens=num_speculative_tokens,
            prompt_lookup_min=2, prompt_lookup_max=4)
    return vllm_config


def _accepted(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Only the keyword arguments this version's config dataclass has."""
    import dataclasses

    try:
        names = {f.name for f in dataclasses.fields(cls)}
    except TypeError:
        return kwargs
    return {k: v for k, v in kwargs.items() if k in names}


# --------------------------------------------------------------------------- distributed

_DIST_READY = False


def init_distributed() -> None:
    """A one-process gloo world and vLLM's model-parallel groups (TP = PP = DCP = 1)."""
    global _DIST_READY
    if _DIST_READY:
        return
    from vllm.distributed import parallel_state

    import tempfile

    init_file = tempfile.mktemp(prefix="fmha-vllm-dist-")
    parallel_state.init_distributed_environment(
        world_size=1, rank=0, distributed_init_method=f"file://{init_file}", local_rank=0,
        backend="gloo")
    parallel_state.ensure_model_parallel_initialized(1, 1)
    _DIST_READY = True


# --------------------------------------------------------------------------- runner buffers

class RunnerBuffers:
    """Persistent max-sized batch buffers, sliced per step like vLLM's GPU model runner."""

    def __init__(self, vllm_config, block_size: int):
        sched = vllm_config.scheduler_config
        self.max_num_reqs = sched.max_num_seqs
        self.max_num_tokens = sched.max_num_batched_tokens
        max_model_len = vllm_config.model_config.max_model_len
        self.max_blocks_per_req = -(-max_model_len // block_size)
        try:
            from vllm.v1.worker.block_table import get_block_table_width

            self.max_blocks_per_req = get_block_table_width(self.max_blocks_per_req, block_size)
        except (ImportError, TypeError):
            pass
        self.block_size = block_size
        self.query_start_loc = torch.zeros(self.max_num_reqs + 1, dtype=torch.int32)
        self.seq_lens = torch.zeros(self.max_num_reqs, dtype=torch.int32)
        self.block_table = torch.zeros(self.max_num_reqs, self.max_blocks_per_req, dtype=torch.int32)
        self.slot_mapping = torch.full((self.max_num_tokens,), -1, dtype=torch.int64)
        self.positions = torch.zeros(self.max_num_tokens, dtype=torch.int64)
        self.next_block = 1  # block 0 is the null block

    def common_metadata(self, batch: BatchSpec, pad_reqs_to: int | None = None,
                        pad_tokens_to: int | None = None, max_seq_len: int | None = None):
        """``CommonAttentionMetadata`` for ``batch`` (optionally padded as FULL CUDA graphs pad)."""
        from vllm.v1.attention.backend import CommonAttentionMetadata

        num_reqs = batch.batch_size
        num_tokens = batch.num_tokens
        reqs = pad_reqs_to or num_reqs
        tokens = pad_tokens_to or num_tokens
        qsl = torch.zeros(self.max_num_reqs + 1, dtype=torch.int32)
        qsl[1:num_reqs + 1] = torch.tensor(batch.query_lens, dtype=torch.int32).cumsum(0)
        qsl[num_reqs + 1:] = num_tokens  # the runner pads with the real token count
        self.query_start_loc.copy_(qsl)
        self.seq_lens.zero_()
        self.seq_lens[:num_reqs] = torch.tensor(batch.seq_lens, dtype=torch.int32)
        self.block_table.zero_()
        self.slot_mapping.fill_(-1)
        bs = self.block_size
        self.next_block = 1
        for i, (seq, q) in enumerate(zip(batch.seq_lens, batch.query_lens)):
            n = -(-seq // bs)
            blocks = torch.arange(self.next_block, self.next_block + n, dtype=torch.int32)
            self.next_block += n
            self.block_table[i, :n] = blocks
            start = int(qsl[i])
            pos = torch.arange(seq - q, seq)
            self.positions[start:start + q] = pos
            self.slot_mapping[start:start + q] = blocks[pos // bs].long() * bs + pos % bs
        query_lens = list(batch.query_lens)
        kwargs: dict[str, Any] = dict(
            query_start_loc=self.query_start_loc[:reqs + 1],
            query_start_loc_cpu=self.query_start_loc[:reqs + 1].clone(),
            seq_lens=self.seq_lens[:reqs],
            num_reqs=reqs,
            num_actual_tokens=tokens,
            max_query_len=max(query_lens),
            max_seq_len=max_seq_len or max(batch.seq_lens),
            block_table_tensor=self.block_table[:reqs],
            slot_mapping=self.slot_mapping[:tokens],
            causal=True,
            positions=self.positions[:tokens],
        )
        # fields that moved between versions
        import dataclasses

        names = {f.name for f in dataclasses.fields(CommonAttentionMetadata)}
        seq_cpu = self.seq_lens[:reqs].clone()
        computed = seq_cpu - (kwargs["query_start_loc_cpu"][1:] - kwargs["query_start_loc_cpu"][:-1])
        for name, value in (("seq_lens_cpu", seq_cpu), ("_seq_lens_cpu", seq_cpu),
                            ("seq_lens_cpu_upper_bound", seq_cpu),
                            ("num_computed_tokens_cpu", computed),
                            ("_num_computed_tokens_cpu", computed),
                            ("is_prefilling", torch.tensor(
                                [q > 1 for q in query_lens] + [False] * (reqs - num_reqs)))):
            if name in names:
                kwargs[name] = value
        kwargs = {k: v for k, v in kwargs.items() if k in names}
        return CommonAttentionMetadata(**kwargs)


# --------------------------------------------------------------------------- layers

def layer_names() -> list[str]:
    return [f"model.layers.{i}.self_attn.attn" for i in range(NUM_LAYERS)]


def allocate_kv_caches(backend_cls, spec, vllm_config, num_blocks: int):
    """Per-layer logical ``[B, H, N, C]`` views of one ``[L, B, H, N, C]`` allocation whose
    strides follow the layout vLLM resolves for the backend (``resolve_kv_cache_layout``
    over its ``supported_kv_cache_layouts``), as ``create_kv_cache_views`` lays them out;
    ``(views by layer name, layout)``."""
    from vllm.v1.attention.backends import utils as backend_utils

    layouts = backend_cls.supported_kv_cache_layouts()
    names = [l.name for l in layouts] if layouts else [l.name for l in backend_utils._DEFAULT_LAYOUT_PREFERENCE]
    vllm_config.cache_config.kv_cache_layout = None
    layout = backend_utils.resolve_kv_cache_layout(vllm_config, [names], [spec])
    vllm_config.cache_config.kv_cache_layout = layout.name
    heads = spec.num_kv_heads
    # C: the per-token content of one head (2 * head_size for K|V, head_size for MLA)
    content = spec.page_size_bytes // (spec.block_size * heads * torch.tensor([], dtype=spec.dtype).element_size())
    logical = (NUM_LAYERS, num_blocks, heads, spec.block_size, content)
    physical = tuple(logical[i] for i in layout.stride_order)
    inv = [layout.stride_order.index(i) for i in range(5)]
    raw = torch.zeros(physical, dtype=spec.dtype)
    view = raw.permute(*inv)
    return {name: view[i] for i, name in enumerate(layer_names())}, layout


# --------------------------------------------------------------------------- running

def _enum(name: str):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    return AttentionBackendEnum[name]


def run_backend(run: BackendRun, batches: list[str], cudagraph: bool = True) -> dict[str, Any]:
    """Build and run ``run`` for every batch kind; the outcome per batch."""
    from . import vllm_stubs

    vllm_stubs.set_capability(*run.capability)
    outcome: dict[str, Any] = {"backend": run.key, "capability": list(run.capability), "batches": {}}
    rec.reset_run_state()
    from vllm.config import set_current_vllm_config

    try:
        backend_cls = _enum(run.enum).get_class()
    except Exception as exc:  # noqa: BLE001
        outcome["error"] = f"import: {type(exc).__name__}: {exc}"
        outcome["traceback"] = traceback.format_exc(limit=-6)
        return outcome
    rec.rebind_all()
    outcome["backend_class"] = f"{backend_cls.__module__}.{backend_cls.__qualname__}"
    for batch_name in batches:
        spec_tokens = SPEC_TOKENS if batch_name == "spec_decode" else 0
        try:
            vllm_config = create_vllm_config(run, num_speculative_tokens=spec_tokens)
            with set_current_vllm_config(vllm_config), default_dtype(run.dtype):
                outcome["batches"][batch_name] = _run_one(run, backend_cls, vllm_config, batch_name)
        except Exception as exc:  # noqa: BLE001 - reported per batch
            outcome["batches"][batch_name] = {
                "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-8)}
    if cudagraph:
        try:
            vllm_config = create_vllm_config(run)
            with set_current_vllm_config(vllm_config), default_dtype(run.dtype):
                outcome["batches"]["cudagraph"] = _run_cudagraph(run, backend_cls, vllm_config)
        except Exception as exc:  # noqa: BLE001
            outcome["batches"]["cudagraph"] = {
                "ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-8)}
    return outcome


def _kv_cache_spec(run: BackendRun, backend_cls, vllm_config):
    from vllm.v1.kv_cache_interface import FullAttentionSpec, MLAAttentionSpec

    mc = vllm_config.model_config
    pc = vllm_config.parallel_config
    if run.mla:
        spec = MLAAttentionSpec(block_size=run.block_size, num_kv_heads=1,
                                head_size=mc.get_head_size(), dtype=run.dtype)
    else:
        spec = FullAttentionSpec(block_size=run.block_size, num_kv_heads=mc.get_num_kv_heads(pc),
                                 head_size=mc.get_head_size(), dtype=run.dtype)
    customize = getattr(backend_cls, "customize_spec", None)
    return customize(spec) if customize else spec


class _Step:
    """Everything one backend run needs, built once per vllm_config."""

    def __init__(self, run: BackendRun, backend_cls, vllm_config):
        self.run = run
        self.backend_cls = backend_cls
        self.vllm_config = vllm_config
        init_distributed()
        self.spec = _kv_cache_spec(run, backend_cls, vllm_config)
        self.names = layer_names()
        self.buffers = RunnerBuffers(vllm_config, run.block_size)
        num_blocks = vllm_config.cache_config.num_gpu_blocks
        self.kv_caches, self.layout = allocate_kv_caches(backend_cls, self.spec, vllm_config, num_blocks)
        mc, pc = vllm_config.model_config, vllm_config.parallel_config
        self.num_heads = mc.get_num_attention_heads(pc)
        self.num_kv_heads = mc.get_num_kv_heads(pc)
        self.head_size = mc.get_head_size()
        self.layers: dict[str, Any] = {}
        if run.mla:
            self._init_mla()
        else:
            self._init_standard()
        self.builder = backend_cls.get_builder_cls()(self.spec, self.names, vllm_config, DEVICE)

    # ---- standard (MHA/GQA) backends: vLLM's real Attention layer (its __init__ builds
    # the impl and registers the layer in static_forward_context, where FlashInfer's
    # builder reads the per-layer hyperparameters)
    def _init_standard(self):
        from vllm.model_executor.layers.attention import Attention

        self.impls = {}
        ctx = self.vllm_config.compilation_config.static_forward_context
        for name in self.names:
            ctx.pop(name, None)
            layer = Attention(
                num_heads=self.num_heads, head_size=self.head_size, scale=self.head_size ** -0.5,
                num_kv_heads=self.num_kv_heads, cache_config=self.vllm_config.cache_config,
                prefix=name, attn_backend=self.backend_cls)
            _process_weights(layer, self.run.dtype)
            layer.bind_kv_cache(self.kv_caches[name])
            self.layers[name] = layer
            self.impls[name] = layer.impl

    # ---- MLA backends: vLLM's real MLAAttention layer (its __init__ builds the impl
    # and the prefill backend, process_weights_after_loading the absorbed W_UK_T / W_UV)
    def _init_mla(self):
        from vllm.model_executor.layers.attention.mla_attention import MLAAttention
        from vllm.model_executor.layers.linear import ColumnParallelLinear

        cfg = self.vllm_config.model_config.hf_text_config
        self.kv_lora_rank = cfg.kv_lora_rank
        self.qk_nope = cfg.qk_nope_head_dim
        self.qk_rope = cfg.qk_rope_head_dim
        self.v_head = cfg.v_head_dim
        dtype = self.run.dtype
        self.impls = {}
        ctx = self.vllm_config.compilation_config.static_forward_context
        for name in self.names:
            kv_b_proj = ColumnParallelLinear(
                input_size=self.kv_lora_rank,
                output_size=self.num_heads * (self.qk_nope + self.v_head),
                bias=False, params_dtype=dtype, prefix=name.replace(".attn", ".kv_b_proj"))
            with torch.no_grad():
                kv_b_proj.weight.normal_(std=self.kv_lora_rank ** -0.5)
            ctx.pop(name, None)
            layer = MLAAttention(
                num_heads=self.num_heads, scale=(self.qk_nope + self.qk_rope) ** -0.5,
                qk_nope_head_dim=self.qk_nope, qk_rope_head_dim=self.qk_rope,
                v_head_dim=self.v_head, q_lora_rank=None, kv_lora_rank=self.kv_lora_rank,
                kv_b_proj=kv_b_proj, cache_config=self.vllm_config.cache_config, prefix=name,
                attn_backend=self.backend_cls)
            _process_weights(layer, dtype)
            layer.bind_kv_cache(self.kv_caches[name])
            self.layers[name] = layer
            self.impls[name] = layer.impl

    def build(self, common, capture: bool = False):
        rec.CONTEXT["phase"] = "build_for_cudagraph_capture" if capture else "build"
        try:
            if capture:
                from .cuda_on_cpu import capturing

                with capturing():
                    return self.builder.build_for_cudagraph_capture(common)
            return self.builder.build(common_prefix_len=0, common_attn_metadata=common)
        finally:
            rec.drain_shared_log()

    def forward(self, metadata, num_input_tokens: int, num_actual_tokens: int):
        """One forward per layer through the real layer, inside a forward context (KV-cache
        write, then attention, as the model's layers run them)."""
        from vllm.forward_context import set_forward_context

        dtype = self.run.dtype
        slots = self.buffers.slot_mapping[:num_input_tokens]
        for index, name in enumerate(self.names):
            rec.CONTEXT["phase"] = "forward"
            rec.CONTEXT["layer_index"] = index
            layer = self.layers[name]
            with set_forward_context({n: metadata for n in self.names}, self.vllm_config,
                                     num_tokens=num_input_tokens,
                                     slot_mapping={n: slots for n in self.names}):
                if self.run.mla:
                    q = torch.randn(num_input_tokens, self.num_heads, self.qk_nope + self.qk_rope, dtype=dtype)
                    kv_c = torch.randn(num_input_tokens, self.kv_lora_rank, dtype=dtype)
                    k_pe = torch.randn(num_input_tokens, 1, self.qk_rope, dtype=dtype)
                    layer(q, kv_c, k_pe, output_shape=torch.Size(
                        (num_input_tokens, self.num_heads * self.v_head)))
                else:
                    q = torch.randn(num_input_tokens, self.num_heads * self.head_size, dtype=dtype)
                    k = torch.randn(num_input_tokens, self.num_kv_heads * self.head_size, dtype=dtype)
                    v = torch.randn(num_input_tokens, self.num_kv_heads * self.head_size, dtype=dtype)
                    layer(q, k, v)
            rec.drain_shared_log()
        rec.CONTEXT.pop("layer_index", None)


def _process_weights(layer, dtype: torch.dtype) -> None:
    """``process_weights_after_loading`` (it took the activation dtype before 0.34)."""
    import inspect

    if len(inspect.signature(layer.process_weights_after_loading).parameters):
        layer.process_weights_after_loading(dtype)
    else:
        layer.process_weights_after_loading()


def _run_one(run: BackendRun, backend_cls, vllm_config, batch_name: str) -> dict[str, Any]:
    rec.reset_run_state()
    step = _Step(run, backend_cls, vllm_config)
    batch = BATCHES[batch_name]
    rec.CONTEXT.clear()
    rec.CONTEXT.update(backend=run.key, batch=batch_name)
    first = len(rec.CALLS)
    common = step.buffers.common_metadata(batch)
    metadata = step.build(common)
    step.forward(metadata, batch.num_tokens, batch.num_tokens)
    return _summary(step, batch, first, metadata)


def _run_cudagraph(run: BackendRun, backend_cls, vllm_config) -> dict[str, Any]:
    """FULL CUDA graph path: capture a uniform decode batch, replay a padded smaller one."""
    from vllm.v1.attention.backend import AttentionCGSupport

    rec.reset_run_state()
    step = _Step(run, backend_cls, vllm_config)
    support = step.builder.get_cudagraph_support(vllm_config, step.spec)
    rec.CONTEXT.clear()
    rec.CONTEXT.update(backend=run.key, batch="cudagraph")
    first = len(rec.CALLS)
    out: dict[str, Any] = {"cudagraph_support": support.name}
    if support == AttentionCGSupport.NEVER:
        out.update(ok=True, skipped="builder reports AttentionCGSupport.NEVER")
        return out
    capture = BatchSpec("cudagraph_capture", (1,) * GRAPH_BATCH, (1,) * GRAPH_BATCH)
    common = step.buffers.common_metadata(capture, max_seq_len=vllm_config.model_config.max_model_len)
    rec.CONTEXT["graph"] = "capture"
    metadata = step.build(common, capture=True)
    step.forward(metadata, GRAPH_BATCH, GRAPH_BATCH)
    rec.CONTEXT["graph"] = "replay"
    common = step.buffers.common_metadata(GRAPH_REPLAY, pad_reqs_to=GRAPH_BATCH,
                                          pad_tokens_to=GRAPH_BATCH)
    metadata = step.build(common)
    step.forward(metadata, GRAPH_BATCH, GRAPH_REPLAY.num_tokens)
    rec.CONTEXT.pop("graph", None)
    out.update(_summary(step, GRAPH_REPLAY, first, metadata, padded_reqs=GRAPH_BATCH,
                        padded_tokens=GRAPH_BATCH))
    return out


def _summary(step: _Step, batch: BatchSpec, first: int, metadata, **extra) -> dict[str, Any]:
    calls = rec.CALLS[first:]
    entries: dict[str, int] = {}
    for call in calls:
        entries[call["entry"]] = entries.get(call["entry"], 0) + 1
    return {
        "ok": True,
        "num_reqs": batch.batch_size,
        "num_tokens": batch.num_tokens,
        "seq_lens": list(batch.seq_lens),
        "query_lens": list(batch.query_lens),
        "kv_cache_layout": step.layout.name,
        "kv_cache": rec.describe(step.kv_caches[step.names[0]]),
        "metadata_class": f"{type(metadata).__module__}.{type(metadata).__qualname__}",
        "calls": entries,
        **extra,
    }


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """The model dtype as torch's default, as vLLM's model loader sets it for layer init."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def env_summary() -> dict[str, Any]:
    import flashinfer
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__,
            "flashinfer": getattr(flashinfer, "__version__", "?"),
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}
