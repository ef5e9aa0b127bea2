"""A small ``ForwardBatch``: what SGLang's model runner hands an attention backend.

:class:`ForwardBatch` holds the scheduler's view of one step (forward mode, batch
size, KV lengths, per-request query lengths, token slots, the KV pool);
:class:`ModelRunner` the few engine objects a backend is built from;
:func:`pad_forward_batch_for_dp` pads a batch the way SGLang's
``prepare_mlp_sync_batch`` does for DP attention, AFTER the attention metadata was
planned (the situation of SGLang #21649).

Query rows per request (:meth:`ForwardBatch.query_lens`) by forward mode:

* EXTEND / MIXED / DRAFT_EXTEND: ``extend_seq_lens`` (ragged);
* DRAFT_EXTEND_V2: ``spec_accept_lens`` (ragged, variable accept lengths);
* DECODE: 1 each; TARGET_VERIFY: ``num_draft_tokens`` each (uniform);
* IDLE: none (batch size 0).

In every mode ``seq_lens[i]`` counts request ``i``'s KV tokens INCLUDING its new
query rows, and the query rows are the last positions of the request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch

from guardrails.forward_mode import ForwardMode

from .kv_pool import DUMMY_REQ_ROW, MHATokenToKVPool, ReqToTokenPool

__all__ = ["ForwardBatch", "ModelRunner", "pad_forward_batch_for_dp"]


@dataclass
class ForwardBatch:
    """One step of the engine, as the attention backend sees it.

    Attributes:
        forward_mode: :class:`~guardrails.ForwardMode` of the step.
        batch_size: the scheduler's request count. After DP padding it exceeds the
            requests the attention metadata holds; the backend never sizes a kernel
            from it (SGLang #21649).
        seq_lens: ``[batch_size]`` int32, KV tokens per request including the new ones.
        req_pool_indices: ``[batch_size]`` int64 rows of ``req_to_token``.
        req_to_token: ``[max_reqs, max_context_len]`` int32 token slots (full pool).
        out_cache_loc: ``[num_tokens]`` int64 slots the new tokens' K/V are written to.
        token_to_kv_pool: the KV pool this step reads; the draft worker of FROZEN_KV MTP
            swaps it for the target's (SGLang #26966).
        extend_seq_lens: ``[batch_size]`` int32 new tokens per request (EXTEND, MIXED,
            DRAFT_EXTEND).
        spec_accept_lens: ``[batch_size]`` int32 accepted tokens per request
            (DRAFT_EXTEND_V2's query rows).
        num_draft_tokens: draft tokens per request of TARGET_VERIFY
            (``speculative_num_draft_tokens``).
        seq_lens_cpu: optional host copy of ``seq_lens`` (SGLang keeps one to plan
            without a device sync).
    """

    forward_mode: ForwardMode
    batch_size: int
    seq_lens: torch.Tensor
    req_pool_indices: torch.Tensor
    req_to_token: torch.Tensor
    out_cache_loc: torch.Tensor
    token_to_kv_pool: MHATokenToKVPool
    extend_seq_lens: Optional[torch.Tensor] = None
    spec_accept_lens: Optional[torch.Tensor] = None
    num_draft_tokens: Optional[int] = None
    seq_lens_cpu: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        self.forward_mode = ForwardMode.parse(self.forward_mode)

    def query_lens(self) -> list[int]:
        """Query rows of each request (host ints), by forward mode (module docstring).

        Raises:
            ValueError: the mode's length field is missing.
        """
        mode = self.forward_mode
        n = self.seq_lens.shape[0]
        if mode.is_idle():
            return []
        if mode.is_decode():
            return [1] * n
        if mode.is_target_verify():
            if not self.num_draft_tokens:
                raise ValueError("TARGET_VERIFY needs num_draft_tokens")
            return [self.num_draft_tokens] * n
        lens = self.spec_accept_lens if mode.is_draft_extend_v2() else self.extend_seq_lens
        if lens is None:
            field = "spec_accept_lens" if mode.is_draft_extend_v2() else "extend_seq_lens"
            raise ValueError(f"{mode.name} needs {field}")
        return [int(x) for x in lens.tolist()]

    def host_seq_lens(self) -> list[int]:
        """``seq_lens`` as host ints (from ``seq_lens_cpu`` when given)."""
        src = self.seq_lens_cpu if self.seq_lens_cpu is not None else self.seq_lens
        return [int(x) for x in src.tolist()]


@dataclass
class ModelRunner:
    """The engine objects an attention backend is built from (SGLang ``ModelRunner``).

    Attributes:
        token_to_kv_pool: the KV pool at construction. The backend must not cache
            anything about it (SGLang #26966): the draft worker may swap it later.
        req_to_token_pool: the :class:`ReqToTokenPool`.
        page_size: tokens per page (an immutable fact, read here rather than from the pool).
        num_qo_heads, num_kv_heads, head_dim: attention geometry per rank.
        device: where metadata and kernels run (``"cpu"`` -> torch kernels,
            ``"cuda"`` -> FlashInfer).
        dtype: activation dtype.
        extra: anything else a caller wants to carry.
    """

    token_to_kv_pool: MHATokenToKVPool
    req_to_token_pool: ReqToTokenPool
    page_size: int
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.bfloat16
    extra: Optional[dict[str, Any]] = None


def _pad(t: Optional[torch.Tensor], extra: int, value: int) -> Optional[torch.Tensor]:
    if t is None or extra == 0:
        return t
    return torch.cat([t, torch.full((extra,), value, dtype=t.dtype, device=t.device)])


def pad_forward_batch_for_dp(
    forward_batch: ForwardBatch, padded_batch_size: int, padded_num_tokens: Optional[int] = None
) -> ForwardBatch:
    """Pad ``forward_batch`` to ``padded_batch_size`` requests, as SGLang's
    ``prepare_mlp_sync_batch`` does for DP attention (every DP rank runs the MLP on the
    same token count). Call it AFTER ``backend.init_forward_metadata``: the planned
    metadata keeps the real requests, exactly the state SGLang #21649 tripped over.

    Padded requests have ``seq_lens`` 1 (SGLang's ``seq_lens_fill_value``; ``num_draft_tokens`` for TARGET_VERIFY), the dummy
    ``req_to_token`` row, one query row each (``extend_seq_lens`` / ``spec_accept_lens``
    padded with 1) and write their K/V to the dummy slot 0. ``out_cache_loc`` is padded
    to ``padded_num_tokens`` (default: real tokens + one per padded request); the model
    pads its hidden states (hence ``q``, ``k``, ``v``) to the same row count.

    Returns:
        A new :class:`ForwardBatch` (the input is not modified).

    Raises:
        ValueError: ``padded_batch_size`` is below the batch's request count.
    """
    real = forward_batch.seq_lens.shape[0]
    extra = padded_batch_size - real
    if extra < 0:
        raise ValueError(f"cannot pad {real} requests down to {padded_batch_size}")
    rows = forward_batch.out_cache_loc.shape[0]
    per_req = 1
    if forward_batch.forward_mode.is_target_verify():
        per_req = forward_batch.num_draft_tokens or 1
    if padded_num_tokens is None:
        padded_num_tokens = rows + extra * per_req
    return replace(
        forward_batch,
        batch_size=padded_batch_size,
        seq_lens=_pad(forward_batch.seq_lens, extra, per_req),
        seq_lens_cpu=_pad(forward_batch.seq_lens_cpu, extra, per_req),
        req_pool_indices=_pad(forward_batch.req_pool_indices, extra, DUMMY_REQ_ROW),
        out_cache_loc=_pad(forward_batch.out_cache_loc, padded_num_tokens - rows, 0),
        extend_seq_lens=_pad(forward_batch.extend_seq_lens, extra, 1),
        spec_accept_lens=_pad(forward_batch.spec_accept_lens, extra, 1),
    )
