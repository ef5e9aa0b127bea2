"""CudaGraphRunner on CPU (eager replays of the captured metadata), the replay check, the
backend's memoized guard and the guard level semantics of the reference backend."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from guardrails import FmhaInvariantError
from runtime_checks.launch_memo import VALUE_MEMO_SIZE, LaunchMemo, version_key
from runtime_checks.reference_backend import CudaGraphRunner, ForwardMode, ReferenceAttnBackend, guard_level
from runtime_checks.reference_backend.workload import Workload, max_relative_error


def _replay(w: Workload, runner: CudaGraphRunner, prefixes, mode=ForwardMode.DECODE, q_len=1, **kw):
    rows = [w.add(p) for p in prefixes]
    fb, inputs = w.step(mode, rows, [q_len] * len(rows), num_draft_tokens=q_len if mode.is_target_verify() else None)
    for c in runner.captured.values():
        for o in c.out:
            o.fill_(float("nan"))
    outs = runner.replay(fb, *([inputs[layer.layer_id][i] for layer in w.layers] for i in range(3)), **kw)
    return outs, [inputs[layer.layer_id][3] for layer in w.layers], rows


@pytest.mark.parametrize("pool", ["full", "swa"])
@pytest.mark.parametrize("mode,q_len", [(ForwardMode.DECODE, 1), (ForwardMode.TARGET_VERIFY, 3)])
def test_padded_replays_match_the_reference(pool, mode, q_len, monkeypatch):
    monkeypatch.setenv("FMHA_GUARD", "values")
    w = Workload(pool=pool, num_pages=160, num_swa_pages=160, max_context_len=128, seed=5)
    runner = CudaGraphRunner(ReferenceAttnBackend(w.model_runner()), w.layers, w.pool, mode, [2, 4], q_len=q_len)
    runner.capture()
    for prefixes in ((3, 20), (1, 40, 7), (9,), (33, 2, 18, 5)):
        outs, refs, rows = _replay(w, runner, prefixes, mode, q_len)
        assert runner.graph_batch_size(len(rows)) >= len(rows)
        assert max_relative_error(outs, refs) <= 1e-2
        for row in rows:
            w.release(row)


def test_replay_refuses_a_batch_larger_than_any_graph():
    w = Workload(seed=1)
    runner = CudaGraphRunner(ReferenceAttnBackend(w.model_runner()), w.layers, w.pool, ForwardMode.DECODE, [2])
    runner.capture()
    rows = [w.add(3) for _ in range(3)]
    fb, inputs = w.step(ForwardMode.DECODE, rows, [1, 1, 1])
    assert not runner.can_run(fb)
    with pytest.raises(ValueError, match="does not fit"):
        runner.replay(fb, *([inputs[layer.layer_id][i] for layer in w.layers] for i in range(3)))


def test_runner_refuses_ragged_modes():
    w = Workload()
    with pytest.raises(ValueError, match="DECODE / TARGET_VERIFY"):
        CudaGraphRunner(ReferenceAttnBackend(w.model_runner()), w.layers, w.pool, ForwardMode.DRAFT_EXTEND_V2, [2])


class _RebindingReplay(ReferenceAttnBackend):
    """Replay writes a refilled page table with a page id past the pool (a stale index)."""

    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, *args, **kwargs):
        super().init_forward_metadata_replay_cuda_graph(bs, req_pool_indices, seq_lens, *args, **kwargs)
        self._graph_metadata[bs].page_table[0, 0] = 10_000


def _rebinding_runner(monkeypatch, level: str, seed: int) -> tuple[Workload, CudaGraphRunner]:
    """A decode graph captured for bs 2 over :class:`_RebindingReplay`, at ``FMHA_GUARD=level``."""
    monkeypatch.setenv("FMHA_GUARD", level)
    w = Workload(seed=seed)
    runner = CudaGraphRunner(_RebindingReplay(w.model_runner()), w.layers, w.pool, ForwardMode.DECODE, [2])
    runner.capture()
    return w, runner


def test_bad_refill_is_caught_before_replay(monkeypatch):
    w, runner = _rebinding_runner(monkeypatch, "values", seed=2)
    calls = []
    monkeypatch.setattr(runner, "_run_layers", lambda *a: calls.append(a))  # what graph.replay() would run
    with pytest.raises(FmhaInvariantError) as err:
        _replay(w, runner, (4, 9))
    assert err.value.invariant == "page-id-range"
    assert calls == []


def test_shapes_level_lets_a_bad_refill_through_values_catches_it(monkeypatch):
    """At ``shapes`` nothing reads the refilled contents (documented trade-off)."""
    w, runner = _rebinding_runner(monkeypatch, "shapes", seed=3)
    monkeypatch.setattr(runner, "_run_layers", lambda *a: None)
    _replay(w, runner, (4, 9))  # no error at shapes
    monkeypatch.setenv("FMHA_GUARD", "values")
    with pytest.raises(FmhaInvariantError):
        _replay(w, runner, (5, 6))


# ----------------------------------------------------------------------------- memoized guard


def _decode_steps(w: Workload, backend: ReferenceAttnBackend, steps: int, bad_at: int | None = None):
    rows = [w.add(p) for p in (5, 17, 30)]
    for i in range(steps):
        fb, inputs = w.step(ForwardMode.DECODE, rows, [1, 1, 1])
        backend.init_forward_metadata(fb)
        if i == bad_at:  # a fresh table (version 0), as a buggy planner would build it
            table = backend.forward_metadata.page_table.clone()
            table[1, 0] = w.pool.num_pages + 3
            backend.forward_metadata.page_table = table
        for layer in w.layers:
            q, k, v, _ = inputs[layer.layer_id]
            backend.forward(q, k, v, layer, fb)


def test_one_value_check_per_step_shared_by_the_layers(monkeypatch):
    monkeypatch.setenv("FMHA_GUARD", "values")
    w = Workload(seed=4)
    backend = ReferenceAttnBackend(w.model_runner())
    _decode_steps(w, backend, 6)
    checker = backend._checker.counters
    assert checker.value_checks == 6  # 2 layers, one metadata per step
    assert checker.shape_checks <= 6  # seq lens grow: a new max_seq_len_kv is a new shape key at most once a step


def test_off_builds_nothing(monkeypatch):
    monkeypatch.setenv("FMHA_GUARD", "off")
    w = Workload(seed=6)
    backend = ReferenceAttnBackend(w.model_runner())
    monkeypatch.setattr(backend, "_describe", lambda *a, **k: pytest.fail("described a launch with the guard off"))
    _decode_steps(w, backend, 3)
    assert guard_level().name == "OFF"


def test_unset_means_shapes(monkeypatch):
    monkeypatch.delenv("FMHA_GUARD", raising=False)
    assert guard_level().name == "SHAPES"
    monkeypatch.setenv("FMHA_GUARD", "values")
    assert guard_level().name == "VALUES"


def test_fresh_bad_metadata_after_many_steps_is_caught(monkeypatch):
    """Fresh per-step metadata (new tensors every step), then a fresh bad page table."""
    monkeypatch.setenv("FMHA_GUARD", "values")
    w = Workload(seed=7, max_context_len=160, num_pages=160)
    backend = ReferenceAttnBackend(w.model_runner())
    with pytest.raises(FmhaInvariantError) as err:
        _decode_steps(w, backend, 80, bad_at=79)
    assert err.value.invariant == "page-id-range"


def test_launch_memo_holds_the_tensors_it_names():
    """Content keys name tensors by id(); CPython reuses a freed object's id and the
    allocator its address (and a fresh tensor's version is 0 again), so a freed index
    tensor's key could match a new, unchecked one. The memo keeps what its keys name."""
    memo = LaunchMemo()
    t = torch.zeros(4, dtype=torch.int32)
    alive = weakref.ref(t)
    memo.add_value(version_key(t), [t])
    del t
    gc.collect()
    assert alive() is not None
    for i in range(VALUE_MEMO_SIZE):  # evicted: released
        memo.add_value(("other", i), [])
    gc.collect()
    assert alive() is None


# ----------------------------------------------------------------------------- SM100 routing


def test_sm100_extend_routes_to_the_trtllm_context_kernel(monkeypatch):
    """On SM100 "auto" sends extend-shaped work to trtllm-gen's context kernel with the
    batch size of the planned offsets (#21649), never the padded one."""
    import flashinfer.prefill

    from runtime_checks.reference_backend import flashinfer_kernels

    seen = {}
    monkeypatch.setattr(flashinfer_kernels, "_sm_major", lambda device: 10)
    monkeypatch.setattr(flashinfer.prefill, "trtllm_batch_context_with_kv_cache", lambda **kw: seen.update(kw) or kw["out"])
    q = torch.zeros(7, 4, 16, dtype=torch.bfloat16)
    kv = torch.zeros(10, 2, 2, 4, 16, dtype=torch.bfloat16)
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    seq_lens = torch.tensor([5, 9], dtype=torch.int32)
    flashinfer_kernels.batch_prefill_with_paged_kv_cache(
        q, kv, cu, torch.tensor([[1, 2, 0], [3, 4, 5]], dtype=torch.int32), seq_lens, sm_scale=0.25,
        out=torch.empty_like(q), workspace_buffer=torch.zeros(8, dtype=torch.uint8), plan_cache={},
        max_q_len=4, max_kv_len=9)
    assert seen["batch_size"] == 2 and seen["cum_seq_lens_q"] is cu
    assert seen["cum_seq_lens_kv"].tolist() == [0, 5, 14]
    assert (seen["max_q_len"], seen["max_kv_len"], seen["bmm1_scale"]) == (4, 9, 0.25)


def test_trtllm_context_kernel_refuses_hopper(monkeypatch):
    from runtime_checks.reference_backend import flashinfer_kernels

    monkeypatch.setattr(flashinfer_kernels, "_sm_major", lambda device: 9)
    with pytest.raises(NotImplementedError, match="SM100"):
        flashinfer_kernels.trtllm_batch_context_with_kv_cache(
            torch.zeros(1, 4, 16), None, None, None, None, 1, 1, 1.0, 1.0, 1, None, None)
