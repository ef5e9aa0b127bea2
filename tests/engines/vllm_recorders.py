"""Recorders for the kernels vLLM's attention backends launch, run on CPU.

Two layers, both recorded into :data:`CALLS` with the label the kit set in
:data:`CONTEXT` (backend, batch, phase):

* **entry points** (``layer="python"``): the Python functions and methods a backend
  calls to launch attention (``vllm.vllm_flash_attn.flash_attn_varlen_func``,
  FlashMLA's ``flash_mla_with_kvcache``, vLLM's Triton ``unified_attention``,
  FlashInfer's wrapper ``plan`` / ``run`` and ``trtllm_*`` functions, ...). Arguments
  are bound to the function's real signature (``inspect.signature``). An entry point
  either *passes through* (its real Python body runs, down to the compiled op) or is
  *terminal* (it launches a CUDA or FMHA Triton kernel directly: the recorder returns
  zeros of the real output shape instead).
* **compiled ops** (``layer="torch.ops"``): the ``torch.ops.<namespace>.<op>`` of the
  wheel's missing ``.so`` files (``_vllm_fa2_C``, ``_vllm_fa3_C``, ``_flashmla_C``,
  ``_C_cache_ops`` ...). Arguments are positional; where the C++ schema is known
  (:data:`OP_SCHEMAS`, from the kernels' ``TORCH_LIBRARY`` definitions) they are
  named. Each op returns zeros of the shape its schema returns.

Triton kernels vLLM uses to fill metadata buffers really run (``TRITON_INTERPRET=1``);
each launch is logged in :data:`TRITON_LAUNCHES`, and a tensor a recorded call receives
is marked with the Triton kernels that were handed the same storage earlier in the run
(``"triton_kernels"``): that is how buffers filled in place show up in the inventory.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

#: every recorded call, in order
CALLS: list[dict[str, Any]] = []
#: every Triton kernel launch (interpreted), in order
TRITON_LAUNCHES: list[dict[str, Any]] = []
#: labels attached to every record (set by the kit around each backend step)
CONTEXT: dict[str, Any] = {}

_STORAGE_IDS: dict[int, int] = {}
#: storage id -> Triton kernel names that received it (since the last reset)
_TRITON_TOUCHED: dict[int, list[str]] = {}


#: storages seen since the last reset, kept alive so their addresses are not reused
_KEEP: list[Any] = []


def reset_run_state() -> None:
    """Forget storage identities and Triton touches (between two backend runs)."""
    _STORAGE_IDS.clear()
    _TRITON_TOUCHED.clear()
    _KEEP.clear()


def _storage_id(t: torch.Tensor) -> int:
    """A small id per storage, stable within a run (same id = same buffer)."""
    storage = t.untyped_storage()
    ptr = storage.data_ptr()
    if ptr not in _STORAGE_IDS:
        _STORAGE_IDS[ptr] = len(_STORAGE_IDS) + 1
        _KEEP.append(storage)
    return _STORAGE_IDS[ptr]


_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool)


def describe(value: Any, depth: int = 0) -> Any:
    """A JSON-able description: tensors by shape/dtype/device/strides/storage, scalars as is."""
    if isinstance(value, torch.Tensor):
        storage_bytes = value.untyped_storage().nbytes()
        elem = value.element_size() or 1
        sid = _storage_id(value)
        out: dict[str, Any] = {
            "tensor": True,
            "shape": list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
            "device": str(value.device),
            "stride": list(value.stride()),
            "contiguous": value.is_contiguous(),
            "storage": sid,
            "storage_numel": storage_bytes // elem,
            "storage_offset": value.storage_offset(),
        }
        if value.dtype in _INT_DTYPES and value.numel() <= 64:
            out["values"] = value.flatten().tolist()
        touched = _TRITON_TOUCHED.get(sid)
        if touched:
            out["triton_kernels"] = sorted(set(touched))
        return out
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (tuple, list)) and depth < 3:
        return {"sequence": type(value).__name__, "items": [describe(v, depth + 1) for v in value]}
    if isinstance(value, dict) and depth < 2:
        return {"mapping": {str(k): describe(v, depth + 1) for k, v in value.items()}}
    if callable(value):
        return {"callable": getattr(value, "__qualname__", type(value).__name__)}
    return {"object": f"{type(value).__module__}.{type(value).__qualname__}"}


def _record(entry: str, layer: str, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
    record = {
        **CONTEXT,
        "entry": entry,
        "layer": layer,
        "args": {name: describe(value) for name, value in arguments.items()},
        **extra,
    }
    CALLS.append(record)
    return record


# --------------------------------------------------------------------------- Python entries

#: qualified name -> (original, wrapper)
WRAPPED: dict[str, tuple[Callable, Callable]] = {}


def _bind(signature: inspect.Signature | None, args, kwargs) -> dict[str, Any]:
    if signature is None:
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    out = {}
    for name, value in bound.arguments.items():
        param = signature.parameters[name]
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            out.update({f"{name}[{i}]": v for i, v in enumerate(value)})
        else:
            out[name] = value
    return out


def make_entry_recorder(qualname: str, original: Callable, fake: Callable | None = None,
                        method: bool = False) -> Callable:
    """Wrap ``original``: record the bound arguments, then run it (or ``fake`` if given)."""
    try:
        signature = inspect.signature(original)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        from . import faults

        args, kwargs = faults.apply(qualname, signature, args, kwargs, CONTEXT.get("graph", "eager"))  # FMHA_KIT_FAULT
        arguments = _bind(signature, args, kwargs)
        if method:
            arguments.pop("self", None)
        record = _record(qualname, "python", arguments, terminal=fake is not None)
        from . import guard_probe
        from .kernel_calls import LOG

        before = guard_probe.snapshot()
        first = len(LOG.entries)
        try:
            if fake is not None:
                return fake(*args, **kwargs)
            return original(*args, **kwargs)
        except BaseException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            delta = guard_probe.delta(before)
            if delta is not None:
                record["guard"] = delta
            launches = claim_shared_entries(first)
            if launches:
                record["launches"] = launches

    wrapper.__fmha_recorder__ = qualname
    return wrapper


def claim_shared_entries(first: int) -> list[dict[str, Any]]:
    """Launches the shared FlashInfer recorders logged since ``first`` (marked claimed)."""
    from .kernel_calls import LOG

    launches = []
    for entry in LOG.entries[first:]:
        if getattr(entry, "_vllm_claimed", False):
            continue
        entry._vllm_claimed = True
        launches.extend(launch.as_json() for launch in entry.launches)
    return launches


def drain_shared_log() -> int:
    """Entries the shared recorders logged that no vLLM-kit recorder claimed: into CALLS."""
    from .kernel_calls import LOG

    count = 0
    for entry in LOG.clear():
        if getattr(entry, "_vllm_claimed", False):
            continue
        record = {**CONTEXT, "entry": entry.entry, "layer": "python", "source": "kernel_calls.LOG",
                  "caller": entry.caller, "args": entry.args,
                  "launches": [launch.as_json() for launch in entry.launches]}
        if entry.guard:
            record["guard"] = entry.guard
        if entry.error:
            record["error"] = entry.error
        CALLS.append(record)
        count += 1
    return count


def wrap_function(module_name: str, attr: str, fake: Callable | None = None) -> bool:
    """Record ``module.attr`` and rebind every module-level alias of it in ``sys.modules``."""
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = __import__(module_name, fromlist=["_"])
        except Exception:  # noqa: BLE001 - the module is absent in this version
            return False
    original = getattr(module, attr, None)
    if original is None or getattr(original, "__fmha_recorder__", None):
        return False
    inner = getattr(original, "__qualname__", attr)
    if "<locals>" in inner:  # a closure bound to a module name (vllm.utils.flashinfer's lazy wrappers)
        qualname = f"{module_name}.{attr}"
    else:
        qualname = f"{getattr(original, '__module__', module_name)}.{inner}"
    wrapper = make_entry_recorder(qualname, original, fake)
    WRAPPED[qualname] = (original, wrapper)
    rebind_aliases(original, wrapper)
    return True


def rebind_aliases(original: Callable, wrapper: Callable) -> int:
    """Replace ``original`` by ``wrapper`` wherever a module (vLLM, FlashInfer) holds it."""
    count = 0
    for name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType):
            continue
        if not name.startswith(("vllm", "flashinfer")):
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for key, value in list(namespace.items()):
            if value is original:
                setattr(module, key, wrapper)
                count += 1
    return count


def rebind_all() -> None:
    """Re-run alias rebinding (after more vLLM modules were imported)."""
    for original, wrapper in WRAPPED.values():
        rebind_aliases(original, wrapper)


def wrap_method(cls: type, name: str, fake: Callable | None = None) -> bool:
    original = cls.__dict__.get(name)
    if original is None or getattr(original, "__fmha_recorder__", None):
        return False
    qualname = f"{cls.__module__}.{cls.__qualname__}.{name}"
    setattr(cls, name, make_entry_recorder(qualname, original, fake, method=True))
    return True


# --------------------------------------------------------------------------- compiled ops

#: names of compiled-op arguments, from the kernels' TORCH_LIBRARY schemas
OP_SCHEMAS: dict[str, tuple[str, ...]] = {
    # vllm-project/flash-attention csrc/flash_attn/flash_api_torch_lib.cpp
    "_vllm_fa2_C.varlen_fwd": (
        "q", "k", "v", "out", "cu_seqlens_q", "cu_seqlens_k", "seqused_k", "leftpad_k",
        "block_table", "alibi_slopes", "max_seqlen_q", "max_seqlen_k", "p_dropout",
        "softmax_scale", "zero_tensors", "is_causal", "window_size_left",
        "window_size_right", "softcap", "return_softmax", "num_splits", "gen"),
    # vllm-project/flash-attention hopper/flash_api_torch_lib.cpp (FA3 "fwd")
    "_vllm_fa3_C.fwd": (
        "q", "k", "v", "k_new", "v_new", "q_v", "out", "cu_seqlens_q", "cu_seqlens_k",
        "cu_seqlens_k_new", "seqused_q", "seqused_k", "max_seqlen_q", "max_seqlen_k",
        "page_table", "kv_batch_idx", "leftpad_k", "rotary_cos", "rotary_sin",
        "seqlens_rotary", "q_descale", "k_descale", "v_descale", "softmax_scale",
        "is_causal", "window_size_left", "window_size_right", "softcap",
        "is_rotary_interleaved", "scheduler_metadata", "num_splits", "pack_gqa",
        "sm_margin", "s_aux", "cp_world_size", "cp_rank", "cp_tot_seqused_k"),
    "_vllm_fa3_C.get_scheduler_metadata": (
        "batch_size", "max_seqlen_q", "max_seqlen_k", "num_heads", "num_heads_k",
        "headdim", "headdim_v", "qkv_dtype", "seqused_k", "cu_seqlens_q", "cu_seqlens_k",
        "cu_seqlens_k_new", "seqused_q", "leftpad_k", "page_size", "max_seqlen_k_new",
        "is_causal", "window_size_left", "window_size_right", "has_softcap",
        "num_splits", "pack_gqa", "sm_margin"),
    # vllm csrc/torch_bindings.cpp (cache_ops)
    "_C_cache_ops.reshape_and_cache_flash": (
        "key", "value", "key_cache", "value_cache", "slot_mapping", "kv_cache_dtype",
        "k_scale", "v_scale"),
    "_C_cache_ops.concat_and_cache_mla": (
        "kv_c", "k_pe", "kv_cache", "slot_mapping", "kv_cache_dtype", "scale"),
    "_C_cache_ops.gather_and_maybe_dequant_cache": (
        "src_cache", "dst", "block_table", "cu_seq_lens", "token_to_seq", "num_tokens",
        "kv_cache_dtype", "scale", "seq_starts"),
    "_C_cache_ops.cp_gather_cache": (
        "src_cache", "dst", "block_table", "cu_seq_lens", "batch_size", "seq_starts"),
    # FlashMLA csrc (the Python call in vllm/third_party/flashmla/flash_mla_interface.py)
    "_flashmla_C.dense_decode_fwd": (
        "q", "kcache", "head_dim_v", "seqlens_k", "block_table", "softmax_scale",
        "is_causal", "tile_scheduler_metadata", "num_splits", "out"),
    "_flashmla_C.sparse_decode_fwd": (
        "q", "kcache", "indices", "topk_length", "attn_sink", "tile_scheduler_metadata",
        "num_splits", "extra_kcache", "extra_indices", "extra_topk_length", "head_dim_v",
        "softmax_scale", "out", "enable_batch_invariant"),
}


def _zeros_like_out(q: torch.Tensor, head_dim_v: int | None = None) -> torch.Tensor:
    shape = list(q.shape)
    if head_dim_v is not None:
        shape[-1] = head_dim_v
    return torch.zeros(shape, dtype=q.dtype, device=q.device)


def _fa2_varlen_fwd(q, k, v, out, cu_seqlens_q, *rest):
    out = out if out is not None else _zeros_like_out(q, v.shape[-1])
    lse = torch.zeros(q.shape[-2], q.shape[0], dtype=torch.float32)
    return out, lse


def _fa3_fwd(q, k, v, k_new, v_new, q_v, out, *rest):
    out = out if out is not None else _zeros_like_out(q, v.shape[-1])
    lse = torch.zeros(q.shape[-2], q.shape[0], dtype=torch.float32)
    return out, lse, None, None


def _fa3_scheduler_metadata(batch_size, *rest):
    return torch.zeros(2 * (int(batch_size) + 1), dtype=torch.int32)


def _flashmla_dense_decode_fwd(q, kv_cache, head_dim_v, *rest):
    if not isinstance(head_dim_v, int):  # sparse_decode_fwd: head_dim_v is the 11th argument
        head_dim_v = rest[7]
    # q: [batch, s_q, heads, d]; out [batch, s_q, heads, dv], lse [batch, heads, s_q]
    b, s_q, h = q.shape[0], q.shape[1], q.shape[2]
    out = torch.zeros(b, s_q, h, int(head_dim_v), dtype=q.dtype)
    lse = torch.zeros(b, h, s_q, dtype=torch.float32)
    return out, lse, None, None


def _flashmla_get_metadata(cache_seqlens, *rest):
    return torch.zeros(132, 8, dtype=torch.int32), torch.zeros(cache_seqlens.shape[0] + 1,
                                                               dtype=torch.int32)


OP_FAKES: dict[str, Callable] = {
    "_vllm_fa2_C.varlen_fwd": _fa2_varlen_fwd,
    "_vllm_fa3_C.fwd": _fa3_fwd,
    "_vllm_fa3_C.get_scheduler_metadata": _fa3_scheduler_metadata,
    "_flashmla_C.dense_decode_fwd": _flashmla_dense_decode_fwd,
    "_flashmla_C.get_mla_decoding_metadata": _flashmla_get_metadata,
    "_flashmla_extension_C.get_mla_decoding_metadata_dense_fp8": _flashmla_get_metadata,
}


class RecordedOp:
    """A compiled op stand-in: records positional args (named by its schema) and fakes output."""

    def __init__(self, namespace: str, name: str):
        self.qualname = f"{namespace}.{name}"
        self.names = OP_SCHEMAS.get(self.qualname, ())
        self.fake = OP_FAKES.get(self.qualname)
        self.default = self  # torch.ops.ns.op.default

    def __call__(self, *args, **kwargs):
        named = {}
        for i, value in enumerate(args):
            named[self.names[i] if i < len(self.names) else f"arg{i}"] = value
        named.update(kwargs)
        layer = getattr(self, "layer", "torch.ops")
        entry = self.qualname if layer != "torch.ops" else f"torch.ops.{self.qualname}"
        _record(entry, layer, named, faked=self.fake is not None)
        if self.fake is not None:
            return self.fake(*args, **kwargs)
        return None


#: the compiled ops that exist (recorded); any other name is missing, as on a build
#: without it, so vLLM's ``hasattr(torch.ops._C, "x")`` feature probes answer False
RECORDED_OPS: dict[str, tuple[str, ...]] = {
    "_C_cache_ops": ("reshape_and_cache_flash", "concat_and_cache_mla",
                     "gather_and_maybe_dequant_cache", "cp_gather_cache"),
    "_vllm_fa2_C": ("varlen_fwd",),
    "_vllm_fa3_C": ("fwd", "get_scheduler_metadata"),
    "_flashmla_C": ("dense_decode_fwd", "sparse_decode_fwd"),
    "_flashmla_extension_C": (),
    # capability queries quantization utils make at import: answered False (no CUTLASS)
    "_C": ("cutlass_scaled_mm_supports_block_fp8", "cutlass_scaled_mm_supports_fp8",
           "cutlass_scaled_mm_supports_fp4", "cutlass_group_gemm_supported"),
    "_moe_C": (),
}
OP_FAKES["_flashmla_C.sparse_decode_fwd"] = _flashmla_dense_decode_fwd
for _name in RECORDED_OPS["_C"]:
    OP_FAKES[f"_C.{_name}"] = lambda *a, **k: False


class RecordedNamespace:
    """``torch.ops.<namespace>`` of a compiled extension that is not there."""

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._ops: dict[str, RecordedOp] = {
            name: RecordedOp(namespace, name) for name in RECORDED_OPS.get(namespace, ())}

    def __getattr__(self, name: str) -> RecordedOp:
        try:
            return self.__dict__["_ops"][name]
        except KeyError:
            raise AttributeError(
                f"'_OpNamespace' '{self._namespace}' object has no attribute '{name}' "
                "(compiled op not recorded by tests.engines.vllm_recorders)") from None


#: torch.ops namespaces of the wheel's compiled extensions
COMPILED_NAMESPACES = tuple(RECORDED_OPS)


def install_op_namespaces() -> None:
    for namespace in COMPILED_NAMESPACES:
        setattr(torch.ops, namespace, RecordedNamespace(namespace))


# --------------------------------------------------------------------------- Triton

def install_triton_launch_log() -> bool:
    """Log every interpreted Triton launch and the storages it was handed."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    cls = interpreter.InterpretedFunction
    if getattr(cls.run, "__fmha_recorder__", None):
        return True
    original = cls.run

    def run(self, *args, grid, warmup, **kwargs):
        if not warmup:
            name = f"{self.fn.__module__}.{self.fn.__qualname__}"
            tensors = {}
            for arg_name, value in zip(self.arg_names, args):
                if isinstance(value, torch.Tensor):
                    tensors[arg_name] = value
            for arg_name, value in kwargs.items():
                if isinstance(value, torch.Tensor):
                    tensors[arg_name] = value
            for value in tensors.values():
                _TRITON_TOUCHED.setdefault(_storage_id(value), []).append(name.rsplit(".", 1)[-1])
            TRITON_LAUNCHES.append({
                **CONTEXT,
                "kernel": name,
                "grid": describe(grid if not callable(grid) else "callable"),
                "tensors": {k: describe(v) for k, v in tensors.items()},
            })
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    run.__fmha_recorder__ = "triton"
    cls.run = run
    return True


# --------------------------------------------------------------------------- Python signatures

#: the Python entry points' parameter lists, identical in vLLM 0.33.0 and 0.34.0 (read from
#: the published wheels: ``vllm/vllm_flash_attn/flash_attn_interface.py``, where
#: ``DEFAULT_FA_VERSION = 2``, and ``vllm/third_party/flashmla/flash_mla_interface.py``).
#: Stand-ins for tests that run where no vLLM is extracted (build recorders with
#: ``kernel_recorders.recorder``); ``tests/test_kernel_specs_beyond_flashinfer.py``
#: compares them with the extracted sources when those are there.
PYTHON_SIGNATURES: dict[str, str] = {
    "vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func": (
        "q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k=None, seqused_k=None, "
        "q_v=None, dropout_p=0.0, softmax_scale=None, causal=False, window_size=None, softcap=0.0, "
        "alibi_slopes=None, deterministic=False, return_attn_probs=False, block_table=None, "
        "return_softmax_lse=False, out=None, scheduler_metadata=None, q_descale=None, k_descale=None, "
        "v_descale=None, num_splits=0, output_scale=None, fa_version=2, s_aux=None, cp_world_size=1, "
        "cp_rank=0, cp_tot_seqused_k=None, mask_mod=None, block_sparse_tensors=None, aux_tensors=None, "
        "aux_tensor_leading_dims=None, dynamic_causal=None, gather_kv_indices=None, "
        "gather_kv_valid_length=None"),
    "vllm.vllm_flash_attn.flash_attn_interface.get_scheduler_metadata": (
        "batch_size, max_seqlen_q, max_seqlen_k, num_heads_q, num_heads_kv, headdim, cache_seqlens, "
        "qkv_dtype=torch.bfloat16, headdim_v=None, cu_seqlens_q=None, cu_seqlens_k_new=None, "
        "cache_leftpad=None, page_size=None, max_seqlen_k_new=0, causal=False, window_size=(-1, -1), "
        "has_softcap=False, num_splits=0, pack_gqa=None, sm_margin=0"),
    "vllm.third_party.flashmla.flash_mla_interface.get_mla_metadata": "*args, **kwargs",
    "vllm.third_party.flashmla.flash_mla_interface.flash_mla_with_kvcache": (
        "q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits=None, "
        "softmax_scale=None, causal=False, is_fp8_kvcache=False, indices=None, attn_sink=None, "
        "extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None, extra_topk_length=None, "
        "out=None, enable_batch_invariant=False"),
    "vllm.third_party.flashmla.flash_mla_interface.flash_attn_varlen_func": (
        "q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p=0.0, "
        "softmax_scale=None, causal=False, deterministic=False, is_varlen=True"),
}
