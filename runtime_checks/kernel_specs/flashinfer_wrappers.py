"""FlashInfer's wrapper classes: ``plan`` once per step, ``run`` once per layer.

``BatchPrefillWithPagedKVCacheWrapper``, ``BatchDecodeWithPagedKVCacheWrapper`` (paged KV
in FlashInfer's CSR form: ``kv_indptr`` / ``kv_indices`` / ``kv_last_page_len``) and
``BatchPrefillWithRaggedKVCacheWrapper`` (ragged K/V rows, token offsets). ``plan``
(and its plain alias ``begin_forward``) takes the metadata; ``run`` (``run_return_lse``,
and the deprecated ``forward`` / ``forward_return_lse``, which call it) the query and the
KV cache, and launches the kernel over what the wrapper holds then:

* its own buffers, as FlashInfer 0.7.2 names them: ``_qo_indptr_buf``,
  ``_paged_kv_indptr_buf``, ``_paged_kv_indices_buf``, ``_paged_kv_last_page_len_buf``
  (ragged: ``_kv_indptr_buf``), and ``_causal`` (which ``forward(causal=...)`` sets).
  ``plan`` copies its arguments into them (``copy_`` into user buffers under
  ``use_cuda_graph``, else ``.to(device)``);
* a plan may be bypassed: ``flashinfer.decode.fast_decode_plan`` and SGLang's
  ``fast_prefill_plan`` write those buffers (or rebind them) and call the compiled plan
  directly.

So ``plan`` is checked on its arguments (host or device tensors: FlashInfer stages them
itself, no sync for host ones) and remembered per wrapper object with a fingerprint of
the wrapper's planned state right after it returned (the buffers' identity and
``_version``, the ``_plan_info`` object). ``run`` checks the query and the KV cache with

* the remembered plan's arguments while that fingerprint still holds (values read from
  host tensors need no device sync);
* the wrapper's buffers otherwise (the plan was bypassed, or never seen), and always on
  a ``use_cuda_graph`` wrapper: those buffers are what a captured graph reads at each
  replay, so they are what the graph-replay check must see.

Argument names follow FlashInfer 0.7.x, read from the installed signatures; the KV cache
may be a ``(k, v)`` pair of 3-D (page size 1: SGLang's token pool) or 4-D tensors, or one
4-D ``[num_pages, 2, num_kv_heads, head_dim]`` (page size 1) or 5-D tensor, in the
wrapper's ``kv_layout`` (FlashInfer's ``_unpack_paged_kv_cache``).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch, PagedKVCache

from ..launch_memo import tensor_key
from .base import EntryPoint, LaunchSpec

__all__ = [
    "ENTRY_POINTS",
    "WRAPPER_PLANS",
    "WrapperState",
    "WrapperPlanSpec",
    "PrefillPlanSpec",
    "DecodePlanSpec",
    "FastDecodePlanSpec",
    "RaggedPlanSpec",
    "WrapperRunSpec",
    "PrefillRunSpec",
    "DecodeRunSpec",
    "RaggedRunSpec",
]

_PLAN_SERIAL = itertools.count(1)
"""Numbers each remembered wrapper plan: keys name a plan by serial, never by ``id()``."""


@dataclass
class Plan:
    """A checked ``plan`` of one wrapper object: the batch its arguments describe, and
    the fingerprint of the wrapper's state right after it returned (holding the objects
    whose ``id()`` it names)."""

    batch: AttentionBatch
    serial: int
    state: tuple = ()
    held: tuple = ()


WRAPPER_PLANS: "weakref.WeakKeyDictionary[Any, Plan]" = weakref.WeakKeyDictionary()
"""Wrapper object -> its last checked :class:`Plan`."""


class WrapperState:
    """How to read one wrapper class's planned state (FlashInfer 0.7.2 attribute names).

    ``buffers``: batch field -> the wrapper attribute holding that index tensor.
    """

    def __init__(self, buffers: Mapping[str, str]) -> None:
        self.buffers = dict(buffers)
        self._attrs = tuple(self.buffers.values())

    def tensors(self, wrapper: Any) -> dict[str, Any]:
        """Batch field -> the wrapper's buffer (absent ones left out)."""
        out = {}
        for field, attr in self.buffers.items():
            t = getattr(wrapper, attr, None)
            if t is not None:
                out[field] = t
        return out

    def fingerprint(self, wrapper: Any) -> tuple[tuple, tuple]:
        """``(key, held)``: identity and in-place version of each buffer and the
        identity of ``_plan_info`` (a plan always sets a new one); ``held`` keeps the
        named objects alive so their ids are not reused."""
        held = tuple(getattr(wrapper, a, None) for a in self._attrs) + (getattr(wrapper, "_plan_info", None),)
        key = tuple((id(t), getattr(t, "_version", None)) for t in held)
        return key, held


def _graph_wrapper(wrapper: Any) -> bool:
    return bool(getattr(wrapper, "_use_cuda_graph", False))


class WrapperPlanSpec(LaunchSpec):
    """``plan`` of a paged-KV wrapper (FlashInfer's CSR page format).

    qo_indptr ``[batch_size + 1]`` int32 token offsets of the queries (prefill only;
    decode: ``q_len_per_req`` rows per request, default 1); kv_indptr ``[batch_size +
    1]`` int32 page offsets into kv_indices, starting at any offset >= 0 (request ``i``
    reads ``kv_indices[kv_indptr[i]:kv_indptr[i+1]]``); kv_indices ``[>= kv_indptr[-1]]``
    int32 page ids (a longer buffer: only the used part is read); kv_last_page_len
    ``[batch_size]`` int32 tokens in each request's last page; page_size (tokens);
    causal (prefill). Host or device tensors (FlashInfer copies them). The planned
    metadata is remembered per wrapper object (:data:`WRAPPER_PLANS`) and checked
    again, with the query and the KV cache, at ``run``.

    Args:
        fn: the installed ``plan``.
        plans: where plans are remembered (default :data:`WRAPPER_PLANS`).
    """

    #: argument names in the real signature, per wrapper (``None``: the wrapper has none)
    QO_INDPTR: str | None = None
    KV_INDPTR = "indptr"
    KV_INDICES: str | None = "indices"
    LAST_PAGE_LEN: str | None = "last_page_len"
    #: the wrapper's planned state (what its run reads)
    STATE = WrapperState({
        "kv_indptr": "_paged_kv_indptr_buf",
        "kv_indices": "_paged_kv_indices_buf",
        "kv_last_page_len": "_paged_kv_last_page_len_buf",
    })
    REMEMBERS = True

    SCALARS = ("page_size", "num_qo_heads", "num_kv_heads", "causal", "q_len_per_req")

    def __init__(self, fn, plans: "weakref.WeakKeyDictionary[Any, Plan] | None" = None) -> None:
        self.TENSORS = self.INDEX_TENSORS = self.tensor_names()
        self.plans = WRAPPER_PLANS if plans is None else plans
        super().__init__(fn)

    def tensor_names(self) -> tuple[str, ...]:
        """The plan's index-tensor arguments, in the real signature's names."""
        return tuple(n for n in (self.QO_INDPTR, self.KV_INDPTR, self.KV_INDICES, self.LAST_PAGE_LEN) if n)

    def arg_names(self) -> tuple[str, ...]:
        return ("self", *super().arg_names())

    def describe(self, ns):
        prefill = self.QO_INDPTR is not None
        q_len = None if prefill else (ns.get("q_len_per_req") or 1)
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND if prefill else (ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY),
            kernel=Kernel.PREFILL if prefill else Kernel.DECODE,
            cu_seqlens_q=ns[self.QO_INDPTR] if prefill else None,
            kv_indptr=ns[self.KV_INDPTR],
            kv_indices=ns[self.KV_INDICES],
            kv_last_page_len=ns[self.LAST_PAGE_LEN],
            page_size=ns["page_size"],
            q_len_per_req=q_len,
            causal=bool(ns.get("causal")) if prefill else None,
            metadata_copied=True,
        )
        return batch, None

    def remember(self, ns: Mapping[str, Any], batch: AttentionBatch | None) -> None:
        ns["__plan__"] = batch  # type: ignore[index]

    def after(self, ns: Mapping[str, Any]) -> None:
        wrapper, batch = ns["self"], ns.get("__plan__")
        if batch is None:
            return
        key, held = self.STATE.fingerprint(wrapper)
        self.plans[wrapper] = Plan(batch, next(_PLAN_SERIAL), key, held)


class PrefillPlanSpec(WrapperPlanSpec):
    __doc__ = WrapperPlanSpec.__doc__
    QO_INDPTR = "qo_indptr"
    KV_INDPTR = "paged_kv_indptr"
    KV_INDICES = "paged_kv_indices"
    LAST_PAGE_LEN = "paged_kv_last_page_len"
    STATE = WrapperState({
        "cu_seqlens_q": "_qo_indptr_buf",
        "kv_indptr": "_paged_kv_indptr_buf",
        "kv_indices": "_paged_kv_indices_buf",
        "kv_last_page_len": "_paged_kv_last_page_len_buf",
    })


class DecodePlanSpec(WrapperPlanSpec):
    __doc__ = WrapperPlanSpec.__doc__


class FastDecodePlanSpec(DecodePlanSpec):
    """``flashinfer.decode.fast_decode_plan(self, indptr, indices, last_page_len, ...)``:
    the decode plan SGLang installs on its CUDA-graph wrappers
    (``partial(fast_decode_plan, wrapper)``); same arguments and checks as
    :class:`DecodePlanSpec`. Under ``use_cuda_graph`` it copies nothing into the
    wrapper's buffers (the engine refills them in place): ``run`` reads those."""


class RaggedPlanSpec(WrapperPlanSpec):
    """``BatchPrefillWithRaggedKVCacheWrapper.plan``: qo_indptr / kv_indptr ``[batch_size
    + 1]`` int32 token offsets of the queries and of the K/V rows (``run``'s ``k`` / ``v``
    ``[num_kv_rows, num_kv_heads, head_dim]``); causal. Host or device tensors."""

    QO_INDPTR = "qo_indptr"
    KV_INDPTR = "kv_indptr"
    KV_INDICES = None
    LAST_PAGE_LEN = None
    STATE = WrapperState({"cu_seqlens_q": "_qo_indptr_buf", "cu_seqlens_kv": "_kv_indptr_buf"})

    def describe(self, ns):
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            cu_seqlens_q=ns["qo_indptr"],
            cu_seqlens_kv=ns["kv_indptr"],
            causal=bool(ns.get("causal")),
            metadata_copied=True,
        )
        return batch, None


class WrapperRunSpec(LaunchSpec):
    """``run`` of a wrapper (``run_return_lse``; ``forward`` / ``forward_return_lse`` call it).

    q ``[num_query_rows, num_qo_heads, head_dim]``; paged_kv_cache (see the module
    docstring for its forms) in the wrapper's ``kv_layout``. Checked against the
    wrapper's remembered plan while its planned state is unchanged, else against the
    wrapper's own buffers (a bypassed plan: ``fast_decode_plan``, SGLang's
    ``fast_*_plan``), always against the buffers on a ``use_cuda_graph`` wrapper.

    Args:
        fn: the installed ``run``.
        plans: where the plans were remembered (default :data:`WRAPPER_PLANS`).
    """

    TENSORS = ("q", "paged_kv_cache")
    SCALARS = ("q_len_per_req",)
    #: the plan spec of the same wrapper (its :class:`WrapperState`)
    PLAN: type[WrapperPlanSpec] = WrapperPlanSpec
    #: ``run``'s KV-cache argument (a paged cache; ``None``: ragged K/V)
    CACHE: str | None = "paged_kv_cache"

    def __init__(self, fn, plans: "weakref.WeakKeyDictionary[Any, Plan] | None" = None) -> None:
        self.plans = WRAPPER_PLANS if plans is None else plans
        self.state = self.PLAN.STATE
        super().__init__(fn)

    def arg_names(self) -> tuple[str, ...]:
        return ("self", *super().arg_names())

    def _source(self, ns: Mapping[str, Any]) -> tuple:
        """``(plan, buffers, scalars)``: the remembered :class:`Plan` still in effect
        (``buffers`` empty), or ``None`` and the wrapper's buffers. Computed once per
        launch (kept in ``ns``)."""
        source = ns.get("__source__")
        if source is None:
            wrapper = ns["self"]
            scalars = (getattr(wrapper, "_causal", None), getattr(wrapper, "_kv_layout", "NHD"),
                       getattr(wrapper, "_q_len_per_req", None))
            plan = None
            if not _graph_wrapper(wrapper):
                try:
                    plan = self.plans.get(wrapper)
                except TypeError:  # not weak-referenceable
                    plan = None
                if plan is not None and plan.state != self.state.fingerprint(wrapper)[0]:
                    plan = None
            source = (plan, {} if plan is not None else self.state.tensors(wrapper), scalars)
            ns["__source__"] = source  # type: ignore[index]
        return source

    def shape_key(self, ns):
        plan, buffers, scalars = self._source(ns)
        base = super().shape_key(ns)
        if plan is not None:
            return base, scalars, plan.serial
        return base, scalars, tuple((k, tensor_key(t)) for k, t in buffers.items())

    def value_refs(self, ns):
        plan, buffers, _ = self._source(ns)
        return tuple(plan.batch.index_tensors().values()) if plan is not None else tuple(buffers.values())

    def _cache(self, ns: Mapping[str, Any], layout: str) -> PagedKVCache | None:
        kv = ns[self.CACHE] if self.CACHE else None
        return None if kv is None else PagedKVCache.from_tensor(kv, layout=str(layout or "NHD"), wrapper_form=True)

    def _from_buffers(self, ns: Mapping[str, Any], buffers: dict[str, Any], causal: Any, q_len: Any) -> AttentionBatch | None:
        raise NotImplementedError

    def describe(self, ns):
        plan, buffers, (causal, layout, planned_q_len) = self._source(ns)
        cache = self._cache(ns, layout)
        q_len = ns.get("q_len_per_req") or planned_q_len
        if plan is not None:
            update: dict[str, Any] = {"query": ns["q"]}
            if plan.batch.kernel is Kernel.PREFILL and causal is not None:
                update["causal"] = bool(causal)
            if plan.batch.kernel is Kernel.DECODE and q_len:
                update["q_len_per_req"] = q_len
            update.update(self._run_fields(ns))
            return plan.batch.replace(**update), cache
        if not buffers:
            return None, cache
        return self._from_buffers(ns, buffers, causal, q_len), cache

    def _run_fields(self, ns: Mapping[str, Any]) -> dict[str, Any]:
        """Fields only ``run`` knows (a ragged K/V's row count)."""
        return {}


class PrefillRunSpec(WrapperRunSpec):
    __doc__ = WrapperRunSpec.__doc__
    PLAN = PrefillPlanSpec

    def _from_buffers(self, ns, buffers, causal, q_len):
        return AttentionBatch(
            forward_mode=ForwardMode.EXTEND, kernel=Kernel.PREFILL, query=ns["q"],
            causal=None if causal is None else bool(causal), **buffers,
        )


class DecodeRunSpec(WrapperRunSpec):
    __doc__ = WrapperRunSpec.__doc__
    PLAN = DecodePlanSpec

    def _from_buffers(self, ns, buffers, causal, q_len):
        q_len = q_len or 1
        return AttentionBatch(
            forward_mode=ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY, kernel=Kernel.DECODE,
            query=ns["q"], q_len_per_req=q_len, **buffers,
        )


class RaggedRunSpec(WrapperRunSpec):
    """``BatchPrefillWithRaggedKVCacheWrapper.run`` (``run_return_lse``; ``forward`` /
    ``forward_return_lse`` call it): q ``[num_query_rows, num_qo_heads, head_dim]``; k /
    v ``[num_kv_rows, num_kv_heads, head_dim]`` (``kv_indptr[-1] <= num_kv_rows``)."""

    TENSORS = ("q", "k", "v")
    SCALARS = ()
    PLAN = RaggedPlanSpec
    CACHE = None

    def _run_fields(self, ns):
        k = ns["k"]
        return {"num_kv_rows": None if k is None else k.shape[0]}

    def _from_buffers(self, ns, buffers, causal, q_len):
        return AttentionBatch(
            forward_mode=ForwardMode.EXTEND, kernel=Kernel.PREFILL, query=ns["q"],
            causal=None if causal is None else bool(causal), **self._run_fields(ns), **buffers,
        )


_RUN_ALIASES = ("run_return_lse",)
_PLAN_ALIASES = ("begin_forward",)

ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper.plan", PrefillPlanSpec, aliases=_PLAN_ALIASES),
    EntryPoint("flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper.run", PrefillRunSpec, aliases=_RUN_ALIASES),
    EntryPoint("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.plan", DecodePlanSpec, aliases=_PLAN_ALIASES),
    EntryPoint("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.run", DecodeRunSpec, aliases=_RUN_ALIASES),
    EntryPoint("flashinfer.decode", "fast_decode_plan", FastDecodePlanSpec),
    EntryPoint("flashinfer.prefill", "BatchPrefillWithRaggedKVCacheWrapper.plan", RaggedPlanSpec, aliases=_PLAN_ALIASES),
    EntryPoint("flashinfer.prefill", "BatchPrefillWithRaggedKVCacheWrapper.run", RaggedRunSpec, aliases=_RUN_ALIASES),
)
"""The wrapper entry points (``plan`` before ``run`` of each class), in the order the guard patches them."""
