"""How each guarded FlashInfer entry point's arguments map onto the typed metadata.

A :class:`LaunchSpec` reads one call's arguments by name (positions taken from the
real signature once, at patch time), and gives

* :meth:`~LaunchSpec.shape_key`: every shape / dtype / device / stride / scalar the
  ``shapes``-level checks read, as one hashable tuple. The checks are a pure
  function of it, so a key that passed once passes again: the guard memoizes on it
  and pays the full check (pydantic models + catalog) only for a new layout.
* :meth:`~LaunchSpec.value_key`: identity, ``_version``, data pointer and shape of
  the index tensors whose contents the ``values`` checks read: 60 layers that share
  one step's metadata pay for one device-to-host copy.
* :meth:`~LaunchSpec.describe`: the :class:`~guardrails.AttentionBatch` and
  :class:`~guardrails.PagedKVCache` the catalog checks.

Argument names and shapes follow FlashInfer 0.7.x (0.6.x has the same names for
these arguments); each spec's docstring lists them.
"""

from __future__ import annotations

import inspect
import itertools
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch, PagedKVCache

from .launch_memo import tensor_key, version_key

_PLAN_SERIAL = itertools.count(1)
"""Numbers each remembered wrapper plan: keys name a plan by serial, never by ``id()``."""

_MISSING = object()

#: wrapper object -> the metadata its last ``plan`` was called with (read again at ``run``)
WRAPPER_PLANS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


class ArgReader:
    """Reads arguments of one callable by name from ``(args, kwargs)``, without
    ``inspect.Signature.bind`` (too slow per launch)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        params = list(inspect.signature(fn).parameters.values())
        self.position: dict[str, int] = {}
        self.default: dict[str, Any] = {}
        for i, p in enumerate(params):
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.position[p.name] = i
            if p.default is not p.empty:
                self.default[p.name] = p.default

    def plan(self, names: Sequence[str]) -> tuple[tuple[str, int, Any], ...]:
        """(name, position or a large number, default) per name: what :func:`read_args` walks."""
        return tuple((n, self.position.get(n, 1 << 30), self.default.get(n)) for n in names)


def read_args(plan: tuple[tuple[str, int, Any], ...], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments named by ``plan`` (see :meth:`ArgReader.plan`) from one call."""
    out: dict[str, Any] = {}
    nargs = len(args)
    for name, pos, default in plan:
        value = kwargs.get(name, _MISSING)
        if value is _MISSING:
            value = args[pos] if pos < nargs else default
        out[name] = value
    return out


class LaunchSpec:
    """Base class: ``TENSORS`` are read for the shape key, ``INDEX_TENSORS`` (a
    subset) also for the value key, ``SCALARS`` join the shape key."""

    TENSORS: tuple[str, ...] = ()
    INDEX_TENSORS: tuple[str, ...] = ()
    SCALARS: tuple[str, ...] = ()

    def __init__(self, fn: Callable[..., Any], plans: "weakref.WeakKeyDictionary[Any, dict[str, Any]] | None" = None) -> None:
        self.reader = ArgReader(fn)
        self.plans = WRAPPER_PLANS if plans is None else plans
        self._arg_plan = self.reader.plan(self.arg_names())

    def arg_names(self) -> tuple[str, ...]:
        return (*self.TENSORS, *self.SCALARS)

    def read(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return read_args(self._arg_plan, args, kwargs)

    def shape_key(self, ns: Mapping[str, Any]) -> tuple:
        return (
            tuple([tensor_key(ns[n]) for n in self.TENSORS]),
            tuple([ns[n] for n in self.SCALARS]),
        )

    def value_key(self, ns: Mapping[str, Any]) -> tuple:
        return tuple([version_key(ns[n]) for n in self.INDEX_TENSORS])

    def value_refs(self, ns: Mapping[str, Any]) -> tuple:
        """The tensors :meth:`value_key` names by ``id()``: the memo holds them."""
        return tuple([ns[n] for n in self.INDEX_TENSORS])

    def describe(self, ns: Mapping[str, Any]) -> tuple[AttentionBatch, PagedKVCache | None]:
        raise NotImplementedError


def _paged_cache(kv_cache: Any, layout: Any) -> PagedKVCache | None:
    return None if kv_cache is None else PagedKVCache.from_tensor(kv_cache, layout=str(layout or "HND"))


def _decode_kernel_mode(ragged: bool, q_len: int | None) -> dict[str, Any]:
    """Forward mode and kernel kind of a decode-kernel launch: ragged (``cum_seq_lens_q``)
    reads like an extend; a uniform ``q_len_per_req`` of 1 is DECODE, more TARGET_VERIFY."""
    if ragged:
        return {"forward_mode": ForwardMode.EXTEND, "kernel": Kernel.PREFILL}
    mode = ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY
    return {"forward_mode": mode, "kernel": Kernel.DECODE}


class TrtllmDecodeSpec(LaunchSpec):
    """``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` (trtllm-gen / xqa decode).

    query ``[batch_size * q_len_per_req, num_qo_heads, head_dim]``; kv_cache
    ``[num_pages, 2, ...]`` or ``(k, v)`` each ``[num_pages, num_kv_heads, page_size,
    head_dim]`` (HND) / ``[num_pages, page_size, num_kv_heads, head_dim]`` (NHD);
    block_tables ``[batch_size, max_pages]`` int32; seq_lens ``[batch_size]`` int32
    (tokens, new ones included); max_seq_len (tokens); q_len_per_req (uniform query
    rows per request; ``None`` with ``cum_seq_lens_q`` ``[batch_size + 1]`` int32 and
    ``max_q_len`` for a ragged launch, FlashInfer >= 0.6).
    """

    TENSORS = ("query", "block_tables", "seq_lens", "cum_seq_lens_q", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_seq_len", "q_len_per_req", "max_q_len", "kv_layout")

    def describe(self, ns):
        ragged = ns["cum_seq_lens_q"] is not None and not ns["q_len_per_req"]
        q_len = None if ragged else (ns["q_len_per_req"] or 1)
        batch = AttentionBatch(
            **_decode_kernel_mode(ragged, q_len),
            query=ns["query"],
            page_table=ns["block_tables"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            max_seq_len_kv=ns["max_seq_len"],
            max_seq_len_q=ns["max_q_len"] if ragged else None,
            q_len_per_req=q_len,
        )
        return batch, _paged_cache(ns["kv_cache"], ns["kv_layout"])


class TrtllmContextSpec(LaunchSpec):
    """``flashinfer.prefill.trtllm_batch_context_with_kv_cache`` (trtllm-gen context).

    query ``[cum_seq_lens_q[-1], num_qo_heads, head_dim]``; kv_cache as the decode
    kernel; block_tables ``[batch_size, max_pages]`` int32; seq_lens ``[batch_size]``
    int32; max_q_len / max_kv_len (tokens); batch_size (requests: SGLang #21649
    passed the DP-padded value); cum_seq_lens_q / cum_seq_lens_kv ``[batch_size + 1]``
    int32 prefix sums of query and KV lengths.
    """

    TENSORS = ("query", "block_tables", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv", "kv_cache")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv")
    SCALARS = ("max_q_len", "max_kv_len", "batch_size", "kv_layout")

    def describe(self, ns):
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            batch_size=ns["batch_size"],
            query=ns["query"],
            page_table=ns["block_tables"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            cu_seqlens_kv=ns["cum_seq_lens_kv"],
            max_seq_len_q=ns["max_q_len"],
            max_seq_len_kv=ns["max_kv_len"],
        )
        return batch, _paged_cache(ns["kv_cache"], ns["kv_layout"])


class TrtllmRaggedDeepseekSpec(LaunchSpec):
    """``flashinfer.prefill.trtllm_ragged_attention_deepseek`` (ragged MLA prefill, no paging).

    query ``[cum_seq_lens_q[-1], num_heads, head_dim_qk]``; key / value
    ``[num_kv_rows, num_heads, head_dim]``; seq_lens ``[batch_size]`` int32;
    max_q_len / max_kv_len (tokens); batch_size; cum_seq_lens_q / cum_seq_lens_kv
    ``[batch_size + 1]`` int32.
    """

    TENSORS = ("query", "key", "value", "seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv")
    INDEX_TENSORS = ("seq_lens", "cum_seq_lens_q", "cum_seq_lens_kv")
    SCALARS = ("max_q_len", "max_kv_len", "batch_size")

    def describe(self, ns):
        key = ns["key"]
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            batch_size=ns["batch_size"],
            num_query_rows=ns["query"].shape[0],
            num_kv_rows=None if key is None else key.shape[0],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            cu_seqlens_kv=ns["cum_seq_lens_kv"],
            max_seq_len_q=ns["max_q_len"],
            max_seq_len_kv=ns["max_kv_len"],
        )
        return batch, None


class TrtllmMlaDecodeSpec(LaunchSpec):
    """``flashinfer.mla.trtllm_batch_decode_with_kv_cache_mla`` (trtllm-gen / xqa MLA decode).

    query ``[batch_size, q_len_per_req, num_heads, kv_lora_rank + qk_rope_head_dim]``;
    kv_cache ``[num_pages, page_size, kv_lora_rank + qk_rope_head_dim]`` (or with a
    unit head axis ``[num_pages, 1, page_size, D]``); block_tables ``[batch_size,
    max_pages]`` int32; seq_lens ``[batch_size]`` int32; max_seq_len (tokens).
    """

    TENSORS = ("query", "kv_cache", "block_tables", "seq_lens", "cum_seq_lens_q")
    INDEX_TENSORS = ("block_tables", "seq_lens", "cum_seq_lens_q")
    SCALARS = ("max_seq_len", "max_q_len", "kv_lora_rank", "qk_rope_head_dim")

    def describe(self, ns):
        q = ns["query"]
        ragged = ns["cum_seq_lens_q"] is not None
        rows = q.shape[0] * (q.shape[1] if q.dim() == 4 else 1)
        q_len = None if ragged else (q.shape[1] if q.dim() == 4 else 1)
        batch = AttentionBatch(
            **_decode_kernel_mode(ragged, q_len),
            batch_size=None if ragged else q.shape[0],
            num_query_rows=rows,
            page_table=ns["block_tables"],
            seq_lens=ns["seq_lens"],
            cu_seqlens_q=ns["cum_seq_lens_q"],
            max_seq_len_kv=ns["max_seq_len"],
            max_seq_len_q=ns["max_q_len"] if ragged else None,
            q_len_per_req=q_len,
        )
        kv = ns["kv_cache"]
        cache = None
        if kv is not None and kv.dim() in (3, 4):
            cache = PagedKVCache(
                num_pages=kv.shape[0],
                page_size=kv.shape[-2],
                num_kv_heads=1,
                head_dim=kv.shape[-1],
                layout="NHD",
                device=str(kv.device),
                dtype=str(kv.dtype).removeprefix("torch."),
                head_dim_stride=kv.stride()[-1],
            )
        return batch, cache


class WrapperPlanSpec(LaunchSpec):
    """``Batch{Prefill,Decode}WithPagedKVCacheWrapper.plan``: FlashInfer's CSR page format.

    qo_indptr ``[batch_size + 1]`` int32 (prefill only); kv_indptr ``[batch_size + 1]``
    int32 page-granular offsets into kv_indices (page ids); kv_last_page_len
    ``[batch_size]`` int32 tokens in each request's last page; page_size (tokens).
    The planned metadata is remembered per wrapper object and checked again, with the
    query and the KV cache, at ``run``.
    """

    #: argument names in the real signature, per wrapper
    QO_INDPTR: str | None = None
    KV_INDPTR = "indptr"
    KV_INDICES = "indices"
    LAST_PAGE_LEN = "last_page_len"

    def __init__(self, fn, plans=None) -> None:
        names = [n for n in (self.QO_INDPTR, self.KV_INDPTR, self.KV_INDICES, self.LAST_PAGE_LEN) if n]
        self.TENSORS = tuple(names)
        self.INDEX_TENSORS = tuple(names)
        self.SCALARS = ("page_size", "num_qo_heads", "num_kv_heads")
        super().__init__(fn, plans)

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

    def remember(self, ns: Mapping[str, Any], batch: AttentionBatch) -> None:
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
    """

    TENSORS = ("q", "paged_kv_cache")
    SCALARS = ("q_len_per_req",)

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

    def value_key(self, ns):
        plan = self.planned(ns)
        if plan is None:
            return ()
        return tuple(version_key(t) for t in plan["batch"].index_tensors().values())

    def value_refs(self, ns):
        plan = self.planned(ns)
        return () if plan is None else tuple(plan["batch"].index_tensors().values())

    def describe(self, ns):
        plan = self.planned(ns)
        layout = getattr(ns["self"], "_kv_layout", "NHD")
        cache = _paged_cache(ns["paged_kv_cache"], layout)
        if plan is None:
            return None, cache
        q_len = ns.get("q_len_per_req")
        batch = plan["batch"].replace(query=ns["q"], **({"q_len_per_req": q_len} if q_len else {}))
        return batch, cache
