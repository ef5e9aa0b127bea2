"""The reference backend on the real FlashInfer kernels: correctness in every forward mode,
and the four SGLang seed bugs run unguarded and guarded.

Run through the device tool (see README "GPU checks")::

    source .whl/device_setup.sh && python -m tests.gpu.reference_backend_proof --out $OUT/proof.json

``--device cpu`` runs the same checks on the torch kernels (CUDA graphs become eager
replays of the captured metadata); ``tests/test_reference_backend_proof.py`` does that.

Parts (``--part``, default all):

1. ``modes``: EXTEND (ragged, with and without a prefix, DP-padded after planning),
   DECODE, TARGET_VERIFY (4 draft tokens), DRAFT_EXTEND_V2 (accept lengths 1..4) and IDLE
   (DP-padded to 2 dummy rows), on a full pool and on a hybrid SWA pool (layer 1 a
   sliding-window layer), eager and, for DECODE / TARGET_VERIFY, through
   :class:`~runtime_checks.reference_backend.CudaGraphRunner` (capture at batch sizes 4 and 8,
   then replays with new requests padded to the captured size). Outputs are poisoned with
   NaN before every run and compared with a float64 torch reference; pass: relative error
   <= 1e-2, no NaN, DP-padded rows zero. On CUDA the prefill modes run on fa3 and fa2.
2. ``seeds``: each seed scenario (``examples/seed_bugs``) unguarded (``FMHA_GUARD=off``,
   in its own subprocess: a crash kills the CUDA context) and guarded
   (``FMHA_GUARD=values``: must raise ``FmhaInvariantError`` with the expected id before
   the launch; then the fixed backend's step must match the reference in the same
   process). #21987 also runs with real CUDA graphs through the graph runner.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from guardrails import FmhaInvariantError
from runtime_checks.reference_backend import (
    CudaGraphRunner, ForwardMode, ReferenceAttnBackend, pad_forward_batch_for_dp,
)
from runtime_checks.reference_backend.workload import CPU_GEOMETRY, GPU_GEOMETRY, Workload, max_relative_error

REPO = Path(__file__).resolve().parents[2]
SEED_DIR = REPO / "examples" / "seed_bugs"
TOL = 1e-2
NUM_DRAFT = 4

SEEDS = {
    # script module, buggy class, expected invariant
    "pr21649": ("pr21649_padded_batch_size", "PaddedBatchSizeBackend", "batch-size"),
    "pr24856": ("pr24856_draft_extend_on_decode_kernel", "DraftExtendOnDecodeBackend", "forward-mode-kernel"),
    "pr21987": ("pr21987_graph_replay_layout", "ReplayLayoutBackend", "graph-replay-layout"),
    "pr26966": ("pr26966_stale_swa_pool", "StaleSWAPoolBackend", "swa-page-id-range"),
}


@contextlib.contextmanager
def guard(level: str):
    """Set ``FMHA_GUARD`` for the block (the backend reads it at every launch)."""
    old = os.environ.get("FMHA_GUARD")
    os.environ["FMHA_GUARD"] = level
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FMHA_GUARD", None)
        else:
            os.environ["FMHA_GUARD"] = old


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- modes


def _workload(device, pool: str, seed: int) -> Workload:
    geometry = GPU_GEOMETRY if device.type == "cuda" else CPU_GEOMETRY
    return Workload(geometry, pool, num_pages=160, num_swa_pages=160, max_reqs=24, max_context_len=256,
                    device=device, seed=seed)


def window_effect(w: Workload, rows, q_lens, outs) -> float | None:
    """For the sliding-window layers: the outputs' relative distance from the reference
    WITHOUT the window. Large means the window was applied (the SWA comparison is not
    vacuous); ``None`` without an SWA layer."""
    from runtime_checks.reference_backend.workload import reference_attention

    effects = []
    for layer, out in zip(w.layers, outs):
        if layer.sliding_window_size < 0 or not rows:
            continue
        full = reference_attention(out, [w.kv[r][layer.layer_id] for r in rows], q_lens, w.geometry.group, -1)
        effects.append(max_relative_error([out], [full]))
    return max(effects) if effects else None


def _run_eager(w: Workload, backend, fb, inputs, pad_to: int | None = None) -> dict[str, Any]:
    """Plan, optionally DP-pad, run every layer with NaN-poisoned outputs; compare."""
    req_rows, q_lens = fb.req_pool_indices.tolist(), fb.query_lens()
    backend.init_forward_metadata(fb)
    extra_rows = 0
    if pad_to is not None:
        padded = pad_forward_batch_for_dp(fb, pad_to)
        extra_rows = padded.out_cache_loc.shape[0] - fb.out_cache_loc.shape[0]
        fb = padded
    outs, refs, pad_max = [], [], 0.0
    for layer in w.layers:
        q, k, v, ref = inputs[layer.layer_id]
        if extra_rows:
            q, k, v = (torch.cat([t, w.rand(extra_rows, *t.shape[1:]).to(t.device)]) for t in (q, k, v))
        out = torch.full_like(q, float("nan"))
        backend.forward(q, k, v, layer, fb, out=out)
        rows = ref.shape[0]
        outs.append(out[:rows])
        refs.append(ref)
        if extra_rows:
            pad_max = max(pad_max, float(out[rows:].float().abs().max().item()))
    sync(w.device)
    err = max_relative_error(outs, refs) if refs and refs[0].numel() else 0.0
    per_layer = [max_relative_error([o], [r]) if r.numel() else 0.0 for o, r in zip(outs, refs)]
    effect = window_effect(w, req_rows, q_lens, outs)
    return {"rel_err": err, "per_layer_rel_err": per_layer, "padded_rows_max_abs": pad_max, "window_effect": effect,
            "ok": bool(err == err and err <= TOL and pad_max == 0.0 and (effect is None or effect > 10 * TOL))}


def eager_cases(device, pool: str, prefill_backend: str) -> list[dict[str, Any]]:
    """One result per forward mode, eager."""
    results = []
    seed = 100

    def case(name: str, build: Callable[[Workload], tuple], pad_to: int | None = None):
        nonlocal seed
        seed += 1
        w = _workload(device, pool, seed)
        backend = ReferenceAttnBackend(w.model_runner(), prefill_backend=prefill_backend)
        try:
            fb, inputs = build(w)
            r = _run_eager(w, backend, fb, inputs, pad_to)
        except Exception as exc:  # recorded, the run goes on
            r = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400], "trace": traceback.format_exc()[-1500:]}
        r.update(mode=name, pool=pool, prefill_backend=prefill_backend, graph=False)
        results.append(r)

    def extend(w, prefixes=(0, 17, 40, 3, 90), lens=(23, 5, 1, 31, 12)):
        rows = [w.add(p) if p else w.add(0) for p in prefixes]
        return w.step(ForwardMode.EXTEND, rows, list(lens))

    case("EXTEND", extend)
    case("EXTEND+DP-padding", extend, pad_to=7)
    if prefill_backend in ("auto", "fa3") or device.type == "cpu":
        case("DECODE", lambda w: w.step(ForwardMode.DECODE, [w.add(p) for p in (1, 15, 16, 17, 100, 63)], [1] * 6))
        case("DECODE+DP-padding", lambda w: w.step(ForwardMode.DECODE, [w.add(p) for p in (9, 33, 70)], [1] * 3),
             pad_to=5)
        case("TARGET_VERIFY", lambda w: w.step(ForwardMode.TARGET_VERIFY, [w.add(p) for p in (4, 16, 61, 120)],
                                               [NUM_DRAFT] * 4, num_draft_tokens=NUM_DRAFT))
        case("TARGET_VERIFY+DP-padding", lambda w: w.step(ForwardMode.TARGET_VERIFY, [w.add(p) for p in (8, 30)],
                                                          [NUM_DRAFT] * 2, num_draft_tokens=NUM_DRAFT), pad_to=3)
        case("IDLE+DP-padding", lambda w: w.step(ForwardMode.IDLE, [], []), pad_to=2)
    case("DRAFT_EXTEND_V2", lambda w: w.step(ForwardMode.DRAFT_EXTEND_V2, [w.add(p) for p in (5, 40, 18, 77, 2)],
                                             [1, 4, 2, 3, 4]))
    case("DRAFT_EXTEND_V2+DP-padding", lambda w: w.step(ForwardMode.DRAFT_EXTEND_V2, [w.add(p) for p in (12, 50)],
                                                        [3, 1]), pad_to=4)
    return results


def graph_cases(device, pool: str) -> list[dict[str, Any]]:
    """DECODE and TARGET_VERIFY captured at bs 4 and 8, replayed three times with new requests."""
    results = []
    for mode, q_len in ((ForwardMode.DECODE, 1), (ForwardMode.TARGET_VERIFY, NUM_DRAFT)):
        w = _workload(device, pool, 300 + q_len)
        backend = ReferenceAttnBackend(w.model_runner())
        r: dict[str, Any] = {"mode": mode.name, "pool": pool, "graph": True, "replays": []}
        try:
            runner = CudaGraphRunner(backend, w.layers, w.pool, mode, [4, 8], q_len=q_len)
            runner.capture()
            for prefixes in ((3, 50, 17), (90, 1, 30, 64, 16, 5), (7, 120, 44, 28)):
                rows = [w.add(p) for p in prefixes]
                fb, inputs = w.step(mode, rows, [q_len] * len(rows),
                                    num_draft_tokens=q_len if mode.is_target_verify() else None)
                for c in runner.captured.values():  # poison every static output
                    for o in c.out:
                        o.fill_(float("nan"))
                outs = runner.replay(fb, *([inputs[layer.layer_id][i] for layer in w.layers] for i in range(3)))
                outs = [o.clone() for o in outs]
                sync(w.device)
                refs = [inputs[layer.layer_id][3] for layer in w.layers]
                err = max_relative_error(outs, refs)
                r["replays"].append({"bs": len(rows), "graph_bs": runner.graph_batch_size(len(rows)), "rel_err": err,
                                     "per_layer_rel_err": [max_relative_error([o], [x]) for o, x in zip(outs, refs)],
                                     "window_effect": window_effect(w, rows, [q_len] * len(rows), outs)})
                for row in rows:
                    w.release(row)
            r["rel_err"] = max(x["rel_err"] for x in r["replays"])
            r["ok"] = all(x["rel_err"] == x["rel_err"] and x["rel_err"] <= TOL
                          and (x["window_effect"] is None or x["window_effect"] > 10 * TOL) for x in r["replays"])
        except Exception as exc:
            r.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:400], trace=traceback.format_exc()[-1500:])
        results.append(r)
    return results


def part_modes(device) -> list[dict[str, Any]]:
    out = []
    backends = ["fa3", "fa2"] if device.type == "cuda" else ["auto"]
    for pool in ("full", "swa"):
        for pb in backends if pool == "full" else backends[:1]:
            with guard("values"):
                out += eager_cases(device, pool, pb)
        with guard("values"):
            out += graph_cases(device, pool)
    return out


# --------------------------------------------------------------------------- seeds


def _seed_module(name: str):
    if str(SEED_DIR) not in sys.path:
        sys.path.insert(0, str(SEED_DIR))
    harness = importlib.import_module("_harness")
    return harness, importlib.import_module(SEEDS[name][0])


def _seed_run(name: str, device, fixed: bool, graphs: bool = False):
    """(outputs, references) of one seed scenario on ``device``."""
    harness, mod = _seed_module(name)
    harness.configure(device)
    cls = ReferenceAttnBackend if fixed else getattr(mod, SEEDS[name][1])
    if name == "pr21987" and graphs:
        return _graph_21987(harness, mod, cls)
    result = mod.run(cls)
    sync(torch.device(device))
    return result


def _graph_21987(harness, mod, backend_cls):
    """#21987 with real CUDA graphs: capture TARGET_VERIFY at bs 3 through the graph runner,
    then replay with new requests and (for the buggy replay) ragged accept lengths."""
    reqs = harness.Requests(harness.make_pool(), seed=21987)
    backend = backend_cls(harness.make_runner(reqs.pool, reqs.req_pool))
    runner = CudaGraphRunner(backend, reqs.layers, reqs.pool, mod.MODE, [mod.BS], q_len=mod.Q_LEN)
    runner.capture()
    rows = [reqs.add(p) for p in (17, 1, 30)]
    fb, inputs = reqs.step(mod.MODE, rows, [mod.Q_LEN] * mod.BS, num_draft_tokens=mod.Q_LEN)
    accept_length = torch.tensor([4, 3, 2], dtype=torch.int32, device=reqs.device)
    for o in runner.captured[mod.BS].out:
        o.fill_(float("nan"))
    outs = runner.replay(fb, *([inputs[layer.layer_id][i] for layer in reqs.layers] for i in range(3)),
                         spec_info=accept_length)
    sync(reqs.device)
    return [o.clone() for o in outs], [inputs[layer.layer_id][3] for layer in reqs.layers]


def classify(exc: BaseException | None, outs=None, refs=None) -> dict[str, Any]:
    """``crash`` (CUDA error), ``kernel-error`` (raised before/inside the launch), ``wrong`` or ``fine``."""
    if exc is not None:
        msg = f"{type(exc).__name__}: {exc}"
        kind = "crash" if ("CUDA error" in msg or "illegal memory" in msg.lower()) else "kernel-error"
        if isinstance(exc, NotImplementedError):
            kind = "not-runnable"
        if isinstance(exc, FmhaInvariantError):
            kind = "guard-error"
        return {"outcome": kind, "error": msg.splitlines()[0][:300]}
    err = max_relative_error(outs, refs)
    return {"outcome": "fine" if err == err and err <= TOL else "wrong", "rel_err": err}


def seed_unguarded_child(name: str, device, graphs: bool) -> dict[str, Any]:
    """Runs in the child process: the buggy variant with the guard off, then a CUDA sync."""
    with guard("off"):
        try:
            outs, refs = _seed_run(name, device, fixed=False, graphs=graphs)
            sync(torch.device(device))
            return classify(None, outs, refs)
        except Exception as exc:
            return classify(exc)


def seed_unguarded(name: str, device, graphs: bool) -> dict[str, Any]:
    """The child process's verdict; a dead child (a crash that took the context) is a crash."""
    cmd = [sys.executable, "-m", "tests.gpu.reference_backend_proof", "--part", "seed-child", "--seed", name,
           "--device", str(device)] + (["--graphs"] if graphs else [])
    t = time.perf_counter()
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        r = json.loads(lines[-1][len("RESULT "):])
    else:
        tail = (run.stderr or run.stdout)[-600:]
        r = {"outcome": "crash" if "CUDA" in tail or run.returncode < 0 else "kernel-error",
             "error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {run.returncode}"}
    r["seconds"] = round(time.perf_counter() - t, 1)
    return r


def seed_guarded(name: str, device, graphs: bool) -> dict[str, Any]:
    """The buggy variant must raise the expected invariant before launching; the fixed
    backend's step right after, in the same process, must match the reference."""
    expected = SEEDS[name][2]
    r: dict[str, Any] = {"expected": expected}
    with guard("values"):
        try:
            _seed_run(name, device, fixed=False, graphs=graphs)
            r.update(raised=None)
        except FmhaInvariantError as err:
            r.update(raised=err.invariant)
        except Exception as exc:
            r.update(raised=f"{type(exc).__name__}: {exc}"[:300])
        try:
            outs, refs = _seed_run(name, device, fixed=True, graphs=graphs)
            r["after_rel_err"] = max_relative_error(outs, refs)
        except Exception as exc:
            r["after_error"] = f"{type(exc).__name__}: {exc}"[:300]
            r["after_rel_err"] = float("nan")
    e = r["after_rel_err"]
    r["ok"] = r["raised"] == expected and e == e and e <= TOL
    return r


def part_seeds(device) -> list[dict[str, Any]]:
    out = []
    variants = [(n, False) for n in SEEDS] + [("pr21987", True)]
    for name, graphs in variants:
        out.append({"seed": name, "graphs": graphs, "unguarded": seed_unguarded(name, device, graphs),
                    "guarded": seed_guarded(name, device, graphs)})
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--part", default="all", choices=["all", "modes", "seeds", "seed-child"])
    ap.add_argument("--seed", choices=sorted(SEEDS))
    ap.add_argument("--graphs", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.part == "seed-child":
        print("RESULT " + json.dumps(seed_unguarded_child(args.seed, device, args.graphs)), flush=True)
        return 0
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__}
    if device.type == "cuda":
        import flashinfer

        report["flashinfer"] = flashinfer.__version__
    t0 = time.perf_counter()
    if args.part in ("all", "modes"):
        report["modes"] = part_modes(device)
        for r in report["modes"]:
            layers = r.get("per_layer_rel_err") or (r["replays"][-1]["per_layer_rel_err"] if r.get("replays") else [])
            print(f"modes  {r['mode']:<28} pool={r['pool']:<4} {'graph' if r['graph'] else r.get('prefill_backend', ''):<5} "
                  f"rel_err={r.get('rel_err', float('nan')):.2e} per layer {['%.1e' % e for e in layers]} "
                  f"window_effect={r.get('window_effect', (r.get('replays') or [{}])[-1].get('window_effect'))} ok={r['ok']} "
                  f"{r.get('error', '')}", flush=True)
        report["modes_seconds"] = round(time.perf_counter() - t0, 1)
    if args.part in ("all", "seeds"):
        report["seeds"] = part_seeds(device)
        for r in report["seeds"]:
            print(f"seed   {r['seed']}{' (graphs)' if r['graphs'] else ''}: unguarded={r['unguarded']} "
                  f"guarded={r['guarded']}", flush=True)
    ok = all(r["ok"] for r in report.get("modes", [])) and all(r["guarded"]["ok"] for r in report.get("seeds", []))
    report["ok"] = ok
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(f"ALL OK: {ok} ({report['seconds']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
