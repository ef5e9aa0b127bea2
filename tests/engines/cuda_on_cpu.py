"""Make a CPU build of torch answer the CUDA questions an engine asks at import and init.

SGLang picks its CUDA code paths (FlashInfer imports, trtllm/fa3/FlashMLA backends) from
``torch.cuda.is_available()``, ``torch.version.cuda`` and the device capability, and its
backends and FlashInfer's wrappers touch streams, events, pinned host buffers and CUDA
graphs. :func:`install` answers those on CPU; every tensor stays a CPU tensor (the
engines' test kits take ``device`` as a parameter, and the kit passes ``"cpu"``):

* ``torch.cuda.is_available()`` is True, ``torch.version.cuda`` a version string, the
  capability what :func:`set_capability` last set (SGLang caches capability checks with
  ``functools.lru_cache``: :func:`set_capability` clears those caches);
* streams, events, ``synchronize``, ``set_device``, NVTX ranges are no-ops;
* tensor factories and ``Tensor.to`` / ``Tensor.cuda`` map ``device="cuda"`` to the CPU
  (SGLang hardcodes it in places) and drop ``pin_memory=True`` (no pinned allocator);
* ``torch.cuda.CUDAGraph`` / ``torch.cuda.graph`` record nothing: inside ``graph(...)``
  ``is_current_stream_capturing()`` is True, which is what FlashInfer's wrappers and the
  runtime guard read to tell capture from eager; ``replay()`` counts and does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import types
from types import SimpleNamespace

import torch

_STATE = SimpleNamespace(capability=(9, 0), capturing=False, replays=0, installed=False)
DEVICE_NAMES = {(8, 0): "NVIDIA A100 (cpu kit)", (9, 0): "NVIDIA H100 (cpu kit)",
                (10, 0): "NVIDIA B200 (cpu kit)"}


class FakeStream:
    def __init__(self, device=None, priority=0, **kwargs):
        self.device = torch.device("cpu")
        self.cuda_stream = 0

    def wait_stream(self, stream):
        return None

    def wait_event(self, event):
        return None

    def record_event(self, event=None):
        return event or FakeEvent()

    def synchronize(self):
        return None

    def query(self):
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeEvent:
    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        pass

    def record(self, stream=None):
        return None

    def wait(self, stream=None):
        return None

    def synchronize(self):
        return None

    def query(self):
        return True

    def elapsed_time(self, end_event):
        return 0.0


class FakeCUDAGraph:
    """No graph: capture runs the body once (eagerly), ``replay()`` only counts."""

    def __init__(self, *args, **kwargs):
        self.replays = 0

    def capture_begin(self, *args, **kwargs):
        _STATE.capturing = True

    def capture_end(self):
        _STATE.capturing = False

    def replay(self):
        self.replays += 1
        _STATE.replays += 1

    def reset(self):
        return None

    def pool(self):
        return (0, 0)

    def enable_debug_mode(self):
        return None

    def debug_dump(self, path):
        return None


@contextlib.contextmanager
def fake_graph(cuda_graph=None, pool=None, stream=None, capture_error_mode="global"):
    """``torch.cuda.graph``: the body runs once with the stream reported as capturing."""
    previous = _STATE.capturing
    _STATE.capturing = True
    try:
        yield cuda_graph
    finally:
        _STATE.capturing = previous


@contextlib.contextmanager
def capturing():
    """Run a block as if a CUDA graph were being captured (for the metadata capture paths)."""
    previous = _STATE.capturing
    _STATE.capturing = True
    try:
        yield
    finally:
        _STATE.capturing = previous


def capability() -> tuple[int, int]:
    return _STATE.capability


def _device_properties(device=None):
    major, minor = _STATE.capability
    return SimpleNamespace(
        name=DEVICE_NAMES.get(_STATE.capability, "NVIDIA GPU (cpu kit)"), major=major, minor=minor,
        multi_processor_count=132, total_memory=80 * 1024**3, L2_cache_size=50 * 1024**2,
        shared_memory_per_multiprocessor=228 * 1024, warp_size=32, max_threads_per_multi_processor=2048, regs_per_multiprocessor=65536,
        shared_memory_per_block_optin=227 * 1024, gcnArchName="", uuid="cpu-kit",
        is_integrated=False, is_multi_gpu_board=False,
    )


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


def _host_factory(factory):
    """``device="cuda"`` -> CPU and ``pin_memory=True`` dropped (engines hardcode both)."""

    @functools.wraps(factory)
    def wrapper(*args, **kwargs):
        pinned = bool(kwargs.get("pin_memory"))
        if pinned:
            kwargs["pin_memory"] = False
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        tensor = factory(*args, **kwargs)
        if pinned and isinstance(tensor, torch.Tensor):
            tensor._cpu_kit_pinned = True  # a host staging buffer: reported by describe()
        return tensor

    wrapper.__cpu_kit_original__ = factory
    return wrapper


_FACTORIES = ("empty", "zeros", "ones", "full", "tensor", "arange", "empty_strided", "randn", "rand",
              "randint", "randperm", "linspace", "eye", "as_tensor", "empty_like", "zeros_like",
              "ones_like", "full_like", "rand_like", "randn_like")


def _host_to(original):
    @functools.wraps(original)
    def to(self, *args, **kwargs):
        if args and _is_cuda_device(args[0]):
            args = ("cpu",) + args[1:]
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return original(self, *args, **kwargs)

    return to


def install(capability_: tuple[int, int] = (9, 0)) -> None:
    """Patch ``torch.cuda`` and the tensor factories (idempotent)."""
    _STATE.capability = tuple(capability_)
    if _STATE.installed:
        return
    _STATE.installed = True
    cuda = torch.cuda
    patches = {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "set_device": lambda device: None,
        "synchronize": lambda device=None: None,
        "get_device_capability": lambda device=None: _STATE.capability,
        "get_device_properties": _device_properties,
        "get_device_name": lambda device=None: _device_properties().name,
        "get_arch_list": lambda: ["sm_80", "sm_90a", "sm_100a"],
        "mem_get_info": lambda device=None: (70 * 1024**3, 80 * 1024**3),
        "memory_allocated": lambda device=None: 0,
        "max_memory_allocated": lambda device=None: 0,
        "memory_reserved": lambda device=None: 0,
        "empty_cache": lambda: None,
        "reset_peak_memory_stats": lambda device=None: None,
        "is_current_stream_capturing": lambda: _STATE.capturing,
        "current_stream": lambda device=None: _DEFAULT_STREAM,
        "default_stream": lambda device=None: _DEFAULT_STREAM,
        "set_stream": lambda stream: None,
        "stream": lambda stream=None: contextlib.nullcontext(stream),
        "device": lambda device=None: contextlib.nullcontext(),
        "Stream": FakeStream,
        "Event": FakeEvent,
        "CUDAGraph": FakeCUDAGraph,
        "graph": fake_graph,
        "graph_pool_handle": lambda: (0, 0),
        "is_initialized": lambda: True,
        "init": lambda: None,
        "_lazy_init": lambda: None,
        "get_rng_state": lambda device="cuda": torch.get_rng_state(),
        "set_rng_state": lambda state, device="cuda": None,
    }
    for name, value in patches.items():
        setattr(cuda, name, value)
    cuda.graphs.is_current_stream_capturing = patches["is_current_stream_capturing"]
    nvtx = types.SimpleNamespace(range_push=lambda *a, **k: None, range_pop=lambda: None,
                                 range=lambda *a, **k: contextlib.nullcontext(), mark=lambda *a, **k: None)
    cuda.nvtx = nvtx
    sys.modules["torch.cuda.nvtx"] = nvtx  # type: ignore[assignment]
    if torch.version.cuda is None:
        torch.version.cuda = "12.9"
    for name in _FACTORIES:
        setattr(torch, name, _host_factory(getattr(torch, name)))
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self
    torch.Tensor.is_pinned = lambda self, *args, **kwargs: self.device.type == "cpu"
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.to = _host_to(torch.Tensor.to)


_DEFAULT_STREAM = FakeStream()


def set_capability(capability_: tuple[int, int], cached_modules: tuple[str, ...] = ("sglang", "flashinfer")) -> int:
    """Report another SM version; clear ``lru_cache``s of the named packages' functions.

    Returns how many caches were cleared.
    """
    _STATE.capability = tuple(capability_)
    cleared = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(cached_modules):
            continue
        for value in list(vars(module).values()):
            if callable(value) and hasattr(value, "cache_clear") and getattr(value, "__module__", "") == name:
                value.cache_clear()
                cleared += 1
    return cleared


def graph_replays() -> int:
    return _STATE.replays
