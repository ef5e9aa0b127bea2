"""Property tests: valid launches of every forward mode pass (block table,
FlashInfer CSR and ragged K/V); SHAPES never reads tensor data; arbitrary
corruption never makes a check crash."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails import (
    FmhaInvariantError,
    ForwardMode,
    GraphLayout,
    Level,
    find_violations,
    validate,
)
from tests.strategies import Case, build_case, build_csr_case, cases, csr_cases, i32, ragged_kv_cases

_FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_cases = st.one_of(cases(), csr_cases(), ragged_kv_cases())
"""Valid launches of every kind: block table, FlashInfer CSR, ragged K/V."""


@settings(_FAST, max_examples=300)
@given(cases())
def test_valid_launches_pass_at_values(case: Case):
    errors = case.violations(level=Level.VALUES)
    assert errors == [], [str(e) for e in errors]
    validate(case.batch, case.kv_cache, case.swa_pool)  # and validate does not raise


@settings(_FAST, max_examples=200)
@given(csr_cases())
def test_valid_csr_launches_pass_at_values(case: Case):
    b = case.batch
    assert b.kv_indptr is not None and b.page_table is None
    errors = case.violations(level=Level.VALUES)
    assert errors == [], [str(e) for e in errors]
    if b.kernel.value == "decode":
        assert b.q_len_per_req in (None, *case.q_lens)  # uniform q, decode wrapper
    # the KV length the guard derives from the CSR is the one the launch was built from
    from guardrails.check_context import CheckContext

    ctx = CheckContext(batch=b.replace(seq_lens=None, cu_seqlens_kv=None), kv_cache=case.kv_cache)
    assert ctx.kv_lens() == list(case.kv_lens)


@settings(_FAST, max_examples=80)
@given(ragged_kv_cases())
def test_valid_ragged_kv_launches_pass_at_values(case: Case):
    assert case.kv_cache is None and case.batch.num_kv_rows >= sum(case.kv_lens)
    errors = case.violations(level=Level.VALUES)
    assert errors == [], [str(e) for e in errors]


@settings(_FAST, max_examples=60)
@given(st.sampled_from(list(ForwardMode)).flatmap(lambda m: cases(modes=[m])))
def test_every_forward_mode_builds_valid_launches(case: Case):
    assert case.violations() == []
    if case.batch.forward_mode is ForwardMode.IDLE:
        assert case.batch.batch_size_sources() and set(case.batch.batch_size_sources().values()) == {0}


@settings(_FAST, max_examples=60)
@given(any_cases)
def test_replaying_the_captured_layout_passes(case: Case):
    captured = GraphLayout.capture(case.batch)
    assert case.violations(captured=captured) == []


def _to_meta(case: Case) -> Case:
    b = case.batch
    update = {name: t.to("meta") for name, t in b.index_tensors().items()}
    if b.query is not None:
        update["query"] = b.query.to("meta")
    kv = case.kv_cache.model_copy(update={"device": "meta"}) if case.kv_cache is not None else None
    pool = case.swa_pool
    if pool is not None and pool.full_to_swa is not None:
        pool = pool.model_copy(update={"full_to_swa": pool.full_to_swa.to("meta")})
    return Case(b.replace(**update), kv, pool, case.q_lens, case.kv_lens)


@settings(_FAST, max_examples=100)
@given(any_cases)
def test_shapes_level_never_reads_tensor_data(case: Case):
    # meta tensors have no storage: any .tolist()/.item()/.cpu() raises, which
    # the runner would report as a "could not be evaluated" violation.
    meta = _to_meta(case)
    assert meta.violations(level=Level.SHAPES) == []
    # at VALUES the value checks are skipped for data-less tensors
    assert meta.violations(level=Level.VALUES) == []
    # and shape-level bugs are still caught on meta tensors
    bs = meta.batch.batch_size_sources()
    if bs:
        padded = meta.with_batch(batch_size=next(iter(bs.values())) + 2)
        assert {e.invariant for e in padded.violations(level=Level.SHAPES)} == {"batch-size"}


def test_shapes_level_skips_value_bugs_and_off_skips_everything():
    case = build_case("extend", [3, 2], [4, 9])
    bad = case.with_batch(page_table=torch.full_like(case.batch.page_table, 10**6))
    assert {e.invariant for e in bad.violations(level=Level.VALUES)} == {"page-id-range"}
    assert bad.violations(level=Level.SHAPES) == []
    assert bad.violations(level="shapes") == []
    assert bad.violations(level=Level.OFF) == []
    validate(bad.batch, bad.kv_cache, level="off")


# ------------------------------------------------------------- CSR edges

def test_csr_reads_only_the_used_kv_indices():
    case = build_csr_case("decode", [1, 1, 1], [5, 9, 2], extra_indices=4, filler=10**6)
    indices, end = case.batch.kv_indices, case.batch.kv_indptr[-1].item()
    assert indices.shape[0] == end + 4 and case.violations() == []  # garbage tail is unread
    last_used = indices.clone()
    last_used[end - 1] = case.kv_cache.num_pages
    errors = case.with_batch(kv_indices=last_used).violations()
    assert [e.invariant for e in errors] == ["page-id-range"]
    assert errors[0].fields[f"kv_indices[{end - 1}]"] == case.kv_cache.num_pages


def test_csr_empty_requests_take_any_last_page_len_the_kernel_ignores():
    case = build_csr_case("extend", [2, 0, 3], [6, 0, 3], kernel="prefill", with_seq_lens=True, with_max=True)
    assert case.batch.kv_indptr.tolist() == [0, 2, 2, 3]
    for ignored in (0, 1, 4):  # 0 pages: FlashInfer's get_length returns 0 without reading it
        ok = case.with_batch(kv_last_page_len=i32([2, ignored, 3]))
        assert ok.violations() == [], ignored
    for bad in (-1, 5):
        errors = case.with_batch(kv_last_page_len=i32([2, bad, 3])).violations()
        assert [e.invariant for e in errors] == ["last-page-len"]
        assert errors[0].fields["kv_last_page_len[1]"] == bad


def test_csr_malformed_indptr_skips_what_depends_on_it():
    case = build_csr_case("decode", [1, 1, 1], [5, 9, 2], with_max=True)
    # non-monotone kv_indptr, an out-of-range last page and a too-small scalar at once:
    # the derived KV lengths are meaningless, so only the indptr bug is reported
    bad = case.with_batch(
        kv_indptr=i32([0, 4, 3, 6]), kv_last_page_len=i32([1, 9, 2]), max_seq_len_kv=1,
    )
    assert [e.invariant for e in bad.violations()] == ["cu-seqlens-monotone"]
    # on meta tensors the same launch passes SHAPES without a read
    meta = _to_meta(bad)
    assert meta.violations(level=Level.SHAPES) == [] and meta.violations() == []


def test_csr_and_seq_lens_must_agree_split_by_owner():
    case = build_csr_case("extend", [3, 2], [10, 6], kernel="prefill", with_seq_lens=True)
    validate(case.batch, case.kv_cache)
    # one page too few for seq_lens: the indptr (page count) is wrong -> cu-seqlens-monotone
    fewer_pages = case.with_batch(seq_lens=i32([13, 6]))
    assert {e.invariant for e in fewer_pages.violations()} == {"cu-seqlens-monotone"}
    # right page count, wrong tail -> last-page-len; never both for one request
    tail = case.with_batch(seq_lens=i32([11, 6]))
    assert {e.invariant for e in tail.violations()} == {"last-page-len"}
    # without seq_lens the CSR length is the KV length: seq-len-covers-query uses it
    short = case.with_batch(seq_lens=None, cu_seqlens_q=i32([0, 3, 10]), num_query_rows=10)
    errors = short.violations()
    assert [e.invariant for e in errors] == ["seq-len-covers-query"]
    assert errors[0].fields["kv_len[1]"] == 6


# ----------------------------------------------------------- robustness fuzz

def _corrupt(case: Case, data) -> Case:
    """Apply one random corruption to a random field."""
    b = case.batch
    names = list(b.index_tensors())
    kind = data.draw(st.sampled_from(["value", "dtype", "shape", "transpose", "scalar", "drop", "kv"]))
    if kind == "scalar":
        field = data.draw(st.sampled_from(
            ["batch_size", "num_query_rows", "max_seq_len_q", "max_seq_len_kv", "q_len_per_req", "page_size",
             "num_kv_rows"]))
        lo = 1 if field in ("q_len_per_req", "page_size") else 0
        return case.with_batch(**{field: data.draw(st.integers(lo, 40))})
    if kind == "kv" and case.kv_cache is not None:
        return Case(b, case.kv_cache.model_copy(update={
            "num_pages": data.draw(st.integers(0, 50)),
            "page_size": data.draw(st.integers(1, 16)),
        }), case.swa_pool)
    if kind == "kv" or not names:
        return case
    name = data.draw(st.sampled_from(names))
    t = getattr(b, name)
    if kind == "drop":
        return case.with_batch(**{name: None})
    if kind == "dtype":
        return case.with_batch(**{name: t.to(data.draw(st.sampled_from([torch.int64, torch.int16, torch.float32])))})
    if kind == "transpose" and t.ndim == 2:
        return case.with_batch(**{name: t.t()})
    if kind == "shape":
        choice = data.draw(st.sampled_from(["grow", "shrink", "flatten", "unsqueeze", "empty"]))
        if choice == "grow":
            t = torch.cat([t, t[:1]]) if t.shape[0] else torch.zeros((1,) + tuple(t.shape[1:]), dtype=t.dtype)
        elif choice == "shrink":
            t = t[:-1]
        elif choice == "flatten":
            t = t.reshape(-1)
        elif choice == "unsqueeze":
            t = t.unsqueeze(0)
        else:
            t = t[:0]
        return case.with_batch(**{name: t})
    if t.numel() == 0:
        return case
    t = t.clone()
    index = torch.unravel_index(torch.tensor(data.draw(st.integers(0, t.numel() - 1))), t.shape)
    t[index] = data.draw(st.integers(-(2**15), 2**15 - 1))
    return case.with_batch(**{name: t})


@settings(_FAST, max_examples=250)
@given(any_cases, st.data())
def test_corrupted_launches_never_crash_a_check(case: Case, data):
    corrupted = case
    for _ in range(data.draw(st.integers(1, 3))):
        corrupted = _corrupt(corrupted, data)
    errors = find_violations(corrupted.batch, corrupted.kv_cache, corrupted.swa_pool)
    assert all(isinstance(e, FmhaInvariantError) for e in errors)
    assert len({e.invariant for e in errors}) == len(errors)  # one error per invariant
    crashed = [str(e) for e in errors if "could not be evaluated" in e.detail]
    assert crashed == []


def test_values_checks_are_skipped_while_a_cuda_graph_is_capturing(monkeypatch):
    import guardrails.validation as validate_module

    case = build_case("extend", [3, 2], [4, 9])
    bad = case.with_batch(page_table=torch.full_like(case.batch.page_table, 10**6))
    monkeypatch.setattr(validate_module, "stream_is_capturing", lambda: True)
    assert bad.violations(level=Level.VALUES) == []  # a host copy would abort the capture
    padded = bad.with_batch(batch_size=5)
    assert {e.invariant for e in padded.violations(level=Level.VALUES)} == {"batch-size"}
