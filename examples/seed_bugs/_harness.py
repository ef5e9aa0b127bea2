"""Shared plumbing of the seed-bug scripts (SGLang #21649, #24856, #21987, #26966).

A tiny engine (a KV pool, requests with known K/V, a float64 reference: see
:mod:`runtime_checks.reference_backend.workload`), plus the three steps every script prints:
the lint finding, the guard's error, the fixed backend's output against the reference.

Runs on CPU (torch kernels) by default; ``configure("cuda")`` (or
``FMHA_EXAMPLES_DEVICE=cuda``) puts pools and tensors on the GPU with a geometry the
FlashInfer kernels are built for; ``tests/gpu/reference_backend_proof.py`` does that.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import lint_rules
from guardrails import FmhaInvariantError
from runtime_checks.reference_backend import MHATokenToKVPool, SWAKVPool, attention_backend
from runtime_checks.reference_backend.workload import CPU_GEOMETRY, GPU_GEOMETRY, Workload, max_relative_error

os.environ.setdefault("FMHA_GUARD", "values")  # the guard reads it at every launch: check values too
CONFIG = {"device": torch.device(os.environ.get("FMHA_EXAMPLES_DEVICE", "cpu"))}


def configure(device: "str | torch.device") -> None:
    """Run the scenarios on ``device`` ("cpu": torch kernels; "cuda": FlashInfer)."""
    CONFIG["device"] = torch.device(device)


def geometry():
    return GPU_GEOMETRY if CONFIG["device"].type == "cuda" else CPU_GEOMETRY


def make_pool(kind: str = "full", num_pages: int = 96, num_swa_pages: int = 40) -> MHATokenToKVPool:
    """Two layers; with ``kind="swa"`` layer 1 is a sliding-window layer on its own smaller pool."""
    g, dev = geometry(), CONFIG["device"]
    if kind == "swa":
        return SWAKVPool(num_pages, g.page_size, g.num_kv_heads, g.head_dim, g.num_layers, num_swa_pages=num_swa_pages,
                         swa_layer_ids=[1], sliding_window_size=g.window, device=dev)
    return MHATokenToKVPool(num_pages, g.page_size, g.num_kv_heads, g.head_dim, g.num_layers, device=dev)


def make_runner(pool: MHATokenToKVPool, req_pool):
    """A model runner on ``pool`` (the draft worker's, in #26966) sharing ``req_pool``."""
    g = geometry()
    from runtime_checks.reference_backend import ModelRunner

    return ModelRunner(token_to_kv_pool=pool, req_to_token_pool=req_pool, page_size=g.page_size,
                       num_qo_heads=g.num_qo_heads, num_kv_heads=g.num_kv_heads, head_dim=g.head_dim,
                       device=CONFIG["device"])


class Requests(Workload):
    """Requests whose K/V sit in ``pool``; remembers every K/V row for the reference."""

    def __init__(self, pool: MHATokenToKVPool, seed: int = 0) -> None:
        super().__init__(geometry(), pool, device=CONFIG["device"], seed=seed)


# ----------------------------------------------------------------------------- the three steps


def run_layers(backend, forward_batch, inputs, layers, *, pad_rows: int = 0, rand=None
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run each layer's attention with NaN-poisoned outputs (a row nobody writes stays NaN);
    return (outputs of the real rows, references) in layer order.

    ``pad_rows``: rows appended to ``q``, ``k`` and ``v`` (drawn by ``rand(rows, *dims)``),
    as a DP-padded model pads its hidden states."""
    outs, refs = [], []
    for layer in layers:
        q, k, v, ref = inputs[layer.layer_id]
        if pad_rows:
            q, k, v = (torch.cat([t, rand(pad_rows, *t.shape[1:]).to(t.device)]) for t in (q, k, v))
        out = torch.full_like(q, float("nan"))
        backend.forward(q, k, v, layer, forward_batch, out=out)
        outs.append(out[: ref.shape[0]])
        refs.append(ref)
    return outs, refs


def print_lint(script: str, buggy_class: str) -> None:
    """(1) Run the real lint engine (default rules) on the script and on the reference backend."""
    print("== 1. lint (fmha-guard audit, default rules)")
    for path in (Path(script), Path(attention_backend.__file__)):
        result = lint_rules.audit_paths([path], lint_rules.select_rules())
        mine = [f for f in result.findings if path.name != Path(script).name or f.symbol.startswith(buggy_class + ".")]
        label = buggy_class if path.name == Path(script).name else "ReferenceAttnBackend (fixed)"
        if not mine:
            print(f"   {label}: no findings")
        for f in mine:
            print(f"   {label}: {f.rule} {f.name} at line {f.line} ({f.symbol}): {f.message}")


def print_guard_error(run) -> None:
    """(2) The guard raises before the kernel is launched."""
    print("== 2. runtime guard (FMHA_GUARD=values) on the buggy variant")
    try:
        run()
    except FmhaInvariantError as err:
        print(f"   FmhaInvariantError invariant={err.invariant}")
        print(f"   message: {str(err).splitlines()[0]}")
        return
    print("   NO ERROR RAISED (unexpected)")


def print_fixed(outputs: list[torch.Tensor], refs: list[torch.Tensor], tol: float = 1e-2) -> None:
    """(3) The fixed backend against the float64 reference."""
    print("== 3. fixed variant (ReferenceAttnBackend) vs float64 reference")
    err = max_relative_error(outputs, refs)
    print(f"   max relative error {err:.2e} ({'OK' if err <= tol else 'TOO LARGE'}, tolerance {tol:g})")
