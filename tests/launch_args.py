"""Valid FlashInfer launch arguments built from per-request lengths, on any device.

Used by the CPU tests of the runtime guard (with stub kernels carrying the real
signatures), by the GPU fault-matrix script and by the guard benchmark (with the real
kernels). :func:`reference_attention` is a float64 torch reference of paged causal
attention with GQA, to tell a silent wrong output from a correct one.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch


def offsets(lengths: Sequence[int], device: str | torch.device = "cpu") -> torch.Tensor:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32, device=device)


def pages_for(seq_len: int, page_size: int) -> int:
    return -(-seq_len // page_size)


@dataclass
class PagedCase:
    """A consistent paged-KV batch: per-request query and KV lengths (KV includes the
    new tokens), query rows, a paged KV cache in HND layout, and its page table."""

    q_lens: list[int]
    kv_lens: list[int]
    page_size: int
    q: torch.Tensor  # [sum(q_lens), num_qo_heads, head_dim]
    kv_cache: torch.Tensor  # [num_pages, 2, num_kv_heads, page_size, head_dim]
    page_table: torch.Tensor  # [batch, max_pages] int32
    seq_lens: torch.Tensor  # [batch] int32
    cu_seqlens_q: torch.Tensor  # [batch + 1] int32
    cu_seqlens_kv: torch.Tensor  # [batch + 1] int32
    workspace: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return len(self.q_lens)

    @property
    def num_pages(self) -> int:
        return self.kv_cache.shape[0]

    def kv_indptr_indices_last(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FlashInfer's CSR form of the page table (kv_indptr, kv_indices, kv_last_page_len)."""
        dev = self.page_table.device
        counts = [pages_for(n, self.page_size) for n in self.kv_lens]
        rows = [self.page_table[i, :c] for i, c in enumerate(counts)]
        indices = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.int32, device=dev)
        last = [(n - (c - 1) * self.page_size) if c else 0 for n, c in zip(self.kv_lens, counts)]
        return offsets(counts, dev), indices.to(torch.int32).contiguous(), torch.tensor(last, dtype=torch.int32, device=dev)


def paged_case(
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    *,
    page_size: int = 16,
    num_kv_heads: int = 2,
    group: int = 4,
    head_dim: int = 64,
    extra_pages: int = 4,
    extra_cols: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    workspace_bytes: int | None = None,
) -> PagedCase:
    """Random data and a shuffled, consistent page table for the given lengths.

    ``workspace_bytes`` defaults to 128 MiB on a GPU (what xqa / trtllm-gen want) and
    a token 1 KiB on the CPU, where no kernel runs."""
    if workspace_bytes is None:
        workspace_bytes = 128 * 1024 * 1024 if str(device).startswith("cuda") else 1024
    assert len(q_lens) == len(kv_lens) and all(q <= k for q, k in zip(q_lens, kv_lens))
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    counts = [pages_for(n, page_size) for n in kv_lens]
    num_pages = sum(counts) + extra_pages
    ids = list(range(num_pages))
    rng.shuffle(ids)
    width = max(counts, default=0) + extra_cols
    table = torch.zeros(len(q_lens), max(width, 1), dtype=torch.int32)
    cursor = 0
    for i, c in enumerate(counts):
        table[i, :c] = torch.tensor(ids[cursor : cursor + c], dtype=torch.int32)
        cursor += c
    q = torch.randn(sum(q_lens), num_kv_heads * group, head_dim, generator=gen).to(dtype)
    kv = torch.randn(num_pages, 2, num_kv_heads, page_size, head_dim, generator=gen).to(dtype)
    return PagedCase(
        q_lens=list(q_lens),
        kv_lens=list(kv_lens),
        page_size=page_size,
        q=q.to(device),
        kv_cache=kv.to(device),
        page_table=table.to(device),
        seq_lens=torch.tensor(list(kv_lens), dtype=torch.int32, device=device),
        cu_seqlens_q=offsets(q_lens, device),
        cu_seqlens_kv=offsets(kv_lens, device),
        workspace=torch.zeros(workspace_bytes, dtype=torch.uint8, device=device),
    )


def _paged_kwargs(case: PagedCase) -> dict[str, Any]:
    """The arguments both trtllm paged kernels take alike (HND cache, softmax scale 1/sqrt(D))."""
    return dict(
        query=case.q,
        kv_cache=case.kv_cache,
        workspace_buffer=case.workspace,
        block_tables=case.page_table,
        seq_lens=case.seq_lens,
        bmm1_scale=1.0 / math.sqrt(case.q.shape[-1]),
        bmm2_scale=1.0,
        kv_layout="HND",
    )


def decode_kwargs(case: PagedCase) -> dict[str, Any]:
    """``trtllm_batch_decode_with_kv_cache``: uniform ``q_len_per_req`` (decode / target-verify)."""
    q_len = case.q_lens[0] if case.q_lens else 1
    assert all(n == q_len for n in case.q_lens), "the decode kernel needs a uniform q_len_per_req"
    return dict(_paged_kwargs(case), max_seq_len=max(case.kv_lens, default=0), q_len_per_req=q_len)


def context_kwargs(case: PagedCase) -> dict[str, Any]:
    """``trtllm_batch_context_with_kv_cache``: ragged extend over a paged prefix."""
    return dict(
        _paged_kwargs(case),
        max_q_len=max(case.q_lens, default=0),
        max_kv_len=max(case.kv_lens, default=0),
        batch_size=case.batch_size,
        cum_seq_lens_q=case.cu_seqlens_q,
        cum_seq_lens_kv=case.cu_seqlens_kv,
    )


def reference_attention(case: PagedCase, q_lens: Sequence[int] | None = None) -> torch.Tensor:
    """Causal paged attention in float64: request ``i``'s query rows are the last
    ``q_lens[i]`` positions of its ``kv_lens[i]`` tokens. Returns ``[rows, heads, dim]``."""
    q_lens = list(q_lens or case.q_lens)
    q = case.q.double().cpu()
    kv = case.kv_cache.double().cpu()
    table = case.page_table.cpu()
    heads, dim = q.shape[1], q.shape[2]
    kv_heads = kv.shape[2]
    out = torch.zeros_like(q)
    row = 0
    for i, (ql, kl) in enumerate(zip(q_lens, case.kv_lens)):
        pages = table[i, : pages_for(kl, case.page_size)].long()
        k = kv[pages, 0].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :kl]  # [Hk, kl, D]
        v = kv[pages, 1].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :kl]
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        qi = q[row : row + ql].transpose(0, 1)  # [H, ql, D]
        scores = qi @ k.transpose(1, 2) / math.sqrt(dim)
        pos_q = torch.arange(kl - ql, kl).unsqueeze(1)
        mask = torch.arange(kl).unsqueeze(0) > pos_q
        scores = scores.masked_fill(mask, float("-inf"))
        out[row : row + ql] = (scores.softmax(-1) @ v).transpose(0, 1)
        row += ql
    return out
