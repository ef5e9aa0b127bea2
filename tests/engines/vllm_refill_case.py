"""vLLM refills ``paged_kv_indices`` in place with a Triton kernel: is the refill checked again?

    FMHA_GUARD=values python -m tests.engines.vllm_refill_case --version 0.33.0 --mode triton --output out.json

vLLM's FlashInfer backend (``FLASHINFER@sm90``, a prefill batch) plans its
``BatchPrefillWithPagedKVCacheWrapper`` with a slice of its persistent
``paged_kv_indices`` buffer, which ``_copy_page_indices_kernel`` (Triton, interpreted here)
fills from the block table: a raw write, no ``_version`` bump. The driver runs one forward
(every layer's ``run`` checked against the plan), then seeds a page id past the pool into
the block table, runs vLLM's own ``_compute_flashinfer_kv_metadata`` again (the Triton
kernel writes the bad id into the same storage the plan holds) and runs the layers again
against the same plan (what a reused, refilled buffer looks like to the guard). Modes:

* ``hash`` -- the guard as shipped (the kit's tensors are CPU tensors: their bytes are
  hashed into the content key);
* ``triton`` -- host hashing off: the Triton launch hook alone must catch it;
* ``none`` -- host hashing off and the Triton hook removed (the control: the memo hits).

The JSON: ``{"mode", "first_forward", "second_forward" (``ok`` or the invariant raised),
"indices_version_unchanged", "seeded_page", "num_blocks", "refills"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="0.33.0")
    parser.add_argument("--mode", choices=("hash", "triton", "none"), default="hash")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    from tests.engines.run_vllm import prepare

    prepare(args.version)
    from tests.engines import vllm_stubs

    vllm_stubs.install()
    from tests.engines import vllm_entry_points, vllm_kit

    guard = vllm_entry_points.arm_guard()
    assert guard and guard.get("installed"), f"run with FMHA_GUARD=values: {guard}"
    vllm_entry_points.install()
    from runtime_checks import refills

    from guardrails import FmhaInvariantError

    if args.mode != "hash":
        refills.HASH_HOST_TENSORS = False
    run = next(r for r in vllm_kit.BACKENDS if r.key == "FLASHINFER@sm90")
    vllm_stubs.set_capability(*run.capability)
    backend_cls = vllm_kit._enum(run.enum).get_class()
    from vllm.config import set_current_vllm_config

    out: dict = {"mode": args.mode}
    vllm_config = vllm_kit.create_vllm_config(run)
    with set_current_vllm_config(vllm_config), vllm_kit.default_dtype(run.dtype):
        if args.mode == "none":
            refills.uninstall()  # before any metadata is memoized
        step = vllm_kit._Step(run, backend_cls, vllm_config)
        batch = vllm_kit.BATCHES["prefill"]
        common = step.buffers.common_metadata(batch)
        metadata = step.build(common)
        indices = step.builder.paged_kv_indices
        step.forward(metadata, batch.num_tokens, batch.num_tokens)
        out["first_forward"] = "ok"
        num_blocks = vllm_config.cache_config.num_gpu_blocks
        seeded = num_blocks + 7
        step.buffers.block_table[0, 0] = seeded  # a stale block table row: a page past the pool
        version = indices._version
        seq_lens = common.seq_lens.cpu().numpy() if hasattr(common.seq_lens, "cpu") else common.seq_lens
        num_reqs = batch.batch_size
        page_size = run.block_size
        seq_lens_np = seq_lens[:num_reqs]
        step.builder._compute_flashinfer_kv_metadata(
            (seq_lens_np + page_size - 1) // page_size, seq_lens_np, common.block_table_tensor, num_reqs, page_size)
        out["indices_version_unchanged"] = indices._version == version
        out["seeded_page"] = int(indices[0])
        out["num_blocks"] = num_blocks
        try:
            step.forward(metadata, batch.num_tokens, batch.num_tokens)
            out["second_forward"] = "ok"
        except FmhaInvariantError as exc:
            out["second_forward"] = exc.invariant
    out["refills"] = refills.stats()
    Path(args.output).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
