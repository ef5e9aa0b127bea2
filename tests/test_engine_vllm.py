"""vLLM's real attention backends on CPU (published wheels, cached under .cache/).

``python -m tests.engines.run_vllm`` runs, one vLLM version per process, the backends
of ``tests.engines.vllm_kit.BACKENDS`` for every batch kind (decode, prefill, mixed,
spec-decode, and the FULL CUDA-graph path: capture, then a padded replay) and records
every kernel call. These tests check that every backend ran every batch and that the
recorders saw the kernels each backend is known to launch, with metadata of the
expected forms; then, with ``FMHA_GUARD=values``, print what the guard did and assert that
it checked every FlashInfer call (and the FlashAttention / FlashMLA ones) with no
violation and no internal error, and caught faults seeded at the FlashInfer boundary
(``FMHA_KIT_FAULT``, ``tests/engines/faults.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from .engines.vllm_kit import BACKENDS, BATCHES, GRAPH_BATCH, GRAPH_REPLAY, NUM_LAYERS, SPEC_TOKENS

pytestmark = pytest.mark.network

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("0.33.0", "0.34.0")
BATCH_KINDS = (*BATCHES, "cudagraph")

FA_VARLEN = "vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func"
FA_SCHED = "vllm.vllm_flash_attn.flash_attn_interface.get_scheduler_metadata"
FA3 = "torch.ops._vllm_fa3_C.fwd"
FA2 = "torch.ops._vllm_fa2_C.varlen_fwd"
FA4 = "vllm.vllm_flash_attn.cute.interface._flash_attn_fwd"
CACHE = "torch.ops._C_cache_ops.reshape_and_cache_flash"
MLA_CACHE = "torch.ops._C_cache_ops.concat_and_cache_mla"
FI_PREFILL_PLAN = "flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper.plan"
FI_PREFILL_RUN = "flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper.run"
XQA = "flashinfer.decode.xqa_batch_decode_with_kv_cache"
TRTLLM_DECODE = "flashinfer.decode.trtllm_batch_decode_with_kv_cache"
TRTLLM_CONTEXT = "flashinfer.prefill.trtllm_batch_context_with_kv_cache"
TRTLLM_MLA = "flashinfer.mla._core.trtllm_batch_decode_with_kv_cache_mla"
FLASHMLA = "vllm.third_party.flashmla.flash_mla_interface.flash_mla_with_kvcache"
FLASHMLA_META = "vllm.third_party.flashmla.flash_mla_interface.get_mla_metadata"
FLASHMLA_C = "torch.ops._flashmla_C.dense_decode_fwd"
TRITON_UNIFIED = "vllm.v1.attention.ops.triton_unified_attention.unified_attention"
TRITON_MLA_DECODE = "vllm.v1.attention.ops.triton_decode_attention.decode_attention_fwd"

DECODE_KINDS = ("decode", "spec_decode", "cudagraph")
#: per backend: the FMHA entry points that must be called, per group of batch kinds
EXPECTED: dict[str, dict[tuple[str, ...], set[str]]] = {
    "FLASH_ATTN@sm90": {BATCH_KINDS: {FA_VARLEN, FA3, FA_SCHED, CACHE}},
    "FLASH_ATTN@sm80": {BATCH_KINDS: {FA_VARLEN, FA2, CACHE}},
    "FLASHINFER@sm90": {DECODE_KINDS + ("mixed",): {XQA, CACHE},
                        ("prefill", "mixed"): {FI_PREFILL_PLAN, FI_PREFILL_RUN}},
    "FLASHINFER@sm100": {DECODE_KINDS + ("mixed",): {TRTLLM_DECODE, CACHE},
                         ("prefill", "mixed"): {TRTLLM_CONTEXT}},
    "TRITON_ATTN@sm90": {BATCH_KINDS: {TRITON_UNIFIED}},
    "FLASHMLA@sm90": {BATCH_KINDS: {FLASHMLA, FLASHMLA_META, FLASHMLA_C, MLA_CACHE},
                      ("prefill", "mixed"): {FA_VARLEN, FA3}},
    "FLASHINFER_MLA@sm100": {DECODE_KINDS + ("mixed",): {TRTLLM_MLA, MLA_CACHE},
                             ("prefill", "mixed"): {FA_VARLEN, FA4}},
    "TRITON_MLA@sm90": {DECODE_KINDS + ("mixed",): {TRITON_MLA_DECODE, MLA_CACHE},
                        ("prefill", "mixed"): {FA_VARLEN, FA3}},
    "FLASH_ATTN_MLA@sm90": {BATCH_KINDS: {FA_VARLEN, FA3, FA_SCHED, MLA_CACHE}},
}
#: entry points that launch attention once per layer per forward
PER_LAYER = {FA3, FA2, FA4, XQA, TRTLLM_DECODE, TRTLLM_CONTEXT, TRTLLM_MLA, FLASHMLA,
             TRITON_UNIFIED, TRITON_MLA_DECODE, FI_PREFILL_RUN, CACHE, MLA_CACHE}


def _run_driver(version: str, out: Path, *args: str, **env: str) -> dict:
    full_env = {**os.environ, **env}
    full_env.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engines.run_vllm", "--version", version, "--inventory",
         "--output", str(out), *args],
        cwd=REPO, env=full_env, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), f"driver wrote no report (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
    report = json.loads(out.read_text())
    report["_stderr"] = proc.stderr
    report["_returncode"] = proc.returncode
    return report


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("vllm")
    env = {k: "" for k in ("FMHA_GUARD",)}
    return {v: _run_driver(v, base / f"vllm-{v}.json", **env) for v in VERSIONS}


def _calls(report: dict, backend: str, batch: str | None = None, entry: str | None = None):
    return [c for c in report["calls"]
            if c.get("backend") == backend and (batch is None or c.get("batch") == batch)
            and (entry is None or c["entry"] == entry)]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_backend_runs_every_batch_kind(reports, version):
    report = reports[version]
    assert report["version"] == version
    assert set(report["backends"]) == {run.key for run in BACKENDS}
    for key, outcome in report["backends"].items():
        assert "error" not in outcome, (key, outcome.get("traceback"))
        assert set(outcome["batches"]) == set(BATCH_KINDS), key
        for batch, result in outcome["batches"].items():
            assert result.get("ok"), (key, batch, result.get("error"), result.get("traceback"))
    assert report["_returncode"] == 0, report["_stderr"][-3000:]
    # nothing on an attention path fell into a placeholder module: the only placeholder
    # calls are module-level constants of vLLM's structured-output code (0.33 builds an
    # xgrammar AnyTextFormat when vllm.v1.structured_output is first imported)
    assert all(name.startswith(("xgrammar.", "llguidance.")) for name in report["placeholder_calls"]), \
        report["placeholder_calls"]


@pytest.mark.parametrize("version", VERSIONS)
def test_recorders_saw_the_expected_kernels(reports, version):
    report = reports[version]
    for backend, groups in EXPECTED.items():
        for batches, entries in groups.items():
            for batch in batches:
                seen = set(report["backends"][backend]["batches"][batch]["calls"])
                assert entries <= seen, (backend, batch, sorted(entries - seen))


@pytest.mark.parametrize("version", VERSIONS)
def test_attention_launches_once_per_layer(reports, version):
    report = reports[version]
    for backend in EXPECTED:
        for batch in BATCH_KINDS:
            forward = [c for c in _calls(report, backend, batch)
                       if c.get("phase") == "forward" and c["entry"] in PER_LAYER]
            assert forward, (backend, batch)
            per_layer = defaultdict(Counter)
            for call in forward:
                per_layer[call.get("layer_index")][(call.get("graph"), call["entry"])] += 1
            assert set(per_layer) == set(range(NUM_LAYERS)), (backend, batch)
            assert per_layer[0] == per_layer[1], (backend, batch, per_layer)
            if batch == "cudagraph":  # one forward at capture, one at the padded replay
                assert {graph for graph, _ in per_layer[0]} == {"capture", "replay"}, (backend, per_layer)
            for (graph, entry), count in per_layer[0].items():
                # one launch per layer per forward, except the MLA prefill with cached
                # context: FA for the new tokens, FA per context chunk, then a merge
                if entry in (FA3, FA2, FA4) and backend.endswith(("MLA@sm90", "MLA@sm100")) \
                        and batch in ("prefill", "mixed") and backend != "FLASH_ATTN_MLA@sm90":
                    assert count == 2, (backend, batch, graph, entry, count)
                else:
                    assert count == 1, (backend, batch, graph, entry, count)


def _t(call, name):
    return call["args"][name]


@pytest.mark.parametrize("version", VERSIONS)
def test_index_tensors_match_the_batch(reports, version):
    report = reports[version]
    # FlashAttention: cu_seqlens_q holds num_reqs + 1 entries (padded requests included
    # on the CUDA-graph replay), seqused_k num_reqs, block_table num_reqs rows
    for backend in ("FLASH_ATTN@sm90", "FLASH_ATTN@sm80"):
        for batch, spec in BATCHES.items():
            for call in _calls(report, backend, batch, FA_VARLEN):
                assert _t(call, "cu_seqlens_q")["shape"] == [spec.batch_size + 1]
                assert _t(call, "cu_seqlens_q")["values"][-1] == spec.num_tokens
                assert _t(call, "seqused_k")["values"] == list(spec.seq_lens)
                assert _t(call, "block_table")["shape"][0] == spec.batch_size
                assert _t(call, "q")["shape"][0] == spec.num_tokens
        replay = [c for c in _calls(report, backend, "cudagraph", FA_VARLEN) if c.get("graph") == "replay"]
        assert replay
        for call in replay:
            qsl = _t(call, "cu_seqlens_q")["values"]
            assert len(qsl) == GRAPH_BATCH + 1
            # padded requests repeat the real token count (zero-length queries)
            assert qsl[GRAPH_REPLAY.batch_size:] == [GRAPH_REPLAY.num_tokens] * (GRAPH_BATCH + 1 - GRAPH_REPLAY.batch_size)
            assert _t(call, "q")["shape"][0] == GRAPH_BATCH  # num_input_tokens (padded)
    # FlashInfer prefill wrapper: plan's qo_indptr / paged_kv_indptr hold num_prefills + 1
    for batch in ("prefill", "mixed"):
        spec = BATCHES[batch]
        prefills = sum(1 for q in spec.query_lens if q > 1)
        for call in _calls(report, "FLASHINFER@sm90", batch, FI_PREFILL_PLAN):
            assert _t(call, "qo_indptr")["shape"] == [prefills + 1]
            assert _t(call, "paged_kv_indptr")["shape"] == [prefills + 1]
            assert _t(call, "qo_indptr")["device"] == "cpu"  # host index tensors into plan
    # trtllm context: batch_size == cum_seq_lens_q.shape[0] - 1 (SGLang #21649's invariant)
    for batch in ("prefill", "mixed"):
        for call in _calls(report, "FLASHINFER@sm100", batch, TRTLLM_CONTEXT):
            assert _t(call, "batch_size") == _t(call, "cum_seq_lens_q")["shape"][0] - 1
            assert _t(call, "block_tables")["shape"][0] == _t(call, "batch_size")
            assert _t(call, "seq_lens")["shape"][0] == _t(call, "batch_size")
    # decode kernels: one block-table row and one seq_len per request; the spec-decode
    # batch has a uniform query length 1 + SPEC_TOKENS
    for backend, entry in (("FLASHINFER@sm100", TRTLLM_DECODE), ("FLASHINFER@sm90", XQA)):
        for batch in ("decode", "spec_decode"):
            spec = BATCHES[batch]
            for call in _calls(report, backend, batch, entry):
                assert _t(call, "block_tables")["shape"][0] == spec.batch_size
                assert _t(call, "seq_lens")["values"] == list(spec.seq_lens)
                assert _t(call, "q_len_per_req") == (1 + SPEC_TOKENS if batch == "spec_decode" else 1)
                assert _t(call, "query")["shape"][0] == spec.num_tokens
    for call in _calls(report, "FLASHMLA@sm90", "decode", FLASHMLA):
        assert _t(call, "block_table")["shape"][0] == BATCHES["decode"].batch_size
        assert _t(call, "cache_seqlens")["values"] == list(BATCHES["decode"].seq_lens)


@pytest.mark.parametrize("version", VERSIONS)
def test_triton_metadata_kernels_really_ran(reports, version):
    report = reports[version]
    kernels = {(t["backend"], t["kernel"].rsplit(".", 1)[-1]) for t in report["triton_launches"]}
    # the Triton backend writes its KV cache with a Triton kernel
    assert ("TRITON_ATTN@sm90", "reshape_and_cache_kernel_flash") in kernels
    # FlashInfer's builder fills its page-index buffer with a Triton kernel, and the
    # buffer handed to the kernels is marked as filled in place
    assert any(b == "FLASHINFER@sm90" for b, _ in kernels)
    plan = _calls(report, "FLASHINFER@sm90", "prefill", FI_PREFILL_PLAN)
    assert plan and plan[0]["args"]["paged_kv_indices"].get("triton_kernels")


def test_guard_values_run_reports_per_entry_point(tmp_path, reports):
    version = VERSIONS[-1]
    report = _run_driver(version, tmp_path / "guarded.json", FMHA_GUARD="values",
                         FMHA_GUARD_ACTION="warn")
    guard = report.get("guard")
    print(f"\n[FMHA_GUARD=values, vLLM {version}] guard: "
          + json.dumps({k: v for k, v in (guard or {}).items() if k != "per_entry_point"}, default=str))
    for entry, counters in sorted((guard or {}).get("per_entry_point", {}).items()):
        print(f"  {entry}: {counters}")
    failed = {k: [b for b, r in v["batches"].items() if not r.get("ok")] for k, v in report["backends"].items()}
    print("  backends with failing batches under the guard:", {k: v for k, v in failed.items() if v})
    assert guard is not None and guard["FMHA_GUARD"] == "values"


#: the FlashAttention / FlashMLA backends and the entry points of theirs the guard checks
#: (runtime_checks.kernel_specs: vllm_flash_attn, flash_mla); FlashMLA's get_mla_metadata
#: takes *args and returns an empty schedule (nothing to check: not guarded)
FA_BACKENDS = ("FLASH_ATTN@sm90", "FLASH_ATTN@sm80", "FLASHMLA@sm90", "FLASH_ATTN_MLA@sm90")
GUARDED_BEYOND_FLASHINFER = {FA_VARLEN, FA_SCHED, FLASHMLA}


@pytest.mark.parametrize("version", VERSIONS)
def test_guard_checks_every_flash_attn_and_flashmla_launch(tmp_path, version):
    """FMHA_GUARD=values on the FLASH_ATTN / FLASHMLA backends: every vllm_flash_attn and
    FlashMLA call is checked (a shape check or a memo hit, and a value check, a value memo
    hit or a capture skip), no violation, no internal error."""
    report = _run_driver(version, tmp_path / "guarded.json", "--backends", ",".join(FA_BACKENDS),
                         FMHA_GUARD="values", FMHA_GUARD_ACTION="warn")
    assert report["_returncode"] == 0, report["_stderr"][-3000:]
    assert report["guard"]["installed"] is True
    seen = defaultdict(set)
    for call in report["calls"]:
        if call.get("layer") != "python" or call["entry"] not in GUARDED_BEYOND_FLASHINFER:
            continue
        seen[call["backend"]].add(call["entry"])
        guard = call.get("guard") or {}
        where = (call["backend"], call.get("batch"), call.get("graph"), call["entry"])
        assert guard.get("launches") == 1, where
        assert guard.get("shape_checks", 0) + guard.get("shape_memo_hits", 0) == 1, where
        values = guard.get("value_checks", 0) + guard.get("value_memo_hits", 0) + guard.get("capture_skips", 0)
        assert values == 1, where
        assert not guard.get("warned") and not guard.get("internal_errors"), (where, guard)
    assert dict(seen) == {"FLASH_ATTN@sm90": {FA_VARLEN, FA_SCHED}, "FLASH_ATTN@sm80": {FA_VARLEN},
                          "FLASHMLA@sm90": {FA_VARLEN, FLASHMLA}, "FLASH_ATTN_MLA@sm90": {FA_VARLEN, FA_SCHED}}
    totals = report["guard"]["totals"]
    assert totals["warned"] == 0 and totals["internal_errors"] == [], totals



#: the backends that call FlashInfer (FLASHINFER_MLA decodes with trtllm-gen MLA)
FLASHINFER_BACKENDS = ("FLASHINFER@sm90", "FLASHINFER@sm100", "FLASHINFER_MLA@sm100")


@pytest.mark.parametrize("version", VERSIONS)
def test_guard_checks_every_flashinfer_call(tmp_path, version):
    """FMHA_GUARD=values on the FlashInfer backends (decode, prefill, mixed, spec decode,
    FULL CUDA-graph capture and padded replay): every FlashInfer call is checked (wrapper
    plan / run, xqa, trtllm-gen decode / context / MLA), with no violation on vLLM's valid
    batches (page-granular cum_seq_lens_kv, padded rows with seq_len 0, a mixed batch's
    plan with kv_indptr starting at an offset) and no internal error."""
    from .flashinfer_guarded import classify

    report = _run_driver(version, tmp_path / "guarded.json", "--backends", ",".join(FLASHINFER_BACKENDS),
                         FMHA_GUARD="values", FMHA_GUARD_ACTION="warn")
    assert report["_returncode"] == 0, report["_stderr"][-3000:]
    for key, outcome in report["backends"].items():
        assert all(r.get("ok") for r in outcome["batches"].values()), (key, outcome)
    guard = report["guard"]
    flashinfer = {k: v for k, v in guard["per_entry_point"].items() if k.startswith("flashinfer.")}
    assert {k for k in flashinfer if classify(k) == "unguarded"} == set(), flashinfer
    checked = {k: v for k, v in flashinfer.items() if classify(k) == "guarded"}
    assert {XQA, TRTLLM_DECODE, TRTLLM_CONTEXT, TRTLLM_MLA, FI_PREFILL_PLAN, FI_PREFILL_RUN} <= set(checked)
    for name, counters in checked.items():
        assert counters["launches"] >= counters["calls"], (name, counters)
        assert counters["warned"] == 0 and counters["internal_errors"] == [], (name, counters)
    assert guard["totals"]["warned"] == 0 and guard["totals"]["internal_errors"] == [], guard["totals"]
    graph = [c for c in report["calls"] if c.get("graph") in ("capture", "replay") and c["entry"] in checked]
    assert {c["graph"] for c in graph} == {"capture", "replay"}
    assert all((c.get("guard") or {}).get("launches", 0) >= 1 for c in graph)
    for name, counters in (guard["status"].get("entries") or {}).items():
        if name.startswith("flashinfer."):
            assert counters["internal_errors"] == 0 and counters["unchecked"] == 0, (name, counters)
            assert counters.get("violations", 0) == 0, (name, counters)


def test_seeded_faults_are_caught(tmp_path):
    """A page id past the pool seeded into vLLM's metadata at the FlashInfer boundary: the
    block tables of xqa (SM90) and trtllm-gen decode (SM100), the paged_kv_indices of the
    prefill wrapper's plan; each faulted backend's launches are warned about as
    page-id-range."""
    version = VERSIONS[-1]
    report = _run_driver(version, tmp_path / "faults.json", "--backends", "FLASHINFER@sm90,FLASHINFER@sm100",
                         "--batches", "decode,prefill", "--no-cudagraph", FMHA_GUARD="values",
                         FMHA_GUARD_ACTION="warn", FMHA_KIT_FAULT="block_table_past_pool,kv_indices_past_pool")
    totals = report["guard"]["status"]["totals"]
    assert {site.split("'")[1] for site in totals["warned_sites"]} == {"page-id-range"}, totals
    warned = defaultdict(int)
    for call in report["calls"]:
        warned[(call.get("backend"), call.get("batch"))] += (call.get("guard") or {}).get("warned", 0)
    assert all(warned[(b, batch)] >= 1 for b in ("FLASHINFER@sm90", "FLASHINFER@sm100")
               for batch in ("decode",)), dict(warned)
    assert warned[("FLASHINFER@sm90", "prefill")] >= 1, dict(warned)
    assert totals["internal_errors"] == []
