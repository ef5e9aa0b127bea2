"""SGLang #21987: CUDA-graph replay writes ``cu_seqlens_q`` with another layout than capture.

A CUDA graph bakes in what it saw at capture: the uniform ``cu_seqlens_q``
(``arange(0, bs * q_len + 1, q_len)``) and scalars such as ``max_seq_len_q``. The buggy
backend's replay refills ``cu_seqlens_q`` from the per-request accept lengths (a
variable stride) and rebinds ``max_seq_len_q``; the replayed kernel still runs with
the captured scalars, so it reads rows with the wrong offsets (silent wrong output or
an illegal address). The fix, :class:`ReferenceAttnBackend`, refills the captured
buffers in place with the capture layout and never rebinds a captured scalar.

On CPU a "graph" is the captured metadata buffers reused by later steps; the backend
records each layer's launch layout at capture and the guard checks replays against it.
The replayed launch is stopped by ``graph-replay-layout``: it needs
``max_seq_len_q=4`` where the graph baked in 3 (and its ``cu_seqlens_q`` no longer has
the captured uniform stride). With real CUDA graphs the same check runs in
:meth:`ReferenceAttnBackend.check_graph_replay`, which
:class:`~runtime_checks.reference_backend.CudaGraphRunner` calls before every
``graph.replay()``.

Run: ``python examples/seed_bugs/pr21987_graph_replay_layout.py`` (CPU).
"""

from __future__ import annotations

import torch
from _harness import Requests, make_pool, make_runner, print_fixed, print_guard_error, print_lint

from runtime_checks.reference_backend import ForwardMode, ReferenceAttnBackend

BS, Q_LEN = 3, 3  # a TARGET_VERIFY graph: 3 requests, 3 draft tokens each
MODE = ForwardMode.TARGET_VERIFY


class ReplayLayoutBackend(ReferenceAttnBackend):
    """Buggy: replay fills ``cu_seqlens_q`` from accept lengths and rebinds ``max_seq_len_q``."""

    def init_forward_metadata_replay_cuda_graph(self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens,
                                                forward_mode, spec_info=None, seq_lens_cpu=None):
        metadata = self._graph_metadata[bs]
        accept_length = spec_info  # per-request accepted tokens, e.g. [4, 3, 2]
        metadata.cu_seqlens_q[1:].copy_(torch.cumsum(accept_length, dim=0))  # BUG: variable stride
        metadata.max_seq_len_q = int(accept_length.max())  # BUG: rebinds a scalar the graph baked in
        metadata.seq_lens.copy_(seq_lens)
        metadata.page_table.copy_(self._page_table(self.req_to_token, req_pool_indices, metadata.page_table.shape[1]))
        self.forward_metadata = metadata


def run(backend_cls):
    """Capture with one batch, then replay with other requests (static q/k/v/out buffers)."""
    reqs = Requests(make_pool(), seed=21987)
    backend = backend_cls(make_runner(reqs.pool, reqs.req_pool))
    backend.init_cuda_graph_state(max_bs=4, max_num_tokens=4 * Q_LEN)
    g, dev = reqs.geometry, reqs.device
    rows_q, rows_kv = (BS * Q_LEN, g.num_qo_heads, g.head_dim), (BS * Q_LEN, g.num_kv_heads, g.head_dim)
    static = [tuple(torch.zeros(shape, dtype=torch.bfloat16, device=dev) for shape in (rows_q, rows_kv, rows_kv, rows_q))
              for _ in reqs.layers]
    outs, refs = [], []
    for step, prefixes in enumerate([(5, 9, 2), (17, 1, 30)]):
        rows = [reqs.add(p) for p in prefixes]
        fb, inputs = reqs.step(MODE, rows, [Q_LEN] * BS, num_draft_tokens=Q_LEN)
        if step == 0:
            backend.init_forward_metadata_capture_cuda_graph(BS, BS * Q_LEN, fb.req_pool_indices, fb.seq_lens, None, MODE)
        else:
            accept_length = torch.tensor([4, 3, 2], dtype=torch.int32, device=dev)  # ragged, same 9 rows
            backend.init_forward_metadata_replay_cuda_graph(BS, fb.req_pool_indices, fb.seq_lens, int(fb.seq_lens.sum()),
                                                            None, MODE, accept_length, fb.seq_lens)
        for layer, (sq, sk, sv, sout) in zip(reqs.layers, static):
            q, k, v, ref = inputs[layer.layer_id]
            sq.copy_(q), sk.copy_(k), sv.copy_(v)  # refill the graph's static inputs
            sout.fill_(float("nan"))
            backend.forward(sq, sk, sv, layer, fb, out=sout)
            if step > 0:
                outs.append(sout.clone())
                refs.append(ref)
    return outs, refs


if __name__ == "__main__":
    print("SGLang #21987: CUDA-graph replay layout differs from capture")
    print_lint(__file__, "ReplayLayoutBackend")
    print_guard_error(lambda: run(ReplayLayoutBackend))
    print_fixed(*run(ReferenceAttnBackend))
