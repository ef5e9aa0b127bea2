"""Requests with known K/V and their float64 reference: what the seed examples, the GPU
proof (``tests/gpu/reference_backend_proof.py``) and ``examples/serve_loop.py`` drive the
reference backend with.

* :class:`Geometry`: heads, head dim, page size, sliding window of a small model.
  :data:`CPU_GEOMETRY` keeps CPU runs fast; :data:`GPU_GEOMETRY` fits FlashInfer's
  xqa and fa2/fa3 kernels (head dim 128, page size 16).
* :class:`Workload`: a KV pool and ``req_to_token`` pool, requests whose every K/V row
  is remembered (host, bf16), and :meth:`Workload.step`, which grows requests by their
  query rows and returns the :class:`~.forward_batch.ForwardBatch` plus per layer
  ``(q, k, v, reference)``.
* :func:`reference_attention`: float64 causal GQA attention with an optional sliding
  window, no paging: the ground truth every kernel output is compared against.

Tensors handed to the backend live on ``Workload.device``; references stay on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from guardrails.forward_mode import ForwardMode

from .attention_backend import AttentionLayer
from .forward_batch import ForwardBatch, ModelRunner
from .kv_pool import MHATokenToKVPool, ReqToTokenPool, SWAKVPool

__all__ = ["Geometry", "CPU_GEOMETRY", "GPU_GEOMETRY", "Workload", "reference_attention", "max_relative_error"]


@dataclass(frozen=True)
class Geometry:
    """Attention geometry of a small model.

    Attributes:
        num_kv_heads: KV heads. group: query heads per KV head (GQA).
        head_dim: elements per head. page_size: tokens per KV page.
        window: FlashInfer ``window_left`` of sliding-window layers (a query at
            position ``i`` attends keys ``[i - window, i]``).
        num_layers: attention layers; with an SWA pool layer 1 is the sliding-window one.
    """

    num_kv_heads: int = 2
    group: int = 2
    head_dim: int = 32
    page_size: int = 4
    window: int = 5
    num_layers: int = 2

    @property
    def num_qo_heads(self) -> int:
        return self.num_kv_heads * self.group


CPU_GEOMETRY = Geometry()
"""Small enough for the CPU torch kernels to run hundreds of steps in seconds."""

GPU_GEOMETRY = Geometry(num_kv_heads=2, group=4, head_dim=128, page_size=16, window=40)
"""What xqa (head dim 128, page size 16, GQA group 4) and fa2/fa3 are JIT-built for."""


def reference_attention(
    q: torch.Tensor, seqs: Sequence[torch.Tensor], q_lens: Sequence[int], group: int, window: int = -1
) -> torch.Tensor:
    """float64 causal GQA attention of each request's last ``q_len`` tokens over its K/V.

    Args:
        q: ``[sum(q_lens), num_qo_heads, head_dim]`` (any float dtype, any device).
        seqs: per request ``[kv_len, 2, num_kv_heads, head_dim]`` K (index 0) and V (1),
            the query's own tokens last.
        q_lens: query rows per request. group: query heads per KV head.
        window: ``window_left`` (keys ``[pos - window, pos]``); ``-1``: none.

    Returns:
        ``[sum(q_lens), num_qo_heads, head_dim]`` float64 on the host.
    """
    q = q.detach().cpu()
    out, row = torch.zeros(q.shape, dtype=torch.float64), 0
    for kv, ql in zip(seqs, q_lens):
        kv = kv.detach().cpu()
        kl = kv.shape[0]
        k, v = (kv[:, i].double().transpose(0, 1).repeat_interleave(group, 0) for i in (0, 1))
        s = q[row : row + ql].double().transpose(0, 1) @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        pos_q, pos_k = torch.arange(kl - ql, kl).unsqueeze(1), torch.arange(kl).unsqueeze(0)
        masked = pos_k > pos_q
        if window >= 0:
            masked |= pos_k < pos_q - window
        out[row : row + ql] = (s.masked_fill(masked, float("-inf")).softmax(-1) @ v).transpose(0, 1)
        row += ql
    return out


def max_relative_error(outputs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> float:
    """``max |out - ref| / max |ref|`` over pairs (NaN anywhere in an output gives ``nan``)."""
    worst = 0.0
    for o, r in zip(outputs, refs):
        o = o.detach().cpu().double().reshape(r.shape)
        if torch.isnan(o).any():
            return float("nan")
        worst = max(worst, (o - r).abs().max().item() / max(r.abs().max().item(), 1e-9))
    return worst


class Workload:
    """Requests with known K/V in a paged pool.

    Args:
        geometry: the :class:`Geometry`.
        pool: ``"full"`` (:class:`MHATokenToKVPool`) or ``"swa"`` (:class:`SWAKVPool`,
            layer 1 sliding-window on its own smaller pool) or a pool object.
        num_pages, num_swa_pages: pool sizes (pages, dummy page included).
        max_reqs, max_context_len: ``req_to_token`` size.
        device: where pools, metadata and the backend's tensors live.
        seed: of the generator every random tensor comes from.
        keep_kv: remember every K/V row on the host and compute references (default).
            ``False`` (benchmarks): random tensors are drawn on ``device``, only lengths
            are tracked and :meth:`step` returns ``None`` references.

    Attributes:
        pool, req_pool: the pools. layers: one :class:`AttentionLayer` per layer.
        kv: request row -> per layer ``[len, 2, num_kv_heads, head_dim]`` bf16 (host;
            empty when ``keep_kv`` is off). lengths: request row -> KV tokens.
    """

    def __init__(
        self,
        geometry: Geometry = CPU_GEOMETRY,
        pool: "str | MHATokenToKVPool" = "full",
        *,
        num_pages: int = 96,
        num_swa_pages: int = 40,
        max_reqs: int = 16,
        max_context_len: int = 96,
        device: "str | torch.device" = "cpu",
        seed: int = 0,
        keep_kv: bool = True,
    ) -> None:
        self.geometry = g = geometry
        self.device = torch.device(device)
        self.keep_kv = keep_kv
        self.lengths: dict[int, int] = {}
        if pool == "swa":
            pool = SWAKVPool(num_pages, g.page_size, g.num_kv_heads, g.head_dim, g.num_layers,
                             num_swa_pages=num_swa_pages, swa_layer_ids=[1], sliding_window_size=g.window,
                             device=self.device)
        elif pool == "full":
            pool = MHATokenToKVPool(num_pages, g.page_size, g.num_kv_heads, g.head_dim, g.num_layers,
                                    device=self.device)
        self.pool: MHATokenToKVPool = pool
        self.req_pool = ReqToTokenPool(max_reqs, max_context_len, device=self.device)
        self.gen = torch.Generator(device=self.device if not keep_kv else "cpu").manual_seed(seed)
        self.layers = [
            AttentionLayer(i, g.num_qo_heads, g.num_kv_heads, g.head_dim,
                           sliding_window_size=g.window if self.pool.is_swa_layer(i) else -1)
            for i in range(g.num_layers)
        ]
        self.kv: dict[int, list[torch.Tensor]] = {}

    def model_runner(self, pool: Optional[MHATokenToKVPool] = None) -> ModelRunner:
        """A :class:`ModelRunner` on ``pool`` (default: this workload's pool)."""
        g = self.geometry
        return ModelRunner(token_to_kv_pool=pool or self.pool, req_to_token_pool=self.req_pool,
                           page_size=g.page_size, num_qo_heads=g.num_qo_heads, num_kv_heads=g.num_kv_heads,
                           head_dim=g.head_dim, device=self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """Standard normal bf16 (host with ``keep_kv``, else on ``device``)."""
        return torch.randn(*shape, generator=self.gen, device=self.gen.device).to(torch.bfloat16)

    def add(self, prefix: int) -> int:
        """A new request with ``prefix`` tokens of random K/V already in the pool; its row."""
        g = self.geometry
        row = self.req_pool.alloc()
        loc = self.pool.grow(self.req_pool, row, 0, prefix)
        kvs = [self.rand(prefix, 2, g.num_kv_heads, g.head_dim) for _ in self.layers]
        for layer, kv in zip(self.layers, kvs):
            self.pool.set_kv_buffer(layer.layer_id, loc, kv[:, 0].to(self.device), kv[:, 1].to(self.device))
        if self.keep_kv:
            self.kv[row] = kvs
        self.lengths[row] = prefix
        return row

    def length(self, row: int) -> int:
        """KV tokens request ``row`` holds."""
        return self.lengths[row]

    def release(self, row: int) -> None:
        """Free request ``row``'s pages and row."""
        self.pool.release(self.req_pool, row, self.length(row))
        self.kv.pop(row, None)
        del self.lengths[row]

    def truncate(self, row: int, length: int) -> None:
        """Drop request ``row``'s tokens past ``length`` (rejected draft tokens, a draft
        model's scratch positions); pages no longer used go back to the pool."""
        self.pool.shrink(self.req_pool, row, self.lengths[row], length)
        self.lengths[row] = length
        if self.keep_kv:
            self.kv[row] = [kv[:length] for kv in self.kv[row]]

    def step(self, mode: ForwardMode, rows: Sequence[int], q_lens: Sequence[int], num_draft_tokens: Optional[int] = None,
             *, grow: bool = True):
        """One step: each request's last ``q_lens[i]`` positions are the query rows.

        Args:
            grow: extend every request by its query rows (new random K/V, written by the
                backend through ``out_cache_loc``). ``False``: the queries are positions the
                pool already holds and nothing is written (a FROZEN_KV draft-extend:
                the draft worker reads the target's KV); ``k``/``v`` are then ``None``.

        Returns:
            ``(forward_batch, inputs)``: the :class:`ForwardBatch` (on ``device``) and, per
            layer id, ``(q, k, v, reference)``: ``q`` ``[sum(q_lens), H_qo, D]``, ``k``/``v``
            ``[sum(q_lens), H_kv, D]`` bf16 on ``device``, ``reference`` float64 host
            (``None`` without ``keep_kv``).
        """
        g = self.geometry
        dev = self.device
        locs, new = [], {layer.layer_id: [] for layer in self.layers}
        for row, n in zip(rows, q_lens):
            old = self.length(row)
            if not grow:
                locs.append(self.req_pool.req_to_token[row, old - n : old].long())
                continue
            locs.append(self.pool.grow(self.req_pool, row, old, old + n))
            self.lengths[row] = old + n
            for layer in self.layers:
                kv = self.rand(n, 2, g.num_kv_heads, g.head_dim)
                new[layer.layer_id].append(kv)
                if self.keep_kv:
                    self.kv[row][layer.layer_id] = torch.cat([self.kv[row][layer.layer_id], kv])
        q_lens_t = torch.tensor(list(q_lens), dtype=torch.int32, device=dev)
        seq_lens = [self.length(r) for r in rows]
        fb = ForwardBatch(
            forward_mode=mode, batch_size=len(rows),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
            seq_lens_cpu=torch.tensor(seq_lens, dtype=torch.int32),
            req_pool_indices=torch.tensor(list(rows), dtype=torch.int64, device=dev),
            req_to_token=self.req_pool.req_to_token,
            out_cache_loc=torch.cat(locs) if locs else torch.zeros(0, dtype=torch.int64, device=dev),
            token_to_kv_pool=self.pool,
            extend_seq_lens=q_lens_t if mode in (ForwardMode.EXTEND, ForwardMode.MIXED) else None,
            spec_accept_lens=q_lens_t if mode is ForwardMode.DRAFT_EXTEND_V2 else None,
            num_draft_tokens=num_draft_tokens,
        )
        inputs = {}
        total = sum(q_lens)
        for layer in self.layers:
            q = self.rand(total, g.num_qo_heads, g.head_dim)
            ref = None
            if self.keep_kv:
                ref = reference_attention(q, [self.kv[r][layer.layer_id] for r in rows], q_lens, g.group,
                                          layer.sliding_window_size)
            if grow:
                kv = (torch.cat(new[layer.layer_id]) if new[layer.layer_id]
                      else torch.zeros(0, 2, g.num_kv_heads, g.head_dim, dtype=torch.bfloat16, device=self.gen.device))
                k, v = kv[:, 0].contiguous().to(dev), kv[:, 1].contiguous().to(dev)
            else:
                k = v = None
            inputs[layer.layer_id] = (q.to(dev), k, v, ref)
        return fb, inputs
