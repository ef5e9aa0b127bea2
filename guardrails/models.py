"""Typed descriptions of one FMHA launch: the batch metadata, the paged KV
cache, the sliding-window (SWA) pool and a CUDA-graph capture snapshot.

Construction only checks cheap Python-level facts (ints are non-negative,
tensors look like tensors). The invariants of :mod:`guardrails.invariants` run
in :func:`guardrails.validate`, so a buggy batch can be built, inspected and
then validated. Models are frozen; derive a variant with
``batch.model_copy(update={...})``.

Tensors are duck-typed (anything with ``.shape``, ``.dtype``, ``.device``;
torch tensors in practice) and torch is never imported here.

Units: lengths and offsets are in tokens (except FlashInfer's CSR
``kv_indptr``, which counts pages), page ids index the first dimension of the
KV-cache tensor, ``page_size`` is tokens per page.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    PositiveInt,
    field_validator,
)

from .forward_mode import ForwardMode, Kernel
from .tensor_facts import (
    data_ptr_of,
    device_name,
    dtype_name,
    has_readable_data,
    is_tensor_like,
    read_host_ints,
    shape_of,
    stream_is_capturing,
    strides_of,
)

__all__ = [
    "TensorLike",
    "KVLayout",
    "PagedKVCache",
    "SlidingWindowPool",
    "AttentionBatch",
    "BufferLayout",
    "GraphLayout",
    "INDEX_TENSOR_FIELDS",
    "pages_needed",
]


def _require_tensor_like(value: Any) -> Any:
    if value is not None and not is_tensor_like(value):
        raise ValueError(
            f"expected a tensor (an object with .shape, .dtype and .device), got {type(value).__name__}"
        )
    return value


TensorLike = Annotated[Any, AfterValidator(_require_tensor_like)]
"""Any object with ``.shape``, ``.dtype`` and ``.device`` (a torch tensor in practice)."""

_FROZEN = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

INDEX_TENSOR_FIELDS = (
    "cu_seqlens_q",
    "cu_seqlens_kv",
    "seq_lens",
    "page_table",
    "swa_page_table",
    "kv_indptr",
    "kv_indices",
    "kv_last_page_len",
)
"""The AttentionBatch fields holding int32 index tensors passed to the kernel."""


class KVLayout(str, Enum):
    """Axis order of one page of a paged KV cache (FlashInfer ``kv_layout``)."""

    NHD = "NHD"
    """[num_pages, page_size, num_kv_heads, head_dim] (FlashInfer default)."""
    HND = "HND"
    """[num_pages, num_kv_heads, page_size, head_dim] (trtllm-gen and xqa)."""


class PagedKVCache(BaseModel):
    """Sizes of the paged KV cache one launch reads.

    Attributes:
        num_pages: pages in the pool (first dim of the cache tensor). Valid page
            ids are ``[0, num_pages)``.
        page_size: tokens per page.
        num_kv_heads: KV heads (per tensor-parallel rank).
        head_dim: elements per head.
        layout: :class:`KVLayout` the sizes were read with.
        device: device string of the cache tensor, e.g. ``"cuda:0"``; ``None``
            when built by hand.
        dtype: dtype name of the cache, e.g. ``"bfloat16"``, ``"float8_e4m3fn"``.
        head_dim_stride: stride (in elements) of the head_dim axis; must be 1.
    """

    model_config = _FROZEN

    num_pages: NonNegativeInt
    page_size: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    layout: KVLayout = KVLayout.HND
    device: Optional[str] = None
    dtype: Optional[str] = None
    head_dim_stride: Optional[int] = None

    @classmethod
    def from_tensor(
        cls, kv_cache: Any, layout: Union[str, KVLayout] = "HND", *, wrapper_form: bool = False
    ) -> "PagedKVCache":
        """Read the sizes from a FlashInfer-style paged KV cache.

        Accepts, as FlashInfer's paged attention APIs do:

        * a ``(k_cache, v_cache)`` tuple/list, each 4-D
          ``[num_pages, page_size, num_kv_heads, head_dim]`` (NHD) or
          ``[num_pages, num_kv_heads, page_size, head_dim]`` (HND), or each 3-D
          ``[num_pages, num_kv_heads, head_dim]``: page size 1, as FlashInfer's
          ``_unpack_paged_kv_cache`` expands it (SGLang's token-granular pool);
        * one 5-D tensor ``[num_pages, 2, ...page dims]`` (K and V interleaved
          per page) or ``[num_pages, 1, ...page dims]`` (K and V share the pages:
          trtllm-gen and xqa accept "1 or 2" there);
        * one 4-D tensor: with ``wrapper_form`` (FlashInfer's wrapper ``run``,
          whose ``_expand_5d`` reads it so) ``[num_pages, 2, num_kv_heads,
          head_dim]`` with page size 1; otherwise a K-only or shared-KV cache,
          e.g. MLA's ``[num_pages, 1, page_size, kv_lora_rank + rope_dim]`` in HND.

        Only shapes/strides/dtype/device are read (no data, no sync).

        Raises:
            ValueError: unsupported rank, a 5-D tensor whose dim 1 is not 1 or 2
                (a wrapper-form 4-D one whose dim 1 is not 2), K and V shapes that
                differ, or an unknown layout.
        """
        layout = KVLayout(layout.upper() if isinstance(layout, str) else layout)

        def unit_page(dims: tuple[int, ...]) -> tuple[int, ...]:
            # [num_kv_heads, head_dim] of a page-size-1 cache, in the layout's order
            return (1, *dims) if layout is KVLayout.NHD else (dims[0], 1, dims[1])

        if isinstance(kv_cache, (tuple, list)):
            if len(kv_cache) != 2:
                raise ValueError(f"expected a (k_cache, v_cache) pair, got {len(kv_cache)} tensors")
            k, v = kv_cache
            if shape_of(k) != shape_of(v):
                raise ValueError(
                    f"k_cache and v_cache shapes differ: {shape_of(k)} vs {shape_of(v)}"
                )
            tensor, shape = k, shape_of(k)
            if len(shape) == 3:
                page_dims = unit_page(shape[1:])
            elif len(shape) == 4:
                page_dims = shape[1:]
            else:
                raise ValueError(f"expected 3-D or 4-D k/v caches, got k_cache.shape={shape}")
        else:
            if not is_tensor_like(kv_cache):
                raise ValueError(f"expected a tensor or (k, v) pair, got {type(kv_cache).__name__}")
            tensor, shape = kv_cache, shape_of(kv_cache)
            if len(shape) == 5:
                if shape[1] not in (1, 2):
                    raise ValueError(
                        f"a 5-D KV cache must be [num_pages, 1 or 2, ...], got shape {shape}"
                    )
                page_dims = shape[2:]
            elif len(shape) == 4 and wrapper_form:
                if shape[1] != 2:
                    raise ValueError(
                        f"a 4-D wrapper KV cache must be [num_pages, 2, num_kv_heads, head_dim], got shape {shape}"
                    )
                page_dims = unit_page(shape[2:])
            elif len(shape) == 4:
                page_dims = shape[1:]
            else:
                raise ValueError(
                    f"expected a 4-D or 5-D KV cache (or a (k, v) pair), got shape {shape}"
                )
        if layout is KVLayout.NHD:
            page_size, num_kv_heads, head_dim = page_dims
        else:
            num_kv_heads, page_size, head_dim = page_dims
        strides = strides_of(tensor)
        return cls(
            num_pages=shape[0],
            page_size=page_size,
            num_kv_heads=num_kv_heads,
            head_dim=head_dim,
            layout=layout,
            device=device_name(tensor),
            dtype=dtype_name(tensor),
            head_dim_stride=strides[-1] if strides else None,
        )

    @property
    def num_tokens(self) -> int:
        """Token capacity: ``num_pages * page_size``."""
        return self.num_pages * self.page_size


class SlidingWindowPool(BaseModel):
    """The separate KV pool of sliding-window-attention (SWA) layers in a hybrid
    model (SGLang ``SWAKVPool``: full-attention layers use the full pool,
    SWA layers a smaller one with its own page ids).

    Attributes:
        num_swa_pages: pages in the SWA pool; SWA page ids must be in
            ``[0, num_swa_pages)``.
        page_size: tokens per SWA page (SGLang uses the full pool's page size).
        full_to_swa: optional 1-D integer tensor mapping a full-pool TOKEN index
            to an SWA-pool token index (SGLang's ``full_to_swa_index_mapping``,
            int64, length >= full pool tokens). The SWA page of full page ``p``
            is ``full_to_swa[p * page_size] // page_size``, as SGLang's
            TRTLLMHAAttnBackend computes it. Slot 0 is the dummy slot that
            out-of-window tokens map to.
        window_left: FlashInfer ``window_left`` / SGLang
            ``layer.sliding_window_size``: a query at position ``i`` attends keys
            ``[i - window_left, i]``. When set, only pages inside the window are
            checked; ``None`` (or -1) checks every used page.
        swa_layer_ids: global layer ids of the SWA layers (informational; the
            runtime guard uses it to pick the pool per layer).
    """

    model_config = _FROZEN

    num_swa_pages: NonNegativeInt
    page_size: PositiveInt
    full_to_swa: Optional[TensorLike] = None
    window_left: Optional[int] = None
    swa_layer_ids: tuple[int, ...] = ()

    @field_validator("window_left")
    @classmethod
    def _window(cls, value: Optional[int]) -> Optional[int]:
        if value is None or value == -1:
            return None
        if value < 0:
            raise ValueError("window_left must be >= 0 (or -1 / None for no window)")
        return value

    @classmethod
    def from_tensor(
        cls,
        swa_kv_cache: Any,
        layout: Union[str, KVLayout] = "HND",
        *,
        full_to_swa: Any = None,
        window_left: Optional[int] = None,
        swa_layer_ids: tuple[int, ...] = (),
    ) -> "SlidingWindowPool":
        """Build from the SWA layers' KV cache tensor (any form accepted by
        :meth:`PagedKVCache.from_tensor`): num_swa_pages and page_size are read
        from its shape.

        Raises:
            ValueError: as :meth:`PagedKVCache.from_tensor`.
        """
        kv = PagedKVCache.from_tensor(swa_kv_cache, layout)
        return cls(
            num_swa_pages=kv.num_pages,
            page_size=kv.page_size,
            full_to_swa=full_to_swa,
            window_left=window_left,
            swa_layer_ids=tuple(swa_layer_ids),
        )


class AttentionBatch(BaseModel):
    """Metadata of one attention launch, as the kernel will see it.

    The paged KV cache is described either by a block table (``page_table``,
    trtllm-gen / xqa / fa3) or in FlashInfer's CSR form (``kv_indptr``,
    ``kv_indices``, ``kv_last_page_len``: the ``plan()`` arguments of
    ``BatchPrefillWithPagedKVCacheWrapper`` / ``BatchDecodeWithPagedKVCacheWrapper``);
    a ragged (non-paged) K/V by ``cu_seqlens_kv`` and ``num_kv_rows``.
    All tensors are optional: describe what the launch passes and the
    invariants involving missing fields are skipped. Tensors are expected on
    the attention device; index tensors int32 (checked by
    ``metadata-dtype-device``, not at construction).

    Attributes:
        forward_mode: :class:`~guardrails.forward_mode.ForwardMode` of the batch
            (SGLang's ``forward_batch.forward_mode`` converts directly).
        kernel: ``"decode"`` (uniform ``q_len_per_req``: trtllm-gen decode, xqa,
            FlashInfer batch decode) or ``"prefill"`` (ragged via
            ``cu_seqlens_q``: trtllm context, fa2/fa3 prefill). ``None`` when
            unknown: the kernel-specific checks are skipped.
        batch_size: the explicit batch-size argument of the launch (e.g.
            ``batch_size`` of ``trtllm_batch_context_with_kv_cache``), number of
            requests. SGLang #21649 passed the DP-padded value here.
        num_query_rows: ``q.shape[0]``: query tokens in the launch (all requests).
        query: optional query tensor ``[num_query_rows, num_qo_heads, head_dim]``;
            its shape, device and head_dim are checked, never its contents.
        cu_seqlens_q: ``[batch_size + 1]`` int32, exclusive prefix sum of
            per-request query lengths in tokens (FlashInfer ``qo_indptr``,
            trtllm ``cum_seq_lens_q``).
        cu_seqlens_kv: ``[batch_size + 1]`` int32, exclusive prefix sum of
            ``seq_lens`` in tokens (trtllm ``cum_seq_lens_kv``; NOT FlashInfer's
            page-granular ``paged_kv_indptr``).
        seq_lens: ``[batch_size]`` int32, KV length of each request in tokens
            INCLUDING the new query tokens (SGLang ``cache_seqlens_int32``).
        page_table: ``[batch_size, max_pages_per_req]`` int32 block table; row
            ``i`` lists the page ids of request ``i``; the first
            ``ceil(seq_lens[i] / page_size)`` entries are read. Or 3-D
            ``[batch_size, 2, max_pages_per_req]``: separate K (``[:, 0]``) and
            V (``[:, 1]``) page ids (TRT-LLM's layout, fmha_v2's pre-expanded
            block offsets; see ``v_page_id_offset``).
        swa_page_table: like ``page_table`` but with SWA-pool page ids, read by
            the sliding-window layers of a hybrid model (SGLang
            ``metadata.swa_page_table``).
        kv_indptr: ``[batch_size + 1]`` int32, FlashInfer's CSR ``paged_kv_indptr``
            (``indptr`` of the decode wrapper): exclusive prefix sum of the
            per-request page COUNTS (pages, not tokens); request ``i`` uses the
            page ids ``kv_indices[kv_indptr[i]:kv_indptr[i+1]]``. The CSR
            alternative to ``page_table``.
        kv_indices: ``[>= kv_indptr[-1]]`` int32 page ids (FlashInfer
            ``paged_kv_indices``), the pages of all requests back to back. It may
            be a longer buffer (e.g. a CUDA-graph buffer sized for the whole
            pool): the kernel reads only the first ``kv_indptr[-1]`` entries.
        kv_last_page_len: ``[batch_size]`` int32, tokens used in each request's
            last page (FlashInfer ``paged_kv_last_page_len``): ``1..page_size``
            for a request with pages (FlashInfer ignores it for a request with
            none). KV length of request ``i`` in tokens is
            ``(kv_indptr[i+1] - kv_indptr[i] - 1) * page_size + kv_last_page_len[i]``,
            0 when it has no pages; used as the KV length when ``seq_lens`` is
            absent.
        max_seq_len_q: upper bound on per-request query length (tokens) passed
            as a scalar (``max_q_len``).
        max_seq_len_kv: upper bound on ``seq_lens`` (tokens) passed as a scalar
            (``max_kv_len`` / ``max_seq_len``).
        q_len_per_req: query rows per request for decode kernels (1 for
            DECODE, ``speculative_num_draft_tokens`` for TARGET_VERIFY); a
            decode kernel without it assumes 1.
        page_size: tokens per page the page table (or the CSR ``kv_indptr`` /
            ``kv_last_page_len``, FlashInfer ``plan(page_size=...)``) was built
            with; compared with the KV cache's page size (``kv-layout``), used
            when no KV cache is given.
        num_kv_rows: rows of a ragged (non-paged) K/V, ``key.shape[0]``: KV
            tokens of all requests back to back (trtllm
            ``trtllm_ragged_attention_deepseek``, key/value
            ``[num_kv_rows, num_kv_heads, head_dim]``, offsets in
            ``cu_seqlens_kv``); ``cu_seqlens_kv[-1]`` must not exceed it.
        causal: whether the kernel applies the causal mask (query row ``j`` of
            request ``i`` sees KV positions ``<= kv_len[i] - q_len[i] + j``).
            ``None`` (unknown) is taken as causal. ``False``: every query row
            sees the whole KV, so a KV shorter than the query is legal
            (SGLang plans the paged wrapper over the cached prefix only, with
            ``causal=False``, and merges it with the ragged new tokens:
            ``seq-len-covers-query`` does not apply).
        page_table_rows_contiguous: the kernel addresses row ``i`` of the page
            table at ``i * page_table.shape[-1]`` (FlashInfer hands trtllm-gen,
            xqa and fmha_v2 only the data pointer and the last dim), so the row
            pitch must equal the width: ``stride(-2) == shape[-1]``
            (``metadata-dtype-device``). False: the kernel takes the row stride
            (a column-sliced table is fine).
        metadata_copied: the API copies the index tensors to where its kernel
            reads them (FlashInfer's wrapper ``plan`` takes them on the host or
            the device and stages them into its own device buffers), so
            ``metadata-dtype-device`` does not require them on the query's
            device. False: the kernel reads them where they are.
        v_page_id_offset: for a 3-D ``page_table`` ``[batch_size, 2,
            max_pages]`` (K ids in ``[:, 0]``, V ids in ``[:, 1]``): where V's
            ids start. 0 (trtllm-gen's ``uses_shared_paged_kv_idx=False``
            layout: both index their own cache, ``[0, num_pages)``); fmha_v2's
            pre-expanded block offsets count V's blocks from K's base pointer,
            so V ids lie in ``[v_page_id_offset, v_page_id_offset + num_pages)``.
        padded_query: the kernel reads only the first ``cu_seqlens_q[-1]``
            query rows and the query may carry padding rows after them
            (vLLM hands FlashAttention's varlen kernel the CUDA-graph-padded
            ``num_input_tokens`` rows). ``cu-seqlens-monotone`` then requires
            ``cu_seqlens_q[-1] <= q.shape[0]`` instead of equality, and a CUDA
            graph bakes in no query-token total or stride
            (:meth:`GraphLayout.capture`). False (strict) by default.
        descales: FP8 descale factors whose first dimension is the batch, by
            the kernel's argument name: FlashAttention-3's ``q_descale`` /
            ``k_descale`` / ``v_descale``, each ``[batch_size, num_kv_heads]``
            float32 (any strides, an ``expand`` of a scalar included). Each
            first dim is a batch size (``batch-size``; SGLang #37785 sized them
            from the DP-padded ``forward_batch.batch_size``).
        num_splits: FlashMLA's split-KV schedule, ``[batch_size + 1]`` int32
            (cumulative split counts returned by ``get_mla_metadata`` /
            ``get_mla_decoding_metadata`` for this batch's ``cache_seqlens``);
            checked by ``scheduler-metadata``.
        tile_scheduler_metadata: FlashMLA's per-SM-part schedule,
            ``[num_sm_parts, 8]`` int32, returned with ``num_splits``; checked
            by ``scheduler-metadata``.
    """

    model_config = _FROZEN

    forward_mode: ForwardMode
    kernel: Optional[Kernel] = None
    batch_size: Optional[NonNegativeInt] = None
    num_query_rows: Optional[NonNegativeInt] = None
    query: Optional[TensorLike] = None
    cu_seqlens_q: Optional[TensorLike] = None
    cu_seqlens_kv: Optional[TensorLike] = None
    seq_lens: Optional[TensorLike] = None
    page_table: Optional[TensorLike] = None
    swa_page_table: Optional[TensorLike] = None
    max_seq_len_q: Optional[NonNegativeInt] = None
    max_seq_len_kv: Optional[NonNegativeInt] = None
    q_len_per_req: Optional[PositiveInt] = None
    page_size: Optional[PositiveInt] = None
    kv_indptr: Optional[TensorLike] = None
    kv_indices: Optional[TensorLike] = None
    kv_last_page_len: Optional[TensorLike] = None
    num_kv_rows: Optional[NonNegativeInt] = None
    causal: Optional[bool] = None
    page_table_rows_contiguous: bool = False
    v_page_id_offset: NonNegativeInt = 0
    metadata_copied: bool = False
    padded_query: bool = False
    descales: Optional[dict[str, TensorLike]] = None
    num_splits: Optional[TensorLike] = None
    tile_scheduler_metadata: Optional[TensorLike] = None

    def replace(self, **update: Any) -> "AttentionBatch":
        """A validated copy with ``update`` applied (unlike
        ``model_copy(update=...)``, which skips validation so e.g. a string
        ``forward_mode`` stays a string).

        Raises:
            pydantic.ValidationError: an updated field is invalid.
        """
        return type(self)(**{**dict(self), **update})

    def index_tensors(self) -> dict[str, Any]:
        """The index tensors present, by field name, in
        :data:`INDEX_TENSOR_FIELDS` order."""
        return {
            name: getattr(self, name)
            for name in INDEX_TENSOR_FIELDS
            if getattr(self, name) is not None
        }

    def query_row_count(self) -> Optional[int]:
        """``query.shape[0]`` when a query is given, else ``num_query_rows``
        (``None`` when neither is known). Shape-only."""
        if self.query is not None and len(shape_of(self.query)) >= 1:
            return shape_of(self.query)[0]
        return self.num_query_rows

    def batch_size_sources(self) -> dict[str, int]:
        """Every batch size the launch states, keyed by how it is derived:
        ``batch_size``, ``cu_seqlens_q.shape[0] - 1``, ``cu_seqlens_kv.shape[0] - 1``,
        ``seq_lens.shape[0]``, ``page_table.shape[0]``, ``swa_page_table.shape[0]``,
        ``kv_indptr.shape[0] - 1``, ``kv_last_page_len.shape[0]``, and the first
        dim of each of :attr:`descales` (``q_descale.shape[0]``, ...)
        (``kv_indices`` states no batch size). Shape-only; tensors of rank 0
        are left out."""
        sources: dict[str, int] = {}
        if self.batch_size is not None:
            sources["batch_size"] = self.batch_size
        for name, minus_one in (
            ("cu_seqlens_q", True),
            ("cu_seqlens_kv", True),
            ("seq_lens", False),
            ("page_table", False),
            ("swa_page_table", False),
            ("kv_indptr", True),
            ("kv_last_page_len", False),
        ):
            t = getattr(self, name)
            if t is None or len(shape_of(t)) == 0:
                continue
            if minus_one:
                sources[f"{name}.shape[0] - 1"] = shape_of(t)[0] - 1
            else:
                sources[f"{name}.shape[0]"] = shape_of(t)[0]
        for name, t in (self.descales or {}).items():
            if len(shape_of(t)) > 0:
                sources[f"{name}.shape[0]"] = shape_of(t)[0]
        return sources

    def decode_q_len(self) -> int:
        """Query rows per request a decode kernel assumes: ``q_len_per_req`` or 1."""
        return self.q_len_per_req or 1


class BufferLayout(BaseModel):
    """Shape-level fingerprint of one buffer baked into a CUDA graph.

    Attributes:
        shape: sizes. dtype: dtype name. stride: element strides (``None`` if
        unknown). device: device string. data_ptr: address (``None`` if unknown);
        a different address at replay means the buffer was rebound instead of
        refilled with ``copy_``.
    """

    model_config = _FROZEN

    shape: tuple[int, ...]
    dtype: str
    stride: Optional[tuple[int, ...]] = None
    device: str
    data_ptr: Optional[int] = None

    @classmethod
    def of(cls, t: Any) -> "BufferLayout":
        """Fingerprint tensor ``t`` (no data read)."""
        return cls(
            shape=shape_of(t),
            dtype=dtype_name(t),
            stride=strides_of(t),
            device=device_name(t),
            data_ptr=data_ptr_of(t),
        )


class GraphLayout(BaseModel):
    """What a CUDA graph baked in when it captured an attention launch; compare
    replays against it with ``validate(batch, captured=layout)``
    (invariant ``graph-replay-layout``, SGLang #21987).

    Attributes:
        buffers: field name -> :class:`BufferLayout` of each index tensor (and
            the query) present at capture.
        forward_mode, kernel, batch_size, num_query_rows, q_len_per_req: as
            captured (``batch_size`` is the first stated batch size).
        max_seq_len_q, max_seq_len_kv: scalars passed to the kernel at capture;
            the graph replays them unchanged.
        sum_seq_lens_q: total query tokens at capture (``cu_seqlens_q[-1]``, or
            the query row count when values were not read).
        cu_seqlens_q_stride: the uniform per-request stride of ``cu_seqlens_q``
            at capture, ``None`` when capture was ragged or not read.
    """

    model_config = _FROZEN

    buffers: dict[str, BufferLayout]
    forward_mode: ForwardMode
    kernel: Optional[Kernel] = None
    batch_size: Optional[int] = None
    num_query_rows: Optional[int] = None
    q_len_per_req: Optional[int] = None
    max_seq_len_q: Optional[int] = None
    max_seq_len_kv: Optional[int] = None
    sum_seq_lens_q: Optional[int] = None
    cu_seqlens_q_stride: Optional[int] = None

    @classmethod
    def capture(cls, batch: AttentionBatch, *, read_values: bool = True) -> "GraphLayout":
        """Snapshot ``batch`` as a CUDA graph bakes it in.

        Call it right after ``init_forward_metadata_capture_cuda_graph``
        (outside ``torch.cuda.graph(...)``). With ``read_values=True`` it copies
        ``cu_seqlens_q`` to the host once to learn the captured stride and
        total; this is skipped automatically on ``meta`` tensors and while a
        stream is capturing, in which case the stride is taken to be
        ``q_len_per_req`` on a decode kernel (else unknown) and the total to be
        the query row count. A ``padded_query`` launch bakes in neither (its
        kernel reads the offsets at replay, and their total may be below the
        padded row count).
        """
        buffers = {name: BufferLayout.of(t) for name, t in batch.index_tensors().items()}
        if batch.query is not None:
            buffers["query"] = BufferLayout.of(batch.query)
        sources = batch.batch_size_sources()
        stride: Optional[int] = batch.q_len_per_req if batch.kernel is Kernel.DECODE else None
        total: Optional[int] = batch.query_row_count()
        cu = batch.cu_seqlens_q
        if batch.padded_query:
            stride = total = None
        elif (
            read_values
            and cu is not None
            and len(shape_of(cu)) == 1
            and has_readable_data(cu)
            and not stream_is_capturing()
        ):
            offsets = read_host_ints({"cu_seqlens_q": cu})["cu_seqlens_q"]
            if offsets:
                total = offsets[-1]
                lens = {b - a for a, b in zip(offsets, offsets[1:])}
                stride = lens.pop() if len(lens) == 1 else None
        return cls(
            buffers=buffers,
            forward_mode=batch.forward_mode,
            kernel=batch.kernel,
            batch_size=next(iter(sources.values()), None),
            num_query_rows=batch.query_row_count(),
            q_len_per_req=batch.q_len_per_req,
            max_seq_len_q=batch.max_seq_len_q,
            max_seq_len_kv=batch.max_seq_len_kv,
            sum_seq_lens_q=total,
            cu_seqlens_q_stride=stride,
        )


def pages_needed(seq_len: int, page_size: int) -> int:
    """``ceil(seq_len / page_size)`` for ``seq_len >= 0``: pages a request of
    ``seq_len`` tokens occupies."""
    return -(-seq_len // page_size) if seq_len > 0 else 0

