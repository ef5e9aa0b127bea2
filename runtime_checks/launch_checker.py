"""Memoized launch checks: the one checker behind every runtime check of an FMHA launch.

:class:`LaunchChecker` validates launches as :func:`guardrails.validate` does and skips
what its memo (:class:`~runtime_checks.launch_memo.LaunchMemo`) already passed. Used by

* every guarded FlashInfer entry point (:func:`runtime_checks.launch_guard.make_guard`):
  one checker per entry point, keys from the entry point's kernel spec
  (:mod:`runtime_checks.kernel_specs`), counters in :data:`runtime_checks.state.STATE`,
  launches captured into a ``torch.cuda.CUDAGraph`` recorded by
  :mod:`runtime_checks.graph_hooks`;
* the CUDA-graph replay hook: :meth:`LaunchChecker.check_replay`, each captured launch
  against its refilled buffers before ``replay()`` (SGLang #21987);
* an engine backend that describes its own launches (the reference backend,
  :mod:`runtime_checks.reference_backend`): a shape key, the index tensors whose
  contents the value checks read, and a ``describe`` callable that builds the
  :class:`~guardrails.AttentionBatch` only when a check must run.

One launch (:meth:`LaunchChecker.check`) at level ``shapes`` or ``values``:

1. the shape key (shapes, dtypes, devices, strides, scalars: all the shape checks
   read) is looked up; an unseen one pays for the typed models and the catalog's shape
   checks. A layout seen before costs one set lookup.
2. while a graph recorder is capturing, the launch is recorded with the shape-level
   layout it bakes in and nothing else is read (at ``values`` the skip is counted).
3. at ``values``, the content key (the value scope and the identity, ``_version``,
   data pointer and shape of each index tensor) is looked up; an unseen one is
   validated in full with one packed device-to-host copy, unless a CUDA stream is
   capturing (skipped and counted: reading values would break the capture). One
   step's metadata is read once however many layers share it.

In-place refills: PyTorch ops (``copy_``, ``cumsum(out=)``) bump ``_version``; a numpy
write into a host tensor and a Triton kernel filling a device buffer (``cu_seqlens_q``,
``kv_indices``) do not, and are seen through :mod:`runtime_checks.refills` (host bytes
in the key; every storage a Triton launch receives marked). Limit: a raw CUDA
kernel that is not Triton writing into a reused buffer leaves the key unchanged, and the
next launch with the same tensor object hits the memo.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence

from guardrails.config import Level
from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache, SlidingWindowPool
from guardrails.tensor_facts import stream_is_capturing
from guardrails.validation import find_violations, validate

from .launch_memo import LaunchMemo, version_key
from .state import CheckCounters

__all__ = ["LaunchChecker", "GraphRecorder", "Described"]

_SHAPES, _VALUES = Level.SHAPES, Level.VALUES  # read on every launch: no attribute lookups

Described = tuple[Optional[AttentionBatch], Optional[PagedKVCache]] | tuple[
    Optional[AttentionBatch], Optional[PagedKVCache], Optional[SlidingWindowPool]
]
"""What ``describe`` returns: the :func:`guardrails.validate` arguments ``(batch, kv_cache[,
swa_pool])``; ``batch`` ``None``: nothing to check (a wrapper ``run`` whose ``plan`` was not seen)."""


class GraphRecorder(Protocol):
    """Where launches captured into a CUDA graph are recorded (:mod:`runtime_checks.graph_hooks`)."""

    #: truthy while a graph is being captured (read on every launch: a plain attribute)
    capturing: Any

    def record(self, batch: AttentionBatch, cache: Optional[PagedKVCache]) -> None: ...


class LaunchChecker:
    """Check launches, skipping what the memo already passed.

    Args:
        counters: where to count (default: this checker's own
            :class:`~runtime_checks.state.CheckCounters`; the FlashInfer guards share
            :data:`runtime_checks.state.STATE`).
        graphs: a :class:`GraphRecorder`; while it captures, launches are recorded
            there instead of value-checked. ``None``: no recording.

    Attributes:
        memo: the :class:`~runtime_checks.launch_memo.LaunchMemo`.
        counters: catalog runs (``shape_checks``, ``value_checks``), memo hits,
            capture skips.
    """

    def __init__(self, counters: Optional[CheckCounters] = None, *, graphs: Optional[GraphRecorder] = None) -> None:
        self.memo = LaunchMemo()
        self.counters = CheckCounters() if counters is None else counters
        self.graphs = graphs

    def check(
        self,
        describe: Callable[[], Described],
        level: Level,
        shape_key: Any = None,
        index_tensors: Sequence[Any] = (),
        *,
        captured: Optional[GraphLayout] = None,
        value_scope: Any = None,
    ) -> Optional[Described]:
        """Validate one launch.

        Args:
            describe: builds ``(batch, kv_cache[, swa_pool])`` for :func:`guardrails.validate`.
            level: OFF returns at once; SHAPES; VALUES.
            shape_key: everything the shape checks depend on (shapes, dtypes, devices,
                strides, scalars, pool sizes; with ``captured``, its identity and the
                captured buffers' addresses). ``None``: no memo, validate every time.
            index_tensors: the tensors whose contents the value checks read (their
                :func:`~runtime_checks.launch_memo.version_key` joins the content key;
                the memo holds them). Read at VALUES only.
            captured: the layout a CUDA graph captured (``graph-replay-layout``).
            value_scope: everything besides the index tensors' contents that the value
                checks depend on (scalars, pool sizes, row counts, the captured layout's
                values); default ``shape_key``. Launches of several layers that differ
                only in buffers the value checks do not read (each layer's query) then
                share one value check.

        Returns:
            What ``describe`` returned if it was called, else ``None``.

        Raises:
            FmhaInvariantError: the first violated invariant.
        """
        if not level:
            return None
        counters = self.counters
        if shape_key is None:
            described = describe()
            if _validate(described, level, captured):
                if level >= _VALUES:
                    counters.value_checks += 1
                else:
                    counters.shape_checks += 1
            return described
        memo = self.memo
        described = None
        if shape_key in memo.shapes:
            counters.shape_memo_hits += 1
        else:
            described = describe()
            counters.shape_checks += _validate(described, _SHAPES, captured)
            memo.add_shape(shape_key)
        graphs = self.graphs
        if graphs is not None and graphs.capturing:
            if level >= _VALUES:
                counters.capture_skips += 1
            if described is None:
                described = describe()
            if described[0] is not None:
                graphs.record(described[0], described[1])
            return described
        if level < _VALUES:
            return described
        value_key = (shape_key if value_scope is None else value_scope, tuple([version_key(t) for t in index_tensors]))
        if memo.value_ok(value_key):
            counters.value_memo_hits += 1
            return described
        if stream_is_capturing():
            counters.capture_skips += 1
            return described
        if described is None:
            described = describe()
        counters.value_checks += _validate(described, _VALUES, captured)
        memo.add_value(value_key, index_tensors)
        return described

    def check_replay(self, batch: AttentionBatch, kv_cache: Optional[PagedKVCache], layout: GraphLayout) -> None:
        """A launch captured into a CUDA graph, against what its metadata buffers hold now
        (call it before ``replay()``): ``graph-replay-layout`` and every value invariant,
        one device-to-host copy per distinct refilled metadata.

        Args:
            batch, kv_cache: the launch as recorded at capture (its index tensors are the
                graph's buffers, read as they are now).
            layout: the :class:`~guardrails.GraphLayout` baked in at capture.

        Raises:
            FmhaInvariantError: a violated invariant; ``graph-replay-layout`` first when
                several are (it is the cause: SGLang #21987).
        """
        tensors = tuple(batch.index_tensors().values())
        key = (id(layout), tuple([version_key(t) for t in tensors]))
        if self.memo.value_ok(key):
            self.counters.value_memo_hits += 1
            return
        errors = find_violations(batch, kv_cache, level=Level.VALUES, captured=layout)
        if errors:
            errors.sort(key=lambda e: e.invariant != "graph-replay-layout")
            raise errors[0]
        self.counters.value_checks += 1
        self.memo.add_value(key, (*tensors, layout))


def _validate(described: Described, level: Level, captured: Optional[GraphLayout]) -> bool:
    """Run the catalog on ``described`` at ``level``; False when there was nothing to check."""
    if described[0] is None:
        return False
    validate(*described, level=level, captured=captured)
    return True
