"""A continuous-batching serving loop over the reference attention backend, with
speculative decoding, DP-attention padding and CUDA graphs; prints steps/s with the
guard off, at ``shapes`` and at ``values``, measured side by side in one run.

What one loop does (a seeded random trace, the same for every guard level):

* requests arrive at random (prompt 16..160 tokens, 8..48 new tokens each) and are
  admitted while ``--max-running`` and the KV pool allow;
* admitted requests are prefilled in one EXTEND step (ragged, eager);
* running requests advance by speculative-decoding cycles, as SGLang's EAGLE/MTP
  worker with ``--speculative-num-draft-tokens D``:
  ``D - 1`` draft DECODE steps (CUDA graph; their scratch KV is dropped after),
  one TARGET_VERIFY step over ``D`` draft tokens (CUDA graph), a random accept length
  ``1..D`` per request (rejected tokens' KV freed), then one DRAFT_EXTEND_V2 step over
  the accepted tokens (ragged, eager, FROZEN_KV: it reads the target's KV, writes none);
* every eager step is DP-padded after planning (``pad_forward_batch_for_dp``) to the
  largest batch of ``--dp-size`` simulated ranks; graph steps are padded to the captured
  batch size; a step with nothing to run is an IDLE step padded to one dummy request;
* every launch goes through the backend's guard: ``FMHA_GUARD=off`` (nothing checked),
  ``shapes``, ``values`` (one host copy of the index tensors per launch; before every
  graph replay the refilled metadata is checked).

Run (GPU: FlashInfer xqa + fa3; CPU: torch kernels, small geometry)::

    python examples/serve_loop.py                 # 300 steps, levels off, shapes, values
    python examples/serve_loop.py --steps 40 --check   # also compare every step with float64

Output: one line per guard level (steps/s, ms/step, ratio to off) and the step mix.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from runtime_checks.reference_backend import (  # noqa: E402
    CudaGraphRunner, ForwardMode, ReferenceAttnBackend, pad_forward_batch_for_dp,
)
from runtime_checks.reference_backend.workload import CPU_GEOMETRY, GPU_GEOMETRY, Geometry, Workload, max_relative_error  # noqa: E402


MAX_PROMPT, MAX_NEW = 160, 48


@dataclass
class Request:
    row: int
    remaining: int  # tokens still to generate


@dataclass
class Stats:
    steps: dict[str, int] = field(default_factory=dict)
    max_rel_err: float = 0.0
    checked: int = 0
    padded_rows: int = 0
    checks: tuple[int, int] = (0, 0)

    def count(self, name: str) -> None:
        self.steps[name] = self.steps.get(name, 0) + 1


class ServeLoop:
    """One engine: a KV pool, the target backend, graph runners for DECODE and TARGET_VERIFY.

    Args:
        geometry: model geometry. device: ``cuda`` or ``cpu``. seed: the request trace.
        num_draft: draft tokens per verify (``D``). max_running: running requests cap.
        dp_size: simulated DP-attention ranks (eager steps pad to the largest).
        graph_bs: batch sizes the CUDA graphs are captured for.
        check: compare every step with the float64 reference (slow; off when timing).
    """

    def __init__(self, geometry: Geometry, device: torch.device, seed: int, num_draft: int, max_running: int,
                 dp_size: int, graph_bs: list[int], check: bool, num_pages: int, max_context_len: int) -> None:
        self.w = Workload(geometry, "full", num_pages=num_pages, max_reqs=max_running + 2, max_context_len=max_context_len,
                          device=device, seed=seed, keep_kv=check)
        self.device, self.check, self.num_draft, self.max_running, self.dp_size = device, check, num_draft, max_running, dp_size
        self.rng = random.Random(seed)
        self.backend = ReferenceAttnBackend(self.w.model_runner())
        self.draft_backend = ReferenceAttnBackend(self.w.model_runner())  # the draft worker's own backend
        self.decode_graphs = CudaGraphRunner(self.draft_backend, self.w.layers, self.w.pool, ForwardMode.DECODE, graph_bs)
        self.verify_graphs = CudaGraphRunner(self.backend, self.w.layers, self.w.pool, ForwardMode.TARGET_VERIFY,
                                             graph_bs, q_len=num_draft)
        self.decode_graphs.capture()
        self.verify_graphs.capture()
        self.waiting: list[tuple[int, int]] = []  # (prompt, new tokens)
        self.running: list[Request] = []
        self.stats = Stats()

    # ------------------------------------------------------------------ steps

    def _compare(self, outs, inputs) -> None:
        if self.check:
            refs = [inputs[layer.layer_id][3] for layer in self.w.layers]
            err = max_relative_error(outs, refs)
            self.stats.max_rel_err = max(self.stats.max_rel_err, err) if err == err else float("nan")
            self.stats.checked += 1

    def _eager(self, backend, fb, inputs) -> None:
        """Plan, DP-pad to the largest simulated rank, run every layer."""
        backend.init_forward_metadata(fb)
        real = fb.seq_lens.shape[0]
        peers = [self.rng.randint(0, self.max_running) for _ in range(self.dp_size - 1)]
        padded_bs = max([real, 1 if real == 0 else real] + peers)
        if fb.forward_mode.is_idle():
            padded_bs = max(padded_bs, 1)
        padded = pad_forward_batch_for_dp(fb, padded_bs)
        extra = padded.out_cache_loc.shape[0] - fb.out_cache_loc.shape[0]
        self.stats.padded_rows += extra
        outs = []
        for layer in self.w.layers:
            q, k, v, _ = inputs[layer.layer_id]
            if extra:
                pad = torch.zeros(extra, *q.shape[1:], dtype=q.dtype, device=q.device)
                q = torch.cat([q, pad])
                if k is not None:
                    kpad = torch.zeros(extra, *k.shape[1:], dtype=k.dtype, device=k.device)
                    k, v = torch.cat([k, kpad]), torch.cat([v, kpad])
            out = backend.forward(q, k, v, layer, padded, save_kv_cache=k is not None)
            outs.append(out[: q.shape[0] - extra])
        self._compare(outs, inputs)

    def _graph(self, runner: CudaGraphRunner, fb, inputs) -> None:
        if not runner.can_run(fb):
            raise RuntimeError(f"{fb.forward_mode.name} batch of {fb.seq_lens.shape[0]} exceeds the captured graphs")
        outs = runner.replay(fb, *([inputs[layer.layer_id][i] for layer in self.w.layers] for i in range(3)))
        self._compare(outs, inputs)

    def admit(self) -> Optional[list[Request]]:
        """Admit waiting requests while slots and pages allow; returns the admitted ones."""
        admitted = []
        ps = self.w.geometry.page_size
        worst = -(-(MAX_PROMPT + MAX_NEW + 2 * self.num_draft) // ps) + 1  # pages one request may ever hold
        while self.waiting and len(self.running) + len(admitted) < self.max_running:
            if self.w.pool.allocator.available < worst * (len(self.running) + len(admitted) + 1):
                break
            prompt, new = self.waiting[0]
            self.waiting.pop(0)
            row = self.w.add(0)
            admitted.append((Request(row, new), prompt))
        if not admitted:
            return None
        rows = [r.row for r, _ in admitted]
        fb, inputs = self.w.step(ForwardMode.EXTEND, rows, [p for _, p in admitted])
        self._eager(self.backend, fb, inputs)
        self.stats.count("EXTEND")
        return [r for r, _ in admitted]

    def spec_cycle(self) -> None:
        D = self.num_draft
        rows = [r.row for r in self.running]
        base = [self.w.length(r) for r in rows]
        for _ in range(D - 1):  # draft decode steps (scratch KV, dropped after)
            fb, inputs = self.w.step(ForwardMode.DECODE, rows, [1] * len(rows))
            self._graph(self.decode_graphs, fb, inputs)
            self.stats.count("DECODE(graph)")
        for r, n in zip(rows, base):
            self.w.truncate(r, n)
        fb, inputs = self.w.step(ForwardMode.TARGET_VERIFY, rows, [D] * len(rows), num_draft_tokens=D)
        self._graph(self.verify_graphs, fb, inputs)
        self.stats.count("TARGET_VERIFY(graph)")
        accepted = [self.rng.randint(1, D) for _ in rows]
        for r, n, a in zip(rows, base, accepted):
            self.w.truncate(r, n + a)
        fb, inputs = self.w.step(ForwardMode.DRAFT_EXTEND_V2, rows, accepted, grow=False)
        self._eager(self.draft_backend, fb, inputs)
        self.stats.count("DRAFT_EXTEND_V2")
        still = []
        for req, a in zip(self.running, accepted):
            req.remaining -= a
            if req.remaining <= 0:
                self.w.release(req.row)
            else:
                still.append(req)
        self.running = still

    def idle(self) -> None:
        fb, inputs = self.w.step(ForwardMode.IDLE, [], [])
        self._eager(self.backend, fb, inputs)
        self.stats.count("IDLE")

    def run(self, steps: int) -> int:
        """Run ``steps`` scheduler iterations; returns attention steps executed."""
        for _ in range(steps):
            for _ in range(self.rng.choice((0, 0, 1, 1, 2))):
                self.waiting.append((self.rng.randint(16, MAX_PROMPT), self.rng.randint(8, MAX_NEW)))
            admitted = self.admit()
            if admitted:
                self.running += admitted
            elif self.running:
                self.spec_cycle()
            else:
                self.idle()
        return sum(self.stats.steps.values())


def checks_done(loop: "ServeLoop") -> tuple[int, int]:
    """(catalog runs at shapes, at values) by the target and draft backends."""
    a, b = loop.backend._checker.counters, loop.draft_backend._checker.counters
    return a.shape_checks + b.shape_checks, a.value_checks + b.value_checks


def timed(args, geometry, device, level: str) -> tuple[float, int, Stats]:
    os.environ["FMHA_GUARD"] = level
    loop = ServeLoop(geometry, device, args.seed, args.num_draft, args.max_running, args.dp_size, args.graph_bs,
                     check=False, num_pages=args.num_pages, max_context_len=args.max_context_len)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = loop.run(args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    loop.stats.checks = checks_done(loop)
    return secs, n, loop.stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=300, help="scheduler iterations per guard level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-draft", type=int, default=4)
    ap.add_argument("--max-running", type=int, default=16)
    ap.add_argument("--dp-size", type=int, default=2)
    ap.add_argument("--graph-bs", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--num-pages", type=int, default=1024)
    ap.add_argument("--max-context-len", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2, help="attention layers per step")
    ap.add_argument("--levels", nargs="+", default=["off", "shapes", "values"])
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the levels (best round is reported)")
    ap.add_argument("--check", action="store_true", help="first compare every step of one run with float64")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    geometry = replace(GPU_GEOMETRY if device.type == "cuda" else CPU_GEOMETRY, num_layers=args.layers)
    print(f"serve loop on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}: {args.steps} "
          f"iterations, {geometry.num_layers} layers, {geometry.num_qo_heads}/{geometry.num_kv_heads} heads, head dim "
          f"{geometry.head_dim}, page {geometry.page_size}, {args.num_draft} draft tokens, DP {args.dp_size}, "
          f"graphs at bs {args.graph_bs}")
    if args.check:
        os.environ["FMHA_GUARD"] = "values"
        loop = ServeLoop(geometry, device, args.seed, args.num_draft, args.max_running, args.dp_size, args.graph_bs,
                         check=True, num_pages=args.num_pages, max_context_len=args.max_context_len)
        loop.run(args.steps)
        s = loop.stats
        ok = s.max_rel_err == s.max_rel_err and s.max_rel_err <= 1e-2
        print(f"check: {s.checked} steps vs float64 reference, max relative error {s.max_rel_err:.2e} "
              f"({'OK' if ok else 'TOO LARGE'}); steps {s.steps}")
        if not ok:
            return 1
    best: dict[str, tuple[float, int, Stats]] = {}
    timed(args, geometry, device, args.levels[0])  # warm-up: JIT, allocator, caches
    for _ in range(args.repeat):
        for level in args.levels:
            secs, n, stats = timed(args, geometry, device, level)
            if level not in best or secs < best[level][0]:
                best[level] = (secs, n, stats)
    base = best[args.levels[0]][0]
    for level in args.levels:
        secs, n, stats = best[level]
        print(f"FMHA_GUARD={level:<6} {n / secs:8.1f} steps/s  {1000 * secs / n:7.3f} ms/step  "
              f"ratio to {args.levels[0]} {secs / base:.3f}  (catalog runs: {stats.checks[0]} shape, "
              f"{stats.checks[1]} value)")
    secs, n, stats = best[args.levels[0]]
    print(f"steps per run: {n} ({', '.join(f'{k} {v}' for k, v in sorted(stats.steps.items()))}); "
          f"DP padding added {stats.padded_rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
