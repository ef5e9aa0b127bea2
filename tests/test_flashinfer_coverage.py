"""FlashInfer's real Python entry points under the runtime guard, one case per argument form.

Every case calls the installed FlashInfer's public API (wrapper ``plan`` / ``run``,
``fast_decode_plan``, ``xqa_batch_decode_with_kv_cache``, ``trtllm_*``,
``trtllm_fmha_v2_prefill``, ``trtllm_batch_decode_sparse_mla_dsv4``, the MLA wrapper) with its compiled layer replaced by the
recorders of ``tests/engines/flashinfer_recorders.py`` and the CUDA queries answered on
the CPU (``tests/engines/cuda_on_cpu.py``). Both patch process-wide state, so the cases
run in one child process (:func:`_child_main`) and each test reads its case's outcome:
the invariant the guard raised (``None``: the launch went through), the entry points
that failed internally, how many launches the guard checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import REPO

CASES: dict[str, Callable[[], Any]] = {}


def case(name: str, capability: tuple[int, int] = (9, 0)) -> Callable:
    def deco(fn: Callable[[], Any]) -> Callable[[], Any]:
        fn.capability = capability  # type: ignore[attr-defined]
        CASES[name] = fn
        return fn

    return deco


# ------------------------------------------------------------------ building blocks (child only)

H, HKV, D, PAGE = 4, 2, 64, 16


def _t(values, dtype=None):
    import torch

    return torch.tensor(values, dtype=dtype or torch.int32)


def _ws(mb: int = 16):
    import torch

    return torch.zeros(mb * 1024 * 1024, dtype=torch.uint8)


def _paged(num_pages: int, page_size: int = PAGE, layout: str = "NHD", form: str = "tuple"):
    """A paged KV cache in one of FlashInfer's forms."""
    import torch

    page = (page_size, HKV, D) if layout == "NHD" else (HKV, page_size, D)
    if form == "tuple":
        return (torch.zeros(num_pages, *page, dtype=torch.float16), torch.zeros(num_pages, *page, dtype=torch.float16))
    if form == "tuple3d":  # page size 1: SGLang's token pool
        return (torch.zeros(num_pages, HKV, D, dtype=torch.float16), torch.zeros(num_pages, HKV, D, dtype=torch.float16))
    if form == "single4d":  # [P, 2, H, D], page size 1
        return torch.zeros(num_pages, 2, HKV, D, dtype=torch.float16)
    if form == "single5d":
        return torch.zeros(num_pages, 2, *page, dtype=torch.float16)
    if form == "shared5d":  # [P, 1, ...]: K and V share the pages
        return torch.zeros(num_pages, 1, *page, dtype=torch.float16)
    raise KeyError(form)


def _q(rows: int, heads: int = H, dim: int = D):
    import torch

    return torch.zeros(rows, heads, dim, dtype=torch.float16)


def _decode_wrapper(layout: str = "NHD", **kw):
    from flashinfer.decode import BatchDecodeWithPagedKVCacheWrapper

    return BatchDecodeWithPagedKVCacheWrapper(_ws(), layout, **kw)


def _prefill_wrapper(layout: str = "NHD", **kw):
    from flashinfer.prefill import BatchPrefillWithPagedKVCacheWrapper

    return BatchPrefillWithPagedKVCacheWrapper(_ws(), layout, **kw)


# two requests: 20 and 35 tokens, pages of 16: 2 + 3 pages, last pages hold 4 and 3 tokens
INDPTR, INDICES, LAST = [0, 2, 5], [3, 7, 1, 8, 2], [4, 3]


# ------------------------------------------------------------------ paged decode / prefill wrappers


def _decode(indices=INDICES, layout: str = "NHD", form: str = "tuple", alias: bool = False, rows: int = 2):
    """Plan a decode wrapper over INDPTR / ``indices`` / LAST (``begin_forward`` and
    ``forward`` with ``alias``) and run it on a 10-page cache of ``form``."""
    w = _decode_wrapper(layout)
    (w.begin_forward if alias else w.plan)(_t(INDPTR), _t(indices), _t(LAST), H, HKV, D, PAGE)
    (w.forward if alias else w.run)(_q(rows), _paged(10, layout=layout, form=form))


@case("decode wrapper: (k, v) 4-D NHD, host plan tensors")
def _():
    _decode()


@case("decode wrapper: page id past the pool")
def _():
    _decode([3, 7, 1, 10, 2])


@case("decode wrapper: negative page id")
def _():
    _decode([3, -1, 1, 8, 2])


@case("decode wrapper: begin_forward alias, single 5-D HND cache")
def _():
    _decode(layout="HND", form="single5d", alias=True)


@case("decode wrapper: begin_forward alias, page id past the pool")
def _():
    _decode([3, 7, 1, 10, 2], alias=True)


@case("decode wrapper: DP padding after planning (query has more rows)")
def _():
    _decode(rows=4)


@case("prefill wrapper: 3-D token caches (page size 1), long kv_indices buffer")
def _():
    w = _prefill_wrapper()
    indices = list(range(20)) + [999] * 30  # only the used prefix is read
    w.begin_forward(_t([0, 3, 5]), _t([0, 8, 20]), _t(indices), _t([1, 1]), H, HKV, D, 1)
    w.forward(_q(5), _paged(40, form="tuple3d"), causal=True)


@case("prefill wrapper: 3-D token caches, page id past the pool")
def _():
    w = _prefill_wrapper()
    indices = list(range(19)) + [40]
    w.begin_forward(_t([0, 3, 5]), _t([0, 8, 20]), _t(indices), _t([1, 1]), H, HKV, D, 1)
    w.forward(_q(5), _paged(40, form="tuple3d"), causal=True)


@case("prefill wrapper: single 4-D [P, 2, H, D] cache (page size 1)")
def _():
    w = _prefill_wrapper()
    w.plan(_t([0, 3, 5]), _t([0, 8, 20]), _t(list(range(20))), _t([1, 1]), H, HKV, D, 1, causal=True)
    w.run(_q(5), _paged(40, form="single4d"))


@case("prefill wrapper: prefix-only plan, causal=False, prefix shorter than the new tokens")
def _():
    # SGLang: the paged wrapper attends the cached prefix (0 and 2 tokens) with causal=False,
    # the ragged wrapper the new tokens; merge_state combines them
    w = _prefill_wrapper()
    w.begin_forward(_t([0, 3, 6]), _t([0, 0, 2]), _t([5, 6]), _t([1, 1]), H, HKV, D, 1)
    w.forward_return_lse(_q(6), _paged(40, form="tuple3d"), causal=False)


@case("prefill wrapper: the same prefix-only plan run causal")
def _():
    w = _prefill_wrapper()
    w.begin_forward(_t([0, 3, 6]), _t([0, 1, 3]), _t([5, 6, 7]), _t([1, 1]), H, HKV, D, 1)
    w.forward(_q(6), _paged(40, form="tuple3d"), causal=True)


@case("prefill wrapper: kv_indptr starting at an offset into the full kv_indices (vLLM mixed batch)")
def _():
    # decodes own pages 0..4 of the full kv_indices; the prefill plan gets indptr[2:]
    w = _prefill_wrapper()
    full = [9, 9, 9, 9, 9, 3, 7, 1, 8, 2]
    w.plan(_t([0, 7, 15]), _t([5, 7, 10]), _t(full), _t([4, 3]), H, HKV, D, PAGE, causal=True)
    w.run(_q(15), _paged(10))


@case("prefill wrapper: offset kv_indptr, page id past the pool in the used slice")
def _():
    w = _prefill_wrapper()
    full = [99, 99, 99, 99, 99, 3, 7, 1, 10, 2]  # ids before kv_indptr[0] are never read
    w.plan(_t([0, 7, 15]), _t([5, 7, 10]), _t(full), _t([4, 3]), H, HKV, D, PAGE, causal=True)
    w.run(_q(15), _paged(10))


# ------------------------------------------------------------------ plans that bypass plan()


@case("fast_decode_plan: the run reads the wrapper's buffers")
def _():
    from flashinfer.decode import fast_decode_plan

    w = _decode_wrapper()
    w.plan(_t(INDPTR), _t(INDICES), _t(LAST), H, HKV, D, PAGE)
    fast_decode_plan(w, _t(INDPTR), _t([3, 7, 1, 8, 2]), _t(LAST), H, HKV, D, PAGE)
    w.run(_q(2), _paged(10))


@case("fast_decode_plan: page id past the pool")
def _():
    import functools

    from flashinfer.decode import fast_decode_plan

    w = _decode_wrapper()
    w.plan(_t(INDPTR), _t(INDICES), _t(LAST), H, HKV, D, PAGE)
    w.begin_forward = functools.partial(fast_decode_plan, w)  # as SGLang installs it
    w.begin_forward(_t(INDPTR), _t([3, 7, 1, 12, 2]), _t(LAST), H, HKV, D, PAGE)
    w.run(_q(2), _paged(10))


def _graph_decode_wrapper():
    import torch

    bufs = dict(indptr=torch.zeros(3, dtype=torch.int32), indices=torch.zeros(64, dtype=torch.int32),
                last_page_len=torch.zeros(2, dtype=torch.int32))
    w = _decode_wrapper(use_cuda_graph=True, paged_kv_indptr_buffer=bufs["indptr"],
                        paged_kv_indices_buffer=bufs["indices"],
                        paged_kv_last_page_len_buffer=bufs["last_page_len"])
    return w, bufs


@case("CUDA-graph decode wrapper: buffers refilled in place, then run")
def _():
    w, bufs = _graph_decode_wrapper()
    w.plan(_t(INDPTR), _t(INDICES), _t(LAST), H, HKV, D, PAGE)
    bufs["indices"][:5].copy_(_t([4, 5, 6, 7, 8]))  # the engine's replay refill
    w.run(_q(2), _paged(10))


@case("CUDA-graph decode wrapper: refill with a page id past the pool")
def _():
    w, bufs = _graph_decode_wrapper()
    w.plan(_t(INDPTR), _t(INDICES), _t(LAST), H, HKV, D, PAGE)
    bufs["indices"][:5].copy_(_t([4, 5, 6, 17, 8]))
    w.run(_q(2), _paged(10))


def _sglang_fast_prefill(indices):
    import torch

    qo, kvp, idx, last = (torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.int32),
                          torch.zeros(64, dtype=torch.int32), torch.zeros(2, dtype=torch.int32))
    w = _prefill_wrapper(use_cuda_graph=True, qo_indptr_buf=qo, paged_kv_indptr_buf=kvp,
                         paged_kv_indices_buf=idx, paged_kv_last_page_len_buf=last)
    w.plan(_t([0, 3, 6]), _t(INDPTR), _t(INDICES), _t(LAST), H, HKV, D, PAGE, causal=True)
    # replay: the engine writes the buffers itself and calls the compiled plan, not plan()
    w._qo_indptr_buf.copy_(_t([0, 3, 6]))
    w._paged_kv_indices_buf[:5].copy_(_t(indices))
    w.run(_q(6), _paged(10))


@case("SGLang-style fast_prefill_plan: buffers written directly, then run")
def _():
    _sglang_fast_prefill([1, 2, 3, 4, 9])


@case("SGLang-style fast_prefill_plan: a page id past the pool written directly")
def _():
    _sglang_fast_prefill([1, 2, 3, 4, 11])


# ------------------------------------------------------------------ ragged wrapper


def _ragged_plan(causal: bool = True):
    from flashinfer.prefill import BatchPrefillWithRaggedKVCacheWrapper

    w = BatchPrefillWithRaggedKVCacheWrapper(_ws(), "NHD")
    w.begin_forward(_t([0, 3, 5]), _t([0, 3, 5]), H, HKV, D, causal=causal)
    return w


@case("ragged wrapper: plan (begin_forward) and forward_return_lse")
def _():
    import torch

    w = _ragged_plan()
    k = torch.zeros(5, HKV, D, dtype=torch.float16)
    w.forward_return_lse(_q(5), k, k.clone(), causal=True)


@case("ragged wrapper: k / v shorter than kv_indptr[-1]")
def _():
    import torch

    w = _ragged_plan()
    k = torch.zeros(4, HKV, D, dtype=torch.float16)
    w.run(_q(5), k, k.clone())


# ------------------------------------------------------------------ MLA wrapper


def _mla(kv_indices, page_size: int = 1, metadata: bool = False):
    import torch
    from flashinfer.mla import BatchMLAPagedAttentionWrapper, MLAPlanMetadata

    w = BatchMLAPagedAttentionWrapper(_ws(), backend="auto")
    csr = dict(qo_indptr=_t([0, 1, 2]), kv_indptr=_t([0, 6, 24]), kv_indices=_t(kv_indices), kv_len_arr=_t([6, 18]))
    rest = dict(num_heads=16, head_dim_ckv=512, head_dim_kpe=64, page_size=page_size, causal=False,
                sm_scale=0.04, q_data_type=torch.float16, kv_data_type=torch.float16)
    if metadata:
        w.plan(metadata=MLAPlanMetadata.csr(**csr), **rest)
    else:
        w.plan(**csr, **rest)
    ckv = torch.zeros(40, page_size, 512, dtype=torch.float16)
    kpe = torch.zeros(40, page_size, 64, dtype=torch.float16)
    q_nope, q_pe = torch.zeros(2, 16, 512, dtype=torch.float16), torch.zeros(2, 16, 64, dtype=torch.float16)
    if metadata:  # canonical metadata plans packed inputs: [T, H, 512 + 64], [P, page, 512 + 64]
        w.run(query=torch.cat([q_nope, q_pe], dim=-1), kv_cache=torch.cat([ckv, kpe], dim=-1))
    else:
        w.run(q_nope, q_pe, ckv, kpe)


@case("MLA wrapper: flat CSR plan, split query and cache")
def _():
    _mla(list(range(24)))


@case("MLA wrapper: MLAPlanMetadata.csr, packed query= / kv_cache=")
def _():
    _mla(list(range(24)), metadata=True)


@case("MLA wrapper: page id past the pool")
def _():
    _mla(list(range(23)) + [40])


# ------------------------------------------------------------------ xqa / trtllm-gen functions


def _xqa(block_tables, seq_lens, q_len: int = 1, kv=None, **kw):
    import torch
    from flashinfer.decode import xqa_batch_decode_with_kv_cache

    bs = len(seq_lens)
    if q_len > 1:  # the draft-block mask vLLM passes: uint16 [batch, q_len, 2]
        kw.setdefault("mask", torch.zeros(bs, q_len, 2, dtype=torch.uint16))
    return xqa_batch_decode_with_kv_cache(
        torch.zeros(bs * q_len, H, D, dtype=torch.float16), _paged(10) if kv is None else kv, _ws(), block_tables,
        _t(seq_lens), max(max(seq_lens), 1), q_len_per_req=q_len, **kw)


@case("xqa: NHD (k, v), padded CUDA-graph row with seq_len 0")
def _():
    _xqa(_t([[1, 2, 0, 0], [3, 4, 5, 0], [0, 0, 0, 0]]), [20, 35, 0])


@case("xqa: spec decode (q_len_per_req 3) with a padding row")
def _():
    _xqa(_t([[1, 2, 0, 0], [3, 4, 5, 0], [0, 0, 0, 0]]), [20, 35, 0], q_len=3)


@case("xqa: single [P, 1, ...] cache (K and V share the pages)")
def _():
    _xqa(_t([[1, 2, 0, 0], [3, 4, 5, 0]]), [20, 35], kv=_paged(10, form="shared5d"))


@case("xqa: block table sliced by columns (row stride 8, width 4)")
def _():
    import torch

    table = torch.zeros(2, 8, dtype=torch.int32)
    table[0, :2] = _t([1, 2])
    table[1, :3] = _t([3, 4, 5])
    _xqa(table[:, :4], [20, 35])


@case("xqa: page id past the pool")
def _():
    _xqa(_t([[1, 2, 0, 0], [3, 4, 10, 0]]), [20, 35])


@case("xqa: a seq_len shorter than the spec-decode query (not a padding row)")
def _():
    _xqa(_t([[1, 2, 0, 0], [3, 4, 5, 0]]), [20, 2], q_len=3)


def _trtllm_decode(block_tables, seq_lens, q_len: int = 1, kv=None, **kw):
    import torch
    from flashinfer.decode import trtllm_batch_decode_with_kv_cache

    bs = len(seq_lens)
    kv = _paged(10, layout="HND") if kv is None else kv
    return trtllm_batch_decode_with_kv_cache(
        torch.zeros(bs * q_len, H, D, dtype=torch.bfloat16), kv, _ws(), block_tables, _t(seq_lens),
        max(max(seq_lens), 1), q_len_per_req=q_len, **kw)


def _bf16(kv):
    import torch

    return tuple(t.to(torch.bfloat16) for t in kv) if isinstance(kv, tuple) else kv.to(torch.bfloat16)


@case("trtllm decode: padded CUDA-graph rows with seq_len 0 (vLLM FULL graphs)", capability=(10, 0))
def _():
    _trtllm_decode(_t([[1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]), [20, 0, 0], kv=_bf16(_paged(10, layout="HND")))


@case("trtllm decode: single [P, 1, ...] HND cache", capability=(10, 0))
def _():
    _trtllm_decode(_t([[1, 2], [3, 4]]), [20, 30], kv=_bf16(_paged(10, layout="HND", form="shared5d")))


@case("trtllm decode: [batch, 2, pages] block table (separate K and V ids)", capability=(10, 0))
def _():
    _trtllm_decode(_t([[[1, 2], [5, 6]], [[3, 4], [7, 8]]]), [20, 30], kv=_bf16(_paged(10, layout="HND")),
                   uses_shared_paged_kv_idx=False)


@case("trtllm decode: [batch, 2, pages] table, V id past the pool", capability=(10, 0))
def _():
    _trtllm_decode(_t([[[1, 2], [5, 6]], [[3, 4], [7, 10]]]), [20, 30], kv=_bf16(_paged(10, layout="HND")),
                   uses_shared_paged_kv_idx=False)


def _context(cum_seq_lens_kv, batch_size: int = 2):
    import torch
    from flashinfer.prefill import trtllm_batch_context_with_kv_cache

    return trtllm_batch_context_with_kv_cache(
        torch.zeros(32, H, D, dtype=torch.bfloat16), _bf16(_paged(10, layout="HND")), _ws(),
        _t([[1, 2, 0], [3, 4, 5]]), _t([24, 40]), 24, 40, 1.0, 1.0, batch_size, _t([0, 24, 32]), cum_seq_lens_kv)


@case("trtllm context: cum_seq_lens_kv holds page offsets (vLLM's paged_kv_indptr)", capability=(10, 0))
def _():
    _context(_t([0, 2, 5]))


@case("trtllm context: DP-padded batch_size", capability=(10, 0))
def _():
    _context(_t([0, 2, 5]), batch_size=4)


def _fmha_v2(block_offsets=None, batch_size: int = 2, cum_kv=(0, 8, 27), separate: bool = True):
    import torch
    from flashinfer.prefill import trtllm_fmha_v2_prefill

    pages = 11
    pool = torch.zeros(2 * pages, PAGE, HKV, D, dtype=torch.float16)  # K half, then V half
    k, v = pool[:pages], pool[pages:]
    table = _t([[1, 3, 0, 0], [2, 4, 0, 0]])
    if separate:
        tables = torch.stack([table, table + pages], dim=1) if block_offsets is None else block_offsets
        paged = (k, v)
    else:
        tables = table
        paged = torch.zeros(pages, 2, PAGE, HKV, D, dtype=torch.float16)
    return trtllm_fmha_v2_prefill(
        (torch.zeros(5, H, D, dtype=torch.float16), paged), "Q_PAGED_KV_NHD", _ws(), _t([8, 19]), 3, 64, 0.125,
        1.0, batch_size, _t([0, 3, 5]), _t(list(cum_kv)), block_tables=tables, out_dtype=torch.float16,
        mask_mode="causal")


@case("fmha_v2: SGLang's (k, v) pool halves with pre-expanded [B, 2, M] offsets")
def _():
    _fmha_v2()


@case("fmha_v2: stacked [P, 2, ...] cache with a shared [B, M] table")
def _():
    _fmha_v2(separate=False)


@case("fmha_v2: a V block offset past the V half")
def _():
    table = _t([[1, 3, 0, 0], [2, 4, 0, 0]])
    bad = table + 11
    bad[1, 1] = 11 + 11
    _fmha_v2(block_offsets=__import__("torch").stack([table, bad], dim=1))


@case("fmha_v2: DP-padded batch_size (SGLang 0.5.23 passes forward_batch.batch_size)")
def _():
    _fmha_v2(batch_size=4)


@case("fmha_v2: cum_seq_lens_kv disagrees with seq_lens")
def _():
    _fmha_v2(cum_kv=(0, 8, 28))


def _dsv4(seq_lens, cum_seq_lens_q=None, rows: int = 2):
    import torch
    from flashinfer.mla import trtllm_batch_decode_sparse_mla_dsv4

    varlen = cum_seq_lens_q is not None
    q = torch.zeros(*((rows,) if varlen else (rows, 1)), 16, 512, dtype=torch.bfloat16)
    swa = torch.zeros(40, 1, 64, 512, dtype=torch.bfloat16)
    extra = dict(cum_seq_lens_q=_t(cum_seq_lens_q), max_q_len=3) if varlen else {}
    trtllm_batch_decode_sparse_mla_dsv4(
        q, swa, _ws(1), sparse_indices=torch.zeros(rows, 192, dtype=torch.int32), compressed_kv_cache=swa,
        sparse_topk_lens=torch.full((rows,), 150, dtype=torch.int32), seq_lens=_t(seq_lens), kv_layout="HND",
        backend="trtllm-gen", **extra)


@case("sparse MLA dsv4: dense decode query", capability=(10, 0))
def _():
    _dsv4([100, 120])


@case("sparse MLA dsv4: seq_lens of a padded batch size", capability=(10, 0))
def _():
    _dsv4([100, 120, 1, 1])


@case("sparse MLA dsv4: varlen cum_seq_lens_q past the query rows", capability=(10, 0))
def _():
    _dsv4([100, 120], cum_seq_lens_q=[0, 3, 6], rows=5)


# ------------------------------------------------------------------ child process


def _run_case(fn: Callable[[], Any]) -> dict[str, Any]:
    from guardrails.errors import FmhaInvariantError
    from runtime_checks.state import STATE
    from tests.engines import cuda_on_cpu

    cuda_on_cpu.set_capability(fn.capability)  # type: ignore[attr-defined]
    STATE.reset_counters()
    out: dict[str, Any] = {"invariant": None}
    try:
        fn()
    except FmhaInvariantError as exc:
        out["invariant"] = exc.invariant
        out["message"] = str(exc)[:600]
    except Exception as exc:  # the case itself broke (FlashInfer refused the call)
        out["error"] = "".join(traceback.format_exception(exc))[-2000:]
    out["launches"] = STATE.launches
    out["internal_errors"] = sorted(STATE.internal_errors)
    return out


def _child_main() -> None:
    os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    from tests.engines import cuda_on_cpu

    cuda_on_cpu.install((9, 0))
    import runtime_checks

    runtime_checks.install("values", "raise")
    import flashinfer  # noqa: F401  (patched at import)

    from tests.engines import flashinfer_recorders

    flashinfer_recorders.install()
    print(json.dumps({name: _run_case(fn) for name, fn in CASES.items()}))


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMHA_GUARD")}
    env.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", "from tests.test_flashinfer_coverage import _child_main; _child_main()"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FAULTS = {
    "decode wrapper: page id past the pool": "page-id-range",
    "decode wrapper: negative page id": "page-id-range",
    "decode wrapper: begin_forward alias, page id past the pool": "page-id-range",
    "decode wrapper: DP padding after planning (query has more rows)": "query-rows",
    "prefill wrapper: 3-D token caches, page id past the pool": "page-id-range",
    "prefill wrapper: the same prefix-only plan run causal": "seq-len-covers-query",
    "prefill wrapper: offset kv_indptr, page id past the pool in the used slice": "page-id-range",
    "fast_decode_plan: page id past the pool": "page-id-range",
    "CUDA-graph decode wrapper: refill with a page id past the pool": "page-id-range",
    "ragged wrapper: k / v shorter than kv_indptr[-1]": "cu-seqlens-monotone",
    "MLA wrapper: page id past the pool": "page-id-range",
    "xqa: block table sliced by columns (row stride 8, width 4)": "metadata-dtype-device",
    "xqa: page id past the pool": "page-id-range",
    "xqa: a seq_len shorter than the spec-decode query (not a padding row)": "seq-len-covers-query",
    "trtllm decode: [batch, 2, pages] table, V id past the pool": "page-id-range",
    "trtllm context: DP-padded batch_size": "batch-size",
    "fmha_v2: a V block offset past the V half": "page-id-range",
    "fmha_v2: DP-padded batch_size (SGLang 0.5.23 passes forward_batch.batch_size)": "batch-size",
    "fmha_v2: cum_seq_lens_kv disagrees with seq_lens": "cu-seqlens-monotone",
    "sparse MLA dsv4: seq_lens of a padded batch size": "batch-size",
    "sparse MLA dsv4: varlen cum_seq_lens_q past the query rows": "cu-seqlens-monotone",
    "SGLang-style fast_prefill_plan: a page id past the pool written directly": "page-id-range",
}


VALID = [name for name in CASES if name not in FAULTS]


def test_every_fault_is_a_case():
    assert set(FAULTS) <= set(CASES)


@pytest.mark.parametrize("name", VALID)
def test_valid_forms_pass_checked(outcomes, name):
    """Each accepted form is checked (launches counted, no internal error) and passes."""
    out = outcomes[name]
    assert "error" not in out, out.get("error")
    assert out["internal_errors"] == []
    assert out["invariant"] is None, out.get("message")
    assert out["launches"] >= 1


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_faults_raise_the_invariant(outcomes, name):
    out = outcomes[name]
    assert "error" not in out, out.get("error")
    assert out["internal_errors"] == []
    assert out["invariant"] == FAULTS[name], out.get("message")


# ------------------------------------------------------------------ in-process unit tests


class _Wrapper:
    """A stand-in wrapper object with FlashInfer 0.7.2's planned-state attributes."""

    _kv_layout = "NHD"
    _use_cuda_graph = False
    _causal = None


def _specs():
    """The decode wrapper's plan / run specs over FlashInfer's real signatures, sharing
    their own plan store."""
    import weakref

    flashinfer_decode = pytest.importorskip("flashinfer.decode")
    from runtime_checks.kernel_specs.flashinfer_wrappers import DecodePlanSpec, DecodeRunSpec

    cls = flashinfer_decode.BatchDecodeWithPagedKVCacheWrapper
    unwrap = lambda f: getattr(f, "__wrapped__", f)  # noqa: E731  (a guard installed by another test)
    plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    return DecodePlanSpec(unwrap(cls.__dict__["plan"]), plans), DecodeRunSpec(unwrap(cls.__dict__["run"]), plans)


def _planned(plan_spec, wrapper, indptr, indices, last):
    ns = plan_spec.read((wrapper, indptr, indices, last, H, HKV, D, PAGE), {})
    plan_spec.remember(ns, plan_spec.describe(ns)[0])
    # what FlashInfer's plan leaves behind without CUDA graphs: device copies of the arguments
    wrapper._paged_kv_indptr_buf, wrapper._paged_kv_indices_buf = indptr.clone(), indices.clone()
    wrapper._paged_kv_last_page_len_buf, wrapper._plan_info = last.clone(), object()
    plan_spec.after(ns)


def test_run_reads_the_plan_arguments_while_the_planned_state_holds():
    """Host plan tensors are checked at run from themselves (no device read) as long as
    the wrapper's buffers and plan info are the ones its plan left."""
    plan_spec, run_spec = _specs()
    w = _Wrapper()
    indptr, indices, last = _t(INDPTR), _t(INDICES), _t(LAST)
    _planned(plan_spec, w, indptr, indices, last)
    ns = run_spec.read((w, _q(2), _paged(10)), {})
    assert set(map(id, run_spec.value_refs(ns))) == {id(indptr), id(indices), id(last)}
    batch, cache = run_spec.describe(ns)
    assert batch.kv_indices is indices and batch.metadata_copied and cache.num_pages == 10


def test_run_reads_the_wrappers_buffers_after_a_bypassed_plan():
    """A plan that skipped plan() (new plan info, buffers written in place or rebound):
    the run checks the wrapper's buffers; on a CUDA-graph wrapper always."""
    plan_spec, run_spec = _specs()
    for bypass in ("rebound", "written in place", "cuda graph"):
        w = _Wrapper()
        _planned(plan_spec, w, _t(INDPTR), _t(INDICES), _t(LAST))
        if bypass == "rebound":
            w._paged_kv_indices_buf, w._plan_info = _t([1, 2, 3, 4, 5]), object()
        elif bypass == "written in place":
            w._paged_kv_indices_buf.copy_(_t([1, 2, 3, 4, 5]))
        else:
            w._use_cuda_graph = True
        ns = run_spec.read((w, _q(2), _paged(10)), {})
        assert set(map(id, run_spec.value_refs(ns))) == {
            id(w._paged_kv_indptr_buf), id(w._paged_kv_indices_buf), id(w._paged_kv_last_page_len_buf)}, bypass
        batch, _ = run_spec.describe(ns)
        assert batch.kv_indices is w._paged_kv_indices_buf and not batch.metadata_copied, bypass


def test_staged_plan_metadata_may_sit_on_another_device():
    """A wrapper plan takes its index tensors on the host or the device (it stages them):
    metadata-dtype-device leaves their device alone there, and only there."""
    import torch

    from guardrails import AttentionBatch, ForwardMode, find_violations

    fields = dict(forward_mode=ForwardMode.DECODE, query=torch.empty(2, H, D, device="meta"),
                  kv_indptr=_t(INDPTR), kv_indices=_t(INDICES), kv_last_page_len=_t(LAST))
    assert [e.invariant for e in find_violations(AttentionBatch(**fields), level="shapes")] == ["metadata-dtype-device"]
    assert find_violations(AttentionBatch(**fields, metadata_copied=True), level="shapes") == []
