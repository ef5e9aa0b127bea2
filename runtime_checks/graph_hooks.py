"""CUDA-graph capture and replay hooks (SGLang #21987).

A graph replays the kernels it captured with the scalars it captured: the Python
wrapper of the FMHA entry point does not run again at replay, so the guard cannot
check a replayed launch there. Instead, while ``torch.cuda.CUDAGraph`` captures,
every guarded launch is recorded with the shape-level :class:`~guardrails.GraphLayout`
it bakes in (no tensor data is read during capture); and just before
``CUDAGraph.replay()`` each recorded launch is handed to the replay check given to
:func:`install` (the guard's :func:`runtime_checks.launch_guard.check_replay`: at the
``values`` level, against the contents its metadata buffers were refilled with,
``graph-replay-layout`` and every value invariant, one device-to-host copy per distinct
metadata).

This module holds the records and the patched methods, no policy: what a replay
check does (and at which level) is the check's business.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache

__all__ = ["RECORDS", "capturing", "current_graph", "record", "install", "uninstall", "ReplayCheck"]

ReplayCheck = Callable[[AttentionBatch, "PagedKVCache | None", GraphLayout], None]
"""Called before each ``replay()`` with every launch recorded into the graph; raises to stop the replay."""

#: graph -> distinct launches captured into it: key -> (batch, kv cache, layout baked in)
RECORDS: "weakref.WeakKeyDictionary[Any, dict[tuple, tuple[AttentionBatch, PagedKVCache | None, GraphLayout]]]" = (
    weakref.WeakKeyDictionary()
)
#: the graph being captured (a stack: capture does not nest, but be safe); the launch
#: checker reads its truthiness on every launch, so it is a plain list, not a function call
capturing: list[Any] = []
#: (patched class, method name) -> the original method
_originals: dict[tuple[type, str], Callable[..., Any]] = {}
#: the replay check :func:`install` was given (``None`` until then, and after :func:`uninstall`)
_replay_check: ReplayCheck | None = None


def current_graph() -> Any:
    """The ``torch.cuda.CUDAGraph`` being captured, or None. O(1), reads no CUDA state."""
    return capturing[-1] if capturing else None


def _record_key(batch: AttentionBatch, cache: PagedKVCache | None) -> tuple:
    """Launches of one graph with the same metadata buffers, scalars and KV-cache sizes
    (every layer of a decode step) are one record: checked once per replay."""
    scalars = tuple(
        getattr(batch, f)
        for f in ("forward_mode", "kernel", "batch_size", "num_query_rows", "max_seq_len_q", "max_seq_len_kv", "q_len_per_req", "page_size")
    )
    tensors = tuple(id(t) for t in batch.index_tensors().values())
    query = None if batch.query is None else tuple(batch.query.shape)
    return tensors, scalars, query, None if cache is None else tuple(cache.model_dump().values())


def record(batch: AttentionBatch, cache: PagedKVCache | None) -> None:
    """Remember a launch captured into the current graph (shape-level snapshot only)."""
    graph = current_graph()
    if graph is None:
        return
    records = RECORDS.setdefault(graph, {})
    key = _record_key(batch, cache)
    if key not in records:
        records[key] = (batch, cache, GraphLayout.capture(batch, read_values=False))


def _original(obj: Any, name: str) -> Callable[..., Any]:
    for cls in type(obj).__mro__:
        original = _originals.get((cls, name))
        if original is not None:
            return original
    raise AttributeError(f"fmha-guard: no original {name} for {type(obj).__name__}")


def _capture_begin(self, *args: Any, **kwargs: Any) -> Any:
    RECORDS.pop(self, None)  # a re-capture replaces what the graph held
    capturing.append(self)
    try:
        return _original(self, "capture_begin")(self, *args, **kwargs)
    except BaseException:
        capturing.remove(self)
        raise


def _capture_end(self, *args: Any, **kwargs: Any) -> Any:
    try:
        return _original(self, "capture_end")(self, *args, **kwargs)
    finally:
        if self in capturing:
            capturing.remove(self)


def _replay(self, *args: Any, **kwargs: Any) -> Any:
    check = _replay_check
    if check is not None:
        for batch, cache, layout in RECORDS.get(self, {}).values():
            check(batch, cache, layout)
    return _original(self, "replay")(self, *args, **kwargs)


_HOOKS = {"capture_begin": _capture_begin, "capture_end": _capture_end, "replay": _replay}


def _torch_graph_class() -> Any:
    torch = sys.modules.get("torch")
    return getattr(getattr(torch, "cuda", None), "CUDAGraph", None)


def install(graph_cls: Any = None, *, replay_check: ReplayCheck) -> bool:
    """Patch ``torch.cuda.CUDAGraph`` (only if torch is already imported; ``graph_cls``
    patches another class with the same protocol, for tests). Idempotent.

    Args:
        replay_check: what every ``replay()`` runs first, on each recorded launch (the
            latest one given is used).

    Returns:
        Whether a class was patched (False: torch is not imported).
    """
    global _replay_check
    graph_cls = graph_cls or _torch_graph_class()
    if graph_cls is None:
        return False
    _replay_check = replay_check
    for name, hook in _HOOKS.items():
        if (graph_cls, name) not in _originals:
            _originals[(graph_cls, name)] = graph_cls.__dict__.get(name) or getattr(graph_cls, name)
            setattr(graph_cls, name, hook)
    return True


def uninstall(graph_cls: Any = None) -> None:
    """Restore ``torch.cuda.CUDAGraph``'s (or ``graph_cls``'s) methods; forget recorded
    launches (and the replay check once no class is patched)."""
    global _replay_check
    graph_cls = graph_cls or _torch_graph_class()
    for (cls, name), original in list(_originals.items()):
        if cls is graph_cls:
            setattr(cls, name, original)
            del _originals[(cls, name)]
    RECORDS.clear()
    capturing.clear()
    if not _originals:
        _replay_check = None
