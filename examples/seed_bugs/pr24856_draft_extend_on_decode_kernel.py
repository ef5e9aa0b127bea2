"""SGLang #24856: DRAFT_EXTEND_V2 routed to the decode kernel.

After speculative verification each request accepted a different number of draft
tokens, so a DRAFT_EXTEND_V2 step is ragged (here 4, 1, 3, 4 query rows). The decode
kernel (``trtllm_batch_decode_with_kv_cache``) assumes every request has the same
``q_len_per_req``; the buggy backend sends DRAFT_EXTEND_V2 there anyway, with
``q_len_per_req=max_seq_len_q`` (4): the kernel sees 12 rows as 3 requests of 4 and
attributes them to the wrong requests (silent wrong output; with a row count that 4
does not divide it fails inside FlashInfer instead). The fix, :class:`ReferenceAttnBackend`, sends only
TARGET_VERIFY (uniform draft tokens) to the decode kernel and DRAFT_EXTEND_V2 to the
ragged prefill kernel with its ``cu_seqlens_q``.

Run: ``python examples/seed_bugs/pr24856_draft_extend_on_decode_kernel.py`` (CPU).
"""

from __future__ import annotations

from _harness import Requests, make_pool, make_runner, print_fixed, print_guard_error, print_lint, run_layers

from guardrails.forward_mode import Kernel
from runtime_checks.reference_backend import ForwardMode, ReferenceAttnBackend
from runtime_checks.reference_backend.attention_backend import kernels_for


class DraftExtendOnDecodeBackend(ReferenceAttnBackend):
    """Buggy: ``forward_extend`` routes DRAFT_EXTEND_V2 with TARGET_VERIFY to the decode kernel."""

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True, *, out=None):
        self._save_kv(k, v, layer, forward_batch)
        mode = forward_batch.forward_mode
        if mode.is_target_verify() or mode.is_draft_extend_v2():  # BUG: V2 has variable accept lengths
            metadata, query, out3, result = self._prepare(q, layer, out)
            kv_cache, read_table, _, window_left = self._pool_view(metadata, layer, forward_batch)
            # what the launch consumes, checked by the guard before the kernel
            batch = self._launch_batch(metadata, mode, Kernel.DECODE, query, None).replace(
                q_len_per_req=metadata.max_seq_len_q,  # BUG: V2's query rows are not uniform
            )
            self._check(metadata, layer, forward_batch, batch=batch)
            kernels_for(query).trtllm_batch_decode_with_kv_cache(
                **self._trtllm_args(metadata, layer, query, kv_cache, read_table, out3),
                max_seq_len=metadata.max_seq_len_kv,
                window_left=window_left,
                q_len_per_req=metadata.max_seq_len_q,  # BUG: 4 for every request; they hold 4, 1, 3, 4
            )
            return result
        return self._run_prefill_kernel(q, layer, forward_batch, out)


def run(backend_cls):
    """A DRAFT_EXTEND_V2 step over 4 requests with accept lengths 4, 1, 3, 4."""
    reqs = Requests(make_pool(), seed=24856)
    backend = backend_cls(make_runner(reqs.pool, reqs.req_pool))
    rows = [reqs.add(p) for p in (4, 11, 6, 20)]
    fb, inputs = reqs.step(ForwardMode.DRAFT_EXTEND_V2, rows, [4, 1, 3, 4])
    backend.init_forward_metadata(fb)
    return run_layers(backend, fb, inputs, reqs.layers)


if __name__ == "__main__":
    print("SGLang #24856: DRAFT_EXTEND_V2 routed to the decode kernel")
    print_lint(__file__, "DraftExtendOnDecodeBackend")
    print_guard_error(lambda: run(DraftExtendOnDecodeBackend))
    print_fixed(*run(ReferenceAttnBackend))
