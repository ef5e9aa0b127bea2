"""The runtime guard against the real FlashInfer kernels on a Hopper GPU.

Run through the device tool (see README "GPU checks")::

    source .whl/device_setup.sh && python -m tests.gpu.fault_matrix --out $OUT/fault_matrix.json

What it measures, in one run:

1. ``valid``: the xqa decode kernel (``trtllm_batch_decode_with_kv_cache``) and the fa2
   paged prefill (``BatchPrefillWithPagedKVCacheWrapper``) against a float64 torch
   reference (outputs poisoned with NaN before each launch).
2. ``unguarded``: every fault of the matrix, each in its own subprocess (a crash kills
   the CUDA context): ``crash`` (CUDA error), ``kernel-error`` (FlashInfer raised),
   ``wrong`` (silent wrong output vs the reference) or ``fine``.
3. ``guarded``: the same faults with ``FMHA_GUARD=values``: each must raise
   ``FmhaInvariantError`` with the expected invariant id before the launch, and a valid
   launch right after must still run correctly (the context stays healthy).
4. ``bit_identical``: valid launches give identical outputs guard off / shapes / values.
5. ``cuda_graph``: a decode step of several layers captured with the guard on (shapes,
   values), replayed with new valid contents (matches the reference) and with a bad
   page id refilled into the captured block table (values: raises before replay).
6. ``benchmark``: a 32-layer decode step (batch 64, KV length 4096, 32/8 heads, head
   dim 128, page size 16, eager) timed guard off / shapes / values side by side.

Faults run against the decode kernel and the prefill wrapper; the trtllm-gen context
kernel needs SM100 and is covered by the CPU tests with its real signature.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import torch

from tests.launch_args import PagedCase, decode_kwargs, paged_case, reference_attention

DEV = "cuda"
DECODE_KV_LENS = [100, 200, 300, 150, 600, 50, 1, 333]


# --------------------------------------------------------------------------- guard


def install_guard(level: str) -> None:
    """Activate the runtime guard through its public API."""
    import runtime_checks

    runtime_checks.install(level, "raise")


def uninstall_guard() -> None:
    import runtime_checks

    runtime_checks.uninstall()


# --------------------------------------------------------------------------- cases


def decode_case(seed: int = 0) -> PagedCase:
    return paged_case([1] * len(DECODE_KV_LENS), DECODE_KV_LENS, page_size=16, num_kv_heads=2, group=4,
                      head_dim=128, device=DEV, seed=seed)


def prefill_case(seed: int = 0) -> PagedCase:
    return paged_case([5, 17, 1, 40], [37, 17, 64, 100], page_size=16, num_kv_heads=2, group=4,
                      head_dim=128, device=DEV, seed=seed)


def run_decode(kw: dict[str, Any]) -> torch.Tensor:
    import flashinfer.decode

    rows = kw["query"].shape[0]
    out = torch.full((rows, kw["query"].shape[1], kw["query"].shape[2]), float("nan"), dtype=torch.bfloat16, device=DEV)
    flashinfer.decode.trtllm_batch_decode_with_kv_cache(**kw, out=out)
    torch.cuda.synchronize()
    return out


def run_prefill(case: PagedCase, plan_over: dict[str, Any] | None = None, q: torch.Tensor | None = None) -> torch.Tensor:
    import flashinfer

    indptr, indices, last = case.kv_indptr_indices_last()
    plan = dict(qo_indptr=case.cu_seqlens_q, paged_kv_indptr=indptr, paged_kv_indices=indices,
                paged_kv_last_page_len=last)
    plan.update(plan_over or {})
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(case.workspace, "HND", backend="fa2")
    wrapper.plan(**plan, num_qo_heads=case.q.shape[1], num_kv_heads=case.kv_cache.shape[2],
                 head_dim_qk=case.q.shape[2], page_size=case.page_size, causal=True,
                 q_data_type=torch.bfloat16)
    q = case.q if q is None else q
    out = torch.full_like(q, float("nan"))
    wrapper.run(q, case.kv_cache, out=out)
    torch.cuda.synchronize()
    return out


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    rows = min(out.shape[0], ref.shape[0])
    diff = (out[:rows].double().cpu() - ref[:rows]).abs()
    rel = diff.max().item() / max(ref[:rows].abs().max().item(), 1e-9)
    return {"max_abs_err": float(diff.max().item()), "rel_err": float(rel), "nan": bool(torch.isnan(out).any().item())}


def ok(cmp: dict[str, float]) -> bool:
    return not cmp["nan"] and cmp["rel_err"] <= 1e-2


# --------------------------------------------------------------------------- faults


def _decode_fault(name: str) -> tuple[dict[str, Any], torch.Tensor, str]:
    """(kernel kwargs with the fault, reference of the intended launch, expected invariant)."""
    c = decode_case()
    kw = decode_kwargs(c)
    ref = reference_attention(c)
    pt, sl = c.page_table, c.seq_lens
    if name == "decode/dp-padded-batch":  # SGLang #21649: 2 padded rows in seq_lens / block_tables
        return {**kw, "seq_lens": torch.cat([sl, sl[:2]]), "block_tables": torch.cat([pt, pt[:2]])}, ref, "query-rows"
    if name == "decode/int64-seq-lens":
        return {**kw, "seq_lens": sl.long()}, ref, "metadata-dtype-device"
    if name == "decode/strided-block-table":
        wide = torch.zeros(pt.shape[0], pt.shape[1] * 2, dtype=torch.int32, device=DEV)
        wide[:, ::2] = pt
        return {**kw, "block_tables": wide[:, ::2]}, ref, "metadata-dtype-device"
    if name == "decode/page-id-past-pool-3":
        bad = pt.clone()
        bad[1, 0] = c.num_pages + 2
        return {**kw, "block_tables": bad}, ref, "page-id-range"
    if name == "decode/seq-len-beyond-row":
        s = sl.clone()
        s[2] = pt.shape[1] * c.page_size + 5
        return {**kw, "seq_lens": s, "max_seq_len": int(s.max())}, ref, "page-table-capacity"
    if name == "decode/max-seq-len-too-small":
        return {**kw, "max_seq_len": int(sl.max()) - 1}, ref, "max-seq-len"
    if name == "decode/variable-q-lens":  # SGLang #24856: draft-extend-v2 accept lengths on the decode kernel
        accept = [3, 1, 4, 2, 4, 1, 1, 2]
        cv = paged_case(accept, [max(a, n) for a, n in zip(accept, DECODE_KV_LENS)], page_size=16, num_kv_heads=2,
                        group=4, head_dim=128, device=DEV)
        bad = dict(kw, query=cv.q, kv_cache=cv.kv_cache, block_tables=cv.page_table, seq_lens=cv.seq_lens,
                   max_seq_len=max(cv.kv_lens), q_len_per_req=4)
        return bad, reference_attention(cv), "query-rows"
    if name == "decode/swa-page-ids-beyond-swa-pool":  # SGLang #26966: full-pool ids on the SWA pool
        return {**kw, "kv_cache": c.kv_cache[: c.num_pages // 2]}, ref, "page-id-range"
    if name == "decode/page-id-past-pool-100000":
        bad = pt.clone()
        bad[1, 0] = c.num_pages + 100_000
        return {**kw, "block_tables": bad}, ref, "page-id-range"
    raise KeyError(name)


def _prefill_fault(name: str) -> tuple[Callable[[], torch.Tensor], torch.Tensor, str]:
    c = prefill_case()
    ref = reference_attention(c)
    indptr, indices, last = c.kv_indptr_indices_last()
    if name == "prefill/last-page-len-over-page-size":
        bad = last.clone()
        bad[0] = c.page_size + 3
        return (lambda: run_prefill(c, {"paged_kv_last_page_len": bad})), ref, "last-page-len"
    if name == "prefill/page-id-past-pool-3":
        bad = indices.clone()
        bad[2] = c.num_pages + 2
        return (lambda: run_prefill(c, {"paged_kv_indices": bad})), ref, "page-id-range"
    if name == "prefill/qo-indptr-total-wrong":
        bad = c.cu_seqlens_q.clone()
        bad[-1] += 7
        return (lambda: run_prefill(c, {"qo_indptr": bad})), ref, "cu-seqlens-monotone"
    if name == "prefill/kv-indptr-not-monotone":
        bad = indptr.clone()
        bad[2] = bad[1] - 1
        return (lambda: run_prefill(c, {"paged_kv_indptr": bad})), ref, "cu-seqlens-monotone"
    if name == "prefill/dp-padded-qo-indptr":  # 2 padded requests in qo_indptr only
        pad = torch.cat([c.cu_seqlens_q, c.cu_seqlens_q[-1:].repeat(2)])
        return (lambda: run_prefill(c, {"qo_indptr": pad})), ref, "batch-size"
    raise KeyError(name)


DECODE_FAULTS = [
    "decode/dp-padded-batch",
    "decode/int64-seq-lens",
    "decode/strided-block-table",
    "decode/page-id-past-pool-3",
    "decode/seq-len-beyond-row",
    "decode/max-seq-len-too-small",
    "decode/variable-q-lens",
    "decode/swa-page-ids-beyond-swa-pool",
]
PREFILL_FAULTS = [
    "prefill/last-page-len-over-page-size",
    "prefill/page-id-past-pool-3",
    "prefill/qo-indptr-total-wrong",
    "prefill/kv-indptr-not-monotone",
    "prefill/dp-padded-qo-indptr",
]
CRASHING_LAST = ["decode/page-id-past-pool-100000"]
ALL_FAULTS = DECODE_FAULTS + PREFILL_FAULTS + CRASHING_LAST


def launch_fault(name: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    if name.startswith("decode/"):
        kw, ref, expected = _decode_fault(name)
        return run_decode(kw), ref, expected
    fn, ref, expected = _prefill_fault(name)
    return fn(), ref, expected


def one_unguarded(name: str) -> dict[str, Any]:
    """Run one fault with no guard; classify what the kernel did."""
    try:
        out, ref, _ = launch_fault(name)
    except getattr(torch, "AcceleratorError", RuntimeError) as exc:  # torch >= 2.8: CUDA errors
        msg = str(exc).splitlines()[0]
        kind = "crash" if "CUDA" in msg or "illegal" in msg or "AcceleratorError" in type(exc).__name__ else "kernel-error"
        return {"fault": name, "outcome": kind, "error": msg}
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        kind = "crash" if "CUDA" in msg or "illegal" in msg else "kernel-error"
        return {"fault": name, "outcome": kind, "error": msg}
    except Exception as exc:
        return {"fault": name, "outcome": "kernel-error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    try:
        torch.cuda.synchronize()
    except Exception as exc:
        return {"fault": name, "outcome": "crash", "error": str(exc).splitlines()[0]}
    cmp = compare(out, ref)
    return {"fault": name, "outcome": "fine" if ok(cmp) else "wrong", **cmp}


def unguarded_matrix() -> list[dict[str, Any]]:
    rows = []
    env = {k: v for k, v in os.environ.items() if k != "FMHA_GUARD"}
    for name in ALL_FAULTS:
        t = time.time()
        run = subprocess.run([sys.executable, "-m", "tests.gpu.fault_matrix", "--one", name], capture_output=True,
                             text=True, env=env, timeout=300)
        line = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(line[-1]) if line else {"fault": name, "outcome": "crash",
                                                  "error": (run.stderr.strip().splitlines() or ["?"])[-1]}
        row["seconds"] = round(time.time() - t, 1)
        rows.append(row)
        print("unguarded", row, flush=True)
    return rows


def guarded_matrix() -> list[dict[str, Any]]:
    from guardrails import FmhaInvariantError

    rows = []
    install_guard("values")
    try:
        healthy_case = decode_case(seed=3)
        healthy_ref = reference_attention(healthy_case)
        for name in ALL_FAULTS:
            row: dict[str, Any] = {"fault": name}
            try:
                _, _, expected = launch_fault(name)
                row.update(raised=None, expected=expected)
            except FmhaInvariantError as exc:
                row.update(raised=exc.invariant, message=str(exc)[:300])
                row["expected"] = _decode_fault(name)[2] if name.startswith("decode/") else _prefill_fault(name)[2]
            except Exception as exc:
                row.update(raised=f"{type(exc).__name__}: {exc}"[:300])
            after = compare(run_decode(decode_kwargs(healthy_case)), healthy_ref)
            row["valid_launch_after_ok"] = ok(after)
            row["pass"] = row.get("raised") == row.get("expected") and row["valid_launch_after_ok"]
            rows.append(row)
            print("guarded", row["fault"], row.get("raised"), row["pass"], flush=True)
    finally:
        uninstall_guard()
    return rows


# --------------------------------------------------------------------------- valid + identical


def valid_and_identical() -> dict[str, Any]:
    res: dict[str, Any] = {}
    c = decode_case(seed=1)
    t = time.time()
    outs = {"off": run_decode(decode_kwargs(c))}
    res["decode_first_call_s"] = round(time.time() - t, 1)
    res["decode_vs_reference"] = compare(outs["off"], reference_attention(c))
    p = prefill_case(seed=1)
    t = time.time()
    pouts = {"off": run_prefill(p)}
    res["prefill_first_call_s"] = round(time.time() - t, 1)
    res["prefill_vs_reference"] = compare(pouts["off"], reference_attention(p))
    for level in ("shapes", "values"):
        install_guard(level)
        try:
            outs[level] = run_decode(decode_kwargs(c))
            pouts[level] = run_prefill(p)
        finally:
            uninstall_guard()
    res["bit_identical_decode"] = all(torch.equal(outs["off"], outs[k]) for k in ("shapes", "values"))
    res["bit_identical_prefill"] = all(torch.equal(pouts["off"], pouts[k]) for k in ("shapes", "values"))
    return res


# --------------------------------------------------------------------------- CUDA graph


def cuda_graph_check(level: str, layers: int = 4) -> dict[str, Any]:
    import flashinfer.decode
    from guardrails import FmhaInvariantError
    from runtime_checks.state import STATE

    res: dict[str, Any] = {"level": level}
    base = decode_case(seed=5)
    kw = decode_kwargs(base)
    static = {k: (v.clone() if torch.is_tensor(v) and k in ("query", "block_tables", "seq_lens") else v) for k, v in kw.items()}
    outs = [torch.empty_like(base.q) for _ in range(layers)]
    install_guard(level)
    STATE.reset_counters()
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for i in range(layers):  # warm-up outside capture
                flashinfer.decode.trtllm_batch_decode_with_kv_cache(**static, out=outs[i])
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(layers):
                flashinfer.decode.trtllm_batch_decode_with_kv_cache(**static, out=outs[i])
        res["captured"] = True
        res["capture_skips"] = STATE.capture_skips
        # replay with new valid contents: new queries, shorter KV lengths, same pool and table
        new_lens = [max(1, n - 7) for n in DECODE_KV_LENS]
        static["query"].copy_(torch.randn_like(base.q))
        static["seq_lens"].copy_(torch.tensor(new_lens, dtype=torch.int32, device=DEV))
        for o in outs:
            o.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        new = PagedCase(**{**base.__dict__, "q": static["query"].clone(), "kv_lens": new_lens,
                           "seq_lens": static["seq_lens"].clone()})
        res["replay_valid"] = compare(outs[-1], reference_attention(new))
        res["replay_valid_ok"] = ok(res["replay_valid"])
        res["replay_checks"] = STATE.value_memo_hits
        # refill a page id past the pool into the captured block table
        static["block_tables"][1, 0] = base.num_pages + 2
        try:
            graph.replay()
            torch.cuda.synchronize()
            res["replay_bad"] = "replayed (no check at this level)"
        except FmhaInvariantError as exc:
            res["replay_bad"] = f"raised {exc.invariant} before replay"
        torch.cuda.synchronize()
        res["context_healthy_after"] = ok(compare(run_decode(decode_kwargs(base)), reference_attention(base)))
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"[:400]
    finally:
        uninstall_guard()
    return res


# --------------------------------------------------------------------------- benchmark


def benchmark(layers: int = 32, batch: int = 64, kv_len: int = 4096, steps: int = 40) -> dict[str, Any]:
    import flashinfer.decode
    from runtime_checks.state import STATE

    torch.manual_seed(0)
    ps, hk, group, dim = 16, 8, 4, 128
    pages_per = kv_len // ps
    num_pages = batch * pages_per
    caches = [torch.zeros(num_pages, 2, hk, ps, dim, device=DEV, dtype=torch.bfloat16) for _ in range(layers)]
    table = torch.randperm(num_pages, device=DEV, dtype=torch.int64).to(torch.int32).view(batch, pages_per)
    seq_src = torch.full((batch,), kv_len, dtype=torch.int32, device=DEV)
    seq_lens = seq_src.clone()
    q = torch.randn(batch, hk * group, dim, device=DEV, dtype=torch.bfloat16)
    out = torch.empty_like(q)
    ws = torch.zeros(128 * 1024 * 1024, dtype=torch.uint8, device=DEV)

    def step() -> None:
        seq_lens.copy_(seq_src)  # a new step's metadata (bumps _version: one value check per step)
        for cache in caches:
            flashinfer.decode.trtllm_batch_decode_with_kv_cache(
                query=q, kv_cache=cache, workspace_buffer=ws, block_tables=table, seq_lens=seq_lens,
                max_seq_len=kv_len, bmm1_scale=dim**-0.5, bmm2_scale=1.0, out=out)

    def timed() -> float:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        samples = []
        for _ in range(steps):
            t = time.perf_counter()
            step()
            torch.cuda.synchronize()
            samples.append(time.perf_counter() - t)
        samples.sort()
        return samples[len(samples) // 2]

    res: dict[str, Any] = {"layers": layers, "batch": batch, "kv_len": kv_len}
    order = ["off", "shapes", "values", "off", "shapes", "values"]  # interleaved, best of two
    times: dict[str, list[float]] = {}
    for level in order:
        if level != "off":
            install_guard(level)
            STATE.reset_counters()
        try:
            times.setdefault(level, []).append(timed())
            if level == "values":
                res["value_checks_per_step"] = round(
                    (STATE.launches - STATE.value_memo_hits) / max(1, STATE.launches) * layers, 2)
        finally:
            if level != "off":
                uninstall_guard()
    base = min(times["off"])
    for level in ("off", "shapes", "values"):
        res[f"step_ms_{level}"] = round(min(times[level]) * 1e3, 3)
        res[f"ratio_{level}"] = round(min(times[level]) / base, 4)
    return res


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", help="run one fault unguarded and print its JSON row")
    ap.add_argument("--out", default="fault_matrix.json")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_unguarded(args.one)), flush=True)
        return
    import flashinfer

    skip = set(args.skip.split(","))
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "flashinfer": flashinfer.__version__,
    }

    def part(name: str, fn: Callable[[], Any]) -> None:
        if name in skip:
            return
        t = time.time()
        try:
            report[name] = fn()
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        report[f"{name}_seconds"] = round(time.time() - t, 1)
        print(name, json.dumps(report[name], default=str)[:2000], flush=True)
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2, default=str)

    part("valid", valid_and_identical)
    part("guarded", guarded_matrix)
    part("cuda_graph", lambda: [cuda_graph_check("shapes"), cuda_graph_check("values")])
    part("benchmark", benchmark)
    part("unguarded", unguarded_matrix)


if __name__ == "__main__":
    main()
