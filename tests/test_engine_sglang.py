"""SGLang's real attention backends (published 0.5.9 and 0.5.23 wheels) on CPU.

Each version runs in its own process (``python -m tests.engines.run_sglang``), built the
way that version's own test kit builds its backends, with FlashInfer's compiled layer
and the absent kernel libraries replaced by recorders (``tests/engines/``). The
assertions are on what the backends handed to the kernels. Runs with ``FMHA_GUARD=values``
(action ``warn``) print what the runtime guard did per entry point, and assert that it
checked every FlashInfer call of the FlashInfer-calling backends with no violation and no
internal error, and that faults seeded into the metadata at the FlashInfer boundary
(``FMHA_KIT_FAULT``, ``tests/engines/faults.py``) are caught with the right invariant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from .conftest import REPO
from .engines.sglang_kit import CAPTURE_BS, DRAFT_TOKENS, EXTEND_LENS, PREFIX_LENS, SPECS

pytestmark = pytest.mark.network

VERSIONS = ("0.5.9", "0.5.23")
BATCH = len(PREFIX_LENS)


def _driver(version: str, tmp_path, *args: str, **env: str) -> dict:
    out = tmp_path / f"sglang-{version}.json"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FMHA_GUARD")}
    environment.update(env)
    subprocess.run([sys.executable, "-m", "tests.engines.run_sglang", "--version", version,
                    "--json", str(out), *args], cwd=REPO, env=environment, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


@pytest.fixture(scope="module", params=VERSIONS)
def report(request, tmp_path_factory):
    return _driver(request.param, tmp_path_factory.mktemp("engines"))


def _case(report, backend, mode, page_size=None):
    for case in report["cases"]:
        if case["backend"] == backend and case["mode"] == mode and page_size in (None, case["page_size"]):
            return case
    raise AssertionError(f"no case {backend} {mode} {page_size}")


def _entries(case, suffix, phase=None):
    return [e for e in case["entries"] if e["entry"].endswith(suffix) and phase in (None, e["phase"])]


def _values(arg):
    return arg.get("values")


def test_every_backend_and_mode_ran(report):
    expected = {(s.name, m, p) for s in SPECS[report["version"]] for p in s.page_sizes for m in s.modes}
    ran = {(c["backend"], c["mode"], c["page_size"]): c for c in report["cases"]}
    assert set(ran) == expected
    failed = {k: c["error"].splitlines()[0] for k, c in ran.items() if c["status"] != "ok"}
    assert failed == {}
    for (backend, mode, _), case in ran.items():
        methods = {m["method"].split(".")[-1] for m in case["marks"]}
        if mode == "IDLE":
            assert "init_forward_metadata" in methods
        elif not mode.startswith("CUDA_GRAPH"):
            assert methods & {"forward_extend", "forward_decode"}, (backend, mode)


def test_cuda_graph_capture_and_replay_metadata_paths_ran(report):
    capture_names = {"init_forward_metadata_capture_cuda_graph", "init_forward_metadata_out_graph"}
    for case in report["cases"]:
        if not case["mode"].startswith("CUDA_GRAPH"):
            continue
        phases = defaultdict(set)
        for mark in case["marks"]:
            phases[mark["phase"]].add(mark["method"].split(".")[-1])
        assert phases["capture"] & capture_names, case["backend"]
        assert {"init_forward_metadata_replay_cuda_graph", "init_forward_metadata_out_graph"} & phases["replay"]
        assert phases["capture"] & {"forward_decode", "forward_extend"}
        assert phases["replay"] & {"forward_decode", "forward_extend"}
        # the replayed batch is padded to the captured batch size
        replay = [m for m in case["marks"] if m["phase"] == "replay" and "batch_size" in m]
        assert replay and all(m["batch_size"] == CAPTURE_BS for m in replay)


def test_flashinfer_extend_plans_prefix_and_ragged_parts(report):
    case = _case(report, "FlashInferAttnBackend", "EXTEND", 1)
    (paged_plan,) = _entries(case, "BatchPrefillWithPagedKVCacheWrapper.begin_forward")
    qo_indptr = _values(paged_plan["args"]["qo_indptr"])
    assert len(qo_indptr) == BATCH + 1
    assert qo_indptr[-1] == sum(EXTEND_LENS)
    kv_indptr = _values(paged_plan["args"]["paged_kv_indptr"])
    assert kv_indptr == [0, PREFIX_LENS[0], sum(PREFIX_LENS)]  # page size 1: the prefix tokens
    # one layer: the ragged new-token part, the paged prefix part (not causal), one merge
    (ragged,) = _entries(case, "BatchPrefillWithRaggedKVCacheWrapper.forward_return_lse")
    (paged,) = _entries(case, "BatchPrefillWithPagedKVCacheWrapper.forward_return_lse")
    assert ragged["args"]["causal"] is True and paged["args"]["causal"] is False
    assert len(_entries(case, "merge_state")) == 1
    assert [l["kernel"].split(":")[-1] for l in paged["launches"]] == ["paged_run"]
    k_cache, v_cache = paged["args"]["paged_kv_cache"]["tuple"]
    assert len(k_cache["tensor"]) == 3  # page size 1: [num_tokens, kv_heads, head_dim] buffers


def test_flashinfer_decode_one_launch_per_layer(report):
    for page_size in (1, 16):
        case = _case(report, "FlashInferAttnBackend", "DECODE", page_size)
        runs = _entries(case, "BatchDecodeWithPagedKVCacheWrapper.forward")
        assert len(runs) == 1 and len(runs[0]["launches"]) == 1
        plans = (_entries(case, "BatchDecodeWithPagedKVCacheWrapper.begin_forward")
                 or _entries(case, "fast_decode_plan"))
        indptr = _values(plans[0]["args"]["indptr"])
        assert len(indptr) == BATCH + 1


def test_trtllm_mha_kernels_get_the_real_batch(report):
    decode = _case(report, "TRTLLMHAAttnBackend", "DECODE")
    (call,) = _entries(decode, "trtllm_batch_decode_with_kv_cache")
    assert call["args"]["block_tables"]["tensor"][0] == BATCH
    assert len(_values(call["args"]["seq_lens"])) == BATCH
    (launch,) = call["launches"]
    assert launch["kernel"].endswith(":trtllm_paged_attention_decode")
    assert launch["args"]["batch_size"] == BATCH
    extend = _case(report, "TRTLLMHAAttnBackend", "EXTEND")
    contexts = _entries(extend, "trtllm_batch_context_with_kv_cache")
    for context in contexts:  # 0.5.9 (0.5.23 prefills through trtllm_fmha_v2_prefill)
        cum_q = _values(context["args"]["cum_seq_lens_q"])
        assert context["args"]["batch_size"] == len(cum_q) - 1 == BATCH
    if report["version"] == "0.5.23":
        assert _entries(extend, "trtllm_fmha_v2_prefill")
    else:
        assert contexts


def test_target_verify_queries_carry_the_draft_tokens(report):
    case = _case(report, "TRTLLMHAAttnBackend", "TARGET_VERIFY")
    calls = _entries(case, "trtllm_batch_decode_with_kv_cache") + _entries(case, "trtllm_batch_context_with_kv_cache")
    assert calls
    query = calls[0]["args"]["query"]["tensor"]
    assert query[0] * (query[1] if len(query) == 4 else 1) == BATCH * DRAFT_TOKENS or query[0] == BATCH * DRAFT_TOKENS


def test_fa3_varlen_metadata(report):
    case = _case(report, "FlashAttentionBackend", "EXTEND", 1)
    (call,) = _entries(case, "flash_attn_with_kvcache")
    cu_q = _values(call["args"]["cu_seqlens_q"])
    assert len(cu_q) == BATCH + 1 and cu_q[-1] == sum(EXTEND_LENS)
    assert call["args"]["page_table"]["tensor"][0] == BATCH


def test_mla_backends_call_their_kernels(report):
    flashmla = _case(report, "FlashMLABackend", "DECODE")
    assert _entries(flashmla, "flash_mla_with_kvcache")
    metadata = _entries(flashmla, "get_mla_metadata") + _entries(flashmla, "get_mla_decoding_metadata")
    assert metadata
    trtllm = _case(report, "TRTLLMMLABackend", "DECODE")
    (call,) = _entries(trtllm, "trtllm_batch_decode_with_kv_cache_mla")
    assert call["args"]["query"]["tensor"][-1] == 512 + 64 and len(call["args"]["kv_cache"]["tensor"]) == 4
    flashinfer_mla = _case(report, "FlashInferMLAAttnBackend", "DECODE")
    assert _entries(flashinfer_mla, "BatchMLAPagedAttentionWrapper.run")


def test_triton_backend_runs_its_kernels_interpreted(report):
    case = _case(report, "TritonAttnBackend", "DECODE")
    (call,) = _entries(case, "decode_attention_fwd")
    assert call["args"]["q"]["tensor"][0] == BATCH


@pytest.mark.parametrize("version", VERSIONS)
def test_report_what_the_runtime_guard_did(version, tmp_path, capsys):
    """Not an assertion on the guard: a printed table, per FlashInfer entry point."""
    guarded = _driver(version, tmp_path, FMHA_GUARD="values", FMHA_GUARD_ACTION="warn")
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for case in guarded["cases"]:
        for entry in case["entries"]:
            if entry.get("guard") is None or entry["entry"].endswith("__init__"):
                continue
            row = table[entry["entry"]]
            row["calls"] += 1
            for key, value in entry["guard"].items():
                if isinstance(value, int):
                    row[key] += value
                else:
                    row[key] += len(value)
    with capsys.disabled():
        print(f"\nFMHA_GUARD=values on SGLang {version}: {guarded['guard'].get('installed')=}")
        for name, row in sorted(table.items()):
            print(f"  {name}: {dict(row)}")
        print(f"  internal_errors: {guarded['guard'].get('totals', {}).get('internal_errors')}")
    assert guarded["cases"]


#: the kernel entry points beyond FlashInfer that SGLang's FA3 and FlashMLA backends call,
#: per version (runtime_checks.kernel_specs: sgl_kernel_flash_attn, flash_mla)
BEYOND_FLASHINFER = {
    "0.5.9": {"sgl_kernel.flash_attn.flash_attn_with_kvcache", "sgl_kernel.flash_mla.get_mla_metadata",
              "sgl_kernel.flash_mla.flash_mla_with_kvcache"},
    "0.5.23": {"sgl_kernel.flash_attn.flash_attn_with_kvcache", "sgl_kernel.flash_attn.get_scheduler_metadata",
               "flash_mla.get_mla_decoding_metadata", "flash_mla.flash_mla_with_kvcache"},
}


@pytest.mark.parametrize("version", VERSIONS)
def test_guard_checks_every_fa3_and_flashmla_launch(version, tmp_path):
    """FMHA_GUARD=values on the FA3 and FlashMLA backends: every sgl_kernel / flash_mla
    call is checked (a shape check or a memo hit, and a value check, a value memo hit or
    a capture skip), no violation, no internal error."""
    guarded = _driver(version, tmp_path, "--backends", "FlashAttentionBackend,FlashMLABackend",
                      FMHA_GUARD="values", FMHA_GUARD_ACTION="warn")
    assert guarded["guard"]["installed"] is True
    assert {c["status"] for c in guarded["cases"]} == {"ok"}, [(c["mode"], c["error"]) for c in guarded["cases"]]
    seen: set[str] = set()
    for case in guarded["cases"]:
        for entry in case["entries"]:
            if entry["entry"] not in BEYOND_FLASHINFER[version]:
                continue
            seen.add(entry["entry"])
            guard = entry.get("guard") or {}
            where = (case["backend"], case["mode"], case["page_size"], entry["phase"], entry["entry"])
            assert guard.get("launches") == 1, where
            assert guard.get("shape_checks", 0) + guard.get("shape_memo_hits", 0) == 1, where
            values = guard.get("value_checks", 0) + guard.get("value_memo_hits", 0) + guard.get("capture_skips", 0)
            assert values == 1, where
            assert not guard.get("warned") and not guard.get("internal_errors"), (where, guard)
    assert seen == BEYOND_FLASHINFER[version]
    totals = guarded["guard"]["totals"]
    assert totals["warned"] == 0 and totals["internal_errors"] == [], totals



# --------------------------------------------------------- every FlashInfer launch checked

#: the SGLang backends that call FlashInfer (FlashMLABackend plans its prefill on the MLA wrapper)
FLASHINFER_BACKENDS = "FlashInferAttnBackend,FlashInferMLAAttnBackend,TRTLLMHAAttnBackend,TRTLLMMLABackend,FlashMLABackend"


@pytest.fixture(scope="module", params=VERSIONS)
def flashinfer_guarded(request, tmp_path_factory):
    """The FlashInfer-calling backends, every mode, under FMHA_GUARD=values (action warn)."""
    return _driver(request.param, tmp_path_factory.mktemp("fi-guard"), "--backends", FLASHINFER_BACKENDS,
                   FMHA_GUARD="values", FMHA_GUARD_ACTION="warn")


def _flashinfer_entries(report):
    for case in report["cases"]:
        for entry in case["entries"]:
            if entry["entry"].startswith("flashinfer."):
                yield case, entry


def test_guard_checks_every_flashinfer_call(flashinfer_guarded):
    """Every FlashInfer call the backends make (wrapper plan / begin_forward / run /
    forward*, fast_decode_plan, trtllm-gen, fmha_v2, the MLA wrapper), in every forward
    mode and CUDA-graph capture / replay, is checked: no entry the guard does not cover,
    no internal error, no violation on the backends' valid batches."""
    from .flashinfer_guarded import classify

    report = flashinfer_guarded
    assert report["guard"]["installed"] is True
    assert {c["status"] for c in report["cases"]} == {"ok"}, [(c["backend"], c["mode"], c["error"]) for c in report["cases"]]
    checked = defaultdict(set)
    for case, entry in _flashinfer_entries(report):
        where = (case["backend"], case["mode"], case["page_size"], entry["phase"], entry["entry"])
        kind = classify(entry["entry"])
        assert kind != "unguarded", where
        if kind == "not-fmha":
            continue
        guard = entry.get("guard") or {}
        assert guard.get("launches", 0) >= 1, (where, guard)
        assert not guard.get("warned") and not guard.get("internal_errors"), (where, guard)
        checked[entry["phase"]].add(entry["entry"].rsplit(".", 2)[-2] if "Wrapper" in entry["entry"] else entry["entry"])
    assert {"eager", "capture", "replay"} <= set(checked), dict(checked)
    totals = report["guard"]["totals"]
    assert totals["warned"] == 0 and totals["internal_errors"] == [], totals
    for name, counters in (report["guard"].get("entries") or {}).items():
        if name.startswith("flashinfer."):
            assert counters["internal_errors"] == 0 and counters["unchecked"] == 0, (name, counters)
            assert counters.get("violations", 0) == 0, (name, counters)


def test_plans_that_bypass_plan_are_checked_at_run(flashinfer_guarded):
    """SGLang's CUDA-graph replays plan through fast_decode_plan / fast_prefill_plan /
    fast_mla_*_plan (the compiled plan called directly): the runs after them are checked
    from the wrappers' buffers."""
    bypassed = 0
    for case in flashinfer_guarded["cases"]:
        entries = case["entries"]
        for i, entry in enumerate(entries):
            direct = entry["entry"].startswith("<direct>") and entry["caller"].split(":")[-1].startswith("fast_")
            if not (direct or entry["entry"].endswith("fast_decode_plan")):
                continue
            runs = [e for e in entries[i + 1:] if e["entry"].endswith(("run", "forward", "forward_return_lse"))]
            assert runs, (case["backend"], case["mode"], entry["entry"])
            assert (runs[0].get("guard") or {}).get("launches", 0) >= 1, (case["backend"], case["mode"], runs[0])
            bypassed += 1
    assert bypassed


#: (version, FMHA_KIT_FAULT, backends, modes) -> invariants the guard must name (tests/engines/faults.py)
SEEDED_FAULTS = {
    ("0.5.23", "kv_indices_past_pool,block_table_past_pool,dp_padded_batch_size",
     "FlashInferAttnBackend,TRTLLMHAAttnBackend", "EXTEND,DECODE"): {"page-id-range", "batch-size"},
    ("0.5.9", "kv_indices_past_pool,block_table_past_pool,dp_padded_batch_size",
     "FlashInferAttnBackend,TRTLLMHAAttnBackend", "EXTEND,DECODE"): {"page-id-range", "batch-size"},
    ("0.5.9", "ragged_replay_refill", "TRTLLMHAAttnBackend", "CUDA_GRAPH_DRAFT_EXTEND"): {"max-seq-len"},
}


@pytest.mark.parametrize("version, fault, backends, modes", sorted(SEEDED_FAULTS))
def test_seeded_faults_are_caught(version, fault, backends, modes, tmp_path):
    """Faults seeded into the real metadata at the FlashInfer boundary: a page id past the
    pool in kv_indices (decode / prefill wrapper plans) and block_tables (trtllm-gen
    decode), a DP-padded batch_size after planning (trtllm context / fmha_v2, SGLang
    #21649), a replay refilling cum_seq_lens_q with another stride than capture while
    max_q_len stays baked (SGLang #21987). Every faulted launch is warned about, with
    the expected invariant ids."""
    report = _driver(version, tmp_path, "--backends", backends, "--modes", modes,
                     FMHA_GUARD="values", FMHA_GUARD_ACTION="warn", FMHA_KIT_FAULT=fault)
    invariants = {site.split("'")[1] for site in report["guard"]["totals"]["warned_sites"]}
    assert invariants == SEEDED_FAULTS[(version, fault, backends, modes)], report["guard"]["totals"]
    for case in report["cases"]:
        warned = sum((e.get("guard") or {}).get("warned", 0) for e in case["entries"])
        assert warned >= 1, (case["backend"], case["mode"], case["page_size"])
    assert not report["guard"]["totals"]["internal_errors"]
