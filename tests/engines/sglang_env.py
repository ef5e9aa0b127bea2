"""Bring up one published SGLang version inside this process, on CPU.

:func:`bootstrap` must run before anything imports torch-dependent engine code: it puts
the extracted wheel and its support site first on ``sys.path``, answers torch's CUDA
questions (:mod:`tests.engines.cuda_on_cpu`), registers the placeholders
(:mod:`tests.engines.import_stubs`) and the kernel recorders
(:mod:`tests.engines.kernel_recorders`, :mod:`tests.engines.flashinfer_recorders`).
One version per process: the driver (``python -m tests.engines.run_sglang``) is what
calls it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .engine_wheels import ENGINE_CACHE, engine_sys_path

#: real dependencies per SGLang version, installed ``--no-deps`` into that version's own
#: support site (pins follow each release's METADATA where it pins; Triton for its
#: interpreter only). Everything else SGLang imports is a placeholder (below).
SGLANG_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "0.5.9": (
        # Triton 3.9 for both: 3.5.1's interpreter breaks on numpy 2.4 (int() of a 1-element
        # array in `for i in range(num_loop)`), and only the interpreter is used here
        "triton==3.9.0", "msgspec==0.19.0", "orjson==3.11.5", "pyzmq==27.1.0", "psutil==7.1.3",
        "pybase64==1.4.2", "pillow==12.0.0", "transformers==4.57.1", "huggingface-hub==0.36.0",
        "tokenizers==0.22.1", "safetensors==0.6.2", "regex==2025.11.3", "dill==0.4.0",
        "openai==2.6.1", "jiter==0.11.1", "distro==1.9.0", "httpx==0.28.1", "httpcore==1.0.9",
        "h11==0.16.0", "anyio==4.11.0", "sniffio==1.3.1",
    ),
    "0.5.23": (
        "triton==3.9.0", "msgspec==0.23.0", "orjson==3.13.0", "pyzmq==27.3.0", "psutil==7.2.2",
        "pybase64==1.5.1", "pillow==13.0.0", "transformers==5.19.0", "huggingface-hub==1.31.0",
        "tokenizers==0.23.2", "safetensors==0.8.0", "regex==2026.11.19", "dill==0.4.1",
        "openai==2.8.0", "jiter==0.19.0", "distro==1.9.0", "httpx==0.28.1", "httpcore==1.0.9",
        "h11==0.16.0", "anyio==4.11.0", "sniffio==1.3.1",
    ),
}

#: packages imported at SGLang module level that no attention path runs on CPU
PLACEHOLDERS: dict[str, str] = {
    "starlette": "HTTP server (sglang.srt.utils imports starlette.routing.Mount)",
    "IPython": "notebook display helpers (sglang.utils)",
    "torchvision": "image preprocessing of multimodal configs (sglang.srt.configs.*_vl / *_ocr); "
                   "no CPU torchvision wheel matches torch 2.13's ABI",
    "sentencepiece": "tokenizer of the InternVL config module",
    "compressed_tensors": "quantization config classes (sglang.srt.layers.quantization)",
    "gguf": "GGUF quantization loader",
    "partial_json_parser": "function-call parsing (sglang.srt.function_call)",
    "uvicorn": "HTTP server (sglang.srt.entrypoints.http_server, imported by the 0.5.23 test kit)",
    "fastapi": "HTTP server",
    "uvloop": "event loop of the server",
    "aiohttp": "HTTP client of sglang.test.test_utils (imported by the 0.5.9 test kit)",
    "setproctitle": "process titles of the scheduler processes",
    "sgl_kernel": "non-attention ops of sgl_kernel (attention ops are recorders)",
    "flash_mla": "non-attention parts of sgl-flash-mla (attention ops are recorders)",
    "kernels": "HuggingFace kernels hub loader (0.5.23 falls back to sgl_kernel's FA3)",
    "flashinfer.comm": "FlashInfer's multi-GPU communication ops (need cuda-python; SGLang's MoE "
                       "token dispatcher imports flashinfer.comm.mnnvl at module level)",
    "flashinfer.comm.*": "(submodules of the above)",
}

#: SGLang's own Triton attention kernels (they run for real, interpreted): their Python
#: entry points are recorded as entries like the kernel libraries' ones
TRITON_ENTRY_POINTS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "0.5.9": (
        ("sglang.srt.layers.attention.triton_ops.decode_attention", ("decode_attention_fwd",)),
        ("sglang.srt.layers.attention.triton_ops.extend_attention",
         ("extend_attention_fwd", "extend_attention_fwd_unified")),
    ),
    "0.5.23": (
        ("sglang.kernels.ops.attention.decode_attention", ("decode_attention_fwd",)),
        ("sglang.kernels.ops.attention.extend_attention",
         ("extend_attention_fwd", "extend_attention_fwd_unified", "dense_prefill_attention_fwd")),
    ),
}


def _record_triton_entry_points(version: str) -> list[str]:
    import importlib

    from .flashinfer_recorders import _entry_wrapper

    wrapped = []
    for module_name, names in TRITON_ENTRY_POINTS[version]:
        module = importlib.import_module(module_name)
        for name in names:
            function = getattr(module, name, None)
            if function is None or hasattr(function, "__cpu_kit_original__"):
                continue
            setattr(module, name, _entry_wrapper(f"{module_name}.{name}", function))
            wrapped.append(f"{module_name}.{name}")
    return wrapped


ENV_DEFAULTS = {
    "TRITON_INTERPRET": "1",
    "FLASHINFER_NO_DOWNLOAD": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "SGLANG_USE_SGL_FA3_KERNEL": "1",
    "SGLANG_IS_FLASHINFER_AVAILABLE": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}


#: SGLang's own CUDA JIT loaders (``tvm_ffi`` + nvcc). On CPU a request returns a
#: recorder module (its calls are recorded launches ``sglang-jit:<marker>:<export>``),
#: except for the modules in ENGINE_JIT_FALLBACKS, refused at once so that the caller
#: takes its torch fallback (``can_use_store_cache`` -> ``k_cache[loc] = k``: the KV pool
#: really holds the written K/V, which the real Triton backend then reads).
ENGINE_JIT_LOADERS = ("sglang.kernels.jit.utils.compile.loader", "sglang.jit_kernel.utils")
ENGINE_JIT_FALLBACKS = ("kvcache",)


class EngineJitRefused(RuntimeError):
    """An engine asked for one of its own CUDA JIT kernels on CPU."""


#: the engine JIT modules that were asked for (reported)
ENGINE_JIT_REQUESTS: list[str] = []


def _refuse_engine_jit() -> None:
    import importlib

    from .flashinfer_recorders import RecorderModule

    def load_jit(*args, **kwargs):
        marker = "/".join(map(str, args))
        ENGINE_JIT_REQUESTS.append(marker)
        if args and args[0] in ENGINE_JIT_FALLBACKS:
            raise EngineJitRefused(f"no CUDA JIT on CPU: {args}")
        return RecorderModule(f"sglang-jit:{marker}", None)

    for name in ENGINE_JIT_LOADERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        original = getattr(module, "load_jit", None)
        if original is None:
            continue
        for other in list(sys.modules.values()):
            if getattr(other, "__name__", "").startswith("sglang") and getattr(other, "load_jit", None) is original:
                other.load_jit = load_jit


def bootstrap(version: str, capability: tuple[int, int] = (9, 0)) -> Path:
    """Set up the process for SGLang ``version``; the extracted engine's root."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", str(ENGINE_CACHE / "flashinfer-workspace"))
    paths = engine_sys_path("sglang", version, SGLANG_REQUIREMENTS[version])
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    root = Path(paths[0])

    from . import cuda_on_cpu, import_stubs

    cuda_on_cpu.install(capability)
    import_stubs.settle_transformers_probes()
    import_stubs.install_placeholders(PLACEHOLDERS, [str(root)])
    import_stubs.bypass_package_init("sglang", root / "sglang")

    from . import flashinfer_recorders, kernel_recorders
    from .kernel_calls import LOG

    # before any SGLang module runs `from flashinfer import ...` / `from sgl_kernel import ...`
    kernel_recorders.install(version)
    flashinfer_recorders.install()
    kernel_recorders.attribute_guard_checks()  # the guard (if armed) fired at `import flashinfer`
    _refuse_engine_jit()
    import runtime_checks
    import guardrails

    LOG.library_roots = tuple(sorted(set(LOG.library_roots) | {
        str(Path(runtime_checks.__file__).parent), str(Path(guardrails.__file__).parent),
        str(Path(__file__).parent / "kernel_recorders.py"),
        str(Path(__file__).parent / "flashinfer_recorders.py"),
    }))
    import torch

    # frames skipped when naming the engine caller: the kits, this package, torch wrappers
    # (torch.compiler.disable around the Triton kernels)
    LOG.kit_roots = (str(root / "sglang" / "test"), str(Path(__file__).parent), str(Path(torch.__file__).parent))
    LOG.capturing = lambda: cuda_on_cpu._STATE.capturing
    _record_triton_entry_points(version)
    return root
