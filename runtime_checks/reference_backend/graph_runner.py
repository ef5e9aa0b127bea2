"""CUDA-graph capture and replay of attention steps: SGLang's ``CudaGraphRunner`` in miniature.

:class:`CudaGraphRunner` captures, for each batch size in ``batch_sizes``, one graph
that runs every layer's attention of a DECODE or TARGET_VERIFY step over static input
buffers, and replays it for smaller batches padded to the nearest captured size (padded
requests read and write the dummy page, as SGLang's). Per replay:

1. copy the step's ``seq_lens`` / ``req_pool_indices`` / ``out_cache_loc`` and each
   layer's ``q`` / ``k`` / ``v`` into the static buffers (padding filled);
2. ``backend.init_forward_metadata_replay_cuda_graph(...)`` refills the captured
   metadata in place;
3. ``backend.check_graph_replay(bs, forward_batch)`` validates the refilled metadata
   against the layout recorded at capture (a replayed graph runs no Python, so this is
   the replayed launches' guard; SGLang #21987);
4. ``graph.replay()``.

On CPU there is no graph: "replay" runs the same forward eagerly over the same static
buffers and captured metadata, so the CPU tests exercise steps 1-3 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from guardrails.forward_mode import ForwardMode

from .attention_backend import AttentionLayer, ReferenceAttnBackend
from .forward_batch import ForwardBatch
from .kv_pool import DUMMY_REQ_ROW, MHATokenToKVPool

__all__ = ["CudaGraphRunner"]


@dataclass
class _Captured:
    """Static buffers and the graph of one captured batch size."""

    bs: int
    seq_lens: torch.Tensor  # [bs] int32
    req_pool_indices: torch.Tensor  # [bs] int64
    out_cache_loc: torch.Tensor  # [bs * q_len] int64
    q: list[torch.Tensor]  # per layer [bs * q_len, H_qo, D]
    k: list[torch.Tensor]  # per layer [bs * q_len, H_kv, D]
    v: list[torch.Tensor]
    out: list[torch.Tensor]  # per layer like q
    graph: Optional["torch.cuda.CUDAGraph"] = None


class CudaGraphRunner:
    """Capture and replay of the attention of one uniform forward mode.

    Args:
        backend: the :class:`~.attention_backend.ReferenceAttnBackend`; its
            ``init_cuda_graph_state`` is called here.
        layers: the attention layers every step runs, in order.
        pool: the KV pool the captured graphs read (a graph bakes in its buffers).
        forward_mode: DECODE or TARGET_VERIFY.
        batch_sizes: batch sizes to capture (ascending order not required).
        q_len: query rows per request (1 for DECODE, the draft tokens for TARGET_VERIFY).
        dtype: activation dtype.

    Raises:
        ValueError: a ragged forward mode, or ``q_len`` not 1 for DECODE.
    """

    def __init__(
        self,
        backend: ReferenceAttnBackend,
        layers: Sequence[AttentionLayer],
        pool: MHATokenToKVPool,
        forward_mode: ForwardMode,
        batch_sizes: Sequence[int],
        q_len: int = 1,
        dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        mode = ForwardMode.parse(forward_mode)
        if not mode.is_uniform_q_len() or mode.is_idle():
            raise ValueError(f"CUDA graphs capture DECODE / TARGET_VERIFY only, not {mode.name}")
        if mode.is_decode() and q_len != 1:
            raise ValueError(f"DECODE has one query row per request, got q_len={q_len}")
        self.backend, self.layers, self.pool, self.mode, self.q_len, self.dtype = backend, list(layers), pool, mode, q_len, dtype
        self.batch_sizes = sorted(set(int(b) for b in batch_sizes))
        self.device = backend.device
        self.use_graphs = self.device.type == "cuda"
        self.captured: dict[int, _Captured] = {}
        backend.init_cuda_graph_state(self.batch_sizes[-1], self.batch_sizes[-1] * q_len)
        self._pool_handle = torch.cuda.graph_pool_handle() if self.use_graphs else None

    # ------------------------------------------------------------------ capture

    def _static(self, bs: int) -> _Captured:
        rows, dev = bs * self.q_len, self.device
        qo = [torch.zeros(rows, layer.num_qo_heads, layer.head_dim, dtype=self.dtype, device=dev) for layer in self.layers]
        kv = [torch.zeros(rows, layer.num_kv_heads, layer.head_dim, dtype=self.dtype, device=dev) for layer in self.layers]
        return _Captured(
            bs=bs,
            seq_lens=torch.full((bs,), self.q_len, dtype=torch.int32, device=dev),
            req_pool_indices=torch.full((bs,), DUMMY_REQ_ROW, dtype=torch.int64, device=dev),
            out_cache_loc=torch.zeros(rows, dtype=torch.int64, device=dev),
            q=qo, k=[t.clone() for t in kv], v=[t.clone() for t in kv], out=[t.clone() for t in qo],
        )

    def _forward_batch(self, c: _Captured, req_to_token: torch.Tensor) -> ForwardBatch:
        return ForwardBatch(
            forward_mode=self.mode, batch_size=c.bs, seq_lens=c.seq_lens, req_pool_indices=c.req_pool_indices,
            req_to_token=req_to_token, out_cache_loc=c.out_cache_loc, token_to_kv_pool=self.pool,
            num_draft_tokens=self.q_len if self.mode.is_target_verify() else None,
        )

    def _run_layers(self, c: _Captured, fb: ForwardBatch) -> None:
        for layer, q, k, v, out in zip(self.layers, c.q, c.k, c.v, c.out):
            self.backend.forward(q, k, v, layer, fb, out=out)

    def capture(self) -> None:
        """Capture every batch size (largest first, sharing one memory pool). Each capture
        runs the step twice eagerly first (FlashInfer JIT, workspace, masks), as SGLang
        does; the padding state (dummy row, ``seq_lens = q_len``) is what is captured."""
        req_to_token = self.backend.req_to_token
        for bs in reversed(self.batch_sizes):
            c = self._static(bs)
            fb = self._forward_batch(c, req_to_token)
            self.backend.init_forward_metadata_capture_cuda_graph(
                bs, bs * self.q_len, c.req_pool_indices, c.seq_lens, None, self.mode)
            if self.use_graphs:
                stream = torch.cuda.Stream(device=self.device)
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        self._run_layers(c, fb)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                torch.cuda.synchronize(self.device)
                c.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(c.graph, pool=self._pool_handle):
                    self._run_layers(c, fb)
                torch.cuda.synchronize(self.device)
            else:
                self._run_layers(c, fb)
            self.captured[bs] = c

    # ------------------------------------------------------------------ replay

    def graph_batch_size(self, bs: int) -> int:
        """The smallest captured batch size that holds ``bs`` requests.

        Raises:
            ValueError: ``bs`` exceeds the largest captured size.
        """
        for b in self.batch_sizes:
            if b >= bs:
                return b
        raise ValueError(f"batch of {bs} requests exceeds the largest captured CUDA graph ({self.batch_sizes[-1]})")

    def can_run(self, forward_batch: ForwardBatch) -> bool:
        """Whether ``forward_batch`` fits a captured graph (mode and size)."""
        return (forward_batch.forward_mode is self.mode and forward_batch.seq_lens.shape[0] <= self.batch_sizes[-1]
                and (not self.mode.is_target_verify() or forward_batch.num_draft_tokens == self.q_len))

    def replay(
        self,
        forward_batch: ForwardBatch,
        q: Sequence[torch.Tensor],
        k: Sequence[torch.Tensor],
        v: Sequence[torch.Tensor],
        spec_info=None,
    ) -> list[torch.Tensor]:
        """Run one step through the captured graph.

        Args:
            forward_batch: the real step (``seq_lens.shape[0]`` requests, ``q_len`` rows each).
            q, k, v: per layer ``[bs * q_len, H, D]`` inputs (``k``/``v`` are written to
                ``forward_batch.out_cache_loc``).
            spec_info: handed to ``init_forward_metadata_replay_cuda_graph``.

        Returns:
            Per layer the output ``[bs * q_len, H_qo, D]``: a view of the static buffer,
            valid until the next replay.

        Raises:
            FmhaInvariantError: the refilled metadata breaks an invariant (before replay).
            ValueError: the batch does not fit (:meth:`can_run`).
        """
        if not self.can_run(forward_batch):
            raise ValueError(f"{forward_batch.forward_mode.name} batch of {forward_batch.seq_lens.shape[0]} "
                             f"requests does not fit the captured {self.mode.name} graphs {self.batch_sizes}")
        n = forward_batch.seq_lens.shape[0]
        rows = n * self.q_len
        c = self.captured[self.graph_batch_size(n)]
        c.seq_lens[:n].copy_(forward_batch.seq_lens)
        c.seq_lens[n:].fill_(self.q_len)
        c.req_pool_indices[:n].copy_(forward_batch.req_pool_indices)
        c.req_pool_indices[n:].fill_(DUMMY_REQ_ROW)
        c.out_cache_loc[:rows].copy_(forward_batch.out_cache_loc[:rows])
        c.out_cache_loc[rows:].zero_()
        for static, new in ((c.q, q), (c.k, k), (c.v, v)):
            for buf, t in zip(static, new):
                buf[:rows].copy_(t.reshape(rows, *buf.shape[1:]))
                buf[rows:].zero_()
        seq_lens_cpu = c.seq_lens.cpu() if not self.use_graphs else None
        self.backend.init_forward_metadata_replay_cuda_graph(
            c.bs, c.req_pool_indices, c.seq_lens, sum(forward_batch.host_seq_lens()) + (c.bs - n) * self.q_len,
            None, self.mode, spec_info, seq_lens_cpu)
        fb = self._forward_batch(c, self.backend.req_to_token)
        self.backend.check_graph_replay(c.bs, fb)
        if self.use_graphs:
            c.graph.replay()
        else:
            self._run_layers(c, fb)
        return [out[:rows] for out in c.out]
