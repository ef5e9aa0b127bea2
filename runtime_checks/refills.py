"""Metadata buffers refilled in place, made visible to the value memo.

The value memo (:class:`~runtime_checks.launch_memo.LaunchMemo`) skips the value checks
of a launch whose index tensors it has already seen with the same contents. PyTorch ops
(``copy_``, ``cumsum(out=)``, indexing assignment) bump a tensor's ``_version``, which is
part of the content key; two kinds of writes do not:

* **numpy writes into CPU tensors** (vLLM keeps host buffers as numpy views of pinned
  tensors and fills them with ``np.cumsum(out=...)``, ``arr[:n] = ...``): for a CPU
  tensor the content key therefore also holds its bytes (the tensor as the kernel
  receives it, usually the used prefix of a larger buffer), compared exactly on a memo
  lookup (:class:`HostBytes`: a copy and a ``memcmp``, about 4 us for 64 KiB, no hash of
  the whole buffer): :func:`content_part`;
* **Triton kernels writing through a raw pointer** (vLLM's ``_copy_page_indices_kernel``
  fills ``paged_kv_indices``, SGLang's ``create_flashinfer_kv_indices_triton`` fills
  ``kv_indices``): once ``triton`` is imported, :func:`install` wraps
  ``triton.runtime.jit.JITFunction.run``, the one path every compiled launch
  ``kernel[grid](...)`` (through ``Autotuner`` / ``Heuristics`` too) goes through, and
  the interpreter's ``GridExecutor.__call__`` (``TRITON_INTERPRET=1``; Triton 3.5 to 3.9). At
  the ``values`` level each integer tensor handed to a Triton kernel gets a fresh write
  mark on its storage (:func:`mark`, keyed on the storage's base address, so a slice
  passed to the kernel and another slice passed to the FMHA entry point meet); a CUDA
  tensor's content key holds the mark of its storage, so the next guarded launch that
  reads that storage misses the memo and is checked again (about 2 to 5 us per Triton
  launch on the dev machine for a kernel of ten arguments; nothing below ``values``).

Limits (what is still not seen):

* a raw CUDA kernel that is not Triton (a custom op, a CUTLASS / cuBLAS kernel) writing
  into a reused metadata buffer without going through a PyTorch op: its writes leave no
  trace on the host, and the next launch with the same tensor object hits the memo;
* a Triton kernel replayed inside a CUDA graph (no Python call at replay); the replay
  check (:mod:`runtime_checks.graph_hooks`) reads the buffers as they are before
  ``replay()``;
* Triton cannot tell a read from a write without compiling the kernel: a kernel that only
  reads a metadata buffer marks it too (cost: one more value check at the next guarded
  launch, never a missed one);
* nothing is marked below the ``values`` level (the value memo is not used there); raising
  the level to ``values`` (:func:`runtime_checks.state.configure`) forgets every mark and
  moves every content key on (:func:`invalidate`), so entries memoized before are not hit
  again.

Importing this module imports neither torch nor Triton; :func:`install` patches only a
Triton that is already imported and otherwise waits for its import
(:class:`runtime_checks.import_hook.PostImportFinder`).
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guardrails.config import Level

from .import_hook import PostImportFinder
from .state import STATE, log

__all__ = [
    "HostBytes",
    "TRITON_LAUNCHERS",
    "MAX_MARKS",
    "content_part",
    "mark",
    "invalidate",
    "install",
    "uninstall",
    "is_hooked",
    "stats",
]

#: (module, class, method) of every Triton launch path that is wrapped
TRITON_LAUNCHERS: tuple[tuple[str, str, str], ...] = (
    ("triton.runtime.jit", "JITFunction", "run"),
    ("triton.runtime.interpreter", "GridExecutor", "__call__"),
)
#: storages remembered before the marks are dropped (and every content key moved on)
MAX_MARKS = 1 << 16
#: put the bytes of a host (CPU) tensor into its content key. False: host tensors are
#: tracked as device tensors are, by Triton marks only (the tests use it to show the
#: Triton hook alone catches a refill on the CPU kits, where every tensor is a CPU tensor)
HASH_HOST_TENSORS = True

_serial = itertools.count(1)
#: storage base address -> serial of the last Triton launch it was handed to
_marks: dict[int, int] = {}
#: the mark of a storage with none (raised by :func:`invalidate`, so no key comes back)
_floor = 0
_lock = threading.RLock()
#: (class, method name, original, ours) per patched launcher
_patched: list[tuple[type, str, Callable[..., Any], Callable[..., Any]]] = []
_finder: PostImportFinder | None = None
_counts = {"triton_launches_marked": 0, "storages_marked": 0}
_index_dtypes: frozenset[Any] = frozenset()
_values = Level.VALUES


class HostBytes:
    """A host tensor's bytes in a content key: hashed on its length and ends only (cheap),
    compared in full (exact: no collision can hide a change)."""

    __slots__ = ("data", "_hash")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._hash = hash((len(data), data[:64], data[-64:]))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return type(other) is HostBytes and self.data == other.data  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"HostBytes({len(self.data)} bytes)"


def _storage(t: Any) -> int:
    """Base address of ``t``'s storage (shared by every view of it)."""
    return t.untyped_storage().data_ptr()


def content_part(t: Any) -> Any:
    """What of ``t``'s contents the content key holds beyond identity, ``_version``,
    address and shape: the bytes of a CPU tensor (:class:`HostBytes`), the write mark of
    its storage otherwise. Never raises: a tensor whose bytes cannot be read gets a fresh
    value (its launches are checked every time)."""
    try:
        if HASH_HOST_TENSORS and t.is_cpu:
            return HostBytes(t.numpy().tobytes())
        if not _marks:
            return _floor
        return _marks.get(_storage(t), _floor)
    except Exception:
        return ("unread", next(_serial))


_SCALARS = (int, float, bool, str)


def _marked_tensor(value: Any, tensor_cls: type) -> Any:
    """The tensor a Triton argument that is no plain tensor stands for (one level of a
    tuple, ``triton.reinterpret``'s ``TensorWrapper``), else ``None``."""
    if value.__class__ is tuple:
        return tuple(v for v in value if isinstance(v, tensor_cls))
    base = getattr(value, "base", None)
    if isinstance(base, tensor_cls) and type(value).__name__ == "TensorWrapper":
        return (base,)
    return None


def mark(args: Sequence[Any], kwargs: Mapping[str, Any] = {}) -> int:
    """Give every integer tensor among ``args`` / ``kwargs`` (one tuple level deep) a new
    write mark on its storage; the number marked."""
    global _floor, _index_dtypes
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    if not _index_dtypes:
        _index_dtypes = frozenset({torch.int32, torch.int64})
    tensor_cls, dtypes, hashed, marks = torch.Tensor, _index_dtypes, HASH_HOST_TENSORS, _marks
    serial = next(_serial)
    marked = 0
    for group in (args, kwargs.values()):
        for value in group:
            if isinstance(value, tensor_cls):
                tensors: Any = (value,)
            elif value is None or value.__class__ in _SCALARS:
                continue
            else:
                tensors = _marked_tensor(value, tensor_cls)
                if not tensors:
                    continue
            for t in tensors:
                if t.dtype in dtypes and not (hashed and t.is_cpu):
                    marks[t.untyped_storage().data_ptr()] = serial
                    marked += 1
    if len(marks) > MAX_MARKS:
        marks.clear()
        _floor = next(_serial)
    if marked:
        _counts["triton_launches_marked"] += 1
        _counts["storages_marked"] += marked
    return marked


def invalidate() -> None:
    """Forget every mark and move every mark-carrying content key on (called when the
    level rises to ``values``: writes made below it were not marked)."""
    global _floor
    _marks.clear()
    _floor = next(_serial)


def _launcher_run(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if STATE.level >= _values and not kwargs.get("warmup"):
            try:
                mark(args, kwargs)
            except Exception as exc:  # the guard never breaks a launch
                log.debug("fmha-guard: could not mark the buffers of a Triton launch (%s: %s)", type(exc).__name__, exc)
        return original(self, *args, **kwargs)

    run.__fmha_guard_refills__ = original  # type: ignore[attr-defined]
    run.__wrapped__ = original  # type: ignore[attr-defined]
    return run


def _patch_loaded() -> None:
    for module_name, class_name, method in TRITON_LAUNCHERS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if not isinstance(cls, type) or any(patched is cls for patched, *_ in _patched):
            continue
        original = cls.__dict__.get(method)
        if original is None or getattr(original, "__fmha_guard_refills__", None) is not None:
            continue
        ours = _launcher_run(original)
        setattr(cls, method, ours)
        _patched.append((cls, method, original, ours))


def _on_triton_module(module: Any) -> None:
    try:
        with _lock:
            _patch_loaded()
    except Exception as exc:  # never break an import
        log.warning("fmha-guard: could not hook %s (%s: %s); Triton refills are not tracked",
                    getattr(module, "__name__", module), type(exc).__name__, exc)


def install() -> bool:
    """Wrap every imported Triton launch path, and those imported later.

    Idempotent. Returns whether a launcher is wrapped now (False: Triton is not imported
    yet; it will be at its import)."""
    global _finder
    with _lock:
        _patch_loaded()
        pending = {name for name, *_ in TRITON_LAUNCHERS if name not in sys.modules}
        if pending and _finder is None:
            _finder = PostImportFinder(pending, _on_triton_module)
            _finder.register()
        return bool(_patched)


def uninstall() -> None:
    """Put every wrapped launch method back (where ours is still the class attribute: a later
    wrapper stays, ours inside it passes straight through at level ``off``), drop the
    import hook and the marks."""
    global _finder
    with _lock:
        if _finder is not None:
            _finder.unregister()
            _finder = None
        while _patched:
            cls, method, original, ours = _patched.pop()
            if cls.__dict__.get(method) is ours:
                setattr(cls, method, original)
        invalidate()


def is_hooked() -> bool:
    """Whether a Triton launch path is wrapped."""
    return bool(_patched)


def stats() -> dict[str, Any]:
    """For the guard's report: whether Triton is hooked, launches and storages marked."""
    return {"triton_hooked": bool(_patched), **_counts, "storages_tracked": len(_marks)}
