"""A reference attention backend with SGLang's interface (issue #4).

Importable without a GPU (torch needed; FlashInfer only on CUDA tensors)::

    from runtime_checks.reference_backend import (
        AttentionLayer, ForwardBatch, ModelRunner, MHATokenToKVPool, ReqToTokenPool,
        ReferenceAttnBackend, SWAKVPool, pad_forward_batch_for_dp,
    )

Modules:

* :mod:`.forward_batch`: ``ForwardBatch``, ``ModelRunner``, DP padding.
* :mod:`.kv_pool`: page allocator, ``req_to_token`` pool, full and hybrid-SWA KV pools.
* :mod:`.torch_kernels`: CPU reference kernels with FlashInfer's argument contracts.
* :mod:`.flashinfer_kernels`: the same contracts on FlashInfer (CUDA only).
* :mod:`.attention_backend`: ``ReferenceAttnBackend`` (metadata planning, CUDA-graph
  capture/replay, forward_extend / forward_decode, a guard check before every launch).
* :mod:`.graph_runner`: ``CudaGraphRunner`` (capture per batch size, padded replay,
  the refilled metadata validated before every ``graph.replay()``).
* :mod:`.workload`: requests with known K/V, the float64 reference, model geometries.
"""

from __future__ import annotations

from guardrails.forward_mode import ForwardMode

from .attention_backend import AttentionLayer, ForwardMetadata, ReferenceAttnBackend, guard_level
from .forward_batch import ForwardBatch, ModelRunner, pad_forward_batch_for_dp
from .graph_runner import CudaGraphRunner
from .kv_pool import DUMMY_PAGE, DUMMY_REQ_ROW, MHATokenToKVPool, PageAllocator, ReqToTokenPool, SWAKVPool

__all__ = [
    "AttentionLayer",
    "CudaGraphRunner",
    "ForwardBatch",
    "ForwardMetadata",
    "ForwardMode",
    "MHATokenToKVPool",
    "ModelRunner",
    "PageAllocator",
    "ReferenceAttnBackend",
    "ReqToTokenPool",
    "SWAKVPool",
    "DUMMY_PAGE",
    "DUMMY_REQ_ROW",
    "guard_level",
    "pad_forward_batch_for_dp",
]
