"""fmha-guardrails: catch attention-metadata bugs before they reach FMHA kernels.

Serving engines (SGLang, vLLM) hand FlashInfer's FMHA kernels (trtllm-gen,
xqa, fa2/fa3) a batch size, query offsets (``cu_seqlens_q`` / ``qo_indptr``),
KV lengths, a page table and a few scalars. When those disagree the kernel
rarely crashes: on an H200, four of five kinds of bad metadata sent to the xqa
decode kernel returned wrong attention silently. This package describes a
launch with typed models and checks it against a catalog of invariants, each
traced to a real SGLang fix (#21649, #24856, #21987, #26966)::

    from guardrails import AttentionBatch, PagedKVCache, validate

    batch = AttentionBatch(
        forward_mode="extend", kernel="prefill", batch_size=bs,
        cu_seqlens_q=cu_q, cu_seqlens_kv=cu_kv, seq_lens=seq_lens,
        page_table=page_table, max_seq_len_q=max_q, max_seq_len_kv=max_kv,
        num_query_rows=q.shape[0],
    )
    validate(batch, PagedKVCache.from_tensor(kv_cache, layout="HND"))

FlashInfer's paged-KV wrappers describe the pages in CSR form instead of a
page table: pass ``kv_indptr``, ``kv_indices`` and ``kv_last_page_len`` (the
``plan()`` arguments); a ragged (non-paged) K/V passes ``cu_seqlens_kv`` and
``num_kv_rows=key.shape[0]``.

Importing this package never imports torch; tensors are duck-typed.
The environment-driven launch hook lives in :mod:`runtime_checks`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names load on first use (PEP 562): the ``fmha-guard`` command lives in this package,
# and ``fmha-guard audit`` answering from its cache must not pay for pydantic models.
_EXPORTS = {
    "FmhaInvariantError": "errors",
    "FmhaInvariantWarning": "errors",
    "FmhaGuardConfigWarning": "errors",
    "ForwardMode": "forward_mode",
    "Kernel": "forward_mode",
    "Level": "config",
    "Invariant": "invariants",
    "CATALOG": "invariants",
    "get": "invariants",
    "AttentionBatch": "models",
    "PagedKVCache": "models",
    "SlidingWindowPool": "models",
    "KVLayout": "models",
    "GraphLayout": "models",
    "BufferLayout": "models",
    "validate": "validation",
    "find_violations": "validation",
}

__all__ = list(_EXPORTS)


_DISTRIBUTION = "fmha-guardrails"
_VERSION_UNKNOWN = "0+unknown"


def _installed_version() -> str:
    """The installed distribution's version (setup.cfg ``version``, the one source), or
    ``"0+unknown"`` when the package runs from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:
        return _VERSION_UNKNOWN


def __getattr__(name: str):
    if name == "__version__":
        value = globals()[name] = _installed_version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | {"__version__"})


if TYPE_CHECKING:  # pragma: no cover
    from .config import Level
    from .errors import FmhaInvariantError
    from .forward_mode import ForwardMode, Kernel
    from .invariants import CATALOG, Invariant, get
    from .models import AttentionBatch, BufferLayout, GraphLayout, KVLayout, PagedKVCache, SlidingWindowPool
    from .validation import find_violations, validate
