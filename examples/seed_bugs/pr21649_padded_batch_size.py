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

from _harness import Requests, make_pool, make_runner, print_fixed, print_guard_error, print_lint, run_layers

from guardrails.forward_mode import Kernel
from runtime_checks.reference_backend import ForwardMode, ReferenceAttnBackend, pad_forward_batch_for_dp
from runtime_checks.reference_backend.attention_backend import kernels_for


class PaddedBatchSizeBackend(ReferenceAttnBackend):
    """Buggy: ``forward_extend`` sizes the context kernel from the padded ``forward_batch``."""

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, *, out=None):
        self._save_kv(k, v, layer, forward_batch)
        metadata, query, out3, result = self._prepare(q, layer, out)
        kv_cache, read_table, swa_table, window_left = self._pool_view(metadata, layer, forward_batch)
        # what the launch consumes, checked by the guard (shapes always, values with FMHA_GUARD=values)
        batch = self._launch_batch(metadata, forward_batch.forward_mode, Kernel.PREFILL, query, swa_table).replace(
            batch_size=forward_batch.batch_size,  # BUG: padded (5); cu_seqlens_q holds 3 requests
        )
        self._check(metadata, layer, forward_batch, batch=batch)
        kernels_for(query).trtllm_batch_context_with_kv_cache(  # torch on CPU; trtllm-gen needs SM100
            **self._trtllm_args(metadata, layer, query, kv_cache, read_table, out3),
            max_q_len=metadata.max_seq_len_q,
            max_kv_len=metadata.max_seq_len_kv,
            batch_size=forward_batch.batch_size,  # BUG: the same padded count reaches the kernel
            cum_seq_lens_q=metadata.cu_seqlens_q,
            cum_seq_lens_kv=metadata.cu_seqlens_q,
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
    return run_layers(backend, padded, inputs, reqs.layers, pad_rows=extra, rand=reqs.rand)


if __name__ == "__main__":
    print("SGLang #21649: DP-padded batch size passed to the context kernel")
    print_lint(__file__, "PaddedBatchSizeBackend")
    print_guard_error(lambda: run(PaddedBatchSizeBackend))
    print_fixed(*run(ReferenceAttnBackend))
