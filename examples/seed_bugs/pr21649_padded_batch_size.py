"""SGLang #21649: the DP-padded batch size reaches the context kernel.

With DP attention the scheduler pads ``forward_batch`` to more requests (here 3 -> 5)
after the step's metadata was planned for the real ones. The buggy backend tells
``trtllm_batch_context_with_kv_cache`` ``batch_size=forward_batch.batch_size`` (5) while
``cu_seqlens_q`` holds 3 requests, so the kernel walks two requests past the end
(an illegal address on a GPU). The fix, :class:`ReferenceAttnBackend`, takes the
batch size from the planned metadata: ``cu_seqlens_q.shape[0] - 1``.

On a GPU the context kernel is trtllm-gen, which needs SM100 (Blackwell): on Hopper
the buggy variant's launch stops with ``NotImplementedError`` instead.

Run: ``python examples/seed_bugs/pr21649_padded_batch_size.py`` (CPU).
"""

from __future__ import annotations

import torch
from _harness import Requests, make_pool, make_runner, print_fixed, print_guard_error, print_lint

from guardrails import AttentionBatch
from guardrails.forward_mode import Kernel
from guardrails.reference_backend import ForwardMode, ReferenceAttnBackend, pad_forward_batch_for_dp
from guardrails.reference_backend.attention_backend import kernels_for


class PaddedBatchSizeBackend(ReferenceAttnBackend):
    """Buggy: ``forward_extend`` sizes the context kernel from the padded ``forward_batch``."""

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, *, out=None):
        self._save_kv(k, v, layer, forward_batch)
        metadata, query, out3, result = self._prepare(q, layer, out)
        kv_cache, read_table, swa_table, window_left = self._pool_view(metadata, layer, forward_batch)
        # what the launch consumes, checked by the guard (shapes always, values with FMHA_GUARD=values)
        batch = AttentionBatch(
            forward_mode=forward_batch.forward_mode, kernel=Kernel.PREFILL,
            batch_size=forward_batch.batch_size,  # BUG: padded (5); cu_seqlens_q holds 3 requests
            num_query_rows=query.shape[0], query=query, cu_seqlens_q=metadata.cu_seqlens_q,
            seq_lens=metadata.seq_lens, page_table=metadata.page_table,
            max_seq_len_q=metadata.max_seq_len_q, max_seq_len_kv=metadata.max_seq_len_kv, page_size=metadata.page_size,
        )
        self._check(metadata, layer, forward_batch, batch=batch)
        kernels_for(query).trtllm_batch_context_with_kv_cache(  # torch on CPU; trtllm-gen needs SM100
            query=query,
            kv_cache=kv_cache,
            workspace_buffer=self._workspace_for(query),
            block_tables=read_table,
            seq_lens=metadata.seq_lens,
            max_q_len=metadata.max_seq_len_q,
            max_kv_len=metadata.max_seq_len_kv,
            bmm1_scale=layer.scaling,
            bmm2_scale=1.0,
            batch_size=forward_batch.batch_size,  # BUG: the same padded count reaches the kernel
            cum_seq_lens_q=metadata.cu_seqlens_q,
            cum_seq_lens_kv=metadata.cu_seqlens_q,
            out=out3[: metadata.num_tokens],
        )
        return result


def padded_step(backend_cls):
    """3 real EXTEND requests, planned, then DP-padded to 5 (q/k/v padded with 2 rows)."""
    reqs = Requests(make_pool(), seed=21649)
    backend = backend_cls(make_runner(reqs.pool, reqs.req_pool))
    rows = [reqs.add(p) for p in (3, 8, 12)]
    fb, inputs = reqs.step(ForwardMode.EXTEND, rows, [5, 2, 7])
    backend.init_forward_metadata(fb)  # planned for 3 requests
    padded = pad_forward_batch_for_dp(fb, 5)  # what DP attention hands the backend
    extra = padded.out_cache_loc.shape[0] - fb.out_cache_loc.shape[0]
    print(f"   forward_batch.batch_size={padded.batch_size}, "
          f"cu_seqlens_q holds {backend.forward_metadata.cu_seqlens_q.shape[0] - 1} requests")
    return reqs, backend, padded, inputs, extra


def run(backend_cls):
    """Every layer of the padded step: (outputs of the real rows, references)."""
    reqs, backend, padded, inputs, extra = padded_step(backend_cls)
    outs, refs = [], []
    for layer in reqs.layers:
        q, k, v, ref = inputs[layer.layer_id]
        q, k, v = (torch.cat([t, reqs.rand(extra, *t.shape[1:]).to(t.device)]) for t in (q, k, v))
        out = torch.full_like(q, float("nan"))  # a row nobody writes stays NaN
        backend.forward(q, k, v, layer, padded, out=out)
        outs.append(out[: ref.shape[0]])
        refs.append(ref)
    return outs, refs


if __name__ == "__main__":
    print("SGLang #21649: DP-padded batch size passed to the context kernel")
    print_lint(__file__, "PaddedBatchSizeBackend")
    print_guard_error(lambda: run(PaddedBatchSizeBackend))
    print_fixed(*run(ReferenceAttnBackend))
