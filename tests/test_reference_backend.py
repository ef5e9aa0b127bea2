"""The reference attention backend on CPU (torch kernels): every forward mode against a
float64 reference, DP padding, the hybrid SWA pool under the draft worker's pool swap,
CUDA-graph-style capture then replay, the guard before every launch, and lint-cleanliness.

Outputs are poisoned with NaN before every run; a row the backend forgets stays NaN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails import FmhaInvariantError
from runtime_checks.reference_backend import (
    AttentionLayer,
    ForwardBatch,
    ForwardMode,
    MHATokenToKVPool,
    ModelRunner,
    ReferenceAttnBackend,
    ReqToTokenPool,
    SWAKVPool,
    pad_forward_batch_for_dp,
    torch_kernels,
)
from runtime_checks.reference_backend import attention_backend as backend_module
from runtime_checks.reference_backend.workload import reference_attention as workload_reference
from tests.launch_args import PagedCase, offsets, reference_attention

KV_HEADS, GROUP, HEAD_DIM, PAGE = 2, 2, 32, 4
QO_HEADS = KV_HEADS * GROUP
WINDOW = 5
TOL = 1e-2
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- harness


def make_pool(kind: str = "full", num_pages: int = 96, num_swa_pages: int = 80, layers: int = 2):
    if kind == "swa":
        return SWAKVPool(num_pages, PAGE, KV_HEADS, HEAD_DIM, layers, num_swa_pages=num_swa_pages,
                         swa_layer_ids=[1], sliding_window_size=WINDOW)
    return MHATokenToKVPool(num_pages, PAGE, KV_HEADS, HEAD_DIM, layers)


def layers_for(pool) -> list[AttentionLayer]:
    return [
        AttentionLayer(i, QO_HEADS, KV_HEADS, HEAD_DIM,
                       sliding_window_size=WINDOW if pool.is_swa_layer(i) else -1)
        for i in range(len(pool.kv_buffer))
    ]


@dataclass
class Engine:
    """A tiny scheduler: requests with K/V ground truth per layer, a pool, a backend."""

    pool: MHATokenToKVPool
    req_pool: ReqToTokenPool
    backend: ReferenceAttnBackend
    layers: list[AttentionLayer]
    gen: torch.Generator
    truth: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # row -> per layer [len, 2, Hk, D]

    @classmethod
    def build(cls, pool=None, seed: int = 0, runner_pool=None, max_reqs: int = 16, max_context: int = 96) -> "Engine":
        pool = pool or make_pool()
        req_pool = ReqToTokenPool(max_reqs, max_context)
        runner = ModelRunner(token_to_kv_pool=runner_pool or pool, req_to_token_pool=req_pool, page_size=PAGE,
                             num_qo_heads=QO_HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM)
        return cls(pool, req_pool, ReferenceAttnBackend(runner), layers_for(pool), torch.Generator().manual_seed(seed))

    def rand(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(torch.bfloat16)

    def add_request(self, prefix: int) -> int:
        """A request whose first ``prefix`` tokens are already in the pool."""
        row = self.req_pool.alloc()
        loc = self.pool.grow(self.req_pool, row, 0, prefix)
        self.truth[row] = []
        for layer in self.layers:
            kv = self.rand(prefix, 2, KV_HEADS, HEAD_DIM)
            self.pool.set_kv_buffer(layer.layer_id, loc, kv[:, 0], kv[:, 1])
            self.truth[row].append(kv)
        return row

    def length(self, row: int) -> int:
        return self.truth[row][0].shape[0]

    def step(self, mode: ForwardMode, rows: list[int], q_lens: list[int], *, pool=None, num_draft_tokens=None):
        """Grow each request by its q_len; the ForwardBatch, new q/k/v per layer, and the references."""
        locs, new_kv = [], {layer.layer_id: [] for layer in self.layers}
        for row, n in zip(rows, q_lens):
            old = self.length(row)
            locs.append(self.pool.grow(self.req_pool, row, old, old + n))
            for layer in self.layers:
                kv = self.rand(n, 2, KV_HEADS, HEAD_DIM)
                new_kv[layer.layer_id].append(kv)
                self.truth[row][layer.layer_id] = torch.cat([self.truth[row][layer.layer_id], kv])
        lens = torch.tensor([self.length(r) for r in rows], dtype=torch.int32)
        q_lens_t = torch.tensor(q_lens, dtype=torch.int32)
        fb = ForwardBatch(
            forward_mode=mode,
            batch_size=len(rows),
            seq_lens=lens,
            req_pool_indices=torch.tensor(rows, dtype=torch.int64),
            req_to_token=self.req_pool.req_to_token,
            out_cache_loc=torch.cat(locs) if locs else torch.zeros(0, dtype=torch.int64),
            token_to_kv_pool=pool or self.pool,
            extend_seq_lens=q_lens_t if mode in (ForwardMode.EXTEND, ForwardMode.MIXED) else None,
            spec_accept_lens=q_lens_t if mode is ForwardMode.DRAFT_EXTEND_V2 else None,
            num_draft_tokens=num_draft_tokens,
        )
        rows_total = sum(q_lens)
        inputs = {}
        for layer in self.layers:
            kv = torch.cat(new_kv[layer.layer_id]) if rows_total else torch.zeros(0, 2, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
            q = self.rand(rows_total, QO_HEADS, HEAD_DIM)
            window = layer.sliding_window_size
            ref = reference(q, [self.truth[r][layer.layer_id] for r in rows], q_lens, window)
            inputs[layer.layer_id] = (q, kv[:, 0].contiguous(), kv[:, 1].contiguous(), ref)
        return fb, inputs


def reference(q: torch.Tensor, seqs: list[torch.Tensor], q_lens: list[int], window: int = -1) -> torch.Tensor:
    """float64 causal GQA attention, no paging (the workload module's reference)."""
    return workload_reference(q, seqs, q_lens, GROUP, window)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any(), "the backend left rows unwritten (NaN)"
    if ref.numel() == 0:
        return 0.0
    return (out.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-9)


def run_layers(engine: Engine, fb: ForwardBatch, inputs, *, pad_rows: int = 0, plan: bool = True) -> None:
    """Plan, then run every layer (poisoned output, optional padded extra rows); check vs reference."""
    if plan:
        engine.backend.init_forward_metadata(fb)
    for layer in engine.layers:
        q, k, v, ref = inputs[layer.layer_id]
        if pad_rows:
            q = torch.cat([q, engine.rand(pad_rows, QO_HEADS, HEAD_DIM)])
            k = torch.cat([k, engine.rand(pad_rows, KV_HEADS, HEAD_DIM)])
            v = torch.cat([v, engine.rand(pad_rows, KV_HEADS, HEAD_DIM)])
        out = torch.full_like(q, float("nan"))
        got = engine.backend.forward(q, k, v, layer, fb, out=out)
        assert got is out
        real = ref.shape[0]
        assert rel_err(out[:real], ref) <= TOL, f"layer {layer.layer_id}, mode {fb.forward_mode.name}"
        assert torch.equal(out[real:], torch.zeros_like(out[real:])), "padded rows must be zero"


@pytest.fixture
def kernel_calls(monkeypatch):
    """Which torch kernel each launch went to (and with which q_len_per_req)."""
    calls: list[tuple[str, Optional[int]]] = []
    prefill, decode = torch_kernels.batch_prefill_with_paged_kv_cache, torch_kernels.trtllm_batch_decode_with_kv_cache

    def spy_prefill(*a, **kw):
        calls.append(("prefill", None))
        return prefill(*a, **kw)

    def spy_decode(*a, **kw):
        calls.append(("decode", kw.get("q_len_per_req")))
        return decode(*a, **kw)

    monkeypatch.setattr(torch_kernels, "batch_prefill_with_paged_kv_cache", spy_prefill)
    monkeypatch.setattr(torch_kernels, "trtllm_batch_decode_with_kv_cache", spy_decode)
    return calls


@pytest.fixture(autouse=True)
def _guard_values(monkeypatch):
    """Run everything at the strictest level: a false positive of the guard fails the test."""
    monkeypatch.setenv("FMHA_GUARD", "values")


# ----------------------------------------------------------------------------- forward modes


def test_reference_matches_launch_args_reference():
    """The test's unpaged reference is tests.launch_args.reference_attention on a paged layout."""
    from tests.launch_args import paged_case

    case = paged_case([3, 1, 5], [7, 4, 13], page_size=PAGE, num_kv_heads=KV_HEADS, group=GROUP, head_dim=HEAD_DIM)
    seqs = []
    for i, kl in enumerate(case.kv_lens):
        pages = case.page_table[i, : -(-kl // PAGE)].long()
        kv = case.kv_cache[pages].permute(0, 3, 1, 2, 4).reshape(-1, 2, KV_HEADS, HEAD_DIM)[:kl]
        seqs.append(kv)
    assert torch.allclose(reference(case.q, seqs, case.q_lens), reference_attention(case), atol=1e-9)


def test_extend_ragged_over_prefixes(kernel_calls):
    engine = Engine.build()
    rows = [engine.add_request(p) for p in (0, 5, 8, 13)]
    fb, inputs = engine.step(ForwardMode.EXTEND, rows, [6, 1, 9, 3])
    run_layers(engine, fb, inputs)
    assert {c[0] for c in kernel_calls} == {"prefill"}
    # the backend wrote the new K/V where out_cache_loc says
    pool, layer = engine.pool, engine.layers[0]
    for row in rows:
        n = engine.length(row)
        slots = engine.req_pool.req_to_token[row, :n].long()
        stored = pool.get_kv_buffer(0)[slots // PAGE, :, :, slots % PAGE]  # [n, 2, Hk, D]
        assert torch.equal(stored, engine.truth[row][layer.layer_id])


def test_decode(kernel_calls):
    engine = Engine.build(seed=1)
    rows = [engine.add_request(p) for p in (1, 4, 7, 16, 30)]
    fb, inputs = engine.step(ForwardMode.DECODE, rows, [1] * 5)
    run_layers(engine, fb, inputs)
    assert set(kernel_calls) == {("decode", 1)}


def test_target_verify_uses_decode_kernel_with_draft_tokens(kernel_calls):
    engine = Engine.build(seed=2)
    rows = [engine.add_request(p) for p in (2, 9, 17)]
    fb, inputs = engine.step(ForwardMode.TARGET_VERIFY, rows, [3, 3, 3], num_draft_tokens=3)
    run_layers(engine, fb, inputs)
    assert set(kernel_calls) == {("decode", 3)}


def test_draft_extend_v2_variable_accept_lengths_use_prefill_kernel(kernel_calls):
    """SGLang #24856: variable accept lengths must go to the ragged kernel."""
    engine = Engine.build(seed=3)
    rows = [engine.add_request(p) for p in (4, 11, 6, 20)]
    fb, inputs = engine.step(ForwardMode.DRAFT_EXTEND_V2, rows, [3, 1, 4, 2])
    run_layers(engine, fb, inputs)
    assert {c[0] for c in kernel_calls} == {"prefill"}


def test_idle_launches_nothing(kernel_calls):
    engine = Engine.build(seed=4)
    fb, inputs = engine.step(ForwardMode.IDLE, [], [])
    run_layers(engine, fb, inputs)
    # a DP-padded idle rank: one padded request, one padded row, zero output
    padded = pad_forward_batch_for_dp(fb, 1)
    engine.backend.init_forward_metadata(fb)
    run_layers(engine, padded, inputs, pad_rows=1, plan=False)
    assert kernel_calls == []


@pytest.mark.parametrize(
    "mode,q_lens,draft",
    [
        (ForwardMode.EXTEND, [5, 2, 7], None),
        (ForwardMode.DECODE, [1, 1, 1], None),
        (ForwardMode.TARGET_VERIFY, [2, 2, 2], 2),
        (ForwardMode.DRAFT_EXTEND_V2, [2, 1, 3], None),
    ],
)
def test_dp_padded_batch_after_planning(mode, q_lens, draft):
    """SGLang #21649: pad 3 requests to 5 after the metadata is planned; every kernel size
    comes from the metadata, so the real rows are right and the padded rows are zero."""
    engine = Engine.build(seed=5)
    rows = [engine.add_request(p) for p in (3, 8, 12)]
    fb, inputs = engine.step(mode, rows, q_lens, num_draft_tokens=draft)
    engine.backend.init_forward_metadata(fb)
    padded = pad_forward_batch_for_dp(fb, 5)
    assert padded.batch_size == 5 and engine.backend.forward_metadata.cu_seqlens_q.shape[0] - 1 == 3
    extra = padded.out_cache_loc.shape[0] - fb.out_cache_loc.shape[0]
    run_layers(engine, padded, inputs, pad_rows=extra, plan=False)


def test_dp_padded_batch_planned_after_padding():
    """The other order: padded requests planned as dummy requests (dummy row, page 0)."""
    engine = Engine.build(seed=6)
    rows = [engine.add_request(p) for p in (3, 8)]
    fb, inputs = engine.step(ForwardMode.DECODE, rows, [1, 1])
    padded = pad_forward_batch_for_dp(fb, 4)
    engine.backend.init_forward_metadata(padded)
    for layer in engine.layers:
        q, k, v, ref = inputs[layer.layer_id]
        q = torch.cat([q, engine.rand(2, QO_HEADS, HEAD_DIM)])
        k, v = (torch.cat([t, engine.rand(2, KV_HEADS, HEAD_DIM)]) for t in (k, v))
        out = torch.full_like(q, float("nan"))
        engine.backend.forward(q, k, v, layer, padded, out=out)
        assert rel_err(out[:2], ref) <= TOL and not torch.isnan(out).any()


def test_swa_hybrid_pool_after_draft_worker_pool_swap(kernel_calls):
    """SGLang #26966: the backend is built against the draft's full pool; the draft worker
    then hands it batches on the target's hybrid SWA pool. Layer 1 is an SWA layer: it must
    read the SWA buffer through translated page ids and apply the window."""
    target_pool = make_pool("swa", num_pages=96, num_swa_pages=40)
    draft_pool = make_pool("full", num_pages=8)
    engine = Engine.build(pool=target_pool, runner_pool=draft_pool, seed=7)
    # full pages held by other requests whose SWA pages were already evicted: the live
    # requests' full page ids run past the SWA pool's size
    target_pool.allocator.alloc(48)
    rows = [engine.add_request(p) for p in (6, 13, 2)]
    fb, inputs = engine.step(ForwardMode.EXTEND, rows, [4, 3, 7])
    full_ids = engine.backend._page_table(fb.req_to_token, fb.req_pool_indices, 6)
    assert int(full_ids.max()) >= target_pool.num_swa_pages, "translation would not matter"
    run_layers(engine, fb, inputs)
    fb, inputs = engine.step(ForwardMode.DECODE, rows, [1, 1, 1])
    run_layers(engine, fb, inputs)
    fb, inputs = engine.step(ForwardMode.DRAFT_EXTEND_V2, rows, [2, 1, 3])
    run_layers(engine, fb, inputs)


@pytest.mark.parametrize("pool_kind", ["full", "swa"])
@pytest.mark.parametrize("mode,q_len", [(ForwardMode.DECODE, 1), (ForwardMode.TARGET_VERIFY, 3)])
def test_cuda_graph_capture_then_replay_with_new_contents(pool_kind, mode, q_len):
    """Capture with one batch, replay twice with other requests and lengths: static
    q/k/v/out buffers refilled with copy_, metadata buffers refilled in place, and each
    replay validated against the layout recorded at capture (SGLang #21987)."""
    bs = 3
    engine = Engine.build(pool=make_pool(pool_kind), seed=8)
    backend = engine.backend
    backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4 * q_len)
    static = {layer.layer_id: (torch.zeros(bs * q_len, QO_HEADS, HEAD_DIM, dtype=torch.bfloat16),
                               torch.zeros(bs * q_len, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16),
                               torch.zeros(bs * q_len, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16),
                               torch.zeros(bs * q_len, QO_HEADS, HEAD_DIM, dtype=torch.bfloat16))
              for layer in engine.layers}
    draft = q_len if mode is ForwardMode.TARGET_VERIFY else None
    for step, prefixes in enumerate([(5, 9, 2), (17, 1, 30), (8, 8, 40)]):
        rows = [engine.add_request(p) for p in prefixes]
        fb, inputs = engine.step(mode, rows, [q_len] * bs, num_draft_tokens=draft)
        if step == 0:
            backend.init_forward_metadata_capture_cuda_graph(bs, bs * q_len, fb.req_pool_indices, fb.seq_lens,
                                                             None, mode, None)
        else:
            backend.init_forward_metadata_replay_cuda_graph(bs, fb.req_pool_indices, fb.seq_lens,
                                                            int(fb.seq_lens.sum()), None, mode, None, fb.seq_lens)
        for layer in engine.layers:
            q, k, v, ref = inputs[layer.layer_id]
            sq, sk, sv, sout = static[layer.layer_id]
            sq.copy_(q), sk.copy_(k), sv.copy_(v)
            sout.fill_(float("nan"))
            backend.forward(sq, sk, sv, layer, fb, out=sout)
            assert rel_err(sout, ref) <= TOL, f"step {step} layer {layer.layer_id}"
        for row in rows:
            engine.pool.release(engine.req_pool, row, engine.length(row))
            del engine.truth[row]
    assert set(backend.forward_metadata.graph_layouts) == {layer.layer_id for layer in engine.layers}


def test_capture_refuses_ragged_modes():
    engine = Engine.build()
    engine.backend.init_cuda_graph_state(4, 16)
    with pytest.raises(ValueError, match="DRAFT_EXTEND_V2"):
        engine.backend.init_forward_metadata_capture_cuda_graph(
            2, 5, torch.tensor([1, 2]), torch.tensor([4, 5], dtype=torch.int32), None, ForwardMode.DRAFT_EXTEND_V2)


def test_trtllm_context_contract_matches_prefill_and_trusts_batch_size():
    """The SM100 context kernel's contract (for the #21649 example): same numbers as the
    prefill kernel; a padded batch_size walks past cu_seqlens_q."""
    from tests.launch_args import context_kwargs, paged_case

    case = paged_case([3, 1, 5], [7, 4, 13], page_size=PAGE, num_kv_heads=KV_HEADS, group=GROUP, head_dim=HEAD_DIM)
    kw = {k: v for k, v in context_kwargs(case).items()}
    out = torch_kernels.trtllm_batch_context_with_kv_cache(**kw, out=torch.full_like(case.q, float("nan")))
    assert rel_err(out, reference_attention(case)) <= TOL
    with pytest.raises(IndexError):
        torch_kernels.trtllm_batch_context_with_kv_cache(**{**kw, "batch_size": case.batch_size + 2})


# ----------------------------------------------------------------------------- random lengths


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_extend_random_lengths(data):
    n = data.draw(st.integers(1, 5), label="requests")
    prefixes = data.draw(st.lists(st.integers(0, 24), min_size=n, max_size=n), label="prefixes")
    q_lens = data.draw(st.lists(st.integers(1, 10), min_size=n, max_size=n), label="q_lens")
    mode = data.draw(st.sampled_from([ForwardMode.EXTEND, ForwardMode.DRAFT_EXTEND_V2]), label="mode")
    engine = Engine.build(seed=data.draw(st.integers(0, 2**16)))
    rows = [engine.add_request(p) for p in prefixes]
    fb, inputs = engine.step(mode, rows, q_lens)
    run_layers(engine, fb, inputs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decode_random_lengths(data):
    n = data.draw(st.integers(1, 6), label="requests")
    prefixes = data.draw(st.lists(st.integers(0, 40), min_size=n, max_size=n), label="prefixes")
    q_len = data.draw(st.sampled_from([1, 2, 4]), label="q_len_per_req")
    pool_kind = data.draw(st.sampled_from(["full", "swa"]), label="pool")
    engine = Engine.build(pool=make_pool(pool_kind), seed=data.draw(st.integers(0, 2**16)))
    rows = [engine.add_request(p) for p in prefixes]
    mode = ForwardMode.DECODE if q_len == 1 else ForwardMode.TARGET_VERIFY
    fb, inputs = engine.step(mode, rows, [q_len] * n, num_draft_tokens=q_len if q_len > 1 else None)
    run_layers(engine, fb, inputs)


# ----------------------------------------------------------------------------- the guard


def _planned(mode=ForwardMode.DECODE, q_len=1):
    engine = Engine.build(seed=9)
    rows = [engine.add_request(p) for p in (5, 9)]
    fb, inputs = engine.step(mode, rows, [q_len] * 2, num_draft_tokens=q_len if q_len > 1 else None)
    engine.backend.init_forward_metadata(fb)
    return engine, fb, inputs


@pytest.mark.parametrize("mode", [ForwardMode.DECODE, ForwardMode.EXTEND])
def test_values_guard_rejects_page_id_past_pool_before_the_kernel(kernel_calls, mode):
    engine, fb, inputs = _planned(mode)
    engine.backend.forward_metadata.page_table[1, 0] = engine.pool.num_pages + 3
    q, k, v, _ = inputs[0]
    with pytest.raises(FmhaInvariantError) as err:
        engine.backend.forward(q, k, v, engine.layers[0], fb, out=torch.full_like(q, float("nan")))
    assert err.value.invariant == "page-id-range"
    assert kernel_calls == []


def test_values_guard_rejects_swa_page_ids_past_the_swa_pool(kernel_calls, monkeypatch):
    """A backend that feeds full-pool ids to an SWA layer (the #26966 symptom) is stopped."""
    engine = Engine.build(pool=make_pool("swa", num_pages=96, num_swa_pages=12), seed=10)
    engine.pool.allocator.alloc(24)  # full page ids past the SWA pool's 12 pages
    rows = [engine.add_request(p) for p in (5, 9)]
    fb, inputs = engine.step(ForwardMode.DECODE, rows, [1, 1])
    engine.backend.init_forward_metadata(fb)
    monkeypatch.setattr(type(engine.pool), "translate_page_table", lambda self, table: table)
    q, k, v, _ = inputs[1]
    with pytest.raises(FmhaInvariantError) as err:
        engine.backend.forward(q, k, v, engine.layers[1], fb)
    assert err.value.invariant == "swa-page-id-range"
    assert kernel_calls == []


def test_shapes_guard_always_on(kernel_calls, monkeypatch):
    """Without FMHA_GUARD the shapes level still runs: int64 seq_lens never reach a kernel."""
    monkeypatch.delenv("FMHA_GUARD")
    engine, fb, inputs = _planned()
    engine.backend.forward_metadata.seq_lens = engine.backend.forward_metadata.seq_lens.long()
    q, k, v, _ = inputs[0]
    with pytest.raises(FmhaInvariantError) as err:
        engine.backend.forward(q, k, v, engine.layers[0], fb)
    assert err.value.invariant == "metadata-dtype-device"
    assert kernel_calls == []


def test_draft_extend_v2_on_the_decode_kernel_is_refused(kernel_calls):
    """What SGLang #24856's routing would do, forced through the decode helper."""
    engine, fb, inputs = _planned(ForwardMode.DRAFT_EXTEND_V2)
    fb.spec_accept_lens = torch.tensor([1, 1], dtype=torch.int32)
    engine.backend.init_forward_metadata(fb)
    q, _, _, _ = inputs[0]
    with pytest.raises(FmhaInvariantError) as err:
        engine.backend._run_decode_kernel(q, engine.layers[0], fb, None)
    assert err.value.invariant == "forward-mode-kernel"
    assert kernel_calls == []


def test_forward_without_metadata_is_an_error():
    engine = Engine.build()
    rows = [engine.add_request(3)]
    fb, inputs = engine.step(ForwardMode.DECODE, rows, [1])
    q, k, v, _ = inputs[0]
    with pytest.raises(RuntimeError, match="init_forward_metadata"):
        engine.backend.forward(q, k, v, engine.layers[0], fb)


# ----------------------------------------------------------------------------- lint, imports


def test_backend_is_lint_clean_under_every_rule():
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from fmha_guard.cli import main; sys.exit(main(sys.argv[1:]))",
         "audit", "--no-cache", "--format", "json",
         "--select", "GR001,GR002,GR003,GR004,GR101,GR102,GR900,GR901", "runtime_checks/reference_backend"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    report = json.loads(run.stdout)
    assert run.returncode == 0, report
    assert report["findings"] == [] and report["errors"] == []
    assert report["files_scanned"] == len(list((REPO / "runtime_checks" / "reference_backend").glob("*.py")))


def test_import_does_not_load_flashinfer():
    code = ("import sys, runtime_checks.reference_backend as rb; "
            "assert 'flashinfer' not in sys.modules, 'flashinfer imported eagerly'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_backend_reads_no_pool_in_init():
    """#26966 by construction: the backend keeps no reference to the pool it was built with."""
    engine = Engine.build()
    assert not any(isinstance(v, MHATokenToKVPool) for v in vars(engine.backend).values())


def test_paged_case_offsets_helper_is_shared():
    # keep the launch_args helpers importable from here (examples reuse both)
    assert offsets([2, 3]).tolist() == [0, 2, 5] and PagedCase is not None
    assert backend_module.guard_level().name == "VALUES"
