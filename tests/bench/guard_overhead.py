"""Host overhead of the runtime guard per FlashInfer launch, on the CPU, side by side.

    FLASHINFER_NO_DOWNLOAD=1 python -m tests.bench.guard_overhead

Each entry point is called with FlashInfer's real signature on a stub kernel (no GPU
here), for a decode step of batch 64, KV length 4096, page size 16, 32/8 heads, head
dim 128. Columns: microseconds per launch unguarded (the bare stub), and guarded at
``shapes``, at ``values`` when the step's metadata was already checked (the other
layers of a step), and at ``values`` for the first layer of a new step (full check,
one packed host copy). Targets (issue #3): shapes <= 5 us per launch; values pays its
host copy once per step, not per layer. The GPU decode-step ratio is measured by
``tests/gpu/fault_matrix.py`` (part ``benchmark``).
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable

import torch

from runtime_checks.kernel_specs import ENTRY_POINTS
from runtime_checks.launch_guard import make_guard
from runtime_checks.state import STATE, configure
from tests.launch_args import context_kwargs, decode_kwargs, paged_case

ENTRIES = {e.qualname: e for e in ENTRY_POINTS}


def stub_for(qualname: str) -> Callable[..., object]:
    obj = importlib.import_module(ENTRIES[qualname].module)
    for part in qualname.split("."):
        obj = getattr(obj, part)

    @functools.wraps(obj)
    def stub(*args, **kwargs):
        return None

    return stub


def per_call_us(fn: Callable[[], object], calls: int = 20000, repeats: int = 5) -> float:
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best.append((time.perf_counter() - t) / calls * 1e6)
    return min(best)


def main() -> None:
    batch, kv_len, page = 64, 4096, 16
    decode = paged_case([1] * batch, [kv_len] * batch, page_size=page, num_kv_heads=8, group=4, head_dim=128,
                        extra_pages=0)
    extend = paged_case([128] * 8, [1024] * 8, page_size=page, num_kv_heads=8, group=4, head_dim=128)
    cases = {
        "trtllm_batch_decode_with_kv_cache": decode_kwargs(decode),
        "trtllm_batch_context_with_kv_cache": context_kwargs(extend),
    }
    print(f"{'entry point':40s} {'unguarded':>10s} {'shapes':>8s} {'values':>8s} {'values/new step':>16s}"
          f" {'shapes overhead':>16s} {'ratio shapes':>13s} {'ratio values':>13s}")
    for qualname, kwargs in cases.items():
        stub = stub_for(qualname)
        guard = make_guard(ENTRIES[qualname], stub)
        bare = per_call_us(lambda: stub(**kwargs))
        configure("shapes")
        shapes = per_call_us(lambda: guard(**kwargs))
        configure("values")
        values = per_call_us(lambda: guard(**kwargs))
        seq = kwargs["seq_lens"]

        def new_step():
            seq.add_(0)  # an in-place write: the next check sees new metadata
            guard(**kwargs)

        fresh = per_call_us(new_step, calls=200, repeats=3)
        configure("off")
        print(f"{qualname:40s} {bare:10.2f} {shapes:8.2f} {values:8.2f} {fresh:16.1f} {shapes - bare:16.2f}"
              f" {shapes / bare:13.2f} {values / bare:13.2f}")
    layers = 32
    configure("values")
    STATE.reset_counters()
    guard = make_guard(ENTRIES["trtllm_batch_decode_with_kv_cache"], stub_for("trtllm_batch_decode_with_kv_cache"))
    kwargs = cases["trtllm_batch_decode_with_kv_cache"]
    for _ in range(10):
        kwargs["seq_lens"].add_(0)
        for _ in range(layers):
            guard(**kwargs)
    full = STATE.launches - STATE.value_memo_hits
    configure("off")
    print(f"\nvalues level, 10 steps x {layers} layers: {full} full value checks ({full / 10:.0f} per step), "
          f"{STATE.value_memo_hits} memo hits")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of best-of-5 loops")


if __name__ == "__main__":
    main()
