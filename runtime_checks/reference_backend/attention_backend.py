"""The reference attention backend: SGLang's ``AttentionBackend`` interface, correct by design.

:class:`ReferenceAttnBackend` plans metadata once per step
(:meth:`~ReferenceAttnBackend.init_forward_metadata`, or the CUDA-graph pair), then
runs every layer through one of two kernels:

* the paged *prefill* kernel (ragged ``cu_seqlens_q``) for EXTEND, MIXED, DRAFT_EXTEND
  and DRAFT_EXTEND_V2 (FlashInfer: trtllm-gen context on SM100, fa3 on SM90, fa2 else);
* the *decode* kernel (``trtllm_batch_decode_with_kv_cache``, uniform
  ``q_len_per_req``) for DECODE (1) and TARGET_VERIFY (the draft tokens).

On CPU tensors the kernels are :mod:`.torch_kernels`; on CUDA tensors
:mod:`.flashinfer_kernels` (FlashInfer, imported lazily). Every launch is described as
an :class:`~guardrails.AttentionBatch` and validated first: shapes unless
``FMHA_GUARD=off`` is set explicitly, values when ``FMHA_GUARD=values`` (:func:`guard_level`),
memoized (:class:`runtime_checks.launch_checker.LaunchChecker`: a layout seen before
builds no models, one step's metadata is read to the host once for all layers). CUDA-graph
replays run no Python: :meth:`ReferenceAttnBackend.check_graph_replay` validates the
refilled metadata before ``graph.replay()`` (:class:`.graph_runner.CudaGraphRunner`
calls it).

Each design choice mirrors an SGLang fix:

* #21649 (DP padding): no kernel size comes from ``forward_batch.batch_size``. The
  batch size is ``cu_seqlens_q.shape[0] - 1`` of the planned metadata, the query rows
  ``metadata.num_tokens``; rows a DP-padded batch adds are zero-filled, never attended.
* #24856 (draft extend on the decode kernel): only TARGET_VERIFY (uniform
  ``q_len_per_req``) reaches the decode kernel from ``forward_extend``; DRAFT_EXTEND_V2
  (variable accept lengths) goes to the prefill kernel with its ``cu_seqlens_q``.
* #21987 (graph replay layout): capture and replay both write ``cu_seqlens_q`` as the
  uniform ``arange(0, bs * q_len + 1, q_len)`` and refill the captured buffers in place
  with ``copy_``; ``max_seq_len_q`` / ``max_seq_len_kv`` are baked at capture from fixed
  sizes (``q_len``, the context length) and never rebound at replay. Each layer's first
  launch under graph metadata records a :class:`~guardrails.GraphLayout`; later
  launches are validated against it.
* #26966 (stale SWA pool): ``__init__`` keeps nothing about the KV pool. Whether a
  layer reads a sliding-window pool, and the full->SWA page translation, are decided
  at forward time from ``forward_batch.token_to_kv_pool``, so the draft worker's pool
  swap (FROZEN_KV MTP) is always seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Optional

import torch

from guardrails.config import GuardConfig, Level
from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch, GraphLayout

from ..launch_checker import LaunchChecker
from ..launch_memo import tensor_key
from . import torch_kernels
from .forward_batch import ForwardBatch, ModelRunner
from .kv_pool import kv_cache_model_for

__all__ = ["AttentionLayer", "ForwardMetadata", "ReferenceAttnBackend", "guard_level", "kernels_for"]


def guard_level() -> Level:
    """The level every launch is validated at, read from ``FMHA_GUARD`` on every call (so
    it can be flipped in a running process): ``SHAPES`` when the variable is unset (shapes
    are always checked by default), ``VALUES`` for ``values``, and ``OFF`` only when it is
    set to ``off`` (or empty) explicitly (how ``examples/serve_loop.py`` measures the
    guard's cost). Read by :meth:`guardrails.config.GuardConfig.from_env`: an unknown
    value fails closed (``SHAPES``) with one :class:`guardrails.errors.FmhaGuardConfigWarning`.
    """
    return GuardConfig.from_env(default_level=Level.SHAPES).level


@dataclass
class AttentionLayer:
    """What the backend needs of one attention layer (SGLang ``RadixAttention``).

    Attributes:
        layer_id: global layer id (picks the KV buffer; SWA pools key on it).
        num_qo_heads, num_kv_heads, head_dim: per-rank geometry (``tp_q_head_num``, ...).
        scaling: softmax scale, usually ``head_dim ** -0.5``.
        sliding_window_size: FlashInfer ``window_left`` of a sliding-window layer; -1: none.
    """

    layer_id: int
    num_qo_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: Optional[float] = None
    sliding_window_size: int = -1

    def __post_init__(self) -> None:
        if self.scaling is None:
            self.scaling = 1.0 / math.sqrt(self.head_dim)


@dataclass
class ForwardMetadata:
    """Planned metadata of one step; every kernel size is derived from it.

    Attributes:
        forward_mode: the mode it was planned for.
        cu_seqlens_q: ``[bs + 1]`` int32 query offsets (uniform stride for DECODE /
            TARGET_VERIFY). ``bs = cu_seqlens_q.shape[0] - 1`` is THE batch size.
        seq_lens: ``[bs]`` int32 KV tokens per request, new rows included.
        page_table: ``[bs, max_pages]`` int32 full-pool page ids.
        max_seq_len_q: longest query (tokens); ``q_len`` at capture.
        max_seq_len_kv: upper bound on ``seq_lens``; the context length under CUDA graphs.
        num_tokens: query rows the kernels read (``cu_seqlens_q[-1]``, a host int).
        q_len_per_req: uniform query rows per request (DECODE 1, TARGET_VERIFY the draft
            tokens), ``None`` for ragged modes.
        page_size: tokens per page the page table was built with.
        plan_cache: per-step FlashInfer wrappers (CUDA path only).
        graph_layouts: set for CUDA-graph metadata: layer id -> layout captured.
        graph_launches: set for CUDA-graph metadata: layer id -> (kernel, layer, query
            view) of the captured launch, what :meth:`ReferenceAttnBackend.check_graph_replay`
            rebuilds before a replay.
        swa_page_table: CUDA-graph metadata only: ``[bs, max_pages]`` int32 buffer the
            forward-time full->SWA translation is written into (in place, so a replay
            reads the captured address).
    """

    forward_mode: ForwardMode
    cu_seqlens_q: torch.Tensor
    seq_lens: torch.Tensor
    page_table: torch.Tensor
    max_seq_len_q: int
    max_seq_len_kv: int
    num_tokens: int
    q_len_per_req: Optional[int]
    page_size: int
    plan_cache: dict = field(default_factory=dict)
    graph_layouts: Optional[dict[int, GraphLayout]] = None
    graph_launches: Optional[dict[int, tuple[Kernel, "AttentionLayer", torch.Tensor]]] = None
    swa_page_table: Optional[torch.Tensor] = None


def kernels_for(t: torch.Tensor) -> ModuleType:
    """:mod:`.torch_kernels` for CPU tensors, :mod:`.flashinfer_kernels` for CUDA ones."""
    if t.is_cuda:
        from . import flashinfer_kernels

        return flashinfer_kernels
    return torch_kernels


class ReferenceAttnBackend:
    """A small, correct attention backend with SGLang's interface.

    Args:
        model_runner: :class:`~.forward_batch.ModelRunner`. Read in ``__init__``: the
            ``req_to_token`` table, ``page_size``, the head geometry and the device;
            never ``token_to_kv_pool`` (SGLang #26966).
        prefill_backend: FlashInfer kernel for extend-shaped work on CUDA: ``"auto"``
            (the trtllm-gen context kernel on SM100, the fa3 paged prefill wrapper on
            SM90, fa2 elsewhere), ``"fa2"``, ``"fa3"`` or ``"trtllm-gen"``. Ignored on CPU.
    """

    def __init__(self, model_runner: ModelRunner, prefill_backend: str = "auto") -> None:
        if prefill_backend not in ("auto", "fa2", "fa3", "trtllm-gen"):
            raise ValueError(f"prefill_backend must be 'auto', 'fa2', 'fa3' or 'trtllm-gen', got {prefill_backend!r}")
        self.prefill_backend = prefill_backend
        self.req_to_token = model_runner.req_to_token_pool.req_to_token
        self.page_size = model_runner.page_size
        self.max_context_len = self.req_to_token.shape[1]
        self.num_qo_heads = model_runner.num_qo_heads
        self.head_dim = model_runner.head_dim
        self.device = torch.device(model_runner.device)
        self.forward_metadata: Optional[ForwardMetadata] = None
        self._graph_metadata: dict[int, ForwardMetadata] = {}
        self._workspace: Optional[torch.Tensor] = None
        self._checker = LaunchChecker()

    # ------------------------------------------------------------------ planning

    def _page_table(self, req_to_token: torch.Tensor, req_pool_indices: torch.Tensor, max_pages: int) -> torch.Tensor:
        """``[bs, max_pages]`` int32: the page of every page_size-th slot of each request row."""
        ps = self.page_size
        slots = req_to_token[req_pool_indices.long(), : max_pages * ps : ps]
        return (slots // ps).to(torch.int32).contiguous()

    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        """Plan the step (eager path): query offsets from the mode's query lengths
        (:meth:`ForwardBatch.query_lens`), KV lengths, the page table.

        Run it before DP padding (:func:`~.forward_batch.pad_forward_batch_for_dp`) or
        after: the metadata holds the requests the batch had when planned, and the
        forward methods size every launch from it.
        """
        mode = forward_batch.forward_mode
        q_lens = forward_batch.query_lens()
        kv_lens = forward_batch.host_seq_lens()
        dev = forward_batch.seq_lens.device
        offsets = [0]
        for n in q_lens:
            offsets.append(offsets[-1] + n)
        max_kv = max(kv_lens, default=0)
        max_pages = max(-(-max_kv // self.page_size), 1)
        self.forward_metadata = ForwardMetadata(
            forward_mode=mode,
            cu_seqlens_q=torch.tensor(offsets, dtype=torch.int32, device=dev),
            seq_lens=forward_batch.seq_lens.to(torch.int32).contiguous(),
            page_table=self._page_table(forward_batch.req_to_token, forward_batch.req_pool_indices, max_pages),
            max_seq_len_q=max(q_lens, default=0),
            max_seq_len_kv=max_kv,
            num_tokens=offsets[-1],
            q_len_per_req=q_lens[0] if mode.is_uniform_q_len() and q_lens else None,
            page_size=self.page_size,
        )

    # ------------------------------------------------------------------ CUDA graphs

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int) -> None:
        """Allocate the buffers captured graphs read (int32 on the backend's device):
        ``cu_seqlens_q`` ``[max_bs + 1]``, ``seq_lens`` ``[max_bs]``, ``page_table``
        ``[max_bs, ceil(max_context_len / page_size)]`` (and an SWA twin, filled at forward
        time). ``max_num_tokens`` bounds
        ``bs * q_len`` of any capture."""
        max_pages = -(-self.max_context_len // self.page_size)
        self.max_graph_tokens = max_num_tokens
        self.graph_cu_seqlens_q = torch.zeros(max_bs + 1, dtype=torch.int32, device=self.device)
        self.graph_seq_lens = torch.zeros(max_bs, dtype=torch.int32, device=self.device)
        self.graph_page_table = torch.zeros(max_bs, max_pages, dtype=torch.int32, device=self.device)
        self.graph_swa_page_table = torch.zeros(max_bs, max_pages, dtype=torch.int32, device=self.device)
        self._graph_metadata = {}

    def init_forward_metadata_capture_cuda_graph(
        self,
        bs: int,
        num_tokens: int,
        req_pool_indices: torch.Tensor,
        seq_lens: torch.Tensor,
        encoder_lens: Optional[torch.Tensor],
        forward_mode: ForwardMode,
        spec_info: Any = None,
    ) -> None:
        """Metadata a graph of ``bs`` requests and ``num_tokens`` query rows captures
        (DECODE: ``num_tokens == bs``; TARGET_VERIFY: ``bs * num_draft_tokens``). Views of
        the graph buffers; the uniform layout and the scalars are baked here (#21987).

        Raises:
            ValueError: a ragged mode (they run eagerly, as SGLang's DRAFT_EXTEND_V2),
                or ``num_tokens`` not a multiple of ``bs``.
        """
        mode = ForwardMode.parse(forward_mode)
        if not mode.is_uniform_q_len() or mode.is_idle():
            raise ValueError(f"CUDA graphs capture DECODE / TARGET_VERIFY only, not {mode.name}")
        if bs <= 0 or num_tokens % bs:
            raise ValueError(f"num_tokens={num_tokens} is not a uniform multiple of bs={bs}")
        q_len = num_tokens // bs
        metadata = ForwardMetadata(
            forward_mode=mode,
            cu_seqlens_q=self.graph_cu_seqlens_q[: bs + 1],
            seq_lens=self.graph_seq_lens[:bs],
            page_table=self.graph_page_table[:bs],
            max_seq_len_q=q_len,
            max_seq_len_kv=self.max_context_len,
            num_tokens=bs * q_len,
            q_len_per_req=q_len,
            page_size=self.page_size,
            graph_layouts={},
            graph_launches={},
            swa_page_table=self.graph_swa_page_table[:bs],
        )
        self._fill_graph_metadata(metadata, req_pool_indices, seq_lens)
        self._graph_metadata[bs] = metadata
        self.forward_metadata = metadata

    def init_forward_metadata_replay_cuda_graph(
        self,
        bs: int,
        req_pool_indices: torch.Tensor,
        seq_lens: torch.Tensor,
        seq_lens_sum: int,
        encoder_lens: Optional[torch.Tensor],
        forward_mode: ForwardMode,
        spec_info: Any = None,
        seq_lens_cpu: Optional[torch.Tensor] = None,
    ) -> None:
        """Refill the buffers captured for ``bs`` in place (``copy_``), with the capture
        layout; nothing captured is rebound (#21987).

        Raises:
            KeyError: no graph was captured for ``bs``.
            ValueError: ``forward_mode`` differs from the captured one.
        """
        metadata = self._graph_metadata[bs]
        mode = ForwardMode.parse(forward_mode)
        if mode is not metadata.forward_mode:
            raise ValueError(f"graph for bs={bs} captured {metadata.forward_mode.name}, replayed as {mode.name}")
        self._fill_graph_metadata(metadata, req_pool_indices, seq_lens)
        self.forward_metadata = metadata

    def _fill_graph_metadata(self, metadata: ForwardMetadata, req_pool_indices: torch.Tensor, seq_lens: torch.Tensor) -> None:
        """Shared by capture and replay: device-only writes, no host sync."""
        q_len = metadata.q_len_per_req
        bs = metadata.seq_lens.shape[0]
        metadata.cu_seqlens_q.copy_(torch.arange(0, bs * q_len + 1, q_len, dtype=torch.int32, device=self.device))
        metadata.seq_lens.copy_(seq_lens)
        metadata.page_table.copy_(self._page_table(self.req_to_token, req_pool_indices, metadata.page_table.shape[1]))

    # ------------------------------------------------------------------ forward

    def forward(self, q, k, v, layer: AttentionLayer, forward_batch: ForwardBatch, save_kv_cache: bool = True, *, out=None):
        """SGLang's dispatch: DECODE and IDLE to :meth:`forward_decode`, every other mode
        to :meth:`forward_extend`."""
        if forward_batch.forward_mode.is_decode() or forward_batch.forward_mode.is_idle():
            return self.forward_decode(q, k, v, layer, forward_batch, save_kv_cache, out=out)
        return self.forward_extend(q, k, v, layer, forward_batch, save_kv_cache, out=out)

    def forward_extend(
        self,
        q: torch.Tensor,
        k: Optional[torch.Tensor],
        v: Optional[torch.Tensor],
        layer: AttentionLayer,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        *,
        out: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Attention for EXTEND, MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2 and TARGET_VERIFY.

        Args:
            q: ``[rows, num_qo_heads, head_dim]`` (or ``[rows, num_qo_heads * head_dim]``),
                bf16; ``rows >= metadata.num_tokens`` (a DP-padded batch has more).
            k, v: ``[rows, num_kv_heads, head_dim]`` new tokens' K/V (or flattened);
                written to ``forward_batch.out_cache_loc`` when ``save_kv_cache``.
            layer: the :class:`AttentionLayer`.
            forward_batch: the step; its ``batch_size`` is never read.
            save_kv_cache: write ``k``/``v`` into the pool first.
            out: optional output buffer shaped like ``q``.

        Returns:
            ``[rows, ...]`` like ``q``: attention for the planned rows, zeros for padded ones.
        """
        if save_kv_cache and k is not None:
            self._save_kv(k, v, layer, forward_batch)
        if forward_batch.forward_mode.is_target_verify():
            # uniform draft tokens per request: the decode kernel's contract holds
            return self._run_decode_kernel(q, layer, forward_batch, out)
        # EXTEND / MIXED / DRAFT_EXTEND(_V2): ragged, per-request rows from cu_seqlens_q (#24856)
        return self._run_prefill_kernel(q, layer, forward_batch, out)

    def forward_decode(
        self,
        q: torch.Tensor,
        k: Optional[torch.Tensor],
        v: Optional[torch.Tensor],
        layer: AttentionLayer,
        forward_batch: ForwardBatch,
        save_kv_cache: bool = True,
        *,
        out: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Attention for DECODE (one row per request) and IDLE (nothing to attend).
        Arguments as :meth:`forward_extend`."""
        if save_kv_cache and k is not None:
            self._save_kv(k, v, layer, forward_batch)
        return self._run_decode_kernel(q, layer, forward_batch, out)

    # ------------------------------------------------------------------ launch helpers

    def _save_kv(self, k: torch.Tensor, v: torch.Tensor, layer: AttentionLayer, forward_batch: ForwardBatch) -> None:
        """Write K/V rows to ``out_cache_loc`` of the pool this batch reads (padded rows go
        to the dummy slot 0)."""
        pool = forward_batch.token_to_kv_pool
        k = k.reshape(k.shape[0], layer.num_kv_heads, layer.head_dim)
        v = v.reshape(v.shape[0], layer.num_kv_heads, layer.head_dim)
        pool.set_kv_buffer(layer.layer_id, forward_batch.out_cache_loc, k, v)

    def _prepare(self, q: torch.Tensor, layer: AttentionLayer, out: Optional[torch.Tensor]):
        """(metadata, query ``[num_tokens, H, D]`` view, output ``[rows, H, D]`` view, output
        as returned). Output rows past ``num_tokens`` (DP padding) are zeroed."""
        metadata = self.forward_metadata
        if metadata is None:
            raise RuntimeError("init_forward_metadata was not called for this step")
        q3 = q.reshape(q.shape[0], layer.num_qo_heads, layer.head_dim)
        result = torch.empty_like(q) if out is None else out
        out3 = result.view(q3.shape)
        out3[metadata.num_tokens :].zero_()
        return metadata, q3[: metadata.num_tokens], out3, result

    def _pool_view(self, metadata: ForwardMetadata, layer: AttentionLayer, forward_batch: ForwardBatch):
        """(kv buffer, page table the kernel reads, translated SWA table or None, window):
        decided now from ``forward_batch.token_to_kv_pool`` (#26966)."""
        pool = forward_batch.token_to_kv_pool
        kv_cache = pool.get_kv_buffer(layer.layer_id)
        swa_table = None
        if pool.is_swa_layer(layer.layer_id):
            swa_table = pool.translate_page_table(metadata.page_table)
            if metadata.swa_page_table is not None:  # graph metadata: refill the captured buffer
                metadata.swa_page_table.copy_(swa_table)
                swa_table = metadata.swa_page_table
        read_table = metadata.page_table if swa_table is None else swa_table
        return kv_cache, read_table, swa_table, layer.sliding_window_size

    def _check(self, metadata: ForwardMetadata, layer: AttentionLayer, forward_batch: ForwardBatch, *,
               batch: Optional[AttentionBatch] = None, kernel: Optional[Kernel] = None,
               query: Optional[torch.Tensor] = None, swa_table: Optional[torch.Tensor] = None) -> None:
        """Validate one launch before it runs: shapes unless ``FMHA_GUARD=off``, values
        under ``FMHA_GUARD=values`` (skipped while a CUDA stream captures; replays are
        checked by :meth:`check_graph_replay`). Under CUDA-graph metadata the layer's
        layout is recorded at its first launch and later launches are checked against it.

        The fixed launch paths pass ``kernel``, ``query`` and ``swa_table``: the
        :class:`~guardrails.AttentionBatch` is built from ``metadata`` only when a check
        must run, and repeated launches hit the memo (a layout seen before builds no
        models; metadata contents seen before need no host copy). A caller with its own
        description of the launch passes ``batch`` (checked every time, no memo).

        Raises:
            FmhaInvariantError: the launch breaks an invariant (nothing was launched).
        """
        level = guard_level()
        graph = metadata.graph_layouts is not None
        if level is Level.OFF and not graph:
            return
        captured = metadata.graph_layouts.get(layer.layer_id) if graph else None
        describe, shape_key, index_tensors, scope = self._describe(batch, metadata, layer, forward_batch, kernel, query,
                                                                   swa_table)
        self._checker.check(describe, level=level, shape_key=shape_key, index_tensors=index_tensors, captured=captured,
                            value_scope=scope)
        if graph and captured is None:
            launch = describe()[0]
            metadata.graph_layouts[layer.layer_id] = GraphLayout.capture(launch)
            metadata.graph_launches[layer.layer_id] = (launch.kernel, layer, launch.query)

    def _describe(self, batch: Optional[AttentionBatch], metadata: ForwardMetadata, layer: AttentionLayer,
                  forward_batch: ForwardBatch, kernel: Optional[Kernel] = None, query=None, swa_table=None):
        """(describe, shape key, index tensors, value scope) of one launch for the memoized
        checker (:class:`~runtime_checks.launch_checker.LaunchChecker`); ``batch`` given:
        no memo (key ``None``)."""
        pool = forward_batch.token_to_kv_pool
        mode = forward_batch.forward_mode

        def describe():
            launch = batch
            if launch is None:
                launch = self._launch_batch(metadata, mode, kernel, query, swa_table)
            kv_model, swa_model = kv_cache_model_for(pool, layer.layer_id)
            return launch, kv_model, swa_model

        if batch is not None:
            return describe, None, (), None
        index = (metadata.cu_seqlens_q, metadata.seq_lens, metadata.page_table, swa_table)
        is_swa = pool.is_swa_layer(layer.layer_id)
        # what the value checks depend on besides the index contents: not the query buffer
        value_scope = (
            kernel, mode, query.shape[0], tuple([tensor_key(t) for t in index]),
            metadata.max_seq_len_q, metadata.max_seq_len_kv, metadata.q_len_per_req, metadata.page_size,
            tensor_key(pool.get_kv_buffer(layer.layer_id)), pool.num_pages, is_swa,
            getattr(pool, "num_swa_pages", None) if is_swa else None, layer.sliding_window_size,
        )
        shape_key = (value_scope, tensor_key(query))
        captured = metadata.graph_layouts.get(layer.layer_id) if metadata.graph_layouts is not None else None
        if captured is not None:  # graph-replay-layout compares addresses too
            shape_key += (id(captured), tuple([t.data_ptr() for t in (query, *index) if t is not None]))
            value_scope += (captured.batch_size, captured.num_query_rows, captured.max_seq_len_q,
                            captured.max_seq_len_kv, captured.sum_seq_lens_q, captured.cu_seqlens_q_stride)
        tensors = [t for t in index if t is not None]
        if is_swa:
            tensors.append(pool.full_to_swa_index_mapping)
        return describe, shape_key, tensors, value_scope

    def check_graph_replay(self, bs: int, forward_batch: ForwardBatch) -> None:
        """Validate the refilled metadata of the graph captured for ``bs`` before
        ``graph.replay()``: a replayed graph runs no Python, so this is the only check a
        replayed launch gets. Each captured layer's launch is rebuilt from the metadata
        as it is now (buffers AND the scalars a buggy replay may have rebound) and checked
        against the layout recorded at capture (``graph-replay-layout``, SGLang #21987),
        at :func:`guard_level` (values: one host copy of the refilled index buffers per
        replay, shared by layers that read the same ones).

        Args:
            bs: the captured batch size being replayed.
            forward_batch: the replayed step (its ``token_to_kv_pool`` gives the page
                counts and, for SWA layers, the full->SWA translation the graph will do).

        Raises:
            FmhaInvariantError: the refilled metadata breaks an invariant.
            KeyError: no graph was captured for ``bs``.
        """
        metadata = self._graph_metadata[bs]
        level = guard_level()
        if level is Level.OFF:
            return
        pool = forward_batch.token_to_kv_pool
        for layer_id, (kernel, layer, query) in sorted((metadata.graph_launches or {}).items()):
            swa_table = None
            if pool.is_swa_layer(layer_id) and metadata.swa_page_table is not None:
                # what the graph's own gather will write at replay, into the captured buffer
                metadata.swa_page_table.copy_(pool.translate_page_table(metadata.page_table))
                swa_table = metadata.swa_page_table
            describe, shape_key, index_tensors, scope = self._describe(None, metadata, layer, forward_batch, kernel,
                                                                       query, swa_table)
            self._checker.check(describe, level=level, shape_key=shape_key, index_tensors=index_tensors,
                                captured=metadata.graph_layouts[layer_id], value_scope=scope)

    @staticmethod
    def _launch_batch(metadata: ForwardMetadata, mode: ForwardMode, kernel: Kernel, query, swa_table) -> AttentionBatch:
        """The launch over ``metadata``: the ragged prefill kernel states its batch size
        (``cu_seqlens_q.shape[0] - 1``, never the padded one), the decode kernel its uniform
        ``q_len_per_req``."""
        per_kernel = ({"batch_size": metadata.cu_seqlens_q.shape[0] - 1} if kernel is Kernel.PREFILL
                      else {"q_len_per_req": metadata.q_len_per_req})
        return AttentionBatch(
            forward_mode=mode,
            kernel=kernel,
            num_query_rows=query.shape[0],
            query=query,
            cu_seqlens_q=metadata.cu_seqlens_q,
            seq_lens=metadata.seq_lens,
            page_table=metadata.page_table,
            swa_page_table=swa_table,
            max_seq_len_q=metadata.max_seq_len_q,
            max_seq_len_kv=metadata.max_seq_len_kv,
            page_size=metadata.page_size,
            **per_kernel,
        )

    def _workspace_for(self, t: torch.Tensor) -> Optional[torch.Tensor]:
        if not t.is_cuda:
            return None
        if self._workspace is None:
            from .flashinfer_kernels import WORKSPACE_BYTES

            self._workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=t.device)
        return self._workspace

    def _trtllm_args(self, metadata: ForwardMetadata, layer: AttentionLayer, query: torch.Tensor, kv_cache,
                     read_table: torch.Tensor, out3: torch.Tensor) -> dict[str, Any]:
        """The arguments FlashInfer's trtllm paged kernels (decode and context) take alike:
        ``query`` ``[num_tokens, H_qo, D]``, the layer's KV buffer and the page table it
        reads, ``seq_lens`` of the planned metadata, the softmax scale, the output rows
        ``out3[:num_tokens]``."""
        return dict(
            query=query,
            kv_cache=kv_cache,
            workspace_buffer=self._workspace_for(query),
            block_tables=read_table,
            seq_lens=metadata.seq_lens,
            bmm1_scale=layer.scaling,
            bmm2_scale=1.0,
            out=out3[: metadata.num_tokens],
        )

    def _run_prefill_kernel(self, q, layer: AttentionLayer, forward_batch: ForwardBatch, out) -> torch.Tensor:
        """Ragged paged prefill over the planned metadata; batch size from ``cu_seqlens_q``."""
        metadata, query, out3, result = self._prepare(q, layer, out)
        kv_cache, read_table, swa_table, window_left = self._pool_view(metadata, layer, forward_batch)
        self._check(metadata, layer, forward_batch, kernel=Kernel.PREFILL, query=query, swa_table=swa_table)
        if query.shape[0] == 0:
            return result
        kernels = kernels_for(query)
        kernels.batch_prefill_with_paged_kv_cache(
            query,
            kv_cache,
            metadata.cu_seqlens_q,
            read_table,
            metadata.seq_lens,
            sm_scale=layer.scaling,
            window_left=window_left,
            kv_layout="HND",
            out=out3[: metadata.num_tokens],
            workspace_buffer=self._workspace_for(query),
            plan_cache=metadata.plan_cache,
            **({"backend": self.prefill_backend, "max_q_len": metadata.max_seq_len_q,
                "max_kv_len": metadata.max_seq_len_kv} if query.is_cuda else {}),
        )
        return result

    def _run_decode_kernel(self, q, layer: AttentionLayer, forward_batch: ForwardBatch, out) -> torch.Tensor:
        """Uniform-``q_len_per_req`` decode over the planned metadata (DECODE, TARGET_VERIFY);
        an IDLE batch is validated as an empty launch and launches nothing."""
        metadata, query, out3, result = self._prepare(q, layer, out)
        kv_cache, read_table, swa_table, window_left = self._pool_view(metadata, layer, forward_batch)
        self._check(metadata, layer, forward_batch, kernel=Kernel.DECODE, query=query, swa_table=swa_table)
        if query.shape[0] == 0:
            return result
        kernels = kernels_for(query)
        kernels.trtllm_batch_decode_with_kv_cache(
            **self._trtllm_args(metadata, layer, query, kv_cache, read_table, out3),
            max_seq_len=metadata.max_seq_len_kv,
            window_left=window_left,
            kv_layout="HND",
            q_len_per_req=metadata.q_len_per_req,
        )
        return result
