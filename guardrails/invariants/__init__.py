"""The invariant catalog: what attention metadata must satisfy before an FMHA launch.

One module per invariant, named after its id (``page-id-range`` ->
:mod:`guardrails.invariants.page_id_range`, see :attr:`Invariant.module`). Each module
defines its catalog entry ``INVARIANT`` (:class:`~guardrails.catalog_entry.Invariant`:
a stable kebab-case id used in :attr:`~guardrails.errors.FmhaInvariantError.invariant`,
in CI output and by ``fmha-guard explain <id>``; a one-paragraph statement; the
:class:`Level` at which it runs; where it comes from; the usual cause and the fix) and
the check function(s) that verify it, registered with
:func:`guardrails.check_context.register`. This package assembles :data:`CATALOG`.

Levels: ``SHAPES`` checks read only shapes, dtypes, devices, strides, data
pointers and Python ints, so they cost microseconds and are safe inside CUDA
graph capture. ``VALUES`` checks copy the index tensors to the host once (one
device sync) and read their contents. An invariant whose ``level`` is
``SHAPES`` but has ``values_part`` runs its shape part at ``SHAPES`` and the
rest at ``VALUES``.

Why all of this matters: measured on an H200, of five kinds of bad metadata
sent to the xqa decode kernel (2 extra rows in seq_lens/block_tables; a page
id 3 past the pool; a seq_len longer than its page-table row; variable-length
draft-extend queries on the decode kernel; a page id 100000 past the pool)
only the last crashed. The other four returned wrong attention silently.
"""

from __future__ import annotations

from typing import Iterator, Optional

from ..catalog_entry import Invariant
from ..check_context import CHECKS
from ..config import Level
from . import (
    batch_size,
    cu_seqlens_monotone,
    forward_mode_kernel,
    graph_replay_layout,
    kv_layout,
    last_page_len,
    max_seq_len,
    metadata_dtype_device,
    page_id_range,
    page_table_capacity,
    query_rows,
    scheduler_metadata,
    seq_len_covers_query,
    swa_page_id_range,
    uniform_q_len,
)

__all__ = ["Level", "Invariant", "CATALOG", "get", "ids"]

CATALOG: dict[str, Invariant] = {
    module.INVARIANT.id: module.INVARIANT
    for module in (
        # SHAPES
        batch_size,
        forward_mode_kernel,
        query_rows,
        metadata_dtype_device,
        kv_layout,
        scheduler_metadata,
        # VALUES
        cu_seqlens_monotone,
        last_page_len,
        uniform_q_len,
        max_seq_len,
        seq_len_covers_query,
        page_table_capacity,
        page_id_range,
        swa_page_id_range,
        # a SHAPES part and a VALUES part, each run last at its level
        graph_replay_layout,
    )
}
"""Every invariant, keyed by id, in the order they are checked (SHAPES parts
first, then VALUES parts, each in this order; see
:func:`guardrails.validation.run_order`)."""


def _check_registrations() -> None:
    """Every registered check names catalog ids only (run once, at import).

    Raises:
        KeyError: a check registered for, or needing, an id not in :data:`CATALOG`.
    """
    for check in CHECKS:
        for inv_id in (check.invariant, *check.needs):
            if inv_id not in CATALOG:
                raise KeyError(f"check {check.fn.__qualname__} names unknown invariant {inv_id!r}")


_check_registrations()


def get(invariant_id: str) -> Invariant:
    """Look up an invariant by id.

    Raises:
        KeyError: unknown id; the message lists the known ids.
    """
    try:
        return CATALOG[invariant_id]
    except KeyError:
        raise KeyError(
            f"unknown invariant {invariant_id!r}; known: {', '.join(CATALOG)}"
        ) from None


def ids(level: Optional[Level] = None) -> Iterator[str]:
    """Invariant ids in catalog order; with ``level``, only those that run (at
    least partly) at that level or below."""
    for inv in CATALOG.values():
        if level is None or inv.level <= level:
            yield inv.id
