"""SGLang #21649, fixed: every size the kernel sees comes from the metadata it reads."""

from dataclasses import dataclass

import flashinfer


@dataclass
class ExtendMetadata:
    cu_seqlens_q: "torch.Tensor"  # [batch_size + 1] int32, query offsets (qo_indptr)
    cu_seqlens_k: "torch.Tensor"  # [batch_size + 1] int32, KV offsets (kv_indptr)
    cache_seqlens: "torch.Tensor"  # [batch_size] int32, KV length per request
    page_table: "torch.Tensor"  # [batch_size, max_pages] int32
    max_seq_len_q: int


class PaddedBatchTRTLLMBackend:
    """Extend path of a trtllm-gen attention backend (fixed)."""

    def __init__(self, model_runner):
        self.token_to_kv_pool = model_runner.token_to_kv_pool
        self.workspace_buffer = model_runner.workspace_buffer
        self.max_context_len = model_runner.model_config.context_len
        self.forward_metadata = None

    def init_forward_metadata(self, forward_batch):
        self.forward_metadata = forward_batch.plan_extend_metadata()

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
        metadata = self.forward_metadata
        k_cache, v_cache = forward_batch.token_to_kv_pool.get_kv_buffer(layer.layer_id)
        return flashinfer.prefill.trtllm_batch_context_with_kv_cache(
            query=q,
            kv_cache=(k_cache, v_cache),
            workspace_buffer=self.workspace_buffer,
            block_tables=metadata.page_table,
            seq_lens=metadata.cache_seqlens,
            max_q_len=metadata.max_seq_len_q,
            max_kv_len=self.max_context_len,
            bmm1_scale=layer.scaling,
            bmm2_scale=1.0,
            batch_size=metadata.cu_seqlens_q.shape[0] - 1,  # the requests the metadata holds
            cum_seq_lens_q=metadata.cu_seqlens_q,
            cum_seq_lens_kv=metadata.cu_seqlens_k,
        )
