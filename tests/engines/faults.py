"""Faults seeded into the metadata an engine hands to a FlashInfer entry point (the kits).

``FMHA_KIT_FAULT=<name>[,<name>...]`` in a kit driver's environment: every call of a fault's entry
points (in the fault's phase, if it names one) gets its arguments changed before the real
function runs (and before the guard checks them). The kits' entry recorders call
:func:`apply`; the tests run a driver per fault and check the guard named the invariant.

Each fault is what an engine bug hands the kernel: a page id past the pool (in
``kv_indices`` / ``block_tables``), a DP-padded ``batch_size`` passed after planning the
real rows (SGLang #21649), a CUDA-graph replay that refills ``cum_seq_lens_q`` with
another stride than capture while the scalars stay baked (SGLang #21987).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENV = "FMHA_KIT_FAULT"

#: a page id no pool of the kits has
PAST_THE_POOL = 1 << 20


@dataclass(frozen=True)
class Fault:
    #: suffixes of FlashInfer entry-point names (``BatchDecodeWithPagedKVCacheWrapper.begin_forward``;
    #: an engine's own wrapper of the same name is left alone)
    entries: tuple[str, ...]
    #: bound arguments -> nothing (changed in place in the mapping)
    mutate: Callable[[dict[str, Any]], None]
    #: only in this kit phase (``eager`` / ``capture`` / ``replay``), or any
    phase: str | None = None


def _clone(arguments: dict[str, Any], name: str):
    t = arguments[name].clone()
    arguments[name] = t
    return t


def _kv_indices_past_pool(a: dict[str, Any]) -> None:
    indptr_name = next(n for n in ("indptr", "paged_kv_indptr", "kv_indptr") if a.get(n) is not None)
    indices_name = indptr_name.replace("indptr", "indices")
    start = int(a[indptr_name][0])
    _clone(a, indices_name)[start] = PAST_THE_POOL


def _block_table_past_pool(a: dict[str, Any]) -> None:
    _clone(a, "block_tables")[0, 0] = PAST_THE_POOL


def _dp_padded_batch_size(a: dict[str, Any]) -> None:
    a["batch_size"] = int(a["batch_size"]) + 2


def _ragged_replay_refill(a: dict[str, Any]) -> None:
    # same total, another stride: the first request takes two rows of the second
    cu = _clone(a, "cum_seq_lens_q")
    cu[1] += 2


FAULTS: dict[str, Fault] = {
    "kv_indices_past_pool": Fault(
        ("BatchDecodeWithPagedKVCacheWrapper.begin_forward", "BatchDecodeWithPagedKVCacheWrapper.plan",
         "BatchPrefillWithPagedKVCacheWrapper.begin_forward", "BatchPrefillWithPagedKVCacheWrapper.plan",
         "BatchMLAPagedAttentionWrapper.plan"),
        _kv_indices_past_pool),
    "block_table_past_pool": Fault(
        ("trtllm_batch_decode_with_kv_cache", "xqa_batch_decode_with_kv_cache", "trtllm_batch_decode_with_kv_cache_mla"),
        _block_table_past_pool),
    "dp_padded_batch_size": Fault(("trtllm_batch_context_with_kv_cache", "trtllm_fmha_v2_prefill"), _dp_padded_batch_size),
    "ragged_replay_refill": Fault(("trtllm_batch_context_with_kv_cache",), _ragged_replay_refill, phase="replay"),
}


def active() -> list[Fault]:
    """The faults ``FMHA_KIT_FAULT`` names (comma-separated; each concerns its own entry
    points)."""
    return [FAULTS[name.strip()] for name in os.environ.get(ENV, "").split(",") if name.strip()]


def apply(qualname: str, signature: inspect.Signature | None, args: tuple, kwargs: dict,
          phase: str | None) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of one entry-point call, with the active faults that concern this
    entry point and phase applied."""
    for fault in active():
        if signature is None or not qualname.startswith("flashinfer.") or not qualname.endswith(fault.entries):
            continue
        if fault.phase is not None and fault.phase != phase:
            continue
        bound = signature.bind(*args, **kwargs)
        fault.mutate(bound.arguments)
        args, kwargs = bound.args, bound.kwargs
    return args, kwargs
