"""CPU torch reference kernels with the argument contracts of the FlashInfer calls.

The reference backend calls these where :mod:`.flashinfer_kernels` would launch
FlashInfer, with the same arguments, and they read the arguments the way the CUDA
kernels do (so a metadata bug shows up here as it would there, minus the crash):

* :func:`batch_prefill_with_paged_kv_cache`: ragged query rows from ``qo_indptr``
  (FlashInfer ``BatchPrefillWithPagedKVCacheWrapper`` / trtllm context); the batch
  size is ``qo_indptr.shape[0] - 1``.
* :func:`trtllm_batch_context_with_kv_cache`: FlashInfer's trtllm-gen context
  signature (SM100 only on a GPU; the backend does not route to it on CPU or Hopper):
  it walks the explicit ``batch_size`` requests of ``cum_seq_lens_q``, so a DP-padded
  ``batch_size`` reads past the offsets (SGLang #21649). Here for the seed examples.
* :func:`trtllm_batch_decode_with_kv_cache`: FlashInfer's signature; the batch size
  is ``query.shape[0] // q_len_per_req`` and ``cu_seqlens_q`` does not exist for it
  (xqa reshapes the query to ``[batch, q_len_per_req, heads, dim]``).

Both: paged K/V gathered through a block table (HND ``[num_pages, 2, num_kv_heads,
page_size, head_dim]``, NHD or a ``(k, v)`` pair), causal mask offset by the prefix
(query row ``j`` of a request with ``q`` rows and ``s`` KV tokens sits at position
``s - q + j`` and sees keys ``[0, s - q + j]``), optional sliding window
(``window_left``: keys ``[pos - window_left, pos]``), GQA (query head ``h`` reads KV
head ``h // (num_qo_heads // num_kv_heads)``). Math in float32, output in the query
dtype (or ``out``'s). Index tensors are read on the host: CPU only, not capturable.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

__all__ = [
    "batch_prefill_with_paged_kv_cache",
    "trtllm_batch_context_with_kv_cache",
    "trtllm_batch_decode_with_kv_cache",
    "split_kv_cache",
]

KVCache = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def split_kv_cache(kv_cache: KVCache, kv_layout: str = "HND") -> tuple[torch.Tensor, torch.Tensor]:
    """``(k, v)``, each ``[num_pages, num_kv_heads, page_size, head_dim]`` (HND view), from a
    5-D ``[num_pages, 2, ...]`` tensor or a ``(k, v)`` pair in ``kv_layout``."""
    if isinstance(kv_cache, (tuple, list)):
        k, v = kv_cache
    else:
        k, v = kv_cache.unbind(dim=1)
    if kv_layout.upper() == "NHD":
        k, v = k.transpose(1, 2), v.transpose(1, 2)
    return k, v


def _attend(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pages: list[int],
    kv_len: int,
    scale: float,
    window_left: int,
) -> torch.Tensor:
    """One request: ``q`` ``[q_len, H, D]`` against its ``kv_len`` paged tokens -> ``[q_len, H, D]`` float32."""
    q_len, heads, dim = q.shape
    idx = torch.tensor(pages, dtype=torch.long, device=k_cache.device)
    k = k_cache[idx].permute(1, 0, 2, 3).reshape(k_cache.shape[1], -1, dim)[:, :kv_len].float()  # [Hk, kv, D]
    v = v_cache[idx].permute(1, 0, 2, 3).reshape(v_cache.shape[1], -1, dim)[:, :kv_len].float()
    group = heads // k.shape[0]
    k = k.repeat_interleave(group, dim=0)
    v = v.repeat_interleave(group, dim=0)
    scores = (q.float().transpose(0, 1) @ k.transpose(1, 2)) * scale  # [H, q_len, kv]
    pos_q = torch.arange(kv_len - q_len, kv_len, device=q.device).unsqueeze(1)
    pos_k = torch.arange(kv_len, device=q.device).unsqueeze(0)
    masked = pos_k > pos_q
    if window_left is not None and window_left >= 0:
        masked |= pos_k < pos_q - window_left
    scores = scores.masked_fill(masked, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(0, 1)


def _pages_of(block_tables: torch.Tensor, i: int, kv_len: int, page_size: int) -> list[int]:
    return block_tables[i, : -(-kv_len // page_size)].tolist()


def batch_prefill_with_paged_kv_cache(
    q: torch.Tensor,
    kv_cache: KVCache,
    qo_indptr: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    sm_scale: float,
    window_left: int = -1,
    kv_layout: str = "HND",
    out: Optional[torch.Tensor] = None,
    workspace_buffer: Optional[torch.Tensor] = None,
    plan_cache: Optional[dict] = None,
) -> torch.Tensor:
    """Ragged causal attention over a paged prefix (the extend-shaped kernel).

    Args:
        q: ``[qo_indptr[-1], num_qo_heads, head_dim]``, query rows of all requests back to back.
        kv_cache: HND ``[num_pages, 2, num_kv_heads, page_size, head_dim]`` (or NHD / a pair).
        qo_indptr: ``[batch_size + 1]`` int32 query offsets (``cu_seqlens_q``); the
            batch size is read from its shape, as FlashInfer's plan() and the fixed
            trtllm context call do (SGLang #21649).
        block_tables: ``[batch_size, max_pages]`` int32 page ids per request.
        seq_lens: ``[batch_size]`` int32 KV tokens per request, new rows included.
        sm_scale: softmax scale (``layer.scaling``).
        window_left: sliding window (``-1``: none).
        kv_layout: ``"HND"`` or ``"NHD"``.
        out: optional ``[rows, num_qo_heads, head_dim]`` output written in place.
        workspace_buffer, plan_cache: the CUDA path's state (FlashInfer workspace, the
            per-step planned wrappers); accepted and unused here, so both paths share
            one call.

    Returns:
        ``out`` (or a new tensor in ``q``'s dtype). Rows past ``qo_indptr[-1]`` are untouched.
    """
    del workspace_buffer, plan_cache
    k_cache, v_cache = split_kv_cache(kv_cache, kv_layout)
    page_size = k_cache.shape[2]
    if out is None:
        out = torch.empty_like(q)
    offsets = qo_indptr.tolist()
    lens = seq_lens.tolist()
    for i in range(len(offsets) - 1):
        lo, hi = offsets[i], offsets[i + 1]
        if hi == lo:
            continue
        kv_len = lens[i]
        o = _attend(q[lo:hi], k_cache, v_cache, _pages_of(block_tables, i, kv_len, page_size), kv_len, sm_scale, window_left)
        out[lo:hi] = o.to(out.dtype)
    return out


def trtllm_batch_decode_with_kv_cache(
    query: torch.Tensor,
    kv_cache: KVCache,
    workspace_buffer: Optional[torch.Tensor],
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    max_seq_len: int,
    bmm1_scale: float = 1.0,
    bmm2_scale: float = 1.0,
    window_left: int = -1,
    out: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
    kv_layout: str = "HND",
    q_len_per_req: Optional[int] = 1,
) -> torch.Tensor:
    """Uniform-``q_len_per_req`` paged decode: FlashInfer's
    ``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` argument contract (the
    subset the reference backend passes; ``workspace_buffer`` and ``max_seq_len`` are
    accepted and unused, as scratch / a launch bound).

    Args:
        query: ``[batch_size * q_len_per_req, num_qo_heads, head_dim]``; request ``i``
            owns rows ``[i * q_len_per_req, (i + 1) * q_len_per_req)``.
        kv_cache: HND ``[num_pages, 2, num_kv_heads, page_size, head_dim]`` (or NHD / a pair).
        block_tables: ``[>= batch_size, max_pages]`` int32 page ids.
        seq_lens: ``[>= batch_size]`` int32 KV tokens per request, new rows included.
        max_seq_len: upper bound on ``seq_lens`` (tokens).
        bmm1_scale: softmax scale (q.k scale). bmm2_scale: output scale.
        window_left: sliding window (``-1``: none).
        out, out_dtype: optional output buffer / dtype.
        q_len_per_req: query rows per request (1 for DECODE, the draft tokens for
            TARGET_VERIFY). Ragged accept lengths (DRAFT_EXTEND_V2) do not fit this
            contract: SGLang #24856.

    Returns:
        ``[batch_size * q_len_per_req, num_qo_heads, head_dim]``.
    """
    del workspace_buffer, max_seq_len
    q_len = q_len_per_req or 1
    k_cache, v_cache = split_kv_cache(kv_cache, kv_layout)
    page_size = k_cache.shape[2]
    if out is None:
        out = torch.empty_like(query, dtype=out_dtype or query.dtype)
    batch = query.shape[0] // q_len
    lens = seq_lens[:batch].tolist()
    for i in range(batch):
        rows = slice(i * q_len, (i + 1) * q_len)
        kv_len = lens[i]
        o = _attend(query[rows], k_cache, v_cache, _pages_of(block_tables, i, kv_len, page_size), kv_len, bmm1_scale, window_left)
        out[rows] = (o * bmm2_scale).to(out.dtype)
    return out


def trtllm_batch_context_with_kv_cache(
    query: torch.Tensor,
    kv_cache: KVCache,
    workspace_buffer: Optional[torch.Tensor],
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    max_q_len: int,
    max_kv_len: int,
    bmm1_scale: float,
    bmm2_scale: float,
    batch_size: int,
    cum_seq_lens_q: torch.Tensor,
    cum_seq_lens_kv: torch.Tensor,
    window_left: int = -1,
    out: Optional[torch.Tensor] = None,
    out_dtype: Optional[torch.dtype] = None,
    kv_layout: str = "HND",
) -> torch.Tensor:
    """``flashinfer.prefill.trtllm_batch_context_with_kv_cache``'s contract (the subset
    above): ragged causal attention of ``batch_size`` requests, query rows of request
    ``i`` at ``cum_seq_lens_q[i]:cum_seq_lens_q[i + 1]``, KV through ``block_tables[i]``
    and ``seq_lens[i]``.

    Args:
        query: ``[cum_seq_lens_q[-1], num_qo_heads, head_dim]``.
        batch_size: requests to walk. Trusted, as the CUDA kernel trusts it: a value past
            ``cum_seq_lens_q.shape[0] - 1`` raises ``IndexError`` here where the GPU reads
            out of bounds (SGLang #21649).
        cum_seq_lens_q, cum_seq_lens_kv: ``[batch_size + 1]`` int32 token offsets
            (``cum_seq_lens_kv`` is accepted and unused: ``seq_lens`` gives the lengths).
        Others as :func:`trtllm_batch_decode_with_kv_cache`.
    """
    del workspace_buffer, max_q_len, max_kv_len, cum_seq_lens_kv
    k_cache, v_cache = split_kv_cache(kv_cache, kv_layout)
    page_size = k_cache.shape[2]
    if out is None:
        out = torch.empty_like(query, dtype=out_dtype or query.dtype)
    offsets = cum_seq_lens_q.tolist()
    lens = seq_lens.tolist()
    for i in range(batch_size):
        lo, hi = offsets[i], offsets[i + 1]
        if hi == lo:
            continue
        kv_len = lens[i]
        o = _attend(query[lo:hi], k_cache, v_cache, _pages_of(block_tables, i, kv_len, page_size), kv_len, bmm1_scale, window_left)
        out[lo:hi] = (o * bmm2_scale).to(out.dtype)
    return out
