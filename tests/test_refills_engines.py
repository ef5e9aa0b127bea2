"""In-place refills on an engine's real code: vLLM 0.33's FlashInfer backend fills its reused
``paged_kv_indices`` buffer with the Triton kernel ``_copy_page_indices_kernel``; a page id
past the pool seeded into the block table reaches the planned indices without a
``_version`` bump (``tests/engines/vllm_refill_case.py``, Triton interpreted, one process
per mode).

* with the guard as shipped, the refilled indices are checked again (the kit's CPU tensors
  have their bytes hashed);
* with host hashing off, the Triton launch hook alone catches it (what protects CUDA
  buffers);
* with both off (the control), the memo hits and the bad page id goes unchecked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.network

REPO = Path(__file__).resolve().parent.parent


def _refill_case(mode: str, tmp_path: Path) -> dict:
    out = tmp_path / f"refill-{mode}.json"
    env = {**os.environ, "FMHA_GUARD": "values", "FMHA_GUARD_ACTION": "raise", "FLASHINFER_NO_DOWNLOAD": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engines.vllm_refill_case", "--version", "0.33.0", "--mode", mode,
         "--output", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode, caught", [("hash", True), ("triton", True), ("none", False)])
def test_vllm_refills_paged_kv_indices_with_triton(tmp_path, mode, caught):
    result = _refill_case(mode, tmp_path)
    assert result["first_forward"] == "ok"
    # the Triton kernel wrote the seeded page id into the planned buffer, _version untouched
    assert result["indices_version_unchanged"] and result["seeded_page"] >= result["num_blocks"]
    assert result["second_forward"] == ("page-id-range" if caught else "ok")
    if mode == "triton":
        assert result["refills"]["triton_hooked"] and result["refills"]["triton_launches_marked"] >= 1
