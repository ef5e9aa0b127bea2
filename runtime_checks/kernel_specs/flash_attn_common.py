"""What FlashAttention's Python entry points share, whichever library ships them.

Three libraries ship FlashAttention entry points with the same argument vocabulary
(:mod:`.sgl_kernel_flash_attn`: SGLang's ``sgl_kernel`` FA3 / FA4; :mod:`.vllm_flash_attn`:
vLLM's ``vllm_flash_attn`` FA2 / FA3 / FA4; :mod:`.flash_mla`: FlashMLA's dense varlen
prefill). This module holds the specs they have in common, parameterized by the
argument names of each library (class attributes, read from the installed signature):

* :class:`VarlenSpec`: ``flash_attn_varlen_func``. q ``[total_q, num_heads, head_dim]``
  with ``cu_seqlens_q`` ``[batch_size + 1]`` int32 (token offsets) and ``max_seqlen_q``;
  the K/V either ragged (k / v ``[total_k, num_kv_heads, head_dim(_v)]``, offsets
  ``cu_seqlens_k`` ``[batch_size + 1]`` int32, ``max_seqlen_k``) or paged (k / v
  ``[num_blocks, page_size, num_kv_heads, head_dim(_v)]``, a block table ``[batch_size,
  max_blocks_per_seq]`` int32 whose rows may be a row-strided slice of a bigger buffer,
  per-request KV lengths ``seqused_k`` ``[batch_size]`` int32 in tokens, new tokens
  included); FA3's ``q_descale`` / ``k_descale`` / ``v_descale`` ``[batch_size,
  num_kv_heads]`` float32.
* :class:`SchedulerMetadataSpec`: FA3's ``get_scheduler_metadata``, which plans the
  split-KV tile schedule of one batch from ``batch_size``, ``cache_seqlens``
  ``[batch_size]`` int32, ``cu_seqlens_q`` ``[batch_size + 1]`` int32, ``max_seqlen_q`` /
  ``max_seqlen_k`` and ``page_size``: metadata checked where it is planned, once per
  step. The schedule it returns (``scheduler_metadata``) has an FA3-build-specific
  size that FA3 validates itself (``scheduler_metadata must have shape
  (metadata_size)``); it is not checked here.

Invariant sources: ``batch-size`` (SGLang #21649; the descales: SGLang #37785),
``cu-seqlens-monotone``, ``max-seq-len`` (SGLang #21987), ``seq-len-covers-query``,
``page-table-capacity`` / ``page-id-range`` (the H200 xqa measurement),
``metadata-dtype-device``, ``kv-layout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.forward_mode import ForwardMode, Kernel
from guardrails.models import AttentionBatch, KVLayout, PagedKVCache
from guardrails.tensor_facts import device_name, dtype_name, shape_of, strides_of

from .base import LaunchSpec

__all__ = ["ShapeOnlySpec", "VarlenSpec", "SchedulerMetadataSpec", "fa_paged_cache", "descales_of"]


def fa_paged_cache(k_cache: Any, v_cache: Any = None) -> PagedKVCache | None:
    """The :class:`~guardrails.PagedKVCache` of FlashAttention's paged K (and V) caches,
    each ``[num_blocks, page_size, num_kv_heads, head_dim]`` (NHD; K and V may differ in
    head_dim, as MLA's rope / latent split does, and may be strided views of one
    buffer); ``None`` unless ``k_cache`` is 4-D. The pages are those of the smaller of
    the two (a page id must index both)."""
    if k_cache is None:
        return None
    shape = shape_of(k_cache)
    if len(shape) != 4:
        return None
    num_pages = shape[0]
    if v_cache is not None and len(shape_of(v_cache)) == 4:
        num_pages = min(num_pages, shape_of(v_cache)[0])
    strides = strides_of(k_cache)
    return PagedKVCache(
        num_pages=num_pages,
        page_size=shape[1],
        num_kv_heads=shape[2],
        head_dim=shape[3],
        layout=KVLayout.NHD,
        device=device_name(k_cache),
        dtype=dtype_name(k_cache),
        head_dim_stride=strides[-1] if strides else None,
    )


def descales_of(ns: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any] | None:
    """The descale tensors present among ``names`` (``None`` when none is)."""
    found = {name: ns[name] for name in names if ns[name] is not None}
    return found or None


class ShapeOnlySpec(LaunchSpec):
    """A spec some of whose tensor arguments the checks read only the shape of
    (:attr:`SHAPE_ONLY`: a V cache that only bounds the page count, FA3's descales that
    only state a batch size): their shapes join the shape key instead of their full
    :func:`~runtime_checks.launch_memo.tensor_key` (about 0.25 us instead of 1 us each
    per launch)."""

    SHAPE_ONLY: tuple[str, ...] = ()

    def arg_names(self) -> tuple[str, ...]:
        return (*super().arg_names(), *self.SHAPE_ONLY)

    def shape_key(self, ns: Mapping[str, Any]) -> tuple:
        return super().shape_key(ns), tuple([None if ns[n] is None else ns[n].shape for n in self.SHAPE_ONLY])


class VarlenSpec(ShapeOnlySpec):
    """``flash_attn_varlen_func`` (see the module docstring for shapes): a ragged-query
    launch (EXTEND on a prefill kernel) over a ragged or a paged K/V.

    The class attributes name the arguments in the library's signature (``None``: the
    library has no such argument, or its kernel does not read it).

    Args:
        fn: the installed function (its signature gives the argument positions).
    """

    Q, K, V = "q", "k", "v"
    CU_Q, CU_K = "cu_seqlens_q", "cu_seqlens_k"
    MAX_Q, MAX_K = "max_seqlen_q", "max_seqlen_k"
    #: per-request KV lengths (tokens) the kernel reads with a block table
    SEQUSED_K: str | None = "seqused_k"
    #: the block table the kernel reads (paged K/V); ``None``: the library's kernel reads none
    BLOCK_TABLE: str | None = None
    #: FA3's FP8 descales, ``[batch_size, num_kv_heads]``
    DESCALES: tuple[str, ...] = ()
    #: the argument selecting the FA major version; descales are read on FA3 only
    VERSION: str | None = None
    #: the query may carry padding rows past ``cu_seqlens_q[-1]`` (see ``AttentionBatch.padded_query``)
    PADDED_QUERY = False

    def __init__(self, fn) -> None:
        self.TENSORS = tuple(n for n in (self.Q, self.K, self.CU_Q, self.CU_K, self.SEQUSED_K, self.BLOCK_TABLE) if n)
        self.SHAPE_ONLY = (self.V, *self.DESCALES)
        self.INDEX_TENSORS = tuple(n for n in (self.CU_Q, self.CU_K, self.SEQUSED_K, self.BLOCK_TABLE) if n)
        self.SCALARS = tuple(n for n in (self.MAX_Q, self.MAX_K, self.VERSION) if n)
        super().__init__(fn)

    def block_table(self, ns: Mapping[str, Any]) -> Any:
        """The block table the kernel reads (``None``: ragged K/V)."""
        return ns[self.BLOCK_TABLE] if self.BLOCK_TABLE else None

    def descales(self, ns: Mapping[str, Any]) -> dict[str, Any] | None:
        """FA3's descales (other versions ignore them or take other layouts)."""
        if not self.DESCALES or (self.VERSION and ns[self.VERSION] not in (None, 3)):
            return None
        return descales_of(ns, self.DESCALES)

    def describe(self, ns):
        k, table = ns[self.K], self.block_table(ns)
        cu_k = ns[self.CU_K]
        used = ns[self.SEQUSED_K] if self.SEQUSED_K else None
        paged = table is not None
        ragged_kv = not paged and cu_k is not None
        batch = AttentionBatch(
            forward_mode=ForwardMode.EXTEND,
            kernel=Kernel.PREFILL,
            query=ns[self.Q],
            cu_seqlens_q=ns[self.CU_Q],
            # FA4 takes both cu_seqlens_k and seqused_k; with a block table it reads the lengths
            cu_seqlens_kv=cu_k if ragged_kv else None,
            num_kv_rows=shape_of(k)[0] if ragged_kv and k is not None else None,
            seq_lens=None if ragged_kv else used,
            page_table=table,
            max_seq_len_q=ns[self.MAX_Q],
            max_seq_len_kv=ns[self.MAX_K],
            padded_query=self.PADDED_QUERY,
            descales=self.descales(ns),
        )
        return batch, fa_paged_cache(k, ns[self.V]) if paged else None


class SchedulerMetadataSpec(LaunchSpec):
    """FA3's ``get_scheduler_metadata`` (sgl_kernel and vllm_flash_attn, same names):
    the metadata one batch's tile schedule is planned from (see the module docstring).

    With ``cu_seqlens_q`` the batch is ragged (EXTEND on a prefill kernel); without it
    every request has ``max_seqlen_q`` query rows (a decode-kernel layout).
    """

    TENSORS = ("cache_seqlens", "cu_seqlens_q")
    INDEX_TENSORS = ("cache_seqlens", "cu_seqlens_q")
    SCALARS = ("batch_size", "max_seqlen_q", "max_seqlen_k", "page_size")

    def describe(self, ns):
        cu_q, q_len = ns["cu_seqlens_q"], ns["max_seqlen_q"]
        if cu_q is not None:
            mode = {"forward_mode": ForwardMode.EXTEND, "kernel": Kernel.PREFILL}
        else:
            mode = {"forward_mode": ForwardMode.DECODE if q_len in (None, 1) else ForwardMode.TARGET_VERIFY,
                    "kernel": Kernel.DECODE, "q_len_per_req": q_len or None}
        batch = AttentionBatch(
            **mode,
            batch_size=ns["batch_size"],
            seq_lens=ns["cache_seqlens"],
            cu_seqlens_q=cu_q,
            max_seq_len_q=q_len,
            max_seq_len_kv=ns["max_seqlen_k"],
            page_size=ns["page_size"],
        )
        return batch, None
