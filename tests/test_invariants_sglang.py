"""The four SGLang fixes that define the bug family, and the five kinds of bad
metadata measured against the xqa decode kernel on an H200, replayed as
metadata and checked end to end."""

from __future__ import annotations

import pytest
import torch

from guardrails import FmhaInvariantError, GraphLayout, Level, SlidingWindowPool, validate
from tests.strategies import build_case, i32, offsets

TEN_REQUESTS_Q = [3, 2, 5, 4, 1, 6, 2, 3, 1, 4]
TEN_REQUESTS_KV = [10, 2, 9, 4, 7, 6, 30, 3, 1, 12]


def _raises(case, **kwargs) -> FmhaInvariantError:
    with pytest.raises(FmhaInvariantError) as info:
        validate(case.batch, case.kv_cache, case.swa_pool, **kwargs)
    return info.value


def test_21649_dp_padded_batch_size_to_the_context_kernel():
    # forward_extend passed forward_batch.batch_size (12, DP-padded) while
    # cu_seqlens_q held 10 requests.
    case = build_case("extend", TEN_REQUESTS_Q, TEN_REQUESTS_KV).with_batch(batch_size=12)
    assert case.batch.cu_seqlens_q.shape[0] == 11
    err = _raises(case, level=Level.SHAPES)  # caught without reading any tensor
    assert err.invariant == "batch-size"
    assert err.fields["batch_size"] == 12 and err.fields["cu_seqlens_q.shape[0] - 1"] == 10
    assert "SGLang #21649" in str(err) and "cu_seqlens_q.shape[0] - 1" in err.fix
    # the fix: batch_size = cu_seqlens_q.shape[0] - 1
    fixed = case.with_batch(batch_size=case.batch.cu_seqlens_q.shape[0] - 1)
    validate(fixed.batch, fixed.kv_cache)


def test_24856_draft_extend_v2_routed_to_the_decode_kernel():
    # Variable accept lengths, decode kernel with q_len_per_req = num_draft_tokens.
    accept = [1, 3, 2, 4]
    case = build_case("draft_extend_v2", accept, [9, 12, 5, 8], kernel="prefill")
    bad = case.with_batch(kernel="decode", q_len_per_req=4)
    err = _raises(bad, level=Level.SHAPES)
    assert err.invariant == "forward-mode-kernel"
    assert "SGLang #24856" in str(err)
    assert {e.invariant for e in bad.violations()} == {"forward-mode-kernel", "query-rows"}
    validate(case.batch, case.kv_cache)  # the fix: the context kernel


def test_24856_variable_lengths_reach_the_decode_kernel_under_a_uniform_mode():
    # The same bug hidden behind a TARGET_VERIFY label: only the values show it.
    case = build_case("target_verify", [2, 2, 2], [5, 6, 7], kernel="decode")
    bad = case.with_batch(cu_seqlens_q=i32(offsets([1, 3, 2])), max_seq_len_q=3)
    validate(bad.batch, bad.kv_cache, level=Level.SHAPES)  # shapes look fine
    assert _raises(bad).invariant == "uniform-q-len"


def test_21987_replay_refills_cu_seqlens_q_with_a_variable_stride():
    num_draft_tokens = 4
    case = build_case("draft_extend_v2", [num_draft_tokens] * 3, [10, 12, 9], kernel="prefill")
    captured = GraphLayout.capture(case.batch)
    assert captured.cu_seqlens_q_stride == num_draft_tokens
    assert captured.max_seq_len_q == num_draft_tokens
    validate(case.batch, case.kv_cache, captured=captured)  # identical replay
    # buggy replay: cumsum(accept_length + 1), and max_seq_len_q recomputed
    case.batch.cu_seqlens_q.copy_(i32(offsets([2, 4, 6])))
    buggy = case.with_batch(max_seq_len_q=6)
    err = _raises(buggy, captured=captured)
    assert err.invariant == "graph-replay-layout"
    assert err.fields["captured max_seq_len_q"] == 4 and err.fields["max_seq_len_q"] == 6
    assert "SGLang #21987" in str(err)


def test_26966_swa_layers_get_raw_full_pool_page_ids():
    # The draft backend cached "not an SWA pool" at __init__; the SWA layers then
    # read untranslated full-pool page ids from a smaller SWA pool.
    case = build_case(
        "decode", [1, 1, 1, 1], [40, 33, 50, 41], swa=True, window_left=4, extra_pool_pages=10
    )
    validate(case.batch, case.kv_cache, case.swa_pool)
    buggy = case.with_batch(swa_page_table=None)
    err = _raises(buggy)
    assert err.invariant == "swa-page-id-range"
    assert "SGLang #26966" in str(err)
    # without a translation table the guard still sees ids past the SWA pool
    no_map = SlidingWindowPool(
        num_swa_pages=case.swa_pool.num_swa_pages, page_size=4, window_left=4
    )
    err = _raises(buggy.__class__(buggy.batch, buggy.kv_cache, no_map))
    assert err.invariant == "swa-page-id-range"
    assert err.fields["num_swa_pages"] == case.swa_pool.num_swa_pages


def _xqa_base():
    return build_case("decode", [1] * 6, [5, 17, 3, 9, 12, 1], page_size=4, extra_cols=0)


def _extra_rows(c):
    b = c.batch
    return c.with_batch(
        seq_lens=torch.cat([b.seq_lens, i32([4, 4])]),
        page_table=torch.cat([b.page_table, b.page_table[:2]]),
        batch_size=None, cu_seqlens_q=None, cu_seqlens_kv=None,
    )  # the decode kernel derives its batch size from q: 6 rows, 8 seq_lens


def _page_past_pool(delta):
    def mutate(c):
        t = c.batch.page_table.clone()
        t[1, 2] = c.kv_cache.num_pages + delta
        return c.with_batch(page_table=t)
    return mutate


def _row_too_short(c):
    return c.with_batch(page_table=c.batch.page_table[:, :4].contiguous(), seq_lens=c.batch.seq_lens.clone().fill_(17),
                        cu_seqlens_kv=None, max_seq_len_kv=17)


def _variable_draft_extend(c):
    return build_case("draft_extend_v2", [1, 3, 2, 2], [5, 6, 7, 8], kernel="prefill").with_batch(
        kernel="decode", q_len_per_req=2)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_extra_rows, "query-rows"),
        (_page_past_pool(3), "page-id-range"),
        (_row_too_short, "page-table-capacity"),
        (_variable_draft_extend, "forward-mode-kernel"),
        (_page_past_pool(100000), "page-id-range"),
    ],
    ids=["2-extra-rows", "page-id-3-past-pool", "seq-len-beyond-row", "variable-draft-extend", "page-id-100000-past-pool"],
)
def test_h200_xqa_fault_kinds_are_all_caught(mutate, expected):
    # Only the last kind crashed the kernel; the other four were silent.
    base = _xqa_base()
    validate(base.batch, base.kv_cache)
    assert _raises(mutate(base)).invariant == expected
