"""Validate one attention launch against the invariant catalog.

:func:`validate` raises the first violation; :func:`find_violations` returns
all of them. Both take the same arguments.

Run order is catalog order (:data:`guardrails.invariants.CATALOG`), shape
parts first (:func:`run_order`): every ``SHAPES`` check (batch-size, forward-mode-kernel,
query-rows, metadata-dtype-device, kv-layout, scheduler-metadata,
graph-replay-layout), then, at
``VALUES``, the value parts (cu-seqlens-monotone, last-page-len, uniform-q-len,
max-seq-len, seq-len-covers-query, page-table-capacity, page-id-range,
swa-page-id-range, graph-replay-layout's values part). A check whose
inputs another check already found malformed is skipped, so one bug is
reported once, by the invariant that names it. Each invariant yields at most
one error per run.

FlashInfer's CSR paged-KV form (``kv_indptr``, ``kv_indices``,
``kv_last_page_len``) is checked by the same invariants as the block table:
``batch-size`` and ``metadata-dtype-device`` (shapes, dtypes), ``cu-seqlens-monotone``
(kv_indptr is a prefix sum ending within kv_indices, and its page counts match
seq_lens / cu_seqlens_kv when those are given), ``last-page-len`` (the token tail
of each request, and its agreement with seq_lens / cu_seqlens_kv),
``page-id-range`` (the used kv_indices), and ``max-seq-len`` /
``seq-len-covers-query`` (with the CSR length when no token lengths are given).

``VALUES`` checks copy the batch's index tensors to the host once (a single
device sync). They are skipped, leaving the ``SHAPES`` result, when the
tensors have no data (``meta`` device) or while the current CUDA stream is
capturing a graph, where a host copy would abort the capture.
"""

from __future__ import annotations

from typing import Iterator, Optional, Union

from .check_context import CHECKS, Check, CheckContext, Finding
from .config import Level, parse_level
from .errors import FmhaInvariantError
from .forward_mode import ForwardMode, Kernel
from .invariants import CATALOG  # importing the catalog registers every check
from .models import AttentionBatch, GraphLayout, PagedKVCache, SlidingWindowPool
from .tensor_facts import has_readable_data, stream_is_capturing

__all__ = ["validate", "find_violations", "run_order"]


def _error(invariant: str, finding: Finding) -> FmhaInvariantError:
    inv = CATALOG[invariant]
    return FmhaInvariantError(
        invariant, finding.detail, finding.fields, cause=inv.cause, fix=inv.fix, source=inv.source
    )


_POSITION = {inv_id: i for i, inv_id in enumerate(CATALOG)}


def run_order() -> list[Check]:
    """Registered checks in the order they run: by level (every ``SHAPES`` part before
    any ``VALUES`` part), then catalog order. The first violation :func:`validate`
    reports depends on it; ``tests/test_invariants_catalog.py`` pins it."""
    return sorted(CHECKS, key=lambda c: (c.level, _POSITION[c.invariant]))


def _values_readable(ctx: CheckContext) -> bool:
    tensors = list(ctx.batch.index_tensors().values())
    if ctx.swa_pool is not None and ctx.swa_pool.full_to_swa is not None:
        tensors.append(ctx.swa_pool.full_to_swa)
    return all(has_readable_data(t) for t in tensors) and not stream_is_capturing()


def _iter_violations(
    batch: AttentionBatch,
    kv_cache: Optional[PagedKVCache],
    swa_pool: Optional[SlidingWindowPool],
    level: Union[Level, str, int],
    captured: Optional[GraphLayout],
) -> Iterator[FmhaInvariantError]:
    if not isinstance(batch, AttentionBatch):
        raise TypeError(f"batch must be an AttentionBatch, got {type(batch).__name__}")
    if type(batch.forward_mode) is not ForwardMode or not (
        batch.kernel is None or type(batch.kernel) is Kernel
    ):  # built with model_copy(update=...), which skips validation
        batch = batch.replace()
    level = parse_level(level, setting="level")
    if level is Level.OFF:
        return
    ctx = CheckContext(batch=batch, kv_cache=kv_cache, swa_pool=swa_pool, captured=captured, level=level)
    values_ok: Optional[bool] = None
    for check in run_order():
        if check.level > level or check.invariant in ctx.failed:
            continue
        if any(dep in ctx.failed or dep in ctx.skipped for dep in check.needs):
            ctx.skipped.add(check.invariant)
            continue
        if check.level is Level.VALUES:
            if values_ok is None:
                values_ok = _values_readable(ctx)
            if not values_ok:
                continue
        try:
            finding = check.fn(ctx)
        except Exception as exc:  # malformed input a check did not foresee
            finding = Finding(
                f"could not be evaluated; the inputs are malformed ({type(exc).__name__}: {exc})",
                {"check": check.fn.__name__},
            )
        if finding is not None:
            ctx.failed.add(check.invariant)
            yield _error(check.invariant, finding)


def validate(
    batch: AttentionBatch,
    kv_cache: Optional[PagedKVCache] = None,
    swa_pool: Optional[SlidingWindowPool] = None,
    *,
    level: Union[Level, str, int] = Level.VALUES,
    captured: Optional[GraphLayout] = None,
) -> None:
    """Check one attention launch; raise on the first violated invariant.

    Args:
        batch: the launch metadata (:class:`~guardrails.models.AttentionBatch`;
            index tensors int32 on the attention device, lengths in tokens).
        kv_cache: sizes of the paged KV cache the launch reads
            (:meth:`PagedKVCache.from_tensor` on the per-layer buffer). Enables
            ``kv-layout`` and ``page-id-range``.
        swa_pool: the sliding-window KV pool of a hybrid-SWA model. Enables
            ``swa-page-id-range`` (SGLang #26966).
        level: ``Level.SHAPES`` (no tensor contents read, capture-safe) or
            ``Level.VALUES`` (default; one host copy of the index tensors);
            ``Level.OFF`` or ``"off"`` returns at once. Strings and ints parse
            via :func:`guardrails.config.parse_level`.
        captured: the :class:`GraphLayout` taken at CUDA-graph capture when
            ``batch`` is a replay; enables ``graph-replay-layout`` (SGLang #21987).

    Raises:
        FmhaInvariantError: the first violated invariant (see the module
            docstring for the order); ``.invariant`` is its catalog id,
            ``.fields`` the offending values.
        TypeError: ``batch`` is not an AttentionBatch.
        GuardConfigError: (a ``ValueError``) ``level`` does not parse.
    """
    for error in _iter_violations(batch, kv_cache, swa_pool, level, captured):
        raise error


def find_violations(
    batch: AttentionBatch,
    kv_cache: Optional[PagedKVCache] = None,
    swa_pool: Optional[SlidingWindowPool] = None,
    *,
    level: Union[Level, str, int] = Level.VALUES,
    captured: Optional[GraphLayout] = None,
) -> list[FmhaInvariantError]:
    """Every violated invariant of one launch (same arguments as
    :func:`validate`), at most one error per invariant, in run order; empty
    when the launch is clean. Checks whose inputs an earlier violation made
    meaningless are skipped rather than reported twice.

    Raises:
        TypeError: ``batch`` is not an AttentionBatch.
        GuardConfigError: (a ``ValueError``) ``level`` does not parse.
    """
    return list(_iter_violations(batch, kv_cache, swa_pool, level, captured))
