"""Builders and hypothesis strategies for VALID attention launches.

:func:`build_case` turns per-request query lengths and KV lengths into a
self-consistent launch (AttentionBatch + PagedKVCache [+ SlidingWindowPool])
on CPU int32 tensors, the way a correct engine would. :func:`cases` draws such
launches for every forward mode. :func:`build_csr_case` / :func:`csr_cases` do
the same for FlashInfer's CSR paged-KV wrappers (``kv_indptr``, ``kv_indices``,
``kv_last_page_len``), :func:`build_ragged_kv_case` / :func:`ragged_kv_cases`
for a ragged (non-paged) K/V (``trtllm_ragged_attention_deepseek``). Tests
mutate one thing and check that exactly the matching invariant fires.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import torch
from hypothesis import strategies as st

from guardrails import (
    AttentionBatch,
    ForwardMode,
    PagedKVCache,
    SlidingWindowPool,
    find_violations,
)


def pages_for(seq_len: int, page_size: int) -> int:
    return -(-seq_len // page_size)


def i32(values: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def offsets(lengths: Sequence[int]) -> list[int]:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


@dataclass(frozen=True)
class Case:
    """One launch: the batch and what it reads, plus the facts used to build it."""

    batch: AttentionBatch
    kv_cache: Optional[PagedKVCache]
    swa_pool: Optional[SlidingWindowPool] = None
    q_lens: tuple[int, ...] = ()
    kv_lens: tuple[int, ...] = ()

    def violations(self, **kwargs):
        return find_violations(self.batch, self.kv_cache, self.swa_pool, **kwargs)

    def ids(self, **kwargs) -> set[str]:
        return {e.invariant for e in self.violations(**kwargs)}

    def with_batch(self, **update) -> "Case":
        return replace(self, batch=self.batch.replace(**update))


def _kv_cache(num_pages: int, page_size: int, num_kv_heads: int, head_dim: int, layout: str) -> PagedKVCache:
    return PagedKVCache(
        num_pages=num_pages, page_size=page_size, num_kv_heads=num_kv_heads, head_dim=head_dim,
        layout=layout, device="cpu", dtype="bfloat16", head_dim_stride=1,
    )


def _kernel_and_q_len(
    mode: ForwardMode, q_lens: Sequence[int], kernel: Optional[str], q_len_per_req: Optional[int]
) -> tuple[Optional[str], Optional[int]]:
    """``kernel="auto"``: decode for uniform modes, prefill for ragged ones (``None`` stays
    unknown to the guard); a decode kernel with one q length > 1 gets it as ``q_len_per_req``."""
    if kernel == "auto":
        kernel = "decode" if mode.is_uniform_q_len() else "prefill"
    if kernel == "decode" and q_len_per_req is None and len(set(q_lens)) == 1 and q_lens[0] > 1:
        q_len_per_req = q_lens[0]
    return kernel, q_len_per_req


def build_case(
    mode: ForwardMode | str,
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    *,
    kernel: Optional[str] = "auto",
    q_len_per_req: Optional[int] = None,
    page_size: int = 4,
    num_kv_heads: int = 2,
    group: int = 2,
    head_dim: int = 8,
    layout: str = "HND",
    extra_pool_pages: int = 3,
    extra_cols: int = 1,
    filler: int = -1,
    with_query: bool = False,
    explicit_batch_size: bool = True,
    with_cu_seqlens_kv: bool = True,
    with_page_size: bool = True,
    max_slack: int = 0,
    swa: bool = False,
    window_left: Optional[int] = None,
    extra_swa_pages: int = 2,
    with_swa_page_table: bool = True,
    with_translation: bool = True,
    seed: int = 0,
) -> Case:
    """A valid launch for the given per-request query lengths and KV lengths
    (``kv_lens[i] >= q_lens[i]``). ``kernel="auto"`` picks decode for uniform
    modes and prefill for ragged ones; ``None`` leaves it unknown. Page ids are a random permutation of the
    pool; page-table entries past each request's last page hold ``filler``."""
    mode = ForwardMode.parse(mode)
    rng = random.Random(seed)
    bs = len(q_lens)
    assert len(kv_lens) == bs and all(k >= q for q, k in zip(q_lens, kv_lens))
    kernel, q_len_per_req = _kernel_and_q_len(mode, q_lens, kernel, q_len_per_req)

    needs = [pages_for(k, page_size) for k in kv_lens]
    total_pages = sum(needs)
    num_pages = total_pages + extra_pool_pages
    ids = rng.sample(range(num_pages), total_pages)
    width = max(needs, default=0) + extra_cols
    rows, pos = [], 0
    for n in needs:
        rows.append(ids[pos : pos + n] + [filler] * (width - n))
        pos += n

    rows_q = sum(q_lens)
    qo_heads = num_kv_heads * group
    query = torch.empty(rows_q, qo_heads, head_dim, dtype=torch.bfloat16) if with_query else None
    kv_cache = _kv_cache(num_pages, page_size, num_kv_heads, head_dim, layout)

    swa_pool = None
    swa_rows = None
    if swa and not with_swa_page_table:
        # No translation at all: valid only when SWA layers can address the
        # full pool's page ids directly (an SWA pool at least as large).
        swa_pool = SlidingWindowPool(
            num_swa_pages=num_pages + extra_swa_pages,
            page_size=page_size,
            window_left=window_left,
        )
    elif swa:
        # SWA pages for the pages an SWA layer reads (inside the window);
        # slot 0 is SGLang's dummy page that out-of-window tokens map to.
        swa_pages = {}
        next_swa = 1
        for i, (q, k) in enumerate(zip(q_lens, kv_lens)):
            lo = 0
            if window_left is not None:
                lo = max(0, k - max(q, 1) - window_left) // page_size
            for j in range(lo, needs[i]):
                swa_pages[rows[i][j]] = next_swa
                next_swa += 1
        num_swa_pages = next_swa + extra_swa_pages
        mapping = torch.zeros(num_pages * page_size + page_size + 1, dtype=torch.int64)
        mapping[-1] = -1
        for full, swa_page in swa_pages.items():
            for t in range(page_size):
                mapping[full * page_size + t] = swa_page * page_size + t
        swa_rows = [
            [swa_pages.get(p, 0) if j < needs[i] else filler for j, p in enumerate(row)]
            for i, row in enumerate(rows)
        ]
        swa_pool = SlidingWindowPool(
            num_swa_pages=num_swa_pages,
            page_size=page_size,
            full_to_swa=mapping if with_translation else None,
            window_left=window_left,
        )

    def table(values):
        return i32(values) if bs else torch.empty((0, width), dtype=torch.int32)

    batch = AttentionBatch(
        forward_mode=mode,
        kernel=kernel,
        batch_size=bs if explicit_batch_size else None,
        num_query_rows=rows_q,
        query=query,
        cu_seqlens_q=i32(offsets(q_lens)),
        cu_seqlens_kv=i32(offsets(kv_lens)) if with_cu_seqlens_kv else None,
        seq_lens=i32(list(kv_lens)) if bs else torch.empty(0, dtype=torch.int32),
        page_table=table(rows),
        swa_page_table=table(swa_rows) if swa_rows is not None and with_swa_page_table else None,
        max_seq_len_q=max(q_lens, default=0) + max_slack,
        max_seq_len_kv=max(kv_lens, default=0) + max_slack,
        q_len_per_req=q_len_per_req,
        page_size=page_size if with_page_size else None,
    )
    return Case(batch, kv_cache, swa_pool, tuple(q_lens), tuple(kv_lens))


def last_page_lens(kv_lens: Sequence[int], page_size: int, empty: int = 0) -> list[int]:
    """FlashInfer's ``kv_last_page_len`` for token lengths: ``(L - 1) % page_size + 1``,
    ``empty`` for a request without pages (the kernel ignores it)."""
    return [(n - 1) % page_size + 1 if n > 0 else empty for n in kv_lens]


def build_csr_case(
    mode: ForwardMode | str,
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    *,
    kernel: Optional[str] = "auto",
    q_len_per_req: Optional[int] = None,
    page_size: int = 4,
    num_kv_heads: int = 2,
    group: int = 2,
    head_dim: int = 8,
    layout: str = "NHD",
    extra_pool_pages: int = 3,
    extra_indices: int = 0,
    filler: int = -1,
    empty_last_page_len: int = 0,
    with_qo_indptr: Optional[bool] = None,
    with_seq_lens: bool = False,
    with_cu_seqlens_kv: bool = False,
    with_query: bool = False,
    explicit_batch_size: bool = False,
    with_page_size: bool = True,
    with_max: bool = False,
    max_slack: int = 0,
    seed: int = 0,
) -> Case:
    """A valid launch through FlashInfer's paged-KV wrappers, in CSR form.

    ``kernel="prefill"`` is ``BatchPrefillWithPagedKVCacheWrapper.plan(qo_indptr,
    paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len, ...)`` (ragged q);
    ``kernel="decode"`` is ``BatchDecodeWithPagedKVCacheWrapper.plan(indptr,
    indices, last_page_len, ...)`` (uniform ``q_len_per_req``, no qo_indptr
    unless ``with_qo_indptr``). ``"auto"`` picks decode for uniform modes.
    Page ids are a random permutation of the pool; ``kv_indices`` carries
    ``extra_indices`` unread ``filler`` entries after ``kv_indptr[-1]`` (a
    CUDA-graph-sized buffer). The optional token-level fields (seq_lens,
    cu_seqlens_kv, max_seq_len_*) agree with the CSR."""
    mode = ForwardMode.parse(mode)
    rng = random.Random(seed)
    bs = len(q_lens)
    assert len(kv_lens) == bs and all(k >= q >= 0 for q, k in zip(q_lens, kv_lens))
    kernel, q_len_per_req = _kernel_and_q_len(mode, q_lens, kernel, q_len_per_req)
    if with_qo_indptr is None:
        with_qo_indptr = kernel != "decode"

    needs = [pages_for(k, page_size) for k in kv_lens]
    total_pages = sum(needs)
    num_pages = total_pages + extra_pool_pages
    indices = rng.sample(range(num_pages), total_pages) + [filler] * extra_indices
    rows_q = sum(q_lens)
    query = (
        torch.empty(rows_q, num_kv_heads * group, head_dim, dtype=torch.bfloat16) if with_query else None
    )

    def vec(values):
        return i32(list(values)) if len(values) else torch.empty(0, dtype=torch.int32)

    batch = AttentionBatch(
        forward_mode=mode,
        kernel=kernel,
        batch_size=bs if explicit_batch_size else None,
        num_query_rows=rows_q,
        query=query,
        cu_seqlens_q=i32(offsets(q_lens)) if with_qo_indptr else None,
        cu_seqlens_kv=i32(offsets(kv_lens)) if with_cu_seqlens_kv else None,
        seq_lens=vec(kv_lens) if with_seq_lens else None,
        kv_indptr=i32(offsets(needs)),
        kv_indices=vec(indices),
        kv_last_page_len=vec(last_page_lens(kv_lens, page_size, empty_last_page_len)),
        max_seq_len_q=max(q_lens, default=0) + max_slack if with_max else None,
        max_seq_len_kv=max(kv_lens, default=0) + max_slack if with_max else None,
        q_len_per_req=q_len_per_req,
        page_size=page_size if with_page_size else None,
    )
    kv_cache = _kv_cache(num_pages, page_size, num_kv_heads, head_dim, layout)
    return Case(batch, kv_cache, None, tuple(q_lens), tuple(kv_lens))


def build_ragged_kv_case(
    mode: ForwardMode | str,
    q_lens: Sequence[int],
    kv_lens: Sequence[int],
    *,
    extra_kv_rows: int = 0,
    with_seq_lens: bool = True,
    with_query: bool = False,
    explicit_batch_size: bool = True,
    with_max: bool = True,
    max_slack: int = 0,
) -> Case:
    """A valid ``trtllm_ragged_attention_deepseek`` launch: K/V are ragged
    ``[num_kv_rows, num_kv_heads, head_dim]`` (``num_kv_rows`` >= the KV tokens
    of all requests, ``extra_kv_rows`` of padding), offsets in
    ``cum_seq_lens_kv``; no paged KV cache."""
    mode = ForwardMode.parse(mode)
    bs = len(q_lens)
    assert len(kv_lens) == bs and all(k >= q >= 0 for q, k in zip(q_lens, kv_lens))
    rows_q = sum(q_lens)
    batch = AttentionBatch(
        forward_mode=mode,
        kernel="prefill",
        batch_size=bs if explicit_batch_size else None,
        num_query_rows=rows_q,
        query=torch.empty(rows_q, 4, 8, dtype=torch.bfloat16) if with_query else None,
        cu_seqlens_q=i32(offsets(q_lens)),
        cu_seqlens_kv=i32(offsets(kv_lens)),
        seq_lens=(i32(list(kv_lens)) if bs else torch.empty(0, dtype=torch.int32)) if with_seq_lens else None,
        max_seq_len_q=max(q_lens, default=0) + max_slack if with_max else None,
        max_seq_len_kv=max(kv_lens, default=0) + max_slack if with_max else None,
        num_kv_rows=sum(kv_lens) + extra_kv_rows,
    )
    return Case(batch, None, None, tuple(q_lens), tuple(kv_lens))


# ---------------------------------------------------------------- strategies

_RAGGED = [ForwardMode.EXTEND, ForwardMode.MIXED, ForwardMode.DRAFT_EXTEND, ForwardMode.DRAFT_EXTEND_V2]


@st.composite
def q_and_kv_lens(draw, mode: ForwardMode, max_bs: int = 6):
    """Per-request (q_lens, kv_lens, q_len_per_req) for a forward mode."""
    if mode is ForwardMode.IDLE:
        return [], [], None
    bs = draw(st.integers(1, max_bs))
    q_len_per_req = None
    if mode is ForwardMode.DECODE:
        q_lens = [1] * bs
        q_len_per_req = draw(st.sampled_from([None, 1]))
    elif mode is ForwardMode.TARGET_VERIFY:
        q_len_per_req = draw(st.integers(2, 5))
        q_lens = [q_len_per_req] * bs
    else:  # ragged: EXTEND with prefixes, draft extend with accept lengths
        hi = 12 if mode in (ForwardMode.EXTEND, ForwardMode.MIXED) else 5
        q_lens = draw(st.lists(st.integers(1, hi), min_size=bs, max_size=bs))
    prefixes = draw(st.lists(st.integers(0, 20), min_size=bs, max_size=bs))
    return q_lens, [q + p for q, p in zip(q_lens, prefixes)], q_len_per_req


@st.composite
def cases(draw, modes: Sequence[ForwardMode] = tuple(ForwardMode)):
    """A valid launch for a forward mode drawn from ``modes``."""
    mode = draw(st.sampled_from(list(modes)))
    q_lens, kv_lens, q_len_per_req = draw(q_and_kv_lens(mode))
    if mode.is_uniform_q_len():
        kernel = draw(st.sampled_from(["decode", "prefill", None]))
    else:
        kernel = draw(st.sampled_from(["prefill", None]))
    swa = draw(st.booleans())
    return build_case(
        mode,
        q_lens,
        kv_lens,
        kernel=kernel,
        q_len_per_req=q_len_per_req,
        page_size=draw(st.sampled_from([1, 2, 4, 16])),
        num_kv_heads=draw(st.sampled_from([1, 2, 4])),
        group=draw(st.sampled_from([1, 2, 8])),
        layout=draw(st.sampled_from(["NHD", "HND"])),
        extra_pool_pages=draw(st.integers(0, 4)),
        extra_cols=draw(st.integers(0, 2)),
        filler=draw(st.sampled_from([-1, 0, 10**6])),
        with_query=draw(st.booleans()),
        explicit_batch_size=draw(st.booleans()),
        with_cu_seqlens_kv=draw(st.booleans()),
        with_page_size=draw(st.booleans()),
        max_slack=draw(st.integers(0, 2)),
        swa=swa,
        window_left=draw(st.sampled_from([None, 0, 3, 8])) if swa else None,
        extra_swa_pages=draw(st.integers(0, 3)),
        with_swa_page_table=draw(st.booleans()) if swa else True,
        with_translation=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def csr_cases(draw):
    """A valid launch through a FlashInfer paged-KV wrapper in CSR form: the
    prefill wrapper (ragged q via qo_indptr, any forward mode, requests with
    no new tokens and/or no pages allowed) or the decode wrapper (uniform
    q_len_per_req: DECODE, TARGET_VERIFY)."""
    wrapper = draw(st.sampled_from(["prefill", "decode"]))
    if wrapper == "decode":
        mode = draw(st.sampled_from([ForwardMode.DECODE, ForwardMode.TARGET_VERIFY]))
    else:
        mode = draw(st.sampled_from(list(ForwardMode)))
    q_lens, kv_lens, q_len_per_req = draw(q_and_kv_lens(mode))
    if wrapper == "prefill" and mode in (ForwardMode.EXTEND, ForwardMode.MIXED):
        # a request may bring no new tokens (prefix only), or nothing at all (0 pages)
        empty = draw(st.lists(st.booleans(), min_size=len(q_lens), max_size=len(q_lens)))
        kv_lens = [k - q if e else k for q, k, e in zip(q_lens, kv_lens, empty)]
        q_lens = [0 if e else q for q, e in zip(q_lens, empty)]
    page_size = draw(st.sampled_from([1, 2, 4, 16]))
    return build_csr_case(
        mode,
        q_lens,
        kv_lens,
        kernel=wrapper,
        q_len_per_req=q_len_per_req,
        page_size=page_size,
        num_kv_heads=draw(st.sampled_from([1, 2, 4])),
        group=draw(st.sampled_from([1, 2, 8])),
        layout=draw(st.sampled_from(["NHD", "HND"])),
        extra_pool_pages=draw(st.integers(0, 4)),
        extra_indices=draw(st.integers(0, 5)),
        filler=draw(st.sampled_from([-1, 0, 10**6])),
        empty_last_page_len=draw(st.sampled_from([0, page_size])),
        with_qo_indptr=True if wrapper == "prefill" else draw(st.booleans()),
        with_seq_lens=draw(st.booleans()),
        with_cu_seqlens_kv=draw(st.booleans()),
        with_query=draw(st.booleans()),
        explicit_batch_size=draw(st.booleans()),
        with_page_size=draw(st.booleans()),
        with_max=draw(st.booleans()),
        max_slack=draw(st.integers(0, 2)),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def ragged_kv_cases(draw):
    """A valid ragged-K/V launch (``trtllm_ragged_attention_deepseek``)."""
    mode = draw(st.sampled_from([ForwardMode.EXTEND, ForwardMode.MIXED, ForwardMode.DRAFT_EXTEND,
                                 ForwardMode.DRAFT_EXTEND_V2, ForwardMode.TARGET_VERIFY]))
    q_lens, kv_lens, _ = draw(q_and_kv_lens(mode))
    return build_ragged_kv_case(
        mode,
        q_lens,
        kv_lens,
        extra_kv_rows=draw(st.integers(0, 3)),
        with_seq_lens=draw(st.booleans()),
        with_query=draw(st.booleans()),
        explicit_batch_size=draw(st.booleans()),
        with_max=draw(st.booleans()),
        max_slack=draw(st.integers(0, 2)),
    )
