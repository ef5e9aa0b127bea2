"""The runtime guard's checks, on CPU, with stub kernels that carry FlashInfer's real signatures.

Every guarded entry point gets a stub with the installed FlashInfer's signature
(``functools.wraps`` of the real function), so argument reading is exercised exactly
as in production; only the kernel launch itself is replaced.
"""

from __future__ import annotations

import functools
import importlib
import logging

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails import FmhaInvariantError
from guardrails.errors import FmhaInvariantWarning
from runtime_checks import graph_hooks
from runtime_checks.kernel_specs import ENTRY_POINTS
from runtime_checks.launch_guard import check_replay, make_guard
from runtime_checks.state import STATE, configure

from .launch_args import context_kwargs, decode_kwargs, offsets, paged_case

ENTRIES = {e.qualname: e for e in ENTRY_POINTS}
LAUNCHED = "launched"


def real(entry):
    obj = importlib.import_module(entry.module)
    for part in entry.qualname.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def guarded(qualname: str):
    """The guard around a stub kernel with the real signature of ``qualname``."""
    entry = ENTRIES[qualname]

    @functools.wraps(real(entry))
    def stub(*args, **kwargs):
        return LAUNCHED

    return make_guard(entry, stub)


@pytest.fixture(autouse=True)
def guard_state():
    configure("values", "raise")
    STATE.reset_counters()
    yield
    configure("off", "raise")
    STATE.reset_counters()


DECODE = "trtllm_batch_decode_with_kv_cache"
CONTEXT = "trtllm_batch_context_with_kv_cache"
MLA = "trtllm_batch_decode_with_kv_cache_mla"
RAGGED = "trtllm_ragged_attention_deepseek"


def small_case(q_lens, kv_lens, **kw):
    return paged_case(q_lens, kv_lens, page_size=4, num_kv_heads=2, group=2, head_dim=8, **kw)


# ----------------------------------------------------------------- valid launches pass

lengths = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 30)), min_size=1, max_size=6)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths, st.sampled_from(["shapes", "values"]), st.integers(1, 4))
def test_valid_decode_and_target_verify_launches_pass(spec, level, q_len):
    configure(level)
    kv_lens = [q_len + extra for _, extra in spec]
    case = small_case([q_len] * len(spec), kv_lens)
    assert guarded(DECODE)(**decode_kwargs(case)) == LAUNCHED


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths, st.sampled_from(["shapes", "values"]))
def test_valid_extend_and_draft_extend_launches_pass(spec, level):
    configure(level)
    q_lens = [q for q, _ in spec]
    case = small_case(q_lens, [q + extra for q, extra in spec])
    assert guarded(CONTEXT)(**context_kwargs(case)) == LAUNCHED
    # the same ragged metadata on the decode kernel, as FlashInfer >= 0.6 allows
    ragged = dict(decode_kwargs_any(case), q_len_per_req=None, cum_seq_lens_q=case.cu_seqlens_q,
                  max_q_len=max(q_lens))
    assert guarded(DECODE)(**ragged) == LAUNCHED


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths, st.sampled_from(["shapes", "values"]))
def test_valid_wrapper_plan_and_run_pass(spec, level):
    configure(level)
    q_lens = [q for q, _ in spec]
    case = small_case(q_lens, [q + extra for q, extra in spec])
    prefill = FakeWrapper.make("BatchPrefillWithPagedKVCacheWrapper")
    indptr, indices, last = case.kv_indptr_indices_last()
    prefill.plan(case.cu_seqlens_q, indptr, indices, last, case.q.shape[1], case.kv_cache.shape[2],
                 case.q.shape[2], case.page_size, causal=True)
    assert prefill.run(case.q, case.kv_cache) == LAUNCHED


def test_idle_launch_passes():
    case = small_case([], [])
    assert guarded(CONTEXT)(**context_kwargs(case)) == LAUNCHED


def decode_kwargs_any(case):
    """Decode-kernel arguments for any query lengths (the caller sets q_len / cu_seqlens)."""
    kw = decode_kwargs(small_case([1] * case.batch_size, case.kv_lens))
    kw.update(query=case.q, kv_cache=case.kv_cache, block_tables=case.page_table, seq_lens=case.seq_lens)
    return kw


# ----------------------------------------------------------------- the fault matrix

DECODE_KV = [5, 9, 17, 4, 30]


def decode_fault(name):
    case = small_case([1] * 5, DECODE_KV)
    kw = decode_kwargs(case)
    pt, sl = case.page_table, case.seq_lens
    if name == "inflated batch size (2 DP-padded rows)":
        return dict(kw, seq_lens=torch.cat([sl, sl[:2]]), block_tables=torch.cat([pt, pt[:2]])), "query-rows"
    if name == "mismatched per-request lengths":
        return dict(kw, seq_lens=sl[:-1]), "batch-size"
    if name == "int64 metadata":
        return dict(kw, block_tables=pt.long()), "metadata-dtype-device"
    if name == "non-contiguous metadata":
        wide = torch.zeros(pt.shape[0], 2 * pt.shape[1], dtype=torch.int32)
        wide[:, ::2] = pt
        return dict(kw, block_tables=wide[:, ::2]), "metadata-dtype-device"
    if name == "page id >= page count":
        bad = pt.clone()
        bad[2, 1] = case.num_pages
        return dict(kw, block_tables=bad), "page-id-range"
    if name == "seq_len beyond the table row":
        bad = sl.clone()
        bad[0] = pt.shape[1] * case.page_size + 1
        return dict(kw, seq_lens=bad, max_seq_len=int(bad.max())), "page-table-capacity"
    if name == "max length too small":
        return dict(kw, max_seq_len=max(DECODE_KV) - 1), "max-seq-len"
    if name == "variable q lens on the decode kernel (#24856)":
        accept = [3, 1, 4, 2, 1]
        var = small_case(accept, [a + n for a, n in zip(accept, DECODE_KV)])
        return dict(decode_kwargs_any(var), q_len_per_req=4), "query-rows"
    if name == "variable q lens with cum_seq_lens_q on the decode kernel":
        accept = [3, 5, 4, 4, 4]  # 20 rows = 5 requests x q_len_per_req 4, but not 4 each
        var = small_case(accept, [a + n for a, n in zip(accept, DECODE_KV)])
        return dict(decode_kwargs_any(var), q_len_per_req=4, cum_seq_lens_q=var.cu_seqlens_q), "uniform-q-len"
    if name == "SWA page ids beyond the SWA pool (#26966)":
        return dict(kw, kv_cache=case.kv_cache[: case.num_pages // 2]), "page-id-range"
    if name == "seq_len shorter than the query":
        tv = small_case([3] * 5, [n + 3 for n in DECODE_KV])
        bad = tv.seq_lens.clone()
        bad[1] = 2
        return dict(decode_kwargs(tv), seq_lens=bad), "seq-len-covers-query"
    raise KeyError(name)


DECODE_FAULTS = [
    "inflated batch size (2 DP-padded rows)",
    "mismatched per-request lengths",
    "int64 metadata",
    "non-contiguous metadata",
    "page id >= page count",
    "seq_len beyond the table row",
    "max length too small",
    "variable q lens on the decode kernel (#24856)",
    "variable q lens with cum_seq_lens_q on the decode kernel",
    "SWA page ids beyond the SWA pool (#26966)",
    "seq_len shorter than the query",
]


def context_fault(name):
    case = small_case([3, 1, 5, 2], [7, 1, 20, 2])
    kw = context_kwargs(case)
    cu_q, cu_kv = case.cu_seqlens_q, case.cu_seqlens_kv
    if name == "DP-padded batch_size (#21649)":
        return dict(kw, batch_size=case.batch_size + 2), "batch-size"
    if name == "int64 cum_seq_lens_q":
        return dict(kw, cum_seq_lens_q=cu_q.long()), "metadata-dtype-device"
    if name == "non-monotone offsets":
        bad = cu_q.clone()
        bad[2] = bad[1] - 1
        return dict(kw, cum_seq_lens_q=bad), "cu-seqlens-monotone"
    if name == "wrong offset total":
        bad = cu_q.clone()
        bad[-1] += 3
        return dict(kw, cum_seq_lens_q=bad), "cu-seqlens-monotone"
    if name == "max_q_len too small":
        return dict(kw, max_q_len=4), "max-seq-len"
    if name == "page id >= page count":
        bad = case.page_table.clone()
        bad[2, 0] = case.num_pages + 7
        return dict(kw, block_tables=bad), "page-id-range"
    raise KeyError(name)


CONTEXT_FAULTS = [
    "DP-padded batch_size (#21649)",
    "int64 cum_seq_lens_q",
    "non-monotone offsets",
    "wrong offset total",
    "max_q_len too small",
    "page id >= page count",
]


def test_context_kernel_reads_no_token_offsets_from_cum_seq_lens_kv():
    """The paged context kernel takes the KV lengths from seq_lens: cum_seq_lens_kv may
    hold page offsets (vLLM passes paged_kv_indptr, FlashInfer's own wrapper its
    _paged_kv_indptr_buf) or anything else of batch_size + 1 entries."""
    case = small_case([3, 1, 5, 2], [7, 1, 20, 2])
    pages = offsets([-(-n // case.page_size) for n in (7, 1, 20, 2)])
    assert guarded(CONTEXT)(**dict(context_kwargs(case), cum_seq_lens_kv=pages)) == LAUNCHED


FAULTS = {DECODE: (decode_fault, DECODE_FAULTS), CONTEXT: (context_fault, CONTEXT_FAULTS)}


@pytest.mark.parametrize("kernel, fault", [(kernel, fault) for kernel, (_, faults) in FAULTS.items() for fault in faults])
def test_kernel_fault_matrix(kernel, fault):
    kwargs, expected = FAULTS[kernel][0](fault)
    with pytest.raises(FmhaInvariantError) as info:
        guarded(kernel)(**kwargs)
    assert info.value.invariant == expected
    assert info.value.fields  # names the fields and their values


def test_shapes_level_catches_shape_faults_and_reads_no_values():
    configure("shapes")
    kwargs, _ = context_fault("DP-padded batch_size (#21649)")
    with pytest.raises(FmhaInvariantError, match=r"\[batch-size\].*batch_size=6"):
        guarded(CONTEXT)(**kwargs)
    # a value fault passes at shapes: no tensor contents are read
    kwargs, _ = context_fault("page id >= page count")
    assert guarded(CONTEXT)(**kwargs) == LAUNCHED


# ----------------------------------------------------------------- MLA and ragged entry points


def mla_kwargs(q_len=1, bs=3, kv_lens=(5, 9, 13), page_size=4, num_pages=12):
    dim = 16 + 4
    table = torch.arange(bs * 4, dtype=torch.int32).view(bs, 4) % num_pages
    return dict(
        query=torch.zeros(bs, q_len, 8, dim, dtype=torch.bfloat16),
        kv_cache=torch.zeros(num_pages, page_size, dim, dtype=torch.bfloat16),
        workspace_buffer=torch.zeros(16, dtype=torch.uint8),
        qk_nope_head_dim=16, kv_lora_rank=16, qk_rope_head_dim=4,
        block_tables=table, seq_lens=torch.tensor(kv_lens, dtype=torch.int32), max_seq_len=max(kv_lens),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(1, 4))
def test_valid_mla_decode_launches_pass(kv_lens, q_len):
    kv_lens = [max(n, q_len) for n in kv_lens]
    bs, page_size = len(kv_lens), 4
    kw = mla_kwargs(q_len=q_len, bs=bs, kv_lens=tuple(kv_lens), page_size=page_size, num_pages=bs * 10)
    kw["block_tables"] = torch.arange(bs * 10, dtype=torch.int32).view(bs, 10)
    assert guarded(MLA)(**kw) == LAUNCHED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=6))
def test_valid_ragged_deepseek_launches_pass(spec):
    q_lens = tuple(q for q, _ in spec)
    kv_lens = tuple(q + extra for q, extra in spec)
    assert guarded(RAGGED)(**ragged_kwargs(q_lens, kv_lens)) == LAUNCHED


def test_mla_decode_valid_and_faults():
    assert guarded(MLA)(**mla_kwargs()) == LAUNCHED
    assert guarded(MLA)(**mla_kwargs(q_len=2)) == LAUNCHED
    kw = mla_kwargs()
    bad = kw["block_tables"].clone()
    bad[0, 0] = 12
    with pytest.raises(FmhaInvariantError, match="page-id-range"):
        guarded(MLA)(**dict(kw, block_tables=bad))
    with pytest.raises(FmhaInvariantError) as info:
        guarded(MLA)(**dict(kw, seq_lens=torch.tensor([5, 9, 13, 4], dtype=torch.int32)))
    assert info.value.invariant == "batch-size"


def ragged_kwargs(q_lens=(3, 1, 4), kv_lens=(3, 6, 4)):
    rows, kv_rows = sum(q_lens), sum(kv_lens)
    return dict(
        query=torch.zeros(rows, 4, 24), key=torch.zeros(kv_rows, 4, 24), value=torch.zeros(kv_rows, 4, 16),
        workspace_buffer=torch.zeros(16, dtype=torch.uint8), seq_lens=torch.tensor(kv_lens, dtype=torch.int32),
        max_q_len=max(q_lens, default=0), max_kv_len=max(kv_lens, default=0), bmm1_scale=1.0, bmm2_scale=1.0, o_sf_scale=1.0,
        batch_size=len(q_lens), window_left=-1, cum_seq_lens_q=offsets(q_lens), cum_seq_lens_kv=offsets(kv_lens),
        enable_pdl=False, is_causal=True, return_lse=False,
    )


def test_ragged_deepseek_valid_and_faults():
    assert guarded(RAGGED)(**ragged_kwargs()) == LAUNCHED
    with pytest.raises(FmhaInvariantError) as info:
        guarded(RAGGED)(**dict(ragged_kwargs(), batch_size=5))
    assert info.value.invariant == "batch-size"
    kw = ragged_kwargs()
    with pytest.raises(FmhaInvariantError) as info:
        guarded(RAGGED)(**dict(kw, key=kw["key"][:-2], value=kw["value"][:-2]))
    assert info.value.invariant == "cu-seqlens-monotone"


# ----------------------------------------------------------------- the wrapper API


class FakeWrapper:
    """A stand-in for a FlashInfer wrapper object: the guarded plan/run with real signatures."""

    _kv_layout = "HND"

    @classmethod
    def make(cls, class_name: str) -> "FakeWrapper":
        plan = ENTRIES[f"{class_name}.plan"]
        run = ENTRIES[f"{class_name}.run"]

        @functools.wraps(real(plan))
        def plan_stub(self, *a, **k):
            return None

        @functools.wraps(real(run))
        def run_stub(self, *a, **k):
            return LAUNCHED

        kind = type(class_name, (cls,), {"plan": make_guard(plan, plan_stub), "run": make_guard(run, run_stub)})
        return kind()


def test_prefill_wrapper_faults_at_plan_and_run():
    case = small_case([3, 1, 5], [7, 1, 20])
    indptr, indices, last = case.kv_indptr_indices_last()
    w = FakeWrapper.make("BatchPrefillWithPagedKVCacheWrapper")
    heads = (case.q.shape[1], case.kv_cache.shape[2], case.q.shape[2], case.page_size)
    bad_last = last.clone()
    bad_last[2] = case.page_size + 1
    with pytest.raises(FmhaInvariantError) as info:
        w.plan(case.cu_seqlens_q, indptr, indices, bad_last, *heads)
    assert info.value.invariant == "last-page-len"
    # a page id that is valid for no pool of this size: caught at run, against the cache passed
    bad_idx = indices.clone()
    bad_idx[0] = case.num_pages
    w.plan(case.cu_seqlens_q, indptr, bad_idx, last, *heads)
    with pytest.raises(FmhaInvariantError) as info:
        w.run(case.q, case.kv_cache)
    assert info.value.invariant == "page-id-range"
    # query rows disagree with the planned qo_indptr
    w.plan(case.cu_seqlens_q, indptr, indices, last, *heads)
    with pytest.raises(FmhaInvariantError) as info:
        w.run(case.q[:-1], case.kv_cache)
    assert info.value.invariant in {"query-rows", "cu-seqlens-monotone"}


def test_decode_wrapper_plan_and_run():
    case = small_case([1, 1, 1], [7, 1, 20])
    indptr, indices, last = case.kv_indptr_indices_last()
    w = FakeWrapper.make("BatchDecodeWithPagedKVCacheWrapper")
    w.plan(indptr, indices, last, case.q.shape[1], case.kv_cache.shape[2], case.q.shape[2], case.page_size)
    assert w.run(case.q, case.kv_cache) == LAUNCHED
    with pytest.raises(FmhaInvariantError) as info:
        w.run(torch.cat([case.q, case.q[:2]]), case.kv_cache)  # 2 DP-padded query rows
    assert info.value.invariant == "query-rows"


# ----------------------------------------------------------------- memo, warn, internal errors


def test_value_check_is_memoized_per_metadata_and_redone_after_an_in_place_write():
    case = small_case([1] * 5, DECODE_KV)
    kw = decode_kwargs(case)
    fn = guarded.__wrapped__(DECODE)  # a fresh guard: empty memo
    for _ in range(60):  # 60 layers share one step's metadata
        fn(**kw)
    assert STATE.value_memo_hits == 59 and STATE.shape_memo_hits == 59
    kw["block_tables"][1, 0] = case.num_pages + 3  # in place: bumps _version
    with pytest.raises(FmhaInvariantError, match="page-id-range"):
        fn(**kw)


def test_warn_action_logs_once_per_call_site_and_lets_the_launch_through(caplog):
    configure("values", "warn")
    kwargs, _ = context_fault("DP-padded batch_size (#21649)")
    fn = guarded(CONTEXT)
    with caplog.at_level(logging.WARNING, logger="fmha_guard"), pytest.warns(FmhaInvariantWarning):
        results = [fn(**kwargs) for _ in range(3)]
    assert results == [LAUNCHED] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "[batch-size]" in messages[0] and "test_runtime_guard.py" in messages[0]
    assert STATE.warned == 3


def test_an_internal_error_never_blocks_the_launch(caplog):
    fn = guarded(DECODE)
    with caplog.at_level(logging.WARNING, logger="fmha_guard"):
        assert fn(query="not a tensor", kv_cache=None, workspace_buffer=None, block_tables=None,
                  seq_lens=None, max_seq_len=1) == LAUNCHED
        assert fn(query=object(), kv_cache=None, workspace_buffer=None, block_tables=None,
                  seq_lens=None, max_seq_len=1) == LAUNCHED
    assert len([r for r in caplog.records if "could not check" in r.getMessage()]) == 1


def test_off_is_a_plain_pass_through():
    configure("off")
    kwargs, _ = context_fault("page id >= page count")
    assert guarded(CONTEXT)(**kwargs) == LAUNCHED
    assert STATE.launches == 0


# ----------------------------------------------------------------- CUDA-graph capture and replay


class FakeGraph:
    """Mimics torch.cuda.CUDAGraph's capture/replay protocol on CPU."""

    replays = 0

    def capture_begin(self, *a, **k):
        pass

    def capture_end(self):
        pass

    def replay(self):
        FakeGraph.replays += 1


@pytest.fixture
def fake_graph_hooks():
    assert graph_hooks.install(FakeGraph, replay_check=check_replay)
    yield
    graph_hooks.uninstall(FakeGraph)


def test_capture_skips_value_checks_and_replay_checks_refilled_buffers(fake_graph_hooks):
    # target-verify captured with a uniform cu_seqlens_q stride (SGLang #21987)
    q_len, kv = 4, [9, 12, 5]
    case = small_case([q_len] * 3, kv)
    kw = dict(decode_kwargs(case), cum_seq_lens_q=case.cu_seqlens_q.clone())
    fn = guarded(DECODE)
    graph = FakeGraph()
    graph.capture_begin()
    for _ in range(3):  # three layers, one record
        fn(**kw)
    graph.capture_end()
    assert STATE.capture_skips == 3
    assert len(graph_hooks.RECORDS[graph]) == 1
    graph.replay()  # buffers unchanged: fine
    before = FakeGraph.replays
    kw["cum_seq_lens_q"].copy_(torch.tensor([0, 3, 9, 12], dtype=torch.int32))  # variable stride at replay
    with pytest.raises(FmhaInvariantError) as info:
        graph.replay()
    assert info.value.invariant == "graph-replay-layout"
    assert FakeGraph.replays == before  # raised before the replay
    configure("shapes")
    graph.replay()  # shapes level: replay is not checked
    assert FakeGraph.replays == before + 1


def test_a_guarded_entry_point_called_by_another_is_checked_once():
    # On SM90 FlashInfer's trtllm_batch_decode_with_kv_cache calls the guarded
    # xqa_batch_decode_with_kv_cache: one launch, checked by the outer entry point only.
    entry = ENTRIES[DECODE]
    inner_calls = []

    @functools.wraps(real(entry))
    def inner_stub(*args, **kwargs):
        inner_calls.append(1)
        return LAUNCHED

    inner = make_guard(entry, inner_stub)

    @functools.wraps(real(entry))
    def outer_stub(*args, **kwargs):
        return inner(*args, **kwargs)

    outer = make_guard(entry, outer_stub)
    kw = decode_kwargs(small_case([1, 1], [5, 9]))
    before = STATE.launches
    assert outer(**kw) == LAUNCHED and inner_calls == [1]
    assert STATE.launches - before == 1
    assert inner(**kw) == LAUNCHED and STATE.launches - before == 2  # called directly, it is checked
