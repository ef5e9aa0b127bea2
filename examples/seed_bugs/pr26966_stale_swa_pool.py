"""SGLang #26966: SWA pool state cached in ``__init__``, stale after the draft worker's pool swap.

The buggy backend decides once, in ``__init__``, whether the KV pool is a hybrid
sliding-window (SWA) pool. With FROZEN_KV MTP the draft worker builds its backend on a
plain pool and later hands it batches on the target's hybrid SWA pool. The cached
flag says "no SWA", so SWA layers get full-pool page ids, which run past the smaller
SWA pool (an illegal address on a GPU). The fix, :class:`ReferenceAttnBackend`, keeps
nothing about the pool in ``__init__`` and asks ``forward_batch.token_to_kv_pool`` at
forward time.

Run: ``python examples/seed_bugs/pr26966_stale_swa_pool.py`` (CPU).
"""

from __future__ import annotations

from _harness import Requests, make_pool, make_runner, print_fixed, print_guard_error, print_lint, run_layers

from runtime_checks.reference_backend import ForwardMode, ReferenceAttnBackend, SWAKVPool


class StaleSWAPoolBackend(ReferenceAttnBackend):
    """Buggy: ``__init__`` caches whether the pool is an SWA pool."""

    def __init__(self, model_runner):
        super().__init__(model_runner)
        self.is_swa = isinstance(model_runner.token_to_kv_pool, SWAKVPool)  # BUG: stale after a pool swap

    def _pool_view(self, metadata, layer, forward_batch):
        pool = forward_batch.token_to_kv_pool
        kv_cache = pool.get_kv_buffer(layer.layer_id)
        swa_table = None
        if self.is_swa and pool.is_swa_layer(layer.layer_id):  # never true for the draft worker
            swa_table = pool.translate_page_table(metadata.page_table)
        read_table = metadata.page_table if swa_table is None else swa_table
        return kv_cache, read_table, swa_table, layer.sliding_window_size


def run(backend_cls):
    """The backend is built on the draft's plain pool; the batch arrives on the target's SWA pool."""
    target_pool = make_pool("swa", num_pages=96, num_swa_pages=40)  # layer 1 is a sliding-window layer
    draft_pool = make_pool("full", num_pages=8)
    reqs = Requests(target_pool, seed=26966)
    backend = backend_cls(make_runner(draft_pool, reqs.req_pool))  # what the draft worker starts with
    target_pool.allocator.alloc(48)  # pages of other requests: live full page ids run past the 40 SWA pages
    rows = [reqs.add(p) for p in (6, 13, 2)]
    fb, inputs = reqs.step(ForwardMode.EXTEND, rows, [4, 3, 7])  # fb.token_to_kv_pool is the target's pool
    backend.init_forward_metadata(fb)
    return run_layers(backend, fb, inputs, reversed(reqs.layers))  # the SWA layer first: that is where the stale flag bites


if __name__ == "__main__":
    print("SGLang #26966: SWA pool state cached in __init__, stale after the draft pool swap")
    print_lint(__file__, "StaleSWAPoolBackend")
    print_guard_error(lambda: run(StaleSWAPoolBackend))
    print_fixed(*run(ReferenceAttnBackend))
