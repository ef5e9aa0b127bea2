"""What vLLM's attention backends need on a CPU-only machine, and nothing more.

Installed by :func:`install` before the first ``import vllm`` (one vLLM version per
process). Four kinds of stand-ins, each listed with the reason it is needed; the driver
prints these lists in its report:

* **placeholder modules** (:data:`PLACEHOLDER_MODULES`): third-party packages vLLM
  imports at module level for code the attention backends never run (HTTP clients,
  multimodal processors, quantization libraries, CUDA-only libraries). Served by
  :mod:`tests.engines.import_stubs` (shared with the SGLang kit); a call into one from
  an attention path shows up in ``import_stubs.PLACEHOLDER_CALLS``.
* **compiled extension modules** (:data:`COMPILED_MODULES`): the ``.so`` files of the
  wheel (``vllm._C_stable_libtorch``, ``vllm.vllm_flash_attn._vllm_fa2_C`` ...). Each is
  an empty module in ``sys.modules`` so ``import`` succeeds; the torch ops they would
  register are registered by :mod:`tests.engines.vllm_recorders` with their real
  schemas, recording every call.
* **the platform**: :class:`KitCudaPlatform`, vLLM's own ``CudaPlatform`` with the
  device capability chosen by the kit (SM80 / SM90 / SM100) and ``dispatch_key="CPU"``
  (vLLM registers its Python custom ops for the platform's dispatch key; the tensors are
  CPU tensors).
* **torch.cuda on a CPU build**: :mod:`tests.engines.cuda_on_cpu` (shared with the
  SGLang kit): ``is_available()`` True, the kit's capability, streams / events / graphs
  as no-ops; every tensor stays on the CPU (the kit passes ``device="cpu"``).
"""

from __future__ import annotations

import functools
import sys
import types

import torch

from . import import_stubs

#: third-party top-level packages vLLM imports at module level on the way to its
#: attention backends, none of which an attention path calls on CPU.
PLACEHOLDER_MODULES: dict[str, str] = {
    "aiohttp": "vllm.connections (HTTP media fetching) imports it at module level",
    "PIL": "vllm.multimodal.hasher / media loaders (images) at module level",
    "pybase64": "vllm.multimodal.media (base64 media payloads)",
    "cbor2": "vllm.utils.hashing (prefix-cache hashing of request payloads)",
    "uvloop": "vllm.v1.utils (engine-core event loop)",
    "cpuinfo": "vllm.usage.usage_lib (usage telemetry: CPU model)",
    "prometheus_client": "vllm.v1.metrics (server metrics)",
    "llguidance": "structured-output backends (grammar), imported by the scheduler output",
    "xgrammar": "structured-output backends (grammar), imported by the scheduler output",
    "openai_harmony": "0.33: vllm.config.reasoning -> entrypoints.mcp.tool_server (gpt-oss tools)",
    "openai": "0.33: the same reasoning-parser import chain (OpenAI protocol types)",
    "fastapi": "0.33: the same chain (OpenAI-compatible server)",
    "partial_json_parser": "0.33: the same chain (tool-call parsing)",
}

#: compiled extensions of the wheel (not extracted: nothing on CPU loads them).
COMPILED_MODULES: dict[str, str] = {
    "vllm._C": "custom CUDA ops (cache writes, quantization); ops registered by vllm_recorders",
    "vllm._C_stable_libtorch": "stable-ABI CUDA ops; imported by vllm.platforms.cuda",
    "vllm._moe_C": "MoE CUDA ops; imported by CudaPlatform.import_kernels",
    "vllm._moe_C_stable_libtorch": "MoE CUDA ops (stable ABI)",
    "vllm.vllm_flash_attn._vllm_fa2_C": "FlashAttention-2 kernels; torch.ops._vllm_fa2_C recorded",
    "vllm.vllm_flash_attn._vllm_fa3_C": "FlashAttention-3 kernels; torch.ops._vllm_fa3_C recorded",
    "vllm._flashmla_C": "FlashMLA kernels; torch.ops._flashmla_C recorded",
    "vllm._flashmla_extension_C": "FlashMLA fp8 / sparse kernels; torch.ops._flashmla_extension_C",
}


class _KitCapability:
    """The device capability the kit simulates (changed between backend runs)."""

    major = 9
    minor = 0


CAPABILITY = _KitCapability()


def set_capability(major: int, minor: int = 0) -> None:
    from . import cuda_on_cpu

    CAPABILITY.major, CAPABILITY.minor = major, minor
    cuda_on_cpu.set_capability((major, minor), ("flashinfer",))
    _clear_vllm_caches()


def _clear_vllm_caches() -> None:
    """Clear every ``functools.cache`` in vLLM's modules and classes (capability answers)."""
    lru = functools._lru_cache_wrapper
    for name, module in list(sys.modules.items()):
        if not (name == "vllm" or name.startswith(("vllm.", "flashinfer"))):
            continue
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, lru):
                value.cache_clear()
            elif isinstance(value, type) and value.__module__ == name:
                for attr in list(vars(value).values()):
                    func = getattr(attr, "__func__", attr)
                    if isinstance(func, lru):
                        func.cache_clear()


def _compiled_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"<fmha-guardrails stub for {name}>"
    module.__doc__ = COMPILED_MODULES[name]
    return module


def _cpu_cuda_shims() -> dict[str, str]:
    """``torch.cuda`` on a CPU build: the shared :mod:`tests.engines.cuda_on_cpu` patches."""
    from . import cuda_on_cpu

    cuda_on_cpu.install((CAPABILITY.major, CAPABILITY.minor))
    return {"tests.engines.cuda_on_cpu": "torch.cuda answers (is_available, capability, streams, "
            "events, CUDA graphs as no-ops, pin_memory dropped) on a CPU build; shared with the SGLang kit"}


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":")[0] == "cuda"
    return False


_FACTORIES = ("empty", "zeros", "ones", "full", "tensor", "arange", "empty_strided", "randn",
              "rand", "randint", "zeros_like", "empty_like", "ones_like", "full_like", "as_tensor")


def _cuda_device_to_cpu() -> dict[str, str]:
    """``device="cuda"`` in a factory call (vLLM hard-codes it for FlashInfer workspace
    buffers) allocates on the CPU; ``Tensor.to("cuda")`` / ``.cuda()`` stay on the CPU."""
    def wrap(factory):
        @functools.wraps(factory)
        def wrapper(*args, **kwargs):
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = "cpu"
            return factory(*args, **kwargs)

        wrapper.__vllm_kit_original__ = factory
        return wrapper

    for name in _FACTORIES:
        original = getattr(torch, name)
        if not hasattr(original, "__vllm_kit_original__"):
            setattr(torch, name, wrap(original))
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and _is_cuda(args[0]):
            args = ("cpu",) + args[1:]
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    if not hasattr(torch.Tensor.to, "__vllm_kit_original__"):
        to.__vllm_kit_original__ = original_to
        torch.Tensor.to = to
        torch.Tensor.cuda = lambda self, *a, **k: self
    return {f"torch.{name}(device='cuda')": "allocated on the CPU" for name in _FACTORIES} | {
        "torch.Tensor.to('cuda') / .cuda()": "stays on the CPU"}


def _fa4_cute_stub() -> dict[str, str]:
    """FA4 (``vllm.vllm_flash_attn.cute``) is a CuTe-DSL JIT kernel (nvidia-cutlass-dsl,
    CUDA): its package is a placeholder whose ``interface._flash_attn_fwd`` is a recorder."""
    from . import vllm_recorders as rec

    def _flash_attn_fwd(q, k, v, **kwargs):
        out = kwargs.get("out")
        if out is None:
            out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
        lse = torch.zeros(q.shape[-2], q.shape[0], dtype=torch.float32)
        return out, lse, None, None

    recorder = rec.RecordedOp.__new__(rec.RecordedOp)
    recorder.qualname = "vllm.vllm_flash_attn.cute.interface._flash_attn_fwd"
    recorder.names = ("q", "k", "v")
    recorder.fake = _flash_attn_fwd
    recorder.default = recorder
    recorder.layer = "cute-dsl"
    package = import_stubs.PlaceholderModule("vllm.vllm_flash_attn.cute")
    interface = import_stubs.PlaceholderModule("vllm.vllm_flash_attn.cute.interface")
    interface._flash_attn_fwd = recorder
    package.interface = interface
    sys.modules["vllm.vllm_flash_attn.cute"] = package
    sys.modules["vllm.vllm_flash_attn.cute.interface"] = interface
    return {"vllm.vllm_flash_attn.cute": "FA4 CuTe-DSL kernels (need nvidia-cutlass-dsl and "
            "CUDA); interface._flash_attn_fwd recorded (FA4 is vLLM's MLA prefill on SM100)"}


INSTALLED: dict[str, dict[str, str]] = {}


def install() -> dict[str, dict[str, str]]:
    """Install every stand-in; idempotent. Returns what was installed, with reasons."""
    if INSTALLED:
        return INSTALLED
    import os

    extra = [p for p in os.environ.get("FMHA_VLLM_EXTRA_PLACEHOLDERS", "").split(",") if p]
    import_stubs.install_placeholders(list(PLACEHOLDER_MODULES) + extra)  # extra: discovery only
    from . import vllm_recorders

    vllm_recorders.install_op_namespaces()
    vllm_recorders.install_triton_launch_log()
    for name in COMPILED_MODULES:
        sys.modules.setdefault(name, _compiled_module(name))
    INSTALLED["placeholder_modules"] = dict(PLACEHOLDER_MODULES)
    INSTALLED["compiled_modules"] = dict(COMPILED_MODULES)
    INSTALLED["compiled_modules"].update(_fa4_cute_stub())
    INSTALLED["torch_cuda"] = _cpu_cuda_shims()
    INSTALLED["cuda_device_allocations"] = _cuda_device_to_cpu()
    import vllm.platforms as platforms

    platforms.resolve_current_platform_cls_qualname = lambda: f"{__name__}.make_platform"
    INSTALLED["platform"] = {
        "vllm.platforms.current_platform": "KitCudaPlatform: CudaPlatform with the kit's "
        "capability, dispatch key CPU",
    }
    return INSTALLED


_PLATFORM_CLS = None


def make_platform():
    """Build :class:`KitCudaPlatform` (subclass of vLLM's own ``NonNvmlCudaPlatform``)."""
    global _PLATFORM_CLS
    if _PLATFORM_CLS is None:
        from vllm.platforms.cuda import NonNvmlCudaPlatform
        from vllm.platforms.interface import DeviceCapability

        class KitCudaPlatform(NonNvmlCudaPlatform):
            dispatch_key = "CPU"

            @classmethod
            def get_device_capability(cls, device_id: int = 0):
                return DeviceCapability(major=CAPABILITY.major, minor=CAPABILITY.minor)

            @classmethod
            def get_device_name(cls, device_id: int = 0) -> str:
                return {9: "NVIDIA H200", 10: "NVIDIA B200", 8: "NVIDIA A100-SXM4-80GB"}.get(
                    CAPABILITY.major, "NVIDIA GPU")

            @classmethod
            def get_device_total_memory(cls, device_id: int = 0) -> int:
                return 80 << 30

            @classmethod
            def device_count(cls) -> int:
                return 1

            @classmethod
            def num_compute_units(cls, device_id: int = 0) -> int:
                return 132

            @classmethod
            def is_pin_memory_available(cls) -> bool:
                return False

        _PLATFORM_CLS = KitCudaPlatform
    return _PLATFORM_CLS()
