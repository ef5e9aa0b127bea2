"""Metadata buffers refilled in place are checked again (``runtime_checks.refills``).

A raw write does not bump a tensor's ``_version``, so the value memo's content key used to
stay the same and a page id past the pool went unchecked: a numpy write into a host
tensor (vLLM's ``paged_kv_indptr.np``), a Triton kernel filling a device buffer (vLLM's
``_copy_page_indices_kernel``, SGLang's ``create_flashinfer_kv_indices_triton``). Each
test here shows the write leaves ``_version`` alone, that the guard catches the bad id
the write put there, and (a control) that without the mechanism under test it would not.

The Triton tests run Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) in a
subprocess, with the Triton the engine kits install (``.cache/engines/site-py311-vllm``);
they are skipped when none is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from guardrails import FmhaInvariantError
from runtime_checks import refills
from runtime_checks.launch_memo import version_key
from runtime_checks.state import STATE, configure

from .launch_args import decode_kwargs, paged_case
from .test_runtime_guard import LAUNCHED, FakeWrapper, guard_state, guarded  # noqa: F401 (autouse fixture)

DECODE = "trtllm_batch_decode_with_kv_cache"
REPO = Path(__file__).resolve().parent.parent


def fresh_decode():
    return guarded.__wrapped__(DECODE)  # a new guard (empty memo) around a stub with the real signature


def small_case(q_lens, kv_lens):
    return paged_case(q_lens, kv_lens, page_size=4, num_kv_heads=2, group=2, head_dim=8)


# ----------------------------------------------------------------- numpy writes into host tensors


@pytest.mark.parametrize("hashed", [True, False], ids=["host-bytes-hashed", "control-without-hash"])
def test_numpy_write_into_a_plans_index_tensor_between_two_runs(monkeypatch, hashed):
    monkeypatch.setattr(refills, "HASH_HOST_TENSORS", hashed)
    case = small_case([3, 1, 5], [7, 1, 20])
    indptr, indices, last = case.kv_indptr_indices_last()
    wrapper = FakeWrapper.make("BatchPrefillWithPagedKVCacheWrapper")
    heads = (case.q.shape[1], case.kv_cache.shape[2], case.q.shape[2], case.page_size)
    wrapper.plan(case.cu_seqlens_q, indptr, indices, last, *heads, causal=True)
    assert wrapper.run(case.q, case.kv_cache) == LAUNCHED
    assert wrapper.run(case.q, case.kv_cache) == LAUNCHED  # the second layer: a memo hit
    version = indices._version
    indices.numpy()[0] = case.num_pages + 2  # vLLM's host buffers are numpy views: a raw write
    assert indices._version == version  # what the memo's content key used to rely on
    if hashed:
        with pytest.raises(FmhaInvariantError, match="page-id-range"):
            wrapper.run(case.q, case.kv_cache)
    else:  # the blind spot this closes: the same key, a memo hit, the bad page id unchecked
        assert wrapper.run(case.q, case.kv_cache) == LAUNCHED


def test_numpy_write_into_block_tables_between_two_decode_launches():
    decode = fresh_decode()
    case = small_case([1, 1, 1], [5, 9, 13])
    kwargs = decode_kwargs(case)
    assert decode(**kwargs) == LAUNCHED
    kwargs["block_tables"].numpy()[1, 0] = case.num_pages  # in place, no _version bump
    with pytest.raises(FmhaInvariantError, match="page-id-range"):
        decode(**kwargs)
    # a write that changes nothing the checks read would still re-check once; unchanged bytes hit
    kwargs["block_tables"].numpy()[1, 0] = 0
    assert decode(**kwargs) == LAUNCHED
    hits = STATE.value_memo_hits
    assert decode(**kwargs) == LAUNCHED and STATE.value_memo_hits == hits + 1


def test_content_part_and_marks(monkeypatch):
    host = torch.arange(6, dtype=torch.int32)
    key = version_key(host)
    host.numpy()[2] = 40
    assert version_key(host) != key  # the bytes are in the key
    monkeypatch.setattr(refills, "HASH_HOST_TENSORS", False)
    before = version_key(host[:4])
    assert refills.mark((host,), {}) == 1  # a slice and its buffer share one storage mark
    assert version_key(host[:4]) != before
    assert refills.mark((torch.zeros(3),), {}) == 0  # float tensors are no metadata: never marked
    marked = version_key(host)
    configure("shapes")
    configure("values")  # rising to values: writes made below it were not marked
    assert version_key(host) != marked


def test_a_tensor_whose_bytes_cannot_be_read_is_checked_every_time():
    grad = torch.zeros(3, requires_grad=True)  # .numpy() refuses it
    assert refills.content_part(grad) != refills.content_part(grad)


# ----------------------------------------------------------------- Triton kernels (interpreted)


@pytest.fixture(scope="module")
def triton_dir() -> Path:
    """The Triton the vLLM kit installs into ``.cache/engines/site-py311-vllm`` (pip, once)."""
    from tests.engines.run_vllm import vllm_support_site

    path = vllm_support_site() / "triton"
    assert (path / "__init__.py").is_file(), f"pip installed no triton into {path.parent}"
    return path


_TRITON_SCRIPT = textwrap.dedent("""
    import functools, json, os, sys
    import torch
    import flashinfer.decode as decode_module
    from runtime_checks import refills
    from runtime_checks.kernel_specs import ENTRY_POINTS
    from runtime_checks.launch_guard import make_guard
    from runtime_checks.state import STATE, configure
    from guardrails import FmhaInvariantError
    from tests.launch_args import decode_kwargs, paged_case

    mode = os.environ["REFILL_MODE"]
    entry = next(e for e in ENTRY_POINTS if e.qualname == "trtllm_batch_decode_with_kv_cache")

    @functools.wraps(decode_module.trtllm_batch_decode_with_kv_cache)
    def stub(*a, **k):
        return "launched"

    guard = make_guard(entry, stub)          # Triton not imported yet: hooked at its import
    import triton, triton.language as tl     # noqa: E401
    hooked_at_import = refills.is_hooked()

    @triton.jit
    def fill_page_ids(table, row_stride, rows, value):
        r = tl.program_id(0)
        tl.store(table + r * row_stride, tl.where(r == rows - 1, value, tl.load(table + r * row_stride)))

    configure("values", "raise")
    refills.HASH_HOST_TENSORS = False        # CPU tensors here: show the Triton marks alone catch it
    case = paged_case([1, 1, 1], [5, 9, 13], page_size=4, num_kv_heads=2, group=2, head_dim=8)
    kwargs = decode_kwargs(case)
    table = kwargs["block_tables"]
    if mode == "unhooked":
        refills.uninstall()
    assert guard(**kwargs) == "launched" and guard(**kwargs) == "launched"
    version = table._version
    fill_page_ids[(table.shape[0],)](table, table.stride(0), table.shape[0], case.num_pages + 3)
    out = {"hooked_at_import": hooked_at_import, "version_unchanged": table._version == version,
           "written": int(table[-1, 0]), "num_pages": case.num_pages}
    try:
        guard(**kwargs)
        out["caught"] = None
    except FmhaInvariantError as exc:
        out["caught"] = exc.invariant
    out["stats"] = refills.stats()
    refills.uninstall()
    launcher = sys.modules["triton.runtime.interpreter"].GridExecutor
    out["restored"] = getattr(launcher.__dict__["__call__"], "__fmha_guard_refills__", None) is None
    print("RESULT " + json.dumps(out))
""")


def _run_triton(mode: str, tmp_path: Path, triton_dir: Path) -> dict:
    shim = tmp_path / "triton-only"
    shim.mkdir(exist_ok=True)
    link = shim / "triton"
    if not link.exists():
        link.symlink_to(triton_dir, target_is_directory=True)
    env = {**os.environ, "TRITON_INTERPRET": "1", "REFILL_MODE": mode, "FLASHINFER_NO_DOWNLOAD": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(shim)])}
    env.pop("FMHA_GUARD", None)
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.network
def test_a_triton_kernel_writing_a_bad_page_id_into_a_reused_buffer_is_caught(tmp_path, triton_dir):
    out = _run_triton("hooked", tmp_path, triton_dir)
    assert out["hooked_at_import"] and out["version_unchanged"] and out["written"] == out["num_pages"] + 3
    assert out["caught"] == "page-id-range"
    assert out["stats"]["triton_launches_marked"] == 1 and out["restored"]


@pytest.mark.network
def test_control_without_the_triton_hook_the_refill_goes_unchecked(tmp_path, triton_dir):
    out = _run_triton("unhooked", tmp_path, triton_dir)
    assert out["version_unchanged"] and out["written"] == out["num_pages"] + 3
    assert out["caught"] is None  # the memo hit: what the hook exists for
