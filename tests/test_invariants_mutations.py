"""One targeted mutation per invariant: a valid launch passes, the mutated one
is caught by exactly that invariant, and the message names the fields.

Every catalog id must have at least one mutation here
(``test_every_invariant_has_a_mutation`` fails when a new invariant lands
without one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pytest
import torch

from guardrails import CATALOG, FmhaInvariantError, GraphLayout, PagedKVCache
from guardrails.errors import format_fields
from tests.strategies import (
    Case,
    build_case,
    build_csr_case,
    build_ragged_kv_case,
    i32,
    offsets,
    pages_for,
)

ANY = object()  # expected field whose value is not pinned


@dataclass
class Mutation:
    invariant: str
    name: str
    base: Case
    mutate: Callable[[Case], Case]
    fields: dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.invariant}:{self.name}"


def _set(t: torch.Tensor, index, value) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


def _extend_case() -> Case:
    return build_case("extend", [3, 2, 5, 4, 1, 6, 2, 3, 1, 4], [10, 2, 9, 4, 7, 6, 30, 3, 1, 12])


def _decode_case(**kw) -> Case:
    return build_case("decode", [1] * 8, [5, 9, 1, 17, 4, 8, 2, 11], **kw)


def _csr_prefill_case(**kw) -> Case:
    # FlashInfer BatchPrefillWithPagedKVCacheWrapper, page_size 4: pages [3, 1, 3, 0, 2],
    # kv_indptr [0, 3, 4, 7, 7, 9], kv_last_page_len [2, 2, 1, 0, 3]
    return build_csr_case("extend", [3, 2, 5, 0, 1], [10, 2, 9, 0, 7], kernel="prefill", **kw)


def _csr_decode_case(**kw) -> Case:
    # FlashInfer BatchDecodeWithPagedKVCacheWrapper: no qo_indptr, batch size from kv_indptr
    return build_csr_case("decode", [1] * 6, [5, 9, 1, 17, 4, 8], kernel="decode", **kw)


def _last_used_column(case: Case, i: int) -> int:
    return pages_for(case.kv_lens[i], case.kv_cache.page_size) - 1


def _mutations() -> list[Mutation]:
    out: list[Mutation] = []
    add = out.append

    # ---------------------------------------------------------------- batch-size
    add(Mutation(
        "batch-size", "dp-padded-batch-size-21649", _extend_case(),
        lambda c: c.with_batch(batch_size=12),
        {"batch_size": 12, "cu_seqlens_q.shape[0] - 1": 10, "page_table.shape[0]": 10},
    ))
    base = _decode_case(explicit_batch_size=False)

    def two_extra_rows(c: Case) -> Case:
        b = c.batch
        return c.with_batch(
            seq_lens=torch.cat([b.seq_lens, i32([5, 5])]),
            page_table=torch.cat([b.page_table, b.page_table[:2]]),
        )

    add(Mutation(
        "batch-size", "two-extra-seq-lens-and-block-table-rows", base, two_extra_rows,
        {"cu_seqlens_q.shape[0] - 1": 8, "seq_lens.shape[0]": 10, "page_table.shape[0]": 10},
    ))

    # ---------------------------------------------------------------- query-rows
    add(Mutation(
        "query-rows", "query-padded-on-decode-kernel", _decode_case(),
        lambda c: c.with_batch(num_query_rows=10),
        {"num_query_rows": 10, "batch_size": 8, "batch_size * q_len_per_req": 8},
    ))
    base = build_case("target_verify", [3] * 4, [6, 7, 8, 9], kernel="decode")
    add(Mutation(
        "query-rows", "q-len-per-req-not-the-draft-token-count", base,
        lambda c: c.with_batch(q_len_per_req=2),
        {"num_query_rows": 12, "q_len_per_req": 2, "batch_size * q_len_per_req": 8},
    ))
    base = build_case("extend", [3, 2], [4, 9], with_query=True)
    add(Mutation(
        "query-rows", "query-tensor-vs-num-query-rows", base,
        lambda c: c.with_batch(num_query_rows=6),
        {"q.shape[0]": 5, "num_query_rows": 6},
    ))

    # ----------------------------------------------------- metadata-dtype-device
    add(Mutation(
        "metadata-dtype-device", "int64-cu-seqlens-q", _extend_case(),
        lambda c: c.with_batch(cu_seqlens_q=c.batch.cu_seqlens_q.to(torch.int64)),
        {"cu_seqlens_q.dtype": "int64"},
    ))
    add(Mutation(
        "metadata-dtype-device", "page-table-column-major", _extend_case(),
        lambda c: c.with_batch(page_table=c.batch.page_table.t().contiguous().t()),
        {"page_table.stride(-1)": 10},
    ))
    add(Mutation(
        "metadata-dtype-device", "seq-lens-on-another-device", _extend_case(),
        lambda c: c.with_batch(seq_lens=c.batch.seq_lens.to("meta")),
        {"seq_lens.device": "meta", "kv_cache.device": "cpu"},
    ))

    # ------------------------------------------------------- forward-mode-kernel
    base = build_case("draft_extend_v2", [2, 2, 2], [5, 3, 8], kernel="prefill")
    add(Mutation(
        "forward-mode-kernel", "draft-extend-v2-on-decode-kernel-24856", base,
        lambda c: c.with_batch(kernel="decode", q_len_per_req=2),
        {"forward_mode": "DRAFT_EXTEND_V2", "kernel": "decode"},
    ))
    add(Mutation(
        "forward-mode-kernel", "idle-launch-with-requests", _decode_case(),
        lambda c: c.with_batch(forward_mode="idle"),
        {"forward_mode": "IDLE", "batch_size": 8},
    ))

    # ----------------------------------------------------------------- kv-layout
    nhd = torch.zeros(40, 2, 4, 2, 8)  # [num_pages, 2, page_size=4, num_kv_heads=2, head_dim=8]
    base = replace(build_case("extend", [3, 5], [9, 20]), kv_cache=PagedKVCache.from_tensor(nhd, "NHD"))
    add(Mutation(
        "kv-layout", "nhd-cache-declared-hnd", base,
        lambda c: replace(c, kv_cache=PagedKVCache.from_tensor(nhd, "HND")),
        {"kv_cache.page_size": 2, "page_size": 4, "kv_cache.layout": "HND"},
    ))
    base = build_case("decode", [1, 1], [3, 4], with_query=True)
    add(Mutation(
        "kv-layout", "query-head-dim-differs", base,
        lambda c: c.with_batch(query=torch.empty(2, 4, 16)),
        {"q.shape[-1]": 16, "kv_cache.head_dim": 8},
    ))

    # ------------------------------------------------------- graph-replay-layout
    def draft_extend_capture() -> Case:
        c = build_case("draft_extend_v2", [3, 3, 3], [10, 12, 9], kernel="prefill")
        return c

    base = draft_extend_capture()
    captured = GraphLayout.capture(base.batch)

    def variable_stride_replay(c: Case) -> Case:
        # Replay refills cu_seqlens_q IN PLACE with cumsum(accept_length + 1):
        # same buffers, same total, variable stride; the graph still uses the
        # baked max_seq_len_q, so the launch carries none of its own.
        c.batch.cu_seqlens_q.copy_(i32(offsets([1, 3, 5])))
        return c.with_batch(max_seq_len_q=None)

    add(Mutation(
        "graph-replay-layout", "variable-replay-stride-vs-uniform-capture-21987", base,
        variable_stride_replay,
        {"captured cu_seqlens_q stride": 3, "replayed per-request q lengths": [1, 3, 5],
         "captured max_seq_len_q": 3},
        kwargs={"captured": captured},
    ))
    base = draft_extend_capture()
    captured = GraphLayout.capture(base.batch)
    add(Mutation(
        "graph-replay-layout", "buffer-rebound-instead-of-copied", base,
        lambda c: c.with_batch(cu_seqlens_kv=c.batch.cu_seqlens_kv.clone()),
        {"captured cu_seqlens_kv.data_ptr": ANY, "cu_seqlens_kv.data_ptr": ANY},
        kwargs={"captured": captured},
    ))
    base = draft_extend_capture()
    captured = GraphLayout.capture(base.batch)
    add(Mutation(
        "graph-replay-layout", "max-seq-len-q-recomputed-at-replay", base,
        lambda c: c.with_batch(max_seq_len_q=5),
        {"captured max_seq_len_q": 3, "max_seq_len_q": 5},
        kwargs={"captured": captured},
    ))

    # ------------------------------------------------------- cu-seqlens-monotone
    base = build_case("extend", [3, 2, 4], [3, 8, 4])
    add(Mutation(
        "cu-seqlens-monotone", "non-monotone-cu-seqlens-q", base,
        lambda c: c.with_batch(cu_seqlens_q=i32([0, 5, 3, 9])),
        {"cu_seqlens_q[1]": 5, "cu_seqlens_q[2]": 3},
    ))
    add(Mutation(
        "cu-seqlens-monotone", "cu-seqlens-kv-total-off-by-one", build_case("extend", [3, 2, 4], [3, 8, 4]),
        lambda c: c.with_batch(cu_seqlens_kv=_set(c.batch.cu_seqlens_kv, -1, 16)),
        {"cu_seqlens_kv[-1]": 16, "sum(seq_lens)": 15},
    ))
    add(Mutation(
        "cu-seqlens-monotone", "cu-seqlens-q-without-leading-zero", build_case("extend", [3, 2, 4], [3, 8, 4]),
        lambda c: c.with_batch(cu_seqlens_q=_set(c.batch.cu_seqlens_q, 0, 1)),
        {"cu_seqlens_q[0]": 1},
    ))
    add(Mutation(
        "cu-seqlens-monotone", "cu-seqlens-q-ends-past-the-query-rows", build_case("extend", [3, 2, 4], [3, 8, 4]),
        lambda c: c.with_batch(cu_seqlens_q=_set(c.batch.cu_seqlens_q, -1, 10)),
        {"cu_seqlens_q[-1]": 10, "num_query_rows": 9},
    ))

    # ----------------------------------------------------------------- max-seq-len
    add(Mutation(
        "max-seq-len", "max-seq-len-q-too-small", build_case("extend", [3, 2, 5], [3, 8, 5]),
        lambda c: c.with_batch(max_seq_len_q=4),
        {"max_seq_len_q": 4, "cu_seqlens_q[3] - cu_seqlens_q[2]": 5},
    ))
    add(Mutation(
        "max-seq-len", "max-seq-len-kv-from-a-previous-step", build_case("decode", [1, 1, 1], [7, 30, 5]),
        lambda c: c.with_batch(max_seq_len_kv=27),
        {"max_seq_len_kv": 27, "seq_lens[1]": 30},
    ))

    # -------------------------------------------------------- seq-len-covers-query
    base = build_case("extend", [3, 5, 2], [3, 9, 4], with_cu_seqlens_kv=False)
    add(Mutation(
        "seq-len-covers-query", "seq-len-is-the-prefix-only", base,
        lambda c: c.with_batch(seq_lens=i32([3, 4, 4])),
        {"seq_lens[1]": 4, "cu_seqlens_q[2] - cu_seqlens_q[1]": 5},
    ))
    base = build_case("target_verify", [4, 4], [6, 14], kernel="decode", with_cu_seqlens_kv=False)
    add(Mutation(
        "seq-len-covers-query", "target-verify-seq-lens-miss-draft-tokens", base,
        lambda c: c.with_batch(seq_lens=i32([2, 10])),
        {"seq_lens[0]": 2, "cu_seqlens_q[1] - cu_seqlens_q[0]": 4},
    ))

    # -------------------------------------------------------------- uniform-q-len
    base = build_case("target_verify", [2, 2, 2, 2], [5, 6, 7, 8], kernel="decode")

    def accept_lengths(c: Case) -> Case:
        return c.with_batch(cu_seqlens_q=i32(offsets([1, 3, 2, 2])), max_seq_len_q=3)

    add(Mutation(
        "uniform-q-len", "variable-q-lens-on-decode-kernel", base, accept_lengths,
        {"q_len_per_req": 2, "cu_seqlens_q[1] - cu_seqlens_q[0]": 1, "per-request q lengths": [1, 3, 2, 2]},
    ))

    # --------------------------------------------------------- page-table-capacity
    base = build_case("decode", [1, 1, 1], [5, 13, 2], extra_cols=0)  # row width 4 = ceil(13 / 4)
    add(Mutation(
        "page-table-capacity", "seq-len-longer-than-the-row-xqa", base,
        lambda c: c.with_batch(page_table=c.batch.page_table[:, :3]),
        {"seq_lens[1]": 13, "ceil(seq_lens[1] / page_size)": 4, "page_table.shape[1]": 3},
    ))
    base = build_case("decode", [1, 1], [5, 13], extra_cols=0, swa=True)
    add(Mutation(
        "page-table-capacity", "swa-page-table-too-narrow", base,
        lambda c: c.with_batch(swa_page_table=c.batch.swa_page_table[:, :2]),
        {"seq_lens[1]": 13, "swa_page_table.shape[1]": 2},
    ))

    # --------------------------------------------------------------- page-id-range
    for name, delta in (("page-id-equals-num-pages", 0), ("page-id-3-past-the-pool-xqa", 3)):
        base = _extend_case()
        n = base.kv_cache.num_pages
        add(Mutation(
            "page-id-range", name, base,
            lambda c, n=n, delta=delta: c.with_batch(page_table=_set(c.batch.page_table, (2, 1), n + delta)),
            {"page_table[2][1]": n + delta, "kv_cache.num_pages": n},
        ))
    base = _extend_case()
    add(Mutation(
        "page-id-range", "negative-page-id", base,
        lambda c: c.with_batch(page_table=_set(c.batch.page_table, (6, 7), -1)),
        {"page_table[6][7]": -1},
    ))

    # ----------------------------------------------------------- swa-page-id-range
    base = build_case("decode", [1, 1, 1], [5, 9, 3], swa=True)
    n_swa = base.swa_pool.num_swa_pages
    add(Mutation(
        "swa-page-id-range", "translated-id-beyond-swa-pool", base,
        lambda c: c.with_batch(swa_page_table=_set(c.batch.swa_page_table, (1, 2), n_swa)),
        {"swa_page_table[1][2]": n_swa, "num_swa_pages": n_swa},
    ))
    # SGLang #26966: the draft backend never translated; raw full-pool ids reach
    # the (much smaller) SWA pool. Window of 0 => one SWA page per request.
    base = build_case(
        "decode", [1, 1, 1], [30, 31, 29], swa=True, window_left=0, with_translation=False,
        extra_pool_pages=40, seed=3,
    )
    assert max(base.batch.page_table.max().item(), 0) >= base.swa_pool.num_swa_pages
    add(Mutation(
        "swa-page-id-range", "untranslated-full-pool-ids-26966", base,
        lambda c: c.with_batch(swa_page_table=None),
        {"num_swa_pages": base.swa_pool.num_swa_pages},
    ))
    base = build_case("decode", [1, 1], [5, 9], swa=True)

    def stale_swa_table(c: Case) -> Case:
        t = c.batch.swa_page_table.clone()
        t[0, 0], t[1, 0] = t[1, 0].item(), t[0, 0].item()
        return c.with_batch(swa_page_table=t)

    add(Mutation(
        "swa-page-id-range", "swa-page-table-disagrees-with-translation", base, stale_swa_table,
        {"swa_page_table[0][0]": ANY},
    ))
    base = build_case("decode", [1, 1], [5, 9], swa=True)

    def mapping_out_of_pool(c: Case) -> Case:
        pool = c.swa_pool
        page = c.batch.page_table[1, 0].item()
        mapping = _set(pool.full_to_swa, page * pool.page_size, pool.num_swa_pages * pool.page_size)
        return replace(c, swa_pool=pool.model_copy(update={"full_to_swa": mapping}))

    add(Mutation(
        "swa-page-id-range", "translation-maps-outside-swa-pool", base, mapping_out_of_pool,
        {"num_swa_pages": base.swa_pool.num_swa_pages},
    ))

    # ------------------------------------------- FlashInfer CSR paged KV, ragged K/V
    base = _csr_decode_case()
    assert base.batch.batch_size is None and base.batch.cu_seqlens_q is None

    def unsliced_graph_indptr(c: Case) -> Case:
        # the CUDA-graph kv_indptr buffer (max_bs + 1 entries) passed unsliced
        indptr = c.batch.kv_indptr
        return c.with_batch(kv_indptr=torch.cat([indptr, indptr[-1:].repeat(2)]))

    add(Mutation(
        "batch-size", "csr-kv-indptr-buffer-not-sliced-to-the-batch", base, unsliced_graph_indptr,
        {"kv_indptr.shape[0] - 1": 8, "kv_last_page_len.shape[0]": 6},
    ))
    add(Mutation(
        "metadata-dtype-device", "csr-int64-kv-indices", _csr_prefill_case(),
        lambda c: c.with_batch(kv_indices=c.batch.kv_indices.to(torch.int64)),
        {"kv_indices.dtype": "int64"},
    ))
    add(Mutation(
        "metadata-dtype-device", "csr-kv-last-page-len-2d", _csr_decode_case(),
        lambda c: c.with_batch(kv_last_page_len=c.batch.kv_last_page_len[:, None]),
        {"kv_last_page_len.ndim": 2},
    ))
    add(Mutation(
        "cu-seqlens-monotone", "csr-kv-indptr-non-monotone", _csr_prefill_case(),
        lambda c: c.with_batch(kv_indptr=_set(c.batch.kv_indptr, 2, 8)),
        {"kv_indptr[2]": 8, "kv_indptr[3]": 7},
    ))
    add(Mutation(
        "cu-seqlens-monotone", "csr-kv-indptr-ends-past-kv-indices", _csr_decode_case(),
        lambda c: c.with_batch(kv_indices=c.batch.kv_indices[:-2]),
        {"kv_indptr[-1]": 14, "kv_indices.shape[0]": 12},
    ))
    add(Mutation(
        "cu-seqlens-monotone", "csr-page-count-disagrees-with-seq-lens", _csr_prefill_case(with_seq_lens=True),
        lambda c: c.with_batch(seq_lens=_set(c.batch.seq_lens, 2, 13)),
        {"kv_indptr[3] - kv_indptr[2]": 3, "seq_lens[2]": 13, "pages needed for request 2": 4},
    ))
    base = build_ragged_kv_case("extend", [3, 2, 5], [10, 2, 9], extra_kv_rows=2)
    add(Mutation(
        "cu-seqlens-monotone", "ragged-cu-seqlens-kv-past-num-kv-rows", base,
        lambda c: c.with_batch(num_kv_rows=20),
        {"cu_seqlens_kv[-1]": 21, "num_kv_rows": 20},
    ))
    add(Mutation(
        "page-id-range", "csr-kv-indices-page-id-equals-num-pages", _csr_prefill_case(extra_indices=4),
        lambda c: c.with_batch(kv_indices=_set(c.batch.kv_indices, 5, c.kv_cache.num_pages)),
        {"kv_indices[5]": 12, "kv_cache.num_pages": 12, "kv_indptr[2]": 4, "kv_indptr[3]": 7},
    ))
    add(Mutation(
        "last-page-len", "csr-last-page-len-page-size-plus-one", _csr_prefill_case(),
        lambda c: c.with_batch(kv_last_page_len=_set(c.batch.kv_last_page_len, 0, 5)),
        {"kv_last_page_len[0]": 5, "page_size": 4, "kv_indptr[1] - kv_indptr[0]": 3},
    ))
    add(Mutation(
        "last-page-len", "csr-last-page-len-page-size-plus-one-with-seq-lens",
        _csr_prefill_case(with_seq_lens=True, with_max=True),
        lambda c: c.with_batch(kv_last_page_len=_set(c.batch.kv_last_page_len, 4, 5)),
        {"kv_last_page_len[4]": 5, "page_size": 4},
    ))
    add(Mutation(
        "last-page-len", "csr-last-page-len-zero-for-a-request-with-pages", _csr_decode_case(),
        lambda c: c.with_batch(kv_last_page_len=_set(c.batch.kv_last_page_len, 1, 0)),
        {"kv_last_page_len[1]": 0, "kv_indptr[2] - kv_indptr[1]": 3},
    ))
    add(Mutation(
        "last-page-len", "csr-last-page-len-as-seq-len-mod-page-size", _csr_decode_case(),
        lambda c: c.with_batch(kv_last_page_len=i32([5 % 4, 9 % 4, 1 % 4, 17 % 4, 4 % 4, 8 % 4])),
        {"kv_last_page_len[4]": 0, "requests with a bad last_page_len": 2},
    ))
    add(Mutation(
        "last-page-len", "csr-last-page-len-disagrees-with-seq-lens", _csr_prefill_case(with_seq_lens=True),
        lambda c: c.with_batch(seq_lens=_set(c.batch.seq_lens, 0, 11)),
        {"kv_last_page_len[0]": 2, "seq_lens[0]": 11, "tokens in the last page per seq_lens": 3},
    ))
    add(Mutation(
        "max-seq-len", "csr-max-seq-len-kv-below-the-csr-length", _csr_decode_case(with_max=True),
        lambda c: c.with_batch(max_seq_len_kv=16),
        {"max_seq_len_kv": 16, "kv_len[3]": 17, "kv_indptr[4] - kv_indptr[3]": 5, "kv_last_page_len[3]": 1},
    ))
    base = build_csr_case("extend", [3, 6], [3, 6], kernel="prefill")
    add(Mutation(
        "seq-len-covers-query", "csr-length-before-the-new-tokens", base,
        lambda c: c.with_batch(kv_last_page_len=i32([3, 1])),
        {"kv_len[1]": 5, "cu_seqlens_q[2] - cu_seqlens_q[1]": 6},
    ))
    base = _csr_decode_case()
    captured = GraphLayout.capture(base.batch)
    add(Mutation(
        "graph-replay-layout", "csr-kv-indptr-rebound-instead-of-copied", base,
        lambda c: c.with_batch(kv_indptr=c.batch.kv_indptr.clone()),
        {"captured kv_indptr.data_ptr": ANY, "kv_indptr.data_ptr": ANY},
        kwargs={"captured": captured},
    ))
    # ---------------------------------------------------------------- scheduler-metadata
    # FlashMLA's split schedule of the 8-request decode batch, then one of a 12-request
    # batch (CUDA-graph padding after get_mla_metadata: vLLM #21691)
    base = _decode_case().with_batch(num_splits=i32(list(range(9))),
                                     tile_scheduler_metadata=torch.zeros(4, 8, dtype=torch.int32))
    add(Mutation(
        "scheduler-metadata", "flashmla-num-splits-of-another-batch-size", base,
        lambda c: c.with_batch(num_splits=i32(list(range(13)))),
        {"num_splits.shape[0]": 13, "batch_size + 1": 9},
    ))
    return out


MUTATIONS = _mutations()


def test_every_invariant_has_a_mutation():
    covered = {m.invariant for m in MUTATIONS}
    assert covered == set(CATALOG), f"invariants without a mutation test: {set(CATALOG) - covered}"


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.id)
def test_mutation_is_caught_by_exactly_its_invariant(mutation: Mutation):
    assert mutation.base.violations(**mutation.kwargs) == []
    mutated = mutation.mutate(mutation.base)
    errors = mutated.violations(**mutation.kwargs)
    assert {e.invariant for e in errors} == {mutation.invariant}, [str(e) for e in errors]
    (error,) = errors
    assert isinstance(error, FmhaInvariantError) and isinstance(error, ValueError)
    message = str(error)
    assert message.startswith(f"[{mutation.invariant}] ")
    assert "Likely cause: " in message and "Fix: " in message
    assert f"(source: {CATALOG[mutation.invariant].source})" in message
    for name, value in mutation.fields.items():
        assert name in error.fields, (name, error.fields)
        if value is ANY:
            assert f"{name}=" in message
        else:
            assert error.fields[name] == value, (name, error.fields)
            assert format_fields({name: value}) in message


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.id)
def test_validate_raises_the_same_error(mutation: Mutation):
    from guardrails import validate

    mutated = mutation.mutate(mutation.base)
    with pytest.raises(FmhaInvariantError) as info:
        validate(mutated.batch, mutated.kv_cache, mutated.swa_pool, **mutation.kwargs)
    assert info.value.invariant == mutation.invariant
