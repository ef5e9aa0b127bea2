"""Memoized launch checks for an engine that describes its own launches.

:class:`LaunchChecker` is :func:`runtime_checks.check_launch` with the launch guard's
memo (:mod:`runtime_checks.launch_memo`): a backend that already knows its metadata
(the reference backend, an SGLang backend) passes a shape key, the index tensors whose
contents the value checks read, and a ``describe`` callable that builds the
:class:`~guardrails.AttentionBatch` only when a check must run. At ``shapes`` a layout
seen before costs one key comparison; at ``values`` one step's metadata is read to the
host once however many layers share it; at ``off`` nothing is built.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from guardrails.invariants import Level
from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache, SlidingWindowPool
from guardrails.tensor_facts import stream_is_capturing
from guardrails.validation import validate

from .launch_memo import LaunchMemo, version_key

__all__ = ["LaunchChecker"]

Described = tuple[AttentionBatch, Optional[PagedKVCache], Optional[SlidingWindowPool]]


class LaunchChecker:
    """Check launches at a level, skipping what the memo already passed.

    Attributes:
        memo: the :class:`~runtime_checks.launch_memo.LaunchMemo`.
        shape_checks, value_checks: catalog runs at each level (memo misses).
        memo_hits: launches that needed no catalog run at all.
    """

    def __init__(self) -> None:
        self.memo = LaunchMemo()
        self.shape_checks = self.value_checks = self.memo_hits = 0

    def check(
        self,
        describe: Callable[[], Described],
        *,
        level: Level,
        shape_key: Any = None,
        index_tensors: Sequence[Any] = (),
        captured: Optional[GraphLayout] = None,
        value_scope: Any = None,
    ) -> None:
        """Validate one launch.

        Args:
            describe: builds ``(batch, kv_cache, swa_pool)`` for :func:`guardrails.validate`.
            level: OFF returns at once; SHAPES; VALUES (value checks are skipped while a
                CUDA stream captures: reading values would break the capture).
            shape_key: everything the shape checks depend on (shapes, dtypes, devices,
                strides, scalars, pool sizes; with ``captured``, its identity and the
                captured buffers' addresses). ``None``: no memo, always validate.
            index_tensors: the tensors whose contents the value checks read (their
                :func:`~runtime_checks.launch_memo.version_key` joins the content key).
            captured: the layout a CUDA graph captured (``graph-replay-layout``).
            value_scope: everything besides the index tensors' contents that the value
                checks depend on (scalars, pool sizes, row counts, the captured layout's
                values); default ``shape_key``. Launches of several layers that differ
                only in buffers the value checks do not read (each layer's query) then
                share one value check.

        Raises:
            FmhaInvariantError: the first violated invariant.
        """
        if level is Level.OFF:
            return
        if shape_key is None:
            validate(*describe(), level=level, captured=captured)
            return
        described: Optional[Described] = None
        if not self.memo.shape_ok(shape_key):
            described = describe()
            validate(*described, level=Level.SHAPES, captured=captured)
            self.shape_checks += 1
            self.memo.add_shape(shape_key)
        elif level < Level.VALUES:
            self.memo_hits += 1
        if level < Level.VALUES or stream_is_capturing():
            return
        scope = shape_key if value_scope is None else value_scope
        value_key = (scope, tuple([version_key(t) for t in index_tensors]))
        if self.memo.value_ok(value_key):
            self.memo_hits += described is None
            return
        validate(*(described or describe()), level=Level.VALUES, captured=captured)
        self.value_checks += 1
        self.memo.add_value(value_key, index_tensors)
