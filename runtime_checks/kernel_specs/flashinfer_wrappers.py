"""FlashInfer's paged-KV wrapper classes: ``Batch{Prefill,Decode}WithPagedKVCacheWrapper.plan/run``.

The wrappers take the metadata at ``plan`` in CSR page form (``kv_indptr`` /
``kv_indices`` / ``kv_last_page_len``) and the query and KV cache at ``run``. The
plan spec checks the metadata and remembers it per wrapper object
(:data:`WRAPPER_PLANS`); the run spec checks the query and the cache against the
plan of the same object. Argument names follow FlashInfer 0.7.x (0.6.x has the same
names for these arguments).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch

from .base import EntryPoint, LaunchSpec, paged_cache

__all__ = ["ENTRY_POINTS", "WRAPPER_PLANS", "WrapperPlanSpec", "PrefillPlanSpec", "DecodePlanSpec", "WrapperRunSpec"]

_PLAN_SERIAL = itertools.count(1)
"""Numbers each remembered wrapper plan: keys name a plan by serial, never by ``id()``."""

WRAPPER_PLANS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()
"""Wrapper object -> the metadata its last ``plan`` was called with (read again at ``run``)."""


class WrapperPlanSpec(LaunchSpec):
    """``Batch{Prefill,Decode}WithPagedKVCacheWrapper.plan``: FlashInfer's CSR page format.

    qo_indptr ``[batch_size + 1]`` int32 (prefill only); kv_indptr ``[batch_size + 1]``
    int32 page-granular offsets into kv_indices (page ids); kv_last_page_len
    ``[batch_size]`` int32 tokens in each request's last page; page_size (tokens).
    The planned metadata is remembered per wrapper object and checked again, with the
    query and the KV cache, at ``run``.

    Args:
        fn: the installed ``plan``.
        plans: where plans are remembered (default :data:`WRAPPER_PLANS`).
    """

    #: argument names in the real signature, per wrapper
    QO_INDPTR: str | None = None
    KV_INDPTR = "indptr"
    KV_INDICES = "indices"
    LAST_PAGE_LEN = "last_page_len"
    REMEMBERS = True

    def __init__(self, fn, plans: "weakref.WeakKeyDictionary[Any, dict[str, Any]] | None" = None) -> None:
        names = [n for n in (self.QO_INDPTR, self.KV_INDPTR, self.KV_INDICES, self.LAST_PAGE_LEN) if n]
        self.TENSORS = tuple(names)
        self.INDEX_TENSORS = tuple(names)
        self.SCALARS = ("page_size", "num_qo_heads", "num_kv_heads")
        self.plans = WRAPPER_PLANS if plans is None else plans
        super().__init__(fn)

    def arg_names(self) -> tuple[str, ...]:
        return ("self", *super().arg_names())

    def describe(self, ns):
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND if self.QO_INDPTR else ForwardMode.DECODE,
            kernel=Kernel.PREFILL if self.QO_INDPTR else Kernel.DECODE,
            cu_seqlens_q=ns[self.QO_INDPTR] if self.QO_INDPTR else None,
            kv_indptr=ns[self.KV_INDPTR],
            kv_indices=ns[self.KV_INDICES],
            kv_last_page_len=ns[self.LAST_PAGE_LEN],
            page_size=ns["page_size"],
            q_len_per_req=None if self.QO_INDPTR else 1,
        )
        return batch, None

    def remember(self, ns: Mapping[str, Any], batch: AttentionBatch | None) -> None:
        self.plans[ns["self"]] = {"batch": batch, "plan_ns": dict(ns), "serial": next(_PLAN_SERIAL)}


class PrefillPlanSpec(WrapperPlanSpec):
    __doc__ = WrapperPlanSpec.__doc__
    QO_INDPTR = "qo_indptr"
    KV_INDPTR = "paged_kv_indptr"
    KV_INDICES = "paged_kv_indices"
    LAST_PAGE_LEN = "paged_kv_last_page_len"


class DecodePlanSpec(WrapperPlanSpec):
    __doc__ = WrapperPlanSpec.__doc__


class WrapperRunSpec(LaunchSpec):
    """``Batch{Prefill,Decode}WithPagedKVCacheWrapper.run`` (and ``run_return_lse``).

    q ``[num_query_rows, num_qo_heads, head_dim]``; paged_kv_cache as the trtllm
    kernels, in the wrapper's ``kv_layout``. Checked against the metadata the same
    wrapper object was planned with (nothing to check if its plan was not seen).

    Args:
        fn: the installed ``run``.
        plans: where the plans were remembered (default :data:`WRAPPER_PLANS`).
    """

    TENSORS = ("q", "paged_kv_cache")
    SCALARS = ("q_len_per_req",)

    def __init__(self, fn, plans: "weakref.WeakKeyDictionary[Any, dict[str, Any]] | None" = None) -> None:
        self.plans = WRAPPER_PLANS if plans is None else plans
        super().__init__(fn)

    def arg_names(self) -> tuple[str, ...]:
        return ("self", *super().arg_names())

    def planned(self, ns: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            return self.plans.get(ns["self"])
        except TypeError:  # not weak-referenceable
            return None

    def shape_key(self, ns):
        plan = self.planned(ns)
        base = super().shape_key(ns)
        return base if plan is None else (base, plan["serial"])

    def value_refs(self, ns):
        plan = self.planned(ns)
        return () if plan is None else tuple(plan["batch"].index_tensors().values())

    def describe(self, ns):
        plan = self.planned(ns)
        layout = getattr(ns["self"], "_kv_layout", "NHD")
        cache = paged_cache(ns["paged_kv_cache"], layout)
        if plan is None:
            return None, cache
        q_len = ns.get("q_len_per_req")
        batch = plan["batch"].replace(query=ns["q"], **({"q_len_per_req": q_len} if q_len else {}))
        return batch, cache


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper.plan", PrefillPlanSpec),
    EntryPoint(
        "flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper.run", WrapperRunSpec, aliases=("run_return_lse",)
    ),
    EntryPoint("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.plan", DecodePlanSpec),
    EntryPoint(
        "flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.run", WrapperRunSpec, aliases=("run_return_lse",)
    ),
)
"""The wrapper entry points (``plan`` before ``run`` of each class), in the order the guard patches them."""
