"""Recorder modules for the kernel libraries SGLang calls that are not installed here.

``sgl_kernel`` (the PyPI distributions ``sgl-kernel`` / ``sglang-kernel``) and
``flash_mla`` (``sgl-flash-mla``) ship CUDA extensions only. On CPU they become
``sys.modules`` entries whose attention functions are recorders with the published
Python signatures, written down here as signature text (our own code: only the parameter
lists come from the published sources). Each call is bound to its signature, recorded in
:data:`tests.engines.kernel_calls.LOG` as an entry with one launch, and answered with
zero tensors of the documented output shapes. Attributes not listed are
:class:`~tests.engines.import_stubs.Placeholder` objects (SGLang imports many non-attention
ops from ``sgl_kernel`` at module level); a call to one is counted in
``import_stubs.PLACEHOLDER_CALLS``.

Where each signature set comes from (``pip download --no-deps``; files read from the wheel):

* ``sgl-kernel==0.3.21`` (SGLang 0.5.9's pin): ``sgl_kernel/elementwise.py``
  (``concat_mla_absorb_q``, ``concat_mla_k``: MLA layout ops, computed with torch.cat),
  ``sgl_kernel/flash_attn.py``
  (``flash_attn_with_kvcache``, ``flash_attn_varlen_func``), ``sgl_kernel/attention.py``
  (``merge_state``, ``merge_state_v2``, ``cutlass_mla_decode``,
  ``cutlass_mla_get_workspace_size``), ``sgl_kernel/flash_mla.py`` (``get_mla_metadata``,
  ``flash_mla_with_kvcache``, ``flash_mla_sparse_fwd``).
* ``sglang-kernel==0.4.10`` (SGLang 0.5.23's pin): the same files; ``flash_attn.py`` adds
  ``only_qv`` / ``out`` and ``get_scheduler_metadata``; ``attention.py`` has only
  ``merge_state_v2``.
* ``sgl-flash-mla==1.0.0`` (SGLang 0.5.23's pin; the FlashMLA fork SGLang's
  ``sglang/kernels/ops/attention/flash_mla_interface.py`` imports):
  ``flash_mla/flash_mla_interface.py`` (``get_mla_metadata``, ``get_mla_decoding_metadata``,
  ``flash_mla_with_kvcache``, ``flash_mla_sparse_fwd``, ``flash_attn_varlen_func``,
  ``FlashMLASchedMeta``) and ``flash_mla/__init__.py`` (``has_legacy``).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
from typing import Any, Callable, Optional

import torch

from .import_stubs import PlaceholderModule
from .kernel_calls import LOG

_FA_WITH_KVCACHE_0_3 = (
    "q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None, rotary_sin=None, "
    "cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None, "
    "cu_seqlens_q=None, cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None, "
    "q_descale=None, k_descale=None, v_descale=None, softmax_scale=None, causal=False, "
    "window_size=(-1, -1), attention_chunk=None, softcap=0.0, rotary_interleaved=True, "
    "scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0, "
    "return_softmax_lse=False, sinks=None, score_mod=None, aux_tensors=None, ver=3")
_FA_VARLEN_0_3 = (
    "q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, "
    "seqused_q=None, seqused_k=None, page_table=None, softmax_scale=None, causal=False, "
    "qv=None, q_descale=None, k_descale=None, v_descale=None, window_size=(-1, -1), "
    "attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, sm_margin=0, "
    "return_softmax_lse=False, sinks=None, score_mod=None, aux_tensors=None, ver=3")

#: signature text per distribution and function (module-qualified)
SIGNATURES: dict[str, dict[str, str]] = {
    "sgl-kernel==0.3.21": {
        "sgl_kernel.flash_attn.flash_attn_with_kvcache": _FA_WITH_KVCACHE_0_3,
        "sgl_kernel.flash_attn.flash_attn_varlen_func": _FA_VARLEN_0_3,
        "sgl_kernel.attention.merge_state": "v_a, s_a, v_b, s_b, v_merged=None, s_merged=None",
        "sgl_kernel.attention.merge_state_v2": "v_a, s_a, v_b, s_b, v_merged=None, s_merged=None",
        "sgl_kernel.attention.cutlass_mla_decode": (
            "q_nope, q_pe, kv_c_and_k_pe_cache, seq_lens, page_table, workspace, sm_scale, num_kv_splits=1"),
        "sgl_kernel.attention.cutlass_mla_get_workspace_size": (
            "max_seq_len, num_batches, sm_count=0, num_kv_splits=1"),
        "sgl_kernel.flash_mla.get_mla_metadata": (
            "cache_seqlens, num_q_tokens_per_head_k, num_heads_k, num_heads_q=None, "
            "is_fp8_kvcache=False, topk=None"),
        "sgl_kernel.flash_mla.flash_mla_with_kvcache": (
            "q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, "
            "num_splits, softmax_scale=None, causal=False, descale_q=None, descale_k=None, "
            "is_fp8_kvcache=False, indices=None"),
        "sgl_kernel.flash_mla.flash_mla_sparse_fwd": "q, kv, indices, sm_scale, d_v=512",
        "sgl_kernel.elementwise.concat_mla_absorb_q": "a, b",
        "sgl_kernel.elementwise.concat_mla_k": "k, k_nope, k_rope",
    },
    "sglang-kernel==0.4.10": {
        "sgl_kernel.flash_attn.flash_attn_with_kvcache": _FA_WITH_KVCACHE_0_3.replace(
            "pack_gqa=None, sm_margin=0", "pack_gqa=None, only_qv=False, sm_margin=0") + ", out=None",
        "sgl_kernel.flash_attn.flash_attn_varlen_func": _FA_VARLEN_0_3.replace(
            "pack_gqa=None, sm_margin=0", "pack_gqa=None, only_qv=False, sm_margin=0") + ", out=None",
        "sgl_kernel.flash_attn.get_scheduler_metadata": (
            "batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim, cache_seqlens, "
            "qkv_dtype=torch.bfloat16, headdim_v=None, cu_seqlens_q=None, cu_seqlens_k=None, "
            "cu_seqlens_k_new=None, seqused_q=None, leftpad_k=None, page_size=None, max_seqlen_k_new=0, "
            "causal=False, window_size=(-1, -1), attention_chunk=0, has_softcap=False, num_splits=0, "
            "pack_gqa=None, sm_margin=0"),
        "sgl_kernel.attention.merge_state_v2": "v_a, s_a, v_b, s_b, v_merged=None, s_merged=None",
        "sgl_kernel.flash_mla.get_mla_metadata": (
            "cache_seqlens=None, num_q_tokens_per_head_k=None, num_heads_k=None, num_heads_q=None, "
            "is_fp8_kvcache=False, topk=None"),
        "sgl_kernel.flash_mla.flash_mla_with_kvcache": (
            "q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, "
            "num_splits=None, softmax_scale=None, causal=False, descale_q=None, descale_k=None, "
            "is_fp8_kvcache=False, indices=None, attn_sink=None, extra_k_cache=None, "
            "extra_indices_in_kvcache=None, topk_length=None, extra_topk_length=None, kv_format=None"),
        "sgl_kernel.flash_mla.flash_mla_sparse_fwd": (
            "q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None"),
        "sgl_kernel.elementwise.concat_mla_absorb_q": "a, b",
        "sgl_kernel.elementwise.concat_mla_k": "k, k_nope, k_rope",
    },
    "sgl-flash-mla==1.0.0": {
        "flash_mla.get_mla_metadata": "*args, **kwargs",
        "flash_mla.get_mla_decoding_metadata": (
            "seqlens_k, num_q_tokens_per_head_k, h_k, h_q=None, is_fp8_kvcache=False, topk=None, "
            "use_legacy=False"),
        "flash_mla.flash_mla_with_kvcache": (
            "q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, "
            "num_splits=None, softmax_scale=None, causal=False, is_fp8_kvcache=None, indices=None, "
            "attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None, "
            "extra_topk_length=None, enable_batch_invariant=False, use_legacy=False, kv_format=None, "
            "descale_q=None, descale_k=None"),
        "flash_mla.flash_mla_sparse_fwd": (
            "q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None, use_legacy=False, "
            "return_log2_lse=None"),
        "flash_mla.flash_attn_varlen_func": (
            "q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p=0.0, "
            "softmax_scale=None, causal=False, deterministic=False, is_varlen=True"),
    },
}

#: which distribution's signatures an SGLang version's pins select
SGLANG_KERNEL_PINS = {
    "0.5.9": ("sgl-kernel==0.3.21",),
    "0.5.23": ("sglang-kernel==0.4.10", "sgl-flash-mla==1.0.0"),
}
DISTRIBUTION_VERSIONS = {"sgl-kernel==0.3.21": "0.3.21", "sglang-kernel==0.4.10": "0.4.10",
                         "sgl-flash-mla==1.0.0": "1.0.0"}


def _signature(text: str) -> inspect.Signature:
    namespace: dict[str, Any] = {"torch": torch}
    exec(f"def _f({text}):\n    pass\n", namespace)
    return inspect.signature(namespace["_f"])


def _zeros(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.zeros(tuple(shape), dtype=dtype or like.dtype, device=like.device)


def _fa_lse(q: torch.Tensor) -> torch.Tensor:
    # FA3: [num_heads, total_q] for varlen (3-D q), [batch, num_heads, seqlen_q] for 4-D q
    if q.dim() == 4:
        return _zeros((q.shape[0], q.shape[2], q.shape[1]), q, torch.float32)
    return _zeros((q.shape[1], q.shape[0]), q, torch.float32)


def _out_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.bfloat16 if q.element_size() == 1 else q.dtype


def _flash_attn_with_kvcache(a: dict[str, Any]):
    q, v_cache = a["q"], a["v_cache"]
    out = a.get("out")
    if out is None:
        out = _zeros(tuple(q.shape[:-1]) + (v_cache.shape[-1],), q, _out_dtype(q))
    else:
        out.zero_()
    if a.get("return_softmax_lse"):
        return out, _fa_lse(q)
    return out


def _flash_attn_varlen_func(a: dict[str, Any]):
    q, v = a["q"], a["v"]
    out = a.get("out")
    if out is None:
        out = _zeros(tuple(q.shape[:-1]) + (v.shape[-1],), q, _out_dtype(q))
    if a.get("return_softmax_lse"):
        return out, _fa_lse(q)
    return out


def _merge_state(a: dict[str, Any]):
    v_merged = a.get("v_merged")
    s_merged = a.get("s_merged")
    v_merged = torch.zeros_like(a["v_a"]) if v_merged is None else v_merged.zero_()
    s_merged = torch.zeros_like(a["s_a"]) if s_merged is None else s_merged.zero_()
    return v_merged, s_merged


def _scheduler_metadata(batch: int, like: torch.Tensor):
    return (_zeros((4, 8), like, torch.int32), _zeros((batch + 1,), like, torch.int32))


def _sgl_get_mla_metadata(a: dict[str, Any]):
    seqlens = a.get("cache_seqlens")
    if seqlens is None:
        return FlashMLASchedMeta(), None
    return _scheduler_metadata(seqlens.shape[0], seqlens)


def _flash_mla_with_kvcache(a: dict[str, Any]):
    q = a["q"]
    b, s_q, h_q = q.shape[0], q.shape[1], q.shape[2]
    out = _zeros((b, s_q, h_q, a["head_dim_v"]), q, _out_dtype(q))
    lse = _zeros((b, h_q, s_q), q, torch.float32)
    return out, lse


def _flash_mla_sparse_fwd(a: dict[str, Any]):
    q = a["q"]
    out = _zeros(tuple(q.shape[:-1]) + (a.get("d_v", 512),), q, _out_dtype(q))
    stats = _zeros(q.shape[:-1], q, torch.float32)
    return out, stats, stats.clone()


def _flash_mla_varlen(a: dict[str, Any]):
    q, v = a["q"], a["v"]
    return _zeros(tuple(q.shape[:-1]) + (v.shape[-1],), q), _zeros((q.shape[1], q.shape[0]), q, torch.float32)


def _concat_mla_k(k: torch.Tensor, k_nope: torch.Tensor, k_rope: torch.Tensor) -> None:
    k[..., : k_nope.shape[-1]] = k_nope
    k[..., k_nope.shape[-1]:] = k_rope


def _cutlass_mla_decode(a: dict[str, Any]):
    q_nope = a["q_nope"]
    return _zeros(q_nope.shape, q_nope)


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Field-for-field stand-in for ``flash_mla.flash_mla_interface.FlashMLASchedMeta``."""

    have_initialized: bool = False
    config: Optional[Any] = None
    tile_scheduler_metadata: Optional[torch.Tensor] = None
    num_splits: Optional[torch.Tensor] = None


#: output rules by function name
OUTPUTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "flash_attn_with_kvcache": _flash_attn_with_kvcache,
    "flash_attn_varlen_func": _flash_attn_varlen_func,
    "merge_state": _merge_state,
    "merge_state_v2": _merge_state,
    "get_scheduler_metadata": lambda a: _zeros((a["batch_size"] + 1,), a["cache_seqlens"], torch.int32),
    "cutlass_mla_decode": _cutlass_mla_decode,
    "cutlass_mla_get_workspace_size": lambda a: 0,
    "sgl_kernel.flash_mla.get_mla_metadata": _sgl_get_mla_metadata,
    "flash_mla.get_mla_metadata": lambda a: (FlashMLASchedMeta(), None),
    "get_mla_decoding_metadata": lambda a: _scheduler_metadata(a["seqlens_k"].shape[0], a["seqlens_k"]),
    "flash_mla_with_kvcache": _flash_mla_with_kvcache,
    "flash_mla_sparse_fwd": _flash_mla_sparse_fwd,
    "flash_mla.flash_attn_varlen_func": _flash_mla_varlen,
    # MLA layout ops (not attention): computed for real, the attention kernels read the result
    "concat_mla_absorb_q": lambda a: torch.cat([a["a"], a["b"]], dim=-1),
    "concat_mla_k": lambda a: _concat_mla_k(a["k"], a["k_nope"], a["k_rope"]),
}


def recorder(qualname: str, signature_text: str, distribution: str) -> Callable:
    """A recorder function with the published signature of ``qualname``."""
    signature = _signature(signature_text)
    short = qualname.rsplit(".", 1)[-1]
    rule = OUTPUTS.get(qualname) or OUTPUTS.get(".".join(qualname.split(".")[-2:])) or OUTPUTS.get(short)

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name, param in signature.parameters.items():
            if param.kind is param.VAR_KEYWORD:
                arguments.update(arguments.pop(name, {}))
            elif param.kind is param.VAR_POSITIONAL:
                arguments.update({f"arg{i}": v for i, v in enumerate(arguments.pop(name, ()))})
        with LOG.entry(qualname, arguments, LOG.engine_caller()):
            LOG.launch(f"{distribution}:{short}", arguments)
            return rule(arguments) if rule else None

    function.__name__ = short
    function.__qualname__ = short
    function.__module__ = qualname.rsplit(".", 1)[0]
    function.__signature__ = signature
    function.__doc__ = f"Recorder for {qualname} ({distribution})."
    return function


class RecorderPackage(PlaceholderModule):
    """A kernel library package: recorder functions where known, placeholders elsewhere."""


def _module(name: str, version: str | None = None) -> RecorderPackage:
    module = sys.modules.get(name)
    if not isinstance(module, RecorderPackage):
        module = RecorderPackage(name)
        module.__file__ = f"<recorder {name}>"
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_module(parent), child, module)
    if version is not None:
        module.__version__ = version
    return module


#: the recorder modules installed, by name, with the distribution they stand for
INSTALLED: dict[str, str] = {}


def install(sglang_version: str) -> dict[str, str]:
    """Register the recorder packages for one SGLang version's kernel pins."""
    tolerate_fake_registrations()
    for distribution in SGLANG_KERNEL_PINS[sglang_version]:
        version = DISTRIBUTION_VERSIONS[distribution]
        for qualname, text in SIGNATURES[distribution].items():
            module_name, _, attr = qualname.rpartition(".")
            module = _module(module_name)
            _module(qualname.split(".")[0], version)
            function = recorder(qualname, text, distribution)
            setattr(module, attr, function)
            if module_name.startswith("sgl_kernel.") and module_name.count(".") == 1:
                # sgl_kernel/__init__.py re-exports the attention ops at the top level
                setattr(_module("sgl_kernel"), attr, function)
            INSTALLED[qualname] = distribution
    if "sgl-flash-mla==1.0.0" in SGLANG_KERNEL_PINS[sglang_version]:
        interface = _module("flash_mla.flash_mla_interface")
        interface.FlashMLASchedMeta = FlashMLASchedMeta
        for name in ("get_mla_metadata", "get_mla_decoding_metadata", "flash_mla_with_kvcache",
                     "flash_mla_sparse_fwd", "flash_attn_varlen_func"):
            setattr(interface, name, getattr(_module("flash_mla"), name))
        loader = _module("flash_mla._loader")
        loader.has_legacy = lambda: True
        _module("flash_mla").has_legacy = loader.has_legacy
        _module("flash_mla.fused_norm_rope_attn_rope_cast")
    if "sgl_kernel" in sys.modules:
        utils = _module("sgl_kernel.utils")
        # facts SGLang asks sgl_kernel at import / init (not kernels)
        utils.is_arch_support_pdl = lambda: False
        utils.get_cuda_stream = lambda: 0
        _module("sgl_kernel").is_arch_support_pdl = utils.is_arch_support_pdl
        _module("sgl_kernel.flash_attn").is_fa3_supported = lambda device=None: True
    return dict(INSTALLED)


def attribute_guard_checks() -> list[str]:
    """Let each entry a recorder logs carry what the runtime guard did for that call.

    The guard wraps the recorder in place (it patches ``sgl_kernel.flash_attn.X`` and the
    modules re-exporting it), so its checks run before the recorder logs the entry. Each
    guarded recorder is wrapped once more, outside the guard, like FlashInfer's entry
    points are (``flashinfer_recorders._entry_wrapper``): the entry logged during the call
    gets the change of the guard's counters (``tests.engines.guard_probe``). The wrapper
    keeps ``__fmha_guard__`` (the guard does not wrap it again). Call it after the guard is
    installed; without a guard it does nothing. Returns the qualified names wrapped.
    """
    import functools

    from . import guard_probe

    wrappers: dict[int, Callable] = {}

    def attributed(guarded: Callable) -> Callable:
        @functools.wraps(guarded)
        def call(*args, **kwargs):
            before = guard_probe.snapshot()
            first = len(LOG.entries)
            try:
                return guarded(*args, **kwargs)
            finally:
                if len(LOG.entries) > first:
                    LOG.entries[first].guard = guard_probe.delta(before)

        call.__cpu_kit_attributed__ = True
        return call

    roots = {qualname.split(".")[0] for qualname in INSTALLED}
    done = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in roots or not isinstance(module, types.ModuleType):
            continue
        for attr, value in list(vars(module).items()):
            if getattr(value, "__fmha_guard__", None) is None or getattr(value, "__cpu_kit_attributed__", False):
                continue
            if id(value) not in wrappers:
                wrappers[id(value)] = attributed(value)
                done.append(f"{name}.{attr}")
            setattr(module, attr, wrappers[id(value)])
    return done


#: ``torch.library.register_fake("sgl_kernel::...")`` calls dropped (the op does not exist
#: without the extension; SGLang registers fake impls for sgl_kernel's ops at import)
DROPPED_FAKE_REGISTRATIONS: list[str] = []
RECORDER_OP_NAMESPACES = ("sgl_kernel::",)


def tolerate_fake_registrations() -> None:
    """Let SGLang register fake impls for the absent extension's torch ops (idempotent)."""
    library = torch.library
    original = library.register_fake
    if getattr(original, "__cpu_kit_original__", None) is not None:
        return

    def register_fake(op, func=None, /, *args, **kwargs):
        if isinstance(op, str) and op.startswith(RECORDER_OP_NAMESPACES):
            try:
                torch._C._dispatch_find_schema_or_throw(op.split(".")[0], "")
            except RuntimeError:
                DROPPED_FAKE_REGISTRATIONS.append(op)
                return (lambda f: f) if func is None else func
        return original(op, func, *args, **kwargs)

    register_fake.__cpu_kit_original__ = original
    library.register_fake = register_fake
