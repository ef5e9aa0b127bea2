"""Shared plumbing of the seed-bug scripts (SGLang #21649, #24856, #21987, #26966).

A tiny engine on CPU (a KV pool, requests with known K/V, a float64 reference), plus
the three steps every script prints: the lint finding, the guard's error, the fixed
backend's output against the reference. Needs torch; never FlashInfer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

import lint_rules
from guardrails import FmhaInvariantError
from guardrails.reference_backend import (
    AttentionLayer, ForwardBatch, ForwardMode, MHATokenToKVPool, ModelRunner, ReqToTokenPool, SWAKVPool,
)
from guardrails.reference_backend import attention_backend

KV_HEADS, GROUP, HEAD_DIM, PAGE, WINDOW = 2, 2, 32, 4, 5
QO_HEADS = KV_HEADS * GROUP
os.environ["FMHA_GUARD"] = "values"  # the guard reads it at every launch: check values too


def make_pool(kind: str = "full", num_pages: int = 96, num_swa_pages: int = 40) -> MHATokenToKVPool:
    """Two layers; with ``kind="swa"`` layer 1 is a sliding-window layer on its own smaller pool."""
    if kind == "swa":
        return SWAKVPool(num_pages, PAGE, KV_HEADS, HEAD_DIM, 2, num_swa_pages=num_swa_pages,
                         swa_layer_ids=[1], sliding_window_size=WINDOW)
    return MHATokenToKVPool(num_pages, PAGE, KV_HEADS, HEAD_DIM, 2)


def make_runner(pool: MHATokenToKVPool, req_pool: ReqToTokenPool) -> ModelRunner:
    return ModelRunner(token_to_kv_pool=pool, req_to_token_pool=req_pool, page_size=PAGE,
                       num_qo_heads=QO_HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM)


class Requests:
    """Requests whose K/V sit in ``pool``; remembers every K/V row for the reference."""

    def __init__(self, pool: MHATokenToKVPool, seed: int = 0) -> None:
        self.pool, self.req_pool = pool, ReqToTokenPool(16, 96)
        self.gen = torch.Generator().manual_seed(seed)
        self.layers = [AttentionLayer(i, QO_HEADS, KV_HEADS, HEAD_DIM,
                                      sliding_window_size=WINDOW if pool.is_swa_layer(i) else -1) for i in range(2)]
        self.kv: dict[int, list[torch.Tensor]] = {}  # row -> per layer [len, 2, Hk, D]

    def rand(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen).to(torch.bfloat16)

    def add(self, prefix: int) -> int:
        row = self.req_pool.alloc()
        loc = self.pool.grow(self.req_pool, row, 0, prefix)
        self.kv[row] = [self.rand(prefix, 2, KV_HEADS, HEAD_DIM) for _ in self.layers]
        for layer, kv in zip(self.layers, self.kv[row]):
            self.pool.set_kv_buffer(layer.layer_id, loc, kv[:, 0], kv[:, 1])
        return row

    def step(self, mode: ForwardMode, rows: list[int], q_lens: list[int], num_draft_tokens=None):
        """Grow every request by its query length: the ForwardBatch and, per layer, (q, k, v, reference)."""
        locs, new = [], {layer.layer_id: [] for layer in self.layers}
        for row, n in zip(rows, q_lens):
            old = self.kv[row][0].shape[0]
            locs.append(self.pool.grow(self.req_pool, row, old, old + n))
            for layer in self.layers:
                kv = self.rand(n, 2, KV_HEADS, HEAD_DIM)
                new[layer.layer_id].append(kv)
                self.kv[row][layer.layer_id] = torch.cat([self.kv[row][layer.layer_id], kv])
        q_lens_t = torch.tensor(q_lens, dtype=torch.int32)
        fb = ForwardBatch(
            forward_mode=mode, batch_size=len(rows),
            seq_lens=torch.tensor([self.kv[r][0].shape[0] for r in rows], dtype=torch.int32),
            req_pool_indices=torch.tensor(rows, dtype=torch.int64), req_to_token=self.req_pool.req_to_token,
            out_cache_loc=torch.cat(locs), token_to_kv_pool=self.pool,
            extend_seq_lens=q_lens_t if mode in (ForwardMode.EXTEND, ForwardMode.MIXED) else None,
            spec_accept_lens=q_lens_t if mode is ForwardMode.DRAFT_EXTEND_V2 else None,
            num_draft_tokens=num_draft_tokens,
        )
        inputs = {}
        for layer in self.layers:
            kv = torch.cat(new[layer.layer_id])
            q = self.rand(sum(q_lens), QO_HEADS, HEAD_DIM)
            ref = reference(q, [self.kv[r][layer.layer_id] for r in rows], q_lens, layer.sliding_window_size)
            inputs[layer.layer_id] = (q, kv[:, 0].contiguous(), kv[:, 1].contiguous(), ref)
        return fb, inputs


def reference(q: torch.Tensor, seqs: list[torch.Tensor], q_lens: list[int], window: int = -1) -> torch.Tensor:
    """float64 causal GQA attention of each request's last ``q_len`` tokens over its whole K/V; no paging."""
    out, row = torch.zeros(q.shape, dtype=torch.float64), 0
    for kv, ql in zip(seqs, q_lens):
        kl = kv.shape[0]
        k, v = (kv[:, i].double().transpose(0, 1).repeat_interleave(GROUP, 0) for i in (0, 1))
        s = q[row : row + ql].double().transpose(0, 1) @ k.transpose(1, 2) / math.sqrt(HEAD_DIM)
        pos_q, pos_k = torch.arange(kl - ql, kl).unsqueeze(1), torch.arange(kl).unsqueeze(0)
        masked = pos_k > pos_q
        if window >= 0:
            masked |= pos_k < pos_q - window
        out[row : row + ql] = (s.masked_fill(masked, float("-inf")).softmax(-1) @ v).transpose(0, 1)
        row += ql
    return out


# ----------------------------------------------------------------------------- the three steps


def run_layers(backend, forward_batch, inputs, layers) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run each layer's attention with NaN-poisoned outputs (a row nobody writes stays NaN);
    return (outputs, references) in layer order."""
    outs, refs = [], []
    for layer in layers:
        q, k, v, ref = inputs[layer.layer_id]
        out = torch.full_like(q, float("nan"))
        backend.forward(q, k, v, layer, forward_batch, out=out)
        outs.append(out)
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
    err = max((o.double() - r).abs().max().item() / max(r.abs().max().item(), 1e-9) for o, r in zip(outputs, refs))
    print(f"   max relative error {err:.2e} ({'OK' if err <= tol else 'TOO LARGE'}, tolerance {tol:g})")
