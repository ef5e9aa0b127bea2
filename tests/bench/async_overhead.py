"""Cost of the runtime guard levels on a decode step and the serve loop, side by side, on a GPU.

Run through the device tool on an H200 (carry ``.whl`` and ``.jitcache``)::

    bash tests/gpu/device_run.sh 'python -m tests.bench.async_overhead --out $OUT/async_overhead.json'

Parts, all in one process, the guard levels interleaved (each round runs every level once,
in an order rotated from round to round, so drift and order effects cancel):

* ``decode32``: a 32-layer decode step, batch 64, KV length 4096, page size 16, 32/8
  heads, head dim 128 (the shapes of :func:`tests.gpu.fault_matrix.benchmark`): the
  step's ``seq_lens`` is refilled (``copy_``), then one
  ``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` (xqa) per layer, every layer
  reading the same ``block_tables`` / ``seq_lens``; then a host sync (an engine samples
  after each step). ``eager``: the layers launched from Python; ``graph``: the layers
  captured once per level into a CUDA graph (at that level: ``async`` captures its check
  kernels into the graph), the refill done before ``replay()``.
* ``decode2``: the same step with 2 layers.
* ``serve``: ``examples/serve_loop.py`` (reference backend, CUDA graphs for DECODE and
  TARGET_VERIFY, 2 layers): one whole loop per level and round.

Levels: ``off`` (guard not installed), ``shapes``, ``values``, ``async`` (when
:mod:`guardrails.config` knows it). Per step: wall-clock time (``perf_counter`` around
step + sync) and GPU time (CUDA events around the step). Reported: the median over all
steps of all rounds, the spread of the per-round medians (min..max), and the ratio of
medians to ``off``. Targets (issue 11): ``async`` <= 1.01 of ``off`` on the 32-layer step
(eager and graph), <= 1.03 on the 2-layer step.

``profile``: one ``torch.profiler`` trace per guarded level of a few eager 32-layer steps:
kernels per step, GPU time of the guard's own kernels (all kernels that are not the
attention kernel or the refill copy), and host time per launch (enqueue of a step, no sync).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

DEV = "cuda"
ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- levels


def known_levels(wanted: list[str]) -> list[str]:
    from guardrails.config import parse_level

    out = []
    for level in wanted:
        try:
            parse_level(level, setting="level")
            out.append(level)
        except ValueError:
            print(f"level {level!r} unknown to guardrails.config: skipped", flush=True)
    return out


def set_level(level: str, keep_installed: bool) -> None:
    """``off``: the guard uninstalled (unless ``keep_installed``: graphs captured at a level
    keep what they captured, so the graph part only reconfigures); else installed at ``level``."""
    import runtime_checks

    if level == "off" and not keep_installed:
        runtime_checks.uninstall()
    else:
        runtime_checks.install(level, "raise")


def rotations(levels: list[str], rounds: int) -> list[list[str]]:
    return [levels[r % len(levels):] + levels[: r % len(levels)] for r in range(rounds)]


def summarize(samples: dict[str, list[list[float]]]) -> dict[str, Any]:
    """samples[level] = per round, the per-step times (s) -> medians (ms), spread, ratios."""
    res: dict[str, Any] = {}
    for level, rounds in samples.items():
        flat = [x for r in rounds for x in r]
        per_round = [statistics.median(r) for r in rounds]
        res[level] = {"median_ms": round(statistics.median(flat) * 1e3, 4),
                      "round_medians_ms": [round(x * 1e3, 4) for x in per_round],
                      "spread_pct": round((max(per_round) - min(per_round)) / statistics.median(per_round) * 100, 2),
                      "samples": len(flat)}
    base = res["off"]["median_ms"]
    for level in res:
        res[level]["ratio"] = round(res[level]["median_ms"] / base, 4)
    return res


# --------------------------------------------------------------------------- decode step


@dataclass
class DecodeStep:
    layers: int
    batch: int = 64
    kv_len: int = 4096
    page_size: int = 16
    kv_heads: int = 8
    group: int = 4
    head_dim: int = 128

    def __post_init__(self) -> None:
        torch.manual_seed(0)
        pages_per = self.kv_len // self.page_size
        num_pages = self.batch * pages_per
        self.caches = [torch.empty(num_pages, 2, self.kv_heads, self.page_size, self.head_dim, device=DEV,
                                   dtype=torch.bfloat16).normal_() for _ in range(self.layers)]
        self.table = torch.randperm(num_pages, device=DEV).to(torch.int32).view(self.batch, pages_per)
        self.seq_src = torch.full((self.batch,), self.kv_len, dtype=torch.int32, device=DEV)
        self.seq_lens = self.seq_src.clone()
        self.q = torch.randn(self.batch, self.kv_heads * self.group, self.head_dim, device=DEV, dtype=torch.bfloat16)
        self.out = torch.empty_like(self.q)
        self.ws = torch.zeros(128 * 1024 * 1024, dtype=torch.uint8, device=DEV)
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}

    def layers_launch(self) -> None:
        import flashinfer.decode

        for cache in self.caches:
            flashinfer.decode.trtllm_batch_decode_with_kv_cache(
                query=self.q, kv_cache=cache, workspace_buffer=self.ws, block_tables=self.table,
                seq_lens=self.seq_lens, max_seq_len=self.kv_len, bmm1_scale=self.head_dim ** -0.5, bmm2_scale=1.0,
                out=self.out)

    def eager(self) -> None:
        self.seq_lens.copy_(self.seq_src)  # a new step's metadata
        self.layers_launch()

    def capture(self, level: str) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.layers_launch()
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self.layers_launch()
        torch.cuda.synchronize()
        self.graphs[level] = g

    def replay(self, level: str) -> None:
        self.seq_lens.copy_(self.seq_src)  # refill of the captured buffer
        self.graphs[level].replay()


def time_steps(step: Callable[[], None], n: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """(wall seconds, GPU seconds) of ``n`` steps, each followed by a host sync."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    wall, gpu = [], []
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for i in range(n):
        t = time.perf_counter()
        ev[i][0].record()
        step()
        ev[i][1].record()
        torch.cuda.synchronize()
        wall.append(time.perf_counter() - t)
    gpu = [a.elapsed_time(b) / 1e3 for a, b in ev]
    return wall, gpu


def decode_part(layers: int, levels: list[str], rounds: int, steps: int) -> dict[str, Any]:
    d = DecodeStep(layers)
    res: dict[str, Any] = {"layers": layers, "batch": d.batch, "kv_len": d.kv_len, "rounds": rounds,
                           "steps_per_round": steps}
    for mode in ("eager", "graph"):
        wall: dict[str, list[list[float]]] = {lv: [] for lv in levels}
        gpu: dict[str, list[list[float]]] = {lv: [] for lv in levels}
        keep = mode == "graph"
        try:
            if mode == "graph":
                for level in levels:
                    set_level(level, keep_installed=True)
                    d.capture(level)
            for order in rotations(levels, rounds):
                for level in order:
                    set_level(level, keep_installed=keep)
                    fn = d.eager if mode == "eager" else (lambda lv=level: d.replay(lv))
                    w, g = time_steps(fn, steps)
                    wall[level].append(w)
                    gpu[level].append(g)
            res[mode] = {"wall": summarize(wall), "gpu": summarize(gpu)}
        except Exception as exc:
            res[mode] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        finally:
            set_level("off", keep_installed=False)
    del d
    torch.cuda.empty_cache()
    return res


# --------------------------------------------------------------------------- profile


def guard_counts() -> dict[str, int]:
    """Every integer counter of every guarded entry point, summed (``async_checks`` = check
    kernels enqueued, ``value_checks`` = host catalog runs at values, ...)."""
    from runtime_checks.state import STATE

    out: dict[str, int] = {}
    for entry in STATE.entries.values():
        for k, v in vars(entry).items():
            if isinstance(v, int) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def profile_part(levels: list[str], layers: int = 32, steps: int = 5) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from runtime_checks.state import STATE

    d = DecodeStep(layers)
    res: dict[str, Any] = {}
    for level in levels:
        set_level(level, keep_installed=False)
        try:
            time_steps(d.eager, 3)
            # host cost: enqueue 8 steps without syncing (the GPU runs behind; 8 x layers
            # launches stay well inside the launch queue, so the host never waits)
            enq = []
            for _ in range(7):
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(8):
                    d.eager()
                enq.append((time.perf_counter() - t) / 8)
            torch.cuda.synchronize()
            STATE.reset_counters()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(steps):
                    d.eager()
                torch.cuda.synchronize()
            counts = guard_counts()
            kernels: dict[str, list[float]] = {}
            for e in prof.events():
                if e.device_type == torch.autograd.DeviceType.CUDA:
                    kernels.setdefault(e.name, []).append(e.device_time)
            attention = {k for k in kernels if "xqa" in k.lower() or "kernel_mha" in k.lower()}
            copies = {k for k in kernels if "memcpy" in k.lower().replace(" ", "") or "memset" in k.lower()}
            other = {k: v for k, v in kernels.items() if k not in attention and k not in copies}
            res[level] = {
                "guard_counters_per_step": {k: round(v / steps, 2) for k, v in counts.items()},
                "host_enqueue_us_per_step": round(statistics.median(enq) * 1e6, 1),
                "host_enqueue_us_per_launch": round(statistics.median(enq) * 1e6 / layers, 2),
                "attention_us_per_step": round(sum(sum(kernels[k]) for k in attention) / steps, 1),
                "copies": {k: {"per_step": round(len(kernels[k]) / steps, 2),
                               "median_us": round(statistics.median(kernels[k]), 2)} for k in copies},
                # kernels that are neither attention nor copies: the guard's own (compare with off)
                "other_us_per_step": round(sum(sum(v) for v in other.values()) / steps, 2),
                "other_kernels": {k[:120]: {"per_step": round(len(v) / steps, 2), "median_us": round(statistics.median(v), 2)}
                                  for k, v in other.items()},
            }
        except Exception as exc:
            res[level] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        finally:
            set_level("off", keep_installed=False)
        print("profile", level, json.dumps(res[level])[:1500], flush=True)
    del d
    torch.cuda.empty_cache()
    return res


# --------------------------------------------------------------------------- serve loop


def serve_part(levels: list[str], rounds: int, steps: int, layers: int = 2) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("serve_loop", ROOT / "examples" / "serve_loop.py")
    sl = importlib.util.module_from_spec(spec)
    sys.modules["serve_loop"] = sl
    spec.loader.exec_module(sl)
    args = sl.argparse.Namespace(seed=0, num_draft=4, max_running=16, dp_size=2, graph_bs=[4, 8, 16], num_pages=1024,
                                 max_context_len=512, steps=steps)
    geometry = replace(sl.GPU_GEOMETRY, num_layers=layers)
    device = torch.device(DEV)
    sl.timed(args, geometry, device, levels[0])  # warm-up: JIT, allocator
    per_step: dict[str, list[list[float]]] = {lv: [] for lv in levels}
    info: dict[str, Any] = {}
    for order in rotations(levels, rounds):
        for level in order:
            secs, n, stats = sl.timed(args, geometry, device, level)
            per_step[level].append([secs / n])
            info[level] = {"attention_steps": n, "catalog_runs_shape_value": list(stats.checks),
                           "steps": dict(stats.steps)}
    res = {"layers": layers, "iterations": steps, "rounds": rounds, "per_level": summarize(per_step), "info": info}
    import os

    os.environ.pop("FMHA_GUARD", None)
    return res


# --------------------------------------------------------------------------- main


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['device']}, torch {report['torch']}, flashinfer {report['flashinfer']}")
    print(f"{'part':22s} {'level':7s} {'median ms':>10s} {'ratio':>7s} {'spread %':>9s} {'gpu ms':>9s} {'gpu ratio':>9s}")
    for part, label in (("decode32", "32-layer decode"), ("decode2", "2-layer decode")):
        p = report.get(part)
        if not isinstance(p, dict):
            continue
        for mode in ("eager", "graph"):
            m = p.get(mode, {})
            if "error" in m:
                print(f"{label + ' ' + mode:22s} ERROR {m['error'][:90]}")
                continue
            for level, w in m.get("wall", {}).items():
                g = m["gpu"][level]
                print(f"{label + ' ' + mode:22s} {level:7s} {w['median_ms']:10.4f} {w['ratio']:7.4f} {w['spread_pct']:9.2f}"
                      f" {g['median_ms']:9.4f} {g['ratio']:9.4f}")
    s = report.get("serve")
    if isinstance(s, dict) and "per_level" in s:
        for level, w in s["per_level"].items():
            print(f"{'serve loop (graphs)':22s} {level:7s} {w['median_ms']:10.4f} {w['ratio']:7.4f} {w['spread_pct']:9.2f}"
                  f"  (ms per attention step, {s['info'][level]['attention_steps']} steps/run)")
    elif isinstance(s, dict):
        print(f"serve loop ERROR {s.get('error', '')[:100]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="async_overhead.json")
    ap.add_argument("--levels", nargs="+", default=["off", "shapes", "values", "async"])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40, help="steps per level and round (32-layer part)")
    ap.add_argument("--serve-rounds", type=int, default=5)
    ap.add_argument("--serve-steps", type=int, default=300)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: decode32,decode2,serve,profile")
    args = ap.parse_args()
    import flashinfer

    levels = known_levels(args.levels)
    skip = set(args.skip.split(","))
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "flashinfer": flashinfer.__version__, "levels": levels}

    def part(name: str, fn: Callable[[], Any]) -> None:
        if name in skip:
            return
        t = time.time()
        try:
            report[name] = fn()
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        report[f"{name}_seconds"] = round(time.time() - t, 1)
        print(name, json.dumps(report[name], default=str)[:3000], flush=True)
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2, default=str)

    part("decode32", lambda: decode_part(32, levels, args.rounds, args.steps))
    part("decode2", lambda: decode_part(2, levels, args.rounds, args.steps * 4))
    part("serve", lambda: serve_part(levels, args.serve_rounds, args.serve_steps))
    part("profile", lambda: profile_part([lv for lv in levels if lv != "off"] + ["off"]))
    print_table(report)


if __name__ == "__main__":
    main()
