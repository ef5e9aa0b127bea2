"""SGLang #26966, before the fix: ``__init__`` caches which KV pool it was built with.

The draft worker (FROZEN_KV MTP) later swaps ``token_to_kv_pool`` for the target's
hybrid sliding-window pool. The cached ``use_sliding_window_kv_pool`` (False) and
``swa_kv_pool`` (None) now describe the wrong pool: full-pool page ids reach the SWA
layers' pages and run past the SWA pool.
"""

import flashinfer

from sglang.srt.mem_cache.memory_pool import SWAKVPool


class SlidingWindowDecodeBackend:
    """Decode path of an xqa attention backend with a hybrid SWA pool (buggy)."""

    def __init__(self, model_runner):
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.page_size = model_runner.token_to_kv_pool.page_size
        # BUG: a fact of the pool as it is now, not as it will be at forward time
        self.use_sliding_window_kv_pool = isinstance(model_runner.token_to_kv_pool, SWAKVPool)
        self.swa_kv_pool = model_runner.token_to_kv_pool if self.use_sliding_window_kv_pool else None
        self.workspace_buffer = model_runner.workspace_buffer
        self.forward_metadata = None

    def _page_table(self, layer):
        if self.use_sliding_window_kv_pool and self.swa_kv_pool.is_swa_layer(layer.layer_id):
            return self.forward_metadata.swa_page_table
        return self.forward_metadata.page_table

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True):
        kv_cache = forward_batch.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        return flashinfer.decode.trtllm_batch_decode_with_kv_cache(
            query=q,
            kv_cache=kv_cache,
            workspace_buffer=self.workspace_buffer,
            block_tables=self._page_table(layer),
            seq_lens=self.forward_metadata.cache_seqlens,
            max_seq_len=self.forward_metadata.max_seq_len_k,
            bmm1_scale=layer.scaling,
            bmm2_scale=1.0,
            window_left=layer.sliding_window_size,
        )
