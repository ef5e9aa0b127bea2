"""FlashInfer's MLA wrapper: ``BatchMLAPagedAttentionWrapper.plan`` / ``run`` (``flashinfer.mla``).

``plan`` takes the metadata in CSR form (``qo_indptr`` / ``kv_indptr`` / ``kv_indices``
/ ``kv_len_arr``, flat or as ``metadata=MLAPlanMetadata.csr(...)``) or dense form
(``cum_seq_lens_q`` / ``block_tables`` / ``seq_lens``, or ``MLAPlanMetadata.dense``);
``run`` the query (``q_nope`` / ``q_pe``, or ``query=``) and the latent cache
(``ckv_cache`` ``[num_pages, page_size, head_dim_ckv]`` / ``kpe_cache`` ``[num_pages,
page_size, head_dim_kpe]``, or ``kv_cache=``). The wrapper keeps its planned CSR
metadata in ``_qo_indptr_buf``, ``_kv_indptr_buf``, ``_kv_indices_buf``
(mirrored from the planned backend, FlashInfer 0.7.2; see :attr:`MlaPlanSpec.STATE` for
``_kv_len_arr_buf``), plus
``_page_size`` and ``_causal``. SGLang's ``fast_mla_decode_plan`` /
``fast_mla_prefill_plan`` replace ``plan`` on its CUDA-graph wrappers and call the
compiled plan directly: ``run`` then reads those buffers, as for the other wrappers
(:mod:`.flashinfer_wrappers`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch
from guardrails.tensor_facts import shape_of

from .base import EntryPoint
from .flashinfer_trtllm import mla_cache
from .flashinfer_wrappers import WrapperPlanSpec, WrapperRunSpec, WrapperState

__all__ = ["ENTRY_POINTS", "MlaPlanSpec", "MlaRunSpec"]

_CSR = ("qo_indptr", "kv_indptr", "kv_indices", "kv_len_arr")
_DENSE = ("cum_seq_lens_q", "block_tables", "seq_lens")


class MlaPlanSpec(WrapperPlanSpec):
    """``BatchMLAPagedAttentionWrapper.plan``.

    CSR: qo_indptr ``[batch_size + 1]`` int32 query token offsets; kv_indptr
    ``[batch_size + 1]`` int32 page offsets into kv_indices (``ceil(kv_len_arr[i] /
    page_size)`` pages each); kv_indices int32 page ids (a longer buffer: only the used
    part is read); kv_len_arr ``[batch_size]`` int32 KV tokens. Dense: cum_seq_lens_q,
    block_tables ``[batch_size, max_pages]`` int32, seq_lens ``[batch_size]`` int32,
    max_q_len. Either flat or in ``metadata=MLAPlanMetadata``; host or device tensors.
    page_size (tokens), causal.
    """

    #: the buffers a bypassed plan leaves the run with. ``_kv_len_arr_buf`` is left out:
    #: the FA2/FA3 MLA kernel reads only ``kv_indices`` on the device (its lengths and
    #: offsets come from the host arrays of the last compiled plan, ``_fa_common.py``),
    #: and SGLang's fast plans refill ``_kv_indptr_buf`` / ``_kv_indices_buf`` in place
    #: but not ``_kv_len_arr_buf``, which then still holds the capture's lengths
    STATE = WrapperState({
        "cu_seqlens_q": "_qo_indptr_buf",
        "kv_indptr": "_kv_indptr_buf",
        "kv_indices": "_kv_indices_buf",
    })

    SCALARS = ("page_size", "num_heads", "causal", "max_q_len")

    def tensor_names(self) -> tuple[str, ...]:
        return (*_CSR, *_DENSE)

    def arg_names(self) -> tuple[str, ...]:
        return (*super().arg_names(), "metadata")

    def read(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        ns = super().read(args, kwargs)
        metadata = ns.get("metadata")
        if metadata is not None:
            for name in (*_CSR, *_DENSE, "max_q_len"):
                ns[name] = getattr(metadata, name, None)
        return ns

    def describe(self, ns):
        common = dict(forward_mode=ForwardMode.EXTEND, kernel=Kernel.PREFILL, page_size=ns["page_size"],
                      causal=None if ns["causal"] is None else bool(ns["causal"]), metadata_copied=True)
        if ns["kv_indptr"] is not None or ns["qo_indptr"] is not None:
            batch = AttentionBatch(cu_seqlens_q=ns["qo_indptr"], kv_indptr=ns["kv_indptr"],
                                   kv_indices=ns["kv_indices"], seq_lens=ns["kv_len_arr"], **common)
        else:
            batch = AttentionBatch(cu_seqlens_q=ns["cum_seq_lens_q"], page_table=ns["block_tables"],
                                   seq_lens=ns["seq_lens"], max_seq_len_q=ns["max_q_len"], **common)
        return batch, None


class MlaRunSpec(WrapperRunSpec):
    """``BatchMLAPagedAttentionWrapper.run``: q_nope ``[num_query_rows, num_heads,
    head_dim_ckv]`` and q_pe (or ``query=``, packed or a pair); ckv_cache / kpe_cache
    ``[num_pages, page_size, head_dim]`` (or ``kv_cache=``). Checked against the plan
    (or the wrapper's buffers, as :class:`~.flashinfer_wrappers.WrapperRunSpec`); the
    query's row count only (its head_dim is the latent width, not the cache's)."""

    TENSORS = ("q_nope", "ckv_cache", "query", "kv_cache")
    SCALARS = ()
    PLAN = MlaPlanSpec
    CACHE = None

    def _rows(self, ns: Mapping[str, Any]) -> int | None:
        q = ns["q_nope"] if ns["q_nope"] is not None else ns["query"]
        if isinstance(q, (tuple, list)):
            q = q[0] if q else None
        return None if q is None else shape_of(q)[0]

    def _cache(self, ns, layout):
        return mla_cache(ns["ckv_cache"] if ns["ckv_cache"] is not None else ns["kv_cache"])

    def _source(self, ns):
        source = super()._source(ns)
        if source[0] is None and "__page_size__" not in ns:
            ns["__page_size__"] = getattr(ns["self"], "_page_size", None)  # type: ignore[index]
        return source

    def describe(self, ns):
        plan, buffers, (causal, _, _) = self._source(ns)
        cache = self._cache(ns, None)
        rows = self._rows(ns)
        if plan is not None:
            update: dict[str, Any] = {"num_query_rows": rows}
            if causal is not None:
                update["causal"] = bool(causal)
            return plan.batch.replace(**update), cache
        if not buffers:
            return None, cache
        return AttentionBatch(
            forward_mode=ForwardMode.EXTEND, kernel=Kernel.PREFILL, num_query_rows=rows,
            page_size=ns.get("__page_size__"), causal=None if causal is None else bool(causal), **buffers,
        ), cache


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.mla._batch_mla._wrapper", "BatchMLAPagedAttentionWrapper.plan", MlaPlanSpec),
    EntryPoint("flashinfer.mla._batch_mla._wrapper", "BatchMLAPagedAttentionWrapper.run", MlaRunSpec),
)
"""The MLA wrapper's entry points, ``plan`` before ``run``."""
