"""The CUDA path: the same two kernel contracts as :mod:`.torch_kernels`, on FlashInfer.

* :func:`batch_prefill_with_paged_kv_cache`: on SM100 the trtllm-gen context kernel
  (``trtllm_batch_context_with_kv_cache``, batch size ``qo_indptr.shape[0] - 1``; not run
  here: no SM100 was available, signature checked against 0.7.2.post1 and the routing in
  the CPU tests); elsewhere ``flashinfer.BatchPrefillWithPagedKVCacheWrapper``
  (``backend="fa3"`` on SM90, ``"fa2"`` elsewhere), planned once per step and block table
  (the wrappers are cached in the caller's ``plan_cache``, the per-step metadata), then
  run per layer. The block table and ``seq_lens`` are turned into FlashInfer's CSR
  (``paged_kv_indptr`` / ``paged_kv_indices`` / ``paged_kv_last_page_len``) at plan
  time: a host sync, so extend-shaped work runs outside CUDA graphs (as SGLang's
  DRAFT_EXTEND_V2 does).
* :func:`trtllm_batch_decode_with_kv_cache`: ``flashinfer.decode.trtllm_batch_decode_with_kv_cache``
  (``backend="auto"``: xqa on SM90/SM120, trtllm-gen on SM100), graph-capturable. xqa
  needs a draft mask when ``q_len_per_req > 1`` (TARGET_VERIFY): a causal bit-packed
  uint16 ``[batch, q_len_per_req, 2 * ceil(q_len_per_req / 32)]`` mask is built here.

FlashInfer is imported lazily, only when a CUDA tensor gets here; nothing in this
module runs on the CPU. Signatures checked against flashinfer-python 0.7.2.post1.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["batch_prefill_with_paged_kv_cache", "trtllm_batch_context_with_kv_cache",
           "trtllm_batch_decode_with_kv_cache", "page_table_to_csr", "xqa_causal_draft_mask", "WORKSPACE_BYTES"]

WORKSPACE_BYTES = 128 * 1024 * 1024
"""Workspace FlashInfer's prefill wrappers and xqa / trtllm-gen want (zero-initialised:
xqa keeps semaphores in its first 8 MiB)."""

_MASKS: dict[tuple[int, int, str], torch.Tensor] = {}


def _sm_major(device: torch.device) -> int:
    return torch.cuda.get_device_capability(device)[0]


def page_table_to_csr(
    block_tables: torch.Tensor, seq_lens: torch.Tensor, page_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlashInfer's CSR form of a block table.

    Args:
        block_tables: ``[batch, max_pages]`` int32. seq_lens: ``[batch]`` int32 tokens.

    Returns:
        ``paged_kv_indptr`` ``[batch + 1]`` int32 (pages), ``paged_kv_indices``
        ``[indptr[-1]]`` int32, ``paged_kv_last_page_len`` ``[batch]`` int32 (``1..page_size``
        for a request with pages). One host sync (the boolean gather).
    """
    counts = (seq_lens + page_size - 1) // page_size
    indptr = torch.zeros(counts.shape[0] + 1, dtype=torch.int32, device=counts.device)
    indptr[1:] = torch.cumsum(counts, 0).to(torch.int32)
    cols = torch.arange(block_tables.shape[1], device=block_tables.device)
    indices = block_tables[cols.unsqueeze(0) < counts.unsqueeze(1)].to(torch.int32).contiguous()
    last = torch.where(counts > 0, seq_lens - (counts - 1) * page_size, torch.zeros_like(seq_lens)).to(torch.int32)
    return indptr, indices, last


def batch_prefill_with_paged_kv_cache(
    q: torch.Tensor,
    kv_cache: Any,
    qo_indptr: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    sm_scale: float,
    window_left: int = -1,
    kv_layout: str = "HND",
    out: Optional[torch.Tensor] = None,
    workspace_buffer: torch.Tensor,
    plan_cache: dict,
    backend: str = "auto",
    max_q_len: Optional[int] = None,
    max_kv_len: Optional[int] = None,
) -> torch.Tensor:
    """Ragged paged prefill on FlashInfer; same contract as
    :func:`.torch_kernels.batch_prefill_with_paged_kv_cache` plus the CUDA state.

    Args:
        q, kv_cache, qo_indptr, block_tables, seq_lens, sm_scale, window_left,
            kv_layout, out: as the torch kernel (tensors on one CUDA device).
        workspace_buffer: ``[WORKSPACE_BYTES]`` uint8 float workspace.
        plan_cache: per-step dict; a wrapper is planned once per
            ``(block_tables, window_left, sm_scale)`` and reused by every layer.
        backend: ``"auto"`` (trtllm-gen on SM100, fa3 on SM90, else fa2), ``"fa2"``,
            ``"fa3"`` or ``"trtllm-gen"``.
        max_q_len, max_kv_len: longest query / KV length (tokens), for trtllm-gen
            (required there; the batch size it is given is ``qo_indptr.shape[0] - 1``).

    Raises:
        NotImplementedError: ``"trtllm-gen"`` off SM100.
    """
    import flashinfer

    if backend == "auto":
        major = _sm_major(q.device)
        backend = "trtllm-gen" if major == 10 else "fa3" if major == 9 else "fa2"
    if backend == "trtllm-gen":
        cum_kv = torch.zeros(seq_lens.shape[0] + 1, dtype=torch.int32, device=seq_lens.device)
        cum_kv[1:] = torch.cumsum(seq_lens, 0)
        return trtllm_batch_context_with_kv_cache(
            query=q, kv_cache=kv_cache, workspace_buffer=workspace_buffer, block_tables=block_tables,
            seq_lens=seq_lens, max_q_len=max_q_len, max_kv_len=max_kv_len, bmm1_scale=sm_scale, bmm2_scale=1.0,
            batch_size=qo_indptr.shape[0] - 1, cum_seq_lens_q=qo_indptr, cum_seq_lens_kv=cum_kv,
            window_left=window_left, out=out, kv_layout=kv_layout,
        )
    if kv_layout.upper() == "HND":
        num_kv_heads, page_size = kv_cache.shape[-3], kv_cache.shape[-2]
    else:
        page_size, num_kv_heads = kv_cache.shape[-3], kv_cache.shape[-2]
    key = (block_tables.data_ptr(), tuple(block_tables.shape), window_left, sm_scale, kv_layout, backend)
    wrapper = plan_cache.get(key)
    if wrapper is None:
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace_buffer, kv_layout.upper(), backend=backend)
        indptr, indices, last = page_table_to_csr(block_tables, seq_lens, page_size)
        wrapper.plan(
            qo_indptr,
            indptr,
            indices,
            last,
            num_qo_heads=q.shape[1],
            num_kv_heads=num_kv_heads,
            head_dim_qk=q.shape[2],
            page_size=page_size,
            causal=True,
            sm_scale=sm_scale,
            window_left=window_left,
            q_data_type=q.dtype,
            kv_data_type=kv_cache.dtype,
        )
        plan_cache[key] = wrapper
    if out is None:
        out = torch.empty_like(q)
    rows = out.shape[0]
    total = q.shape[0]
    if rows == total:
        wrapper.run(q, kv_cache, out=out)
    else:  # a caller's buffer with extra rows: run into a view of the rows the plan covers
        wrapper.run(q, kv_cache, out=out[:total])
    return out


def xqa_causal_draft_mask(batch: int, q_len: int, device: torch.device) -> torch.Tensor:
    """xqa's speculative-decoding mask for linear (causal) drafts: row ``r`` of every
    request sees draft columns ``0..r``. Bit ``c`` of row ``r`` lives in uint16 word
    ``c // 16`` (rows padded to whole 32-bit words), as ``mha.cu``'s ``applyMaskFromInput``
    reads it. Shape ``[batch, q_len, 2 * ceil(q_len / 32)]`` uint16; cached per size."""
    key = (batch, q_len, str(device))
    mask = _MASKS.get(key)
    if mask is None:
        words = 2 * ((q_len + 31) // 32)
        cols = torch.arange(words * 16, device=device)
        rows = torch.arange(q_len, device=device)
        bits = (cols.unsqueeze(0) <= rows.unsqueeze(1)).to(torch.int32).view(q_len, words, 16)
        packed = (bits << torch.arange(16, device=device, dtype=torch.int32)).sum(-1)  # [q_len, words], < 2**16
        packed = torch.where(packed >= 2**15, packed - 2**16, packed).to(torch.int16).view(torch.uint16)
        mask = packed.unsqueeze(0).expand(batch, q_len, words).contiguous()
        _MASKS[key] = mask
    return mask


def trtllm_batch_decode_with_kv_cache(
    query: torch.Tensor,
    kv_cache: Any,
    workspace_buffer: torch.Tensor,
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
    """``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` with the xqa draft mask
    added when it is needed; arguments as the torch kernel of the same name."""
    from flashinfer.decode import trtllm_batch_decode_with_kv_cache as _decode

    q_len = q_len_per_req or 1
    mask = None
    if q_len > 1 and _sm_major(query.device) != 10:  # "auto" picks xqa off SM100
        mask = xqa_causal_draft_mask(query.shape[0] // q_len, q_len, query.device)
    return _decode(
        query=query,
        kv_cache=kv_cache,
        workspace_buffer=workspace_buffer,
        block_tables=block_tables,
        seq_lens=seq_lens,
        max_seq_len=max_seq_len,
        bmm1_scale=bmm1_scale,
        bmm2_scale=bmm2_scale,
        window_left=window_left,
        out=out,
        out_dtype=out_dtype,
        kv_layout=kv_layout,
        q_len_per_req=q_len,
        mask=mask,
    )


def trtllm_batch_context_with_kv_cache(
    query: torch.Tensor,
    kv_cache: Any,
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
    """``flashinfer.prefill.trtllm_batch_context_with_kv_cache`` (trtllm-gen), arguments as
    the torch kernel of the same name. The reference backend never routes here (it uses
    the paged prefill wrapper); the SGLang #21649 seed example does.

    Raises:
        NotImplementedError: the GPU is not SM100 (the trtllm-gen context cubins are
            Blackwell-only; on Hopper there is nothing to launch).
    """
    if _sm_major(query.device) != 10:
        raise NotImplementedError(
            f"trtllm_batch_context_with_kv_cache needs an SM100 GPU, this is SM{_sm_major(query.device)}x; "
            "use batch_prefill_with_paged_kv_cache (fa2/fa3) on Hopper"
        )
    from flashinfer.prefill import trtllm_batch_context_with_kv_cache as _context

    if workspace_buffer is None:
        workspace_buffer = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=query.device)
    return _context(
        query=query, kv_cache=kv_cache, workspace_buffer=workspace_buffer, block_tables=block_tables,
        seq_lens=seq_lens, max_q_len=max_q_len, max_kv_len=max_kv_len, bmm1_scale=bmm1_scale,
        bmm2_scale=bmm2_scale, batch_size=batch_size, cum_seq_lens_q=cum_seq_lens_q,
        cum_seq_lens_kv=cum_seq_lens_kv, window_left=window_left, out=out, out_dtype=out_dtype,
        kv_layout=kv_layout,
    )
