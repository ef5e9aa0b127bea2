"""Paged KV pools for the reference backend: SGLang's ``token_to_kv_pool`` in miniature.

Token slots are the unit of SGLang's ``req_to_token`` / ``out_cache_loc``: slot
``t`` lives in page ``t // page_size`` at offset ``t % page_size``. Page 0 (slots
``[0, page_size)``) and request row 0 are reserved dummies, as in SGLang: padded
requests (DP attention, CUDA-graph batch padding) read and write there and never
touch a live request's KV.

* :class:`PageAllocator`: free-list of page ids (page 0 never handed out).
* :class:`ReqToTokenPool`: ``req_to_token[row, pos]`` = token slot of position
  ``pos`` of the request in ``row`` (int32, full-pool slots).
* :class:`MHATokenToKVPool`: the full pool; one ``[num_pages, 2, num_kv_heads,
  page_size, head_dim]`` (HND) buffer per layer, and :meth:`MHATokenToKVPool.grow`,
  the allocator entry point that extends a request and returns its ``out_cache_loc``.
* :class:`SWAKVPool`: a hybrid pool (SGLang ``SWAKVPool``): full-attention layers
  use the full pool, sliding-window layers a separate, smaller pool with its own page
  ids; ``full_to_swa_index_mapping`` translates a full-pool slot to an SWA-pool slot.
  SWA pages are allocated together with full pages (no out-of-window eviction here).

Neither pool type is ever cached by the backend (SGLang #26966): the backend asks
``forward_batch.token_to_kv_pool`` at forward time whether a layer is an SWA layer.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from guardrails.models import PagedKVCache, SlidingWindowPool

__all__ = ["PageAllocator", "ReqToTokenPool", "MHATokenToKVPool", "SWAKVPool", "DUMMY_PAGE", "DUMMY_REQ_ROW"]

DUMMY_PAGE = 0
"""Page id (and token slots ``[0, page_size)``) reserved for padded requests."""

DUMMY_REQ_ROW = 0
"""``req_to_token`` row reserved for padded requests (all slots 0: the dummy page)."""


class PageAllocator:
    """Free list of page ids ``[1, num_pages)``; page :data:`DUMMY_PAGE` is reserved.

    Args:
        num_pages: pages in the pool, the dummy page included.
    """

    def __init__(self, num_pages: int) -> None:
        if num_pages < 2:
            raise ValueError(f"a pool needs the dummy page and at least one more, got num_pages={num_pages}")
        self.num_pages = num_pages
        self._free: list[int] = list(range(num_pages - 1, DUMMY_PAGE, -1))  # pop() hands out low ids first

    @property
    def available(self) -> int:
        """Pages that :meth:`alloc` can still hand out."""
        return len(self._free)

    def alloc(self, count: int) -> list[int]:
        """Take ``count`` page ids.

        Raises:
            MemoryError: fewer than ``count`` pages are free (nothing is taken).
        """
        if count > len(self._free):
            raise MemoryError(f"KV pool exhausted: {count} pages wanted, {len(self._free)} free")
        return [self._free.pop() for _ in range(count)]

    def free(self, pages: Sequence[int]) -> None:
        """Return page ids to the pool (the dummy page is ignored)."""
        self._free.extend(int(p) for p in pages if int(p) != DUMMY_PAGE)


class ReqToTokenPool:
    """SGLang's ``req_to_token_pool``: per request row, the token slot of each position.

    Attributes:
        req_to_token: ``[max_reqs, max_context_len]`` int32 on ``device``; row
            :data:`DUMMY_REQ_ROW` is all zeros (the dummy page) and never handed out.
    """

    def __init__(self, max_reqs: int, max_context_len: int, device: str | torch.device = "cpu") -> None:
        self.req_to_token = torch.zeros(max_reqs, max_context_len, dtype=torch.int32, device=device)
        self._free = list(range(max_reqs - 1, DUMMY_REQ_ROW, -1))

    @property
    def max_context_len(self) -> int:
        return self.req_to_token.shape[1]

    def alloc(self) -> int:
        """A free request row.

        Raises:
            MemoryError: every row is in use.
        """
        if not self._free:
            raise MemoryError("req_to_token_pool exhausted")
        return self._free.pop()

    def free(self, row: int) -> None:
        """Release ``row`` and zero it (its slots point at the dummy page again)."""
        self.req_to_token[row].zero_()
        self._free.append(row)


class MHATokenToKVPool:
    """The full-attention paged KV pool (SGLang ``MHATokenToKVPool`` with a paged allocator).

    Args:
        num_pages: pages per layer, dummy page 0 included.
        page_size: tokens per page.
        num_kv_heads, head_dim: KV heads per rank and elements per head.
        num_layers: layers with a buffer each.
        dtype: KV dtype (bf16 in the tests).
        device: where the buffers live.

    Attributes:
        kv_buffer: per layer, ``[num_pages, 2, num_kv_heads, page_size, head_dim]`` (HND;
            dim 1 is K, V), the single-tensor form FlashInfer's trtllm/xqa decode and
            ``BatchPrefillWithPagedKVCacheWrapper(kv_layout="HND")`` accept.
        allocator: the :class:`PageAllocator` of this pool.
    """

    def __init__(
        self,
        num_pages: int,
        page_size: int,
        num_kv_heads: int,
        head_dim: int,
        num_layers: int,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
    ) -> None:
        self.page_size = page_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.num_pages = num_pages
        self.allocator = PageAllocator(num_pages)
        self.kv_buffer = [
            torch.zeros(num_pages, 2, num_kv_heads, page_size, head_dim, dtype=dtype, device=device)
            for _ in range(num_layers)
        ]

    # ------------------------------------------------------------------ buffers

    def is_swa_layer(self, layer_id: int) -> bool:
        """Never: every layer of a full pool is full attention."""
        return False

    def get_kv_buffer(self, layer_id: int) -> torch.Tensor:
        """``[num_pages, 2, num_kv_heads, page_size, head_dim]`` buffer of ``layer_id``."""
        return self.kv_buffer[layer_id]

    def kv_cache_model(self, layer_id: int) -> PagedKVCache:
        """The :class:`~guardrails.PagedKVCache` the validator checks page ids against."""
        return PagedKVCache.from_tensor(self.get_kv_buffer(layer_id), layout="HND")

    def set_kv_buffer(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write new tokens' K/V.

        Args:
            loc: ``[num_tokens]`` int full-pool token slots (``out_cache_loc``).
            k, v: ``[num_tokens, num_kv_heads, head_dim]``, cast to the pool dtype.
        """
        buf = self.kv_buffer[layer_id]
        loc = loc.long()
        page, off = loc // self.page_size, loc % self.page_size
        buf[page, 0, :, off] = k.to(buf.dtype)
        buf[page, 1, :, off] = v.to(buf.dtype)

    # ------------------------------------------------------------------ allocation

    def _on_new_pages(self, pages: list[int]) -> None:
        """Hook for :class:`SWAKVPool` (allocate the matching SWA pages)."""

    def grow(self, req_to_token_pool: ReqToTokenPool, row: int, old_len: int, new_len: int) -> torch.Tensor:
        """Extend request ``row`` from ``old_len`` to ``new_len`` tokens: allocate the pages
        the new positions need, record their slots in ``req_to_token[row]``.

        Returns:
            ``out_cache_loc`` of the new positions: ``[new_len - old_len]`` int64 slots.

        Raises:
            MemoryError: the pool or ``max_context_len`` is exhausted.
        """
        if new_len > req_to_token_pool.max_context_len:
            raise MemoryError(f"request of {new_len} tokens exceeds max_context_len={req_to_token_pool.max_context_len}")
        ps = self.page_size
        have, need = -(-old_len // ps), -(-new_len // ps)
        table = req_to_token_pool.req_to_token
        if need > have:
            pages = self.allocator.alloc(need - have)
            self._on_new_pages(pages)
            slots = (torch.tensor(pages, dtype=torch.int32).repeat_interleave(ps) * ps
                     + torch.arange(ps, dtype=torch.int32).repeat(len(pages)))
            stop = min(need * ps, table.shape[1])
            table[row, have * ps : stop] = slots[: stop - have * ps].to(table.device)
        return table[row, old_len:new_len].long()

    def shrink(self, req_to_token_pool: ReqToTokenPool, row: int, old_len: int, new_len: int) -> None:
        """Drop request ``row``'s positions ``[new_len, old_len)`` (rejected draft tokens):
        the pages no position below ``new_len`` uses go back to the allocator."""
        ps = self.page_size
        keep, have = -(-new_len // ps), -(-old_len // ps)
        if have > keep:
            table = req_to_token_pool.req_to_token
            pages = (table[row, keep * ps : have * ps : ps] // ps).tolist()
            self.allocator.free(pages)
            self._on_pages_freed(pages)
            table[row, keep * ps : have * ps] = 0

    def release(self, req_to_token_pool: ReqToTokenPool, row: int, length: int) -> None:
        """Free the pages of request ``row`` (``length`` tokens) and the row itself."""
        ps = self.page_size
        pages = (req_to_token_pool.req_to_token[row, : length : ps] // ps).tolist()
        self.allocator.free(pages)
        self._on_pages_freed(pages)
        req_to_token_pool.free(row)

    def _on_pages_freed(self, pages: list[int]) -> None:
        """Hook for :class:`SWAKVPool`."""


class SWAKVPool(MHATokenToKVPool):
    """Hybrid full + sliding-window pool (SGLang ``SWAKVPool``).

    Full-attention layers read the full pool with full page ids; the layers in
    ``swa_layer_ids`` read a separate SWA pool of ``num_swa_pages`` pages (usually
    fewer), whose page ids come from translating full-pool slots through
    :attr:`full_to_swa_index_mapping`. Feeding untranslated full page ids to an SWA
    layer reads past the SWA pool: SGLang #26966.

    Args:
        num_pages, page_size, num_kv_heads, head_dim, num_layers, dtype, device: as
            :class:`MHATokenToKVPool` (the full pool; layers in ``swa_layer_ids`` get
            their buffer from the SWA pool instead).
        num_swa_pages: pages of the SWA pool, dummy page included.
        swa_layer_ids: layer ids of the sliding-window layers.
        sliding_window_size: FlashInfer ``window_left`` of the SWA layers (a query at
            position ``i`` attends keys ``[i - window, i]``).

    Attributes:
        full_to_swa_index_mapping: ``[num_pages * page_size]`` int64; full slot ->
            SWA slot (slot 0 -> 0, the dummy). Page-granular: the SWA page of full
            page ``p`` is ``full_to_swa_index_mapping[p * page_size] // page_size``.
    """

    def __init__(
        self,
        num_pages: int,
        page_size: int,
        num_kv_heads: int,
        head_dim: int,
        num_layers: int,
        *,
        num_swa_pages: int,
        swa_layer_ids: Sequence[int],
        sliding_window_size: int,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(num_pages, page_size, num_kv_heads, head_dim, num_layers, dtype, device)
        self.swa_layer_ids = frozenset(int(i) for i in swa_layer_ids)
        self.sliding_window_size = sliding_window_size
        self.num_swa_pages = num_swa_pages
        self.swa_allocator = PageAllocator(num_swa_pages)
        self.swa_kv_buffer = {
            i: torch.zeros(num_swa_pages, 2, num_kv_heads, page_size, head_dim, dtype=dtype, device=device)
            for i in sorted(self.swa_layer_ids)
        }
        for i in self.swa_layer_ids:  # SWA layers own no full-pool buffer
            self.kv_buffer[i] = torch.zeros(0, 2, num_kv_heads, page_size, head_dim, dtype=dtype, device=device)
        self.full_to_swa_index_mapping = torch.zeros(num_pages * page_size, dtype=torch.int64, device=device)

    def is_swa_layer(self, layer_id: int) -> bool:
        return layer_id in self.swa_layer_ids

    def get_kv_buffer(self, layer_id: int) -> torch.Tensor:
        """The SWA buffer ``[num_swa_pages, 2, H_kv, page_size, D]`` for SWA layers, else the full one."""
        if self.is_swa_layer(layer_id):
            return self.swa_kv_buffer[layer_id]
        return self.kv_buffer[layer_id]

    def full_kv_cache_model(self) -> PagedKVCache:
        """The full pool's sizes (what a full page table's ids must stay below)."""
        full_layer = next((i for i in range(len(self.kv_buffer)) if i not in self.swa_layer_ids), None)
        if full_layer is None:
            return PagedKVCache(num_pages=self.num_pages, page_size=self.page_size,
                                num_kv_heads=self.num_kv_heads, head_dim=self.head_dim)
        return PagedKVCache.from_tensor(self.kv_buffer[full_layer], layout="HND")

    def swa_pool_model(self, layer_id: int) -> SlidingWindowPool:
        """The :class:`~guardrails.SlidingWindowPool` of an SWA layer, with the translation table."""
        return SlidingWindowPool.from_tensor(
            self.swa_kv_buffer[layer_id],
            layout="HND",
            full_to_swa=self.full_to_swa_index_mapping,
            window_left=self.sliding_window_size,
            swa_layer_ids=tuple(sorted(self.swa_layer_ids)),
        )

    def translate_loc_from_full_to_swa(self, loc: torch.Tensor) -> torch.Tensor:
        """Full-pool slots (any int dtype) -> SWA-pool slots (int64), same shape."""
        return self.full_to_swa_index_mapping[loc.long()]

    def translate_page_table(self, page_table: torch.Tensor) -> torch.Tensor:
        """Full page ids ``[bs, max_pages]`` int32 -> SWA page ids (int32), as SGLang's
        TRTLLMHAAttnBackend: ``full_to_swa[page * page_size] // page_size``. A pure
        device gather: capturable in a CUDA graph, no host sync."""
        ps = self.page_size
        return (self.full_to_swa_index_mapping[page_table.long() * ps] // ps).to(torch.int32)

    def set_kv_buffer(self, layer_id: int, loc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if not self.is_swa_layer(layer_id):
            return super().set_kv_buffer(layer_id, loc, k, v)
        buf = self.swa_kv_buffer[layer_id]
        swa_loc = self.translate_loc_from_full_to_swa(loc)
        page, off = swa_loc // self.page_size, swa_loc % self.page_size
        buf[page, 0, :, off] = k.to(buf.dtype)
        buf[page, 1, :, off] = v.to(buf.dtype)

    def _on_new_pages(self, pages: list[int]) -> None:
        ps = self.page_size
        swa_pages = self.swa_allocator.alloc(len(pages))
        full = torch.tensor(pages, dtype=torch.int64).repeat_interleave(ps) * ps + torch.arange(ps).repeat(len(pages))
        swa = torch.tensor(swa_pages, dtype=torch.int64).repeat_interleave(ps) * ps + torch.arange(ps).repeat(len(pages))
        dev = self.full_to_swa_index_mapping.device
        self.full_to_swa_index_mapping[full.to(dev)] = swa.to(dev)

    def _on_pages_freed(self, pages: list[int]) -> None:
        ps = self.page_size
        live = [p for p in pages if p != DUMMY_PAGE]
        if not live:
            return
        idx = torch.tensor(live, dtype=torch.int64, device=self.full_to_swa_index_mapping.device) * ps
        self.swa_allocator.free((self.full_to_swa_index_mapping[idx] // ps).tolist())
        for p in live:
            self.full_to_swa_index_mapping[p * ps : (p + 1) * ps] = 0


def kv_cache_model_for(pool: MHATokenToKVPool, layer_id: int) -> tuple[PagedKVCache, Optional[SlidingWindowPool]]:
    """What a launch of ``layer_id`` reads, for the validator: the full pool's sizes and,
    for an SWA layer of an :class:`SWAKVPool`, its :class:`SlidingWindowPool`."""
    if isinstance(pool, SWAKVPool):
        if pool.is_swa_layer(layer_id):
            return pool.full_kv_cache_model(), pool.swa_pool_model(layer_id)
        return pool.kv_cache_model(layer_id), None
    return pool.kv_cache_model(layer_id), None
