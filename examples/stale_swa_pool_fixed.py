"""SGLang #26966, fixed: the SWA decision is made from the pool in use at forward time."""

import flashinfer

from sglang.srt.mem_cache.memory_pool import SWAKVPool


class SlidingWindowDecodeBackend:
    """Decode path of an xqa attention backend with a hybrid SWA pool (fixed)."""

    def __init__(self, model_runner):
        # The plain alias is the engine's swap point; immutable facts are fine to keep.
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.page_size = model_runner.token_to_kv_pool.page_size
        self.workspace_buffer = model_runner.workspace_buffer
        self.forward_metadata = None

    def _page_table(self, layer, forward_batch):
        pool = forward_batch.token_to_kv_pool  # the pool the kernel will read
        if isinstance(pool, SWAKVPool) and pool.is_swa_layer(layer.layer_id):
            return self.forward_metadata.swa_page_table
        return self.forward_metadata.page_table

    def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True):
        kv_cache = forward_batch.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        return flashinfer.decode.trtllm_batch_decode_with_kv_cache(
            query=q,
            kv_cache=kv_cache,
            workspace_buffer=self.workspace_buffer,
            block_tables=self._page_table(layer, forward_batch),
            seq_lens=self.forward_metadata.cache_seqlens,
            max_seq_len=self.forward_metadata.max_seq_len_k,
            bmm1_scale=layer.scaling,
            bmm2_scale=1.0,
            window_left=layer.sliding_window_size,
        )
