"""What an invariant check sees and returns, and the registry of checks.

A check is a function ``fn(ctx: CheckContext) -> Finding | None`` registered with
:func:`register` as the ``SHAPES`` or ``VALUES`` part of one catalog entry
(:class:`~guardrails.catalog_entry.Invariant`); every check lives in its invariant's
module under :mod:`guardrails.invariants`. It returns ``None`` when the invariant holds
or its inputs are absent, and a :class:`Finding` (what is wrong + the offending fields)
otherwise; the runner in :mod:`guardrails.validation` turns findings into
:class:`~guardrails.errors.FmhaInvariantError` with the catalog's cause, fix and source.

``needs`` lists invariant ids whose failure makes this check meaningless
(e.g. per-request value checks need the batch sizes to agree); the runner
skips the check when any of them failed or was skipped. The ids are checked
against the catalog when :mod:`guardrails.invariants` assembles it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

from .catalog_entry import Invariant
from .config import Level
from .forward_mode import Kernel
from .models import AttentionBatch, GraphLayout, PagedKVCache, SlidingWindowPool
from .tensor_facts import read_host_ints

__all__ = ["Finding", "Check", "CheckContext", "CHECKS", "register", "OFFSET_INDPTRS"]

OFFSET_INDPTRS = frozenset({"kv_indptr"})
"""Indptr fields a kernel reads relative to their first entry, so they may start at
any offset >= 0: FlashInfer reads request ``i``'s page ids as
``kv_indices[kv_indptr[i]:kv_indptr[i+1]]`` (vLLM plans the prefill part of a mixed
batch with a slice of the full ``paged_kv_indptr`` and the full ``paged_kv_indices``)."""


class Finding(NamedTuple):
    """One violation found by a check: ``detail`` (what is wrong, one clause)
    and ``fields`` (offending field name -> value seen)."""

    detail: str
    fields: dict[str, Any]


CheckFn = Callable[["CheckContext"], Optional[Finding]]
"""A check: ``fn(ctx) -> Finding | None``."""


@dataclass(frozen=True)
class Check:
    """A registered check: the invariant it verifies, the level it needs, the
    invariants it depends on, and the function."""

    invariant: str
    level: Level
    needs: tuple[str, ...]
    fn: CheckFn


CHECKS: list[Check] = []
"""Every registered check, in the order :mod:`guardrails.invariants` imported their
modules. The runner does not rely on that order: :func:`guardrails.validation.run_order`
sorts by level, then catalog order."""


def register(invariant: Invariant, level: Level, needs: tuple[str, ...] = ()) -> Callable[[CheckFn], CheckFn]:
    """Decorator: register ``fn`` as the ``level`` part of ``invariant``.

    Args:
        invariant: the catalog entry the check verifies (its module's ``INVARIANT``).
        level: ``Level.SHAPES`` or ``Level.VALUES``; one of ``invariant.levels``.
        needs: ids of the invariants that must have passed for this check to mean anything.

    Raises:
        ValueError: ``level`` is not one of ``invariant.levels``.
    """
    if level not in invariant.levels:
        raise ValueError(
            f"{invariant.id} runs at {', '.join(map(str, invariant.levels))}; "
            f"a check registered at {level} would never match its catalog entry"
        )

    def deco(fn: CheckFn) -> CheckFn:
        CHECKS.append(Check(invariant.id, level, tuple(needs), fn))
        return fn

    return deco


@dataclass
class CheckContext:
    """Everything one validation run looks at, plus what earlier checks learned.

    Attributes:
        batch, kv_cache, swa_pool, captured: the validated launch.
        level: the level this run goes up to.
        batch_size: the agreed batch size once ``batch-size`` passed (``None``
            when no field states one).
        failed: ids of invariants that failed in this run.
        skipped: ids of invariants skipped because a dependency failed.
    """

    batch: AttentionBatch
    kv_cache: Optional[PagedKVCache] = None
    swa_pool: Optional[SlidingWindowPool] = None
    captured: Optional[GraphLayout] = None
    level: Level = Level.VALUES
    batch_size: Optional[int] = None
    failed: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    _host: Optional[dict[str, list]] = None
    _q_lens: Optional[list[int]] = None

    @property
    def page_size(self) -> Optional[int]:
        """Tokens per page: the KV cache's when given, else ``batch.page_size``."""
        if self.kv_cache is not None:
            return self.kv_cache.page_size
        return self.batch.page_size

    def agreed_page_size(self) -> Optional[int]:
        """:attr:`page_size`, or ``None`` when the KV cache and
        ``batch.page_size`` disagree (``kv-layout`` reports that; lengths
        derived from page counts would be guesses)."""
        kv, stated = self.kv_cache, self.batch.page_size
        if kv is not None and stated is not None and kv.page_size != stated:
            return None
        return self.page_size

    @property
    def host(self) -> dict[str, list]:
        """Host copies of the batch's index tensors (field name -> nested list),
        read on first use with one packed device-to-host copy. Only VALUES
        checks may touch this."""
        if self._host is None:
            self._host = read_host_ints(self.batch.index_tensors())
        return self._host

    def prefix_lens(self, name: str) -> Optional[list[int]]:
        """Differences of the indptr tensor ``name`` (``cu_seqlens_kv``,
        ``kv_indptr``, ...) when it starts at 0 (``kv_indptr``: at any offset
        >= 0, see :data:`OFFSET_INDPTRS`) and never decreases; ``None`` when
        absent or malformed (``cu-seqlens-monotone`` reports that). VALUES only."""
        offsets = self.host.get(name)
        if not offsets or (offsets[0] < 0 if name in OFFSET_INDPTRS else offsets[0] != 0):
            return None
        lens = [b - a for a, b in zip(offsets, offsets[1:])]
        return None if any(n < 0 for n in lens) else lens

    def token_kv_lens(self) -> Optional[tuple[str, list[int]]]:
        """The per-request KV lengths the launch states in tokens, with the
        name of their source: ``("seq_lens", seq_lens)``, else
        ``("cu_seqlens_kv", its differences)`` when well-formed; ``None``
        otherwise. VALUES only."""
        seq_lens = self.host.get("seq_lens")
        if seq_lens is not None:
            return "seq_lens", seq_lens
        lens = self.prefix_lens("cu_seqlens_kv")
        return ("cu_seqlens_kv", lens) if lens is not None else None

    def csr_kv_lens(self) -> Optional[list[int]]:
        """Per-request KV lengths in tokens from FlashInfer's CSR form:
        ``(kv_indptr[i+1] - kv_indptr[i] - 1) * page_size + kv_last_page_len[i]``,
        0 for a request without pages. ``None`` when a CSR tensor or the page
        size is missing, kv_indptr is malformed, the lengths disagree, or a
        kv_last_page_len of a request with pages is outside 1..page_size
        (``last-page-len`` reports that). VALUES only."""
        counts = self.prefix_lens("kv_indptr")
        last = self.host.get("kv_last_page_len")
        page_size = self.agreed_page_size()
        if counts is None or last is None or page_size is None or len(last) != len(counts):
            return None
        if any(n > 0 and not 1 <= v <= page_size for n, v in zip(counts, last)):
            return None
        return [(n - 1) * page_size + v if n > 0 else 0 for n, v in zip(counts, last)]

    def kv_lens(self) -> Optional[list[int]]:
        """Per-request KV lengths in tokens: ``seq_lens``; else the
        ``cu_seqlens_kv`` differences; else the CSR length
        (:meth:`csr_kv_lens`). When several are given their agreement is
        checked by ``cu-seqlens-monotone`` and ``last-page-len``. ``None`` when
        unknown. VALUES only."""
        stated = self.token_kv_lens()
        return stated[1] if stated is not None else self.csr_kv_lens()

    def kv_len_fields(self, i: int) -> dict[str, int]:
        """The offending-field entries naming request ``i``'s KV length as
        :meth:`kv_lens` took it (e.g. ``{"seq_lens[3]": 17}``, or the CSR
        page count and last-page length it was derived from)."""
        stated = self.token_kv_lens()
        if stated is not None:
            source, lens = stated
            if source == "seq_lens":
                return {f"seq_lens[{i}]": lens[i]}
            return {f"cu_seqlens_kv[{i + 1}] - cu_seqlens_kv[{i}]": lens[i]}
        lens = self.csr_kv_lens() or []
        counts = self.prefix_lens("kv_indptr") or []
        fields = {f"kv_len[{i}]": lens[i], f"kv_indptr[{i + 1}] - kv_indptr[{i}]": counts[i]}
        if counts[i] > 0:
            fields[f"kv_last_page_len[{i}]"] = self.host["kv_last_page_len"][i]
        return fields

    def query_rows_field(self) -> str:
        """The name the launch gives its query row count: ``"q.shape[0]"`` when a
        query tensor is given, else ``"num_query_rows"``."""
        return "q.shape[0]" if self.batch.query is not None else "num_query_rows"

    def q_len_field(self, i: int) -> str:
        """The offending-field name of request ``i``'s query length as :meth:`q_lens`
        took it (``"cu_seqlens_q[4] - cu_seqlens_q[3]"``, or ``"q_len_per_req"``).
        VALUES only."""
        if "cu_seqlens_q" in self.host:
            return f"cu_seqlens_q[{i + 1}] - cu_seqlens_q[{i}]"
        return "q_len_per_req"

    def q_lens(self) -> Optional[list[int]]:
        """Per-request query lengths in tokens: differences of ``cu_seqlens_q``
        when given, else ``q_len_per_req`` (default 1) repeated ``batch_size``
        times on a decode kernel; ``None`` when unknown. VALUES only."""
        if self._q_lens is None:
            offsets = self.host.get("cu_seqlens_q")
            if offsets is not None:
                self._q_lens = [b - a for a, b in zip(offsets, offsets[1:])]
            elif self.batch.kernel is Kernel.DECODE and self.batch_size is not None:
                self._q_lens = [self.batch.decode_q_len()] * self.batch_size
        return self._q_lens
