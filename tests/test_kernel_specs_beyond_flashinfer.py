"""The runtime guard on the kernels beyond FlashInfer: SGLang's FA3 / FA4 (``sgl_kernel``),
vLLM's ``vllm_flash_attn`` and FlashMLA (``sgl_kernel.flash_mla``, ``flash_mla``,
``vllm.third_party.flashmla``).

None of these libraries is installed here (CUDA-only wheels). Their entry points are
recorder functions with the published signatures (``tests/engines/kernel_recorders.py``:
sgl-kernel 0.3.21, sglang-kernel 0.4.10, sgl-flash-mla 1.0.0;
``tests/engines/vllm_recorders.py``: vLLM 0.33 / 0.34), registered under their real
module names for the test and removed after it. Each entry point is called with valid
arguments in the forms the engines use (the engine kits' inventories:
``python -m tests.engines.run_sglang --inventory``, ``python -m tests.engines.run_vllm
--inventory``), then with one seeded fault each, caught as the invariant that names it.
CPU only, no network.
"""

from __future__ import annotations

import logging
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

import runtime_checks
from guardrails import FmhaInvariantError
from runtime_checks import activation, armed
from runtime_checks.state import STATE

from .engines import kernel_recorders as kr
from .engines import vllm_recorders as vr
from .engines.kernel_calls import LOG
from .test_runtime_activation import clean_env, run_script

REPO = Path(__file__).resolve().parent.parent
_LIBRARIES = ("sgl_kernel", "flash_mla", "vllm")


def _module(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_module(parent), child, module)
    return module


def _register(signatures: dict[str, str], label: str) -> None:
    """Recorder functions with the published signatures, under their real module names."""
    for qualname, text in signatures.items():
        module_name, _, attr = qualname.rpartition(".")
        setattr(_module(module_name), attr, kr.recorder(qualname, text, label))


@pytest.fixture
def libraries():
    """Install the recorder libraries (a dict: which signature set), then the guard at
    ``values`` / ``raise``; everything is put back afterwards."""
    saved = {name: module for name, module in sys.modules.items() if name.partition(".")[0] in _LIBRARIES}
    assert not saved, f"a kernel library is really imported here: {sorted(saved)}"
    installed: list[str] = []

    def install(*distributions: str, vllm: bool = False) -> None:
        for distribution in distributions:
            _register(kr.SIGNATURES[distribution], distribution)
        if "sgl-flash-mla==1.0.0" in distributions:  # defined in flash_mla_interface, re-exported
            interface = _module("flash_mla.flash_mla_interface")
            for name in ("get_mla_metadata", "get_mla_decoding_metadata", "flash_mla_with_kvcache",
                         "flash_mla_sparse_fwd", "flash_attn_varlen_func"):
                setattr(interface, name, getattr(sys.modules["flash_mla"], name))
        if vllm:
            _register(vr.PYTHON_SIGNATURES, "vllm==0.34.0")
        installed.extend(distributions)
        runtime_checks.install("values", "raise")
        STATE.reset_counters()

    try:
        yield install
    finally:
        runtime_checks.uninstall()
        for name in [n for n in sys.modules if n.partition(".")[0] in _LIBRARIES]:
            del sys.modules[name]
        LOG.clear()
        STATE.reset_counters()


def _fault(invariant: str, fn, *args, **kwargs) -> FmhaInvariantError:
    with pytest.raises(FmhaInvariantError) as caught:
        fn(*args, **kwargs)
    assert caught.value.invariant == invariant, caught.value
    return caught.value


def _clean() -> None:
    assert STATE.internal_errors == set()
    assert STATE.launches > 0 and STATE.shape_checks > 0 and STATE.value_checks > 0


def _i32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


# ---------------------------------------------------------------- sgl_kernel FA3 / FA4

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 64


def _sgl_extend(page_size: int):
    """SGLang's FlashAttentionBackend EXTEND launch: 2 requests, prefix 5 / 17, extend 3 / 2."""
    seq_lens, q_lens = [8, 19], [3, 2]
    if page_size == 1:  # one token per block: the page table holds token locations
        num_blocks, table = 131, torch.arange(2 * 19, dtype=torch.int32).reshape(2, 19)
    else:  # a row-strided slice of the [max_bs, max_pages] CUDA-graph buffer
        num_blocks, table = 11, torch.zeros(4, 8, dtype=torch.int32)[:2, :2]
        table.copy_(_i32([[3, 0], [8, 5]]))
    cache = torch.zeros(num_blocks, page_size, KV_HEADS, HEAD_DIM, dtype=torch.float16)
    return dict(
        q=torch.zeros(sum(q_lens), HEADS, HEAD_DIM, dtype=torch.float16), k_cache=cache, v_cache=cache,
        cache_seqlens=_i32(seq_lens), page_table=table, cu_seqlens_q=_i32([0, 3, 5]),
        cu_seqlens_k_new=_i32([0, 8, 27]), max_seqlen_q=3, softmax_scale=0.125, causal=True,
    )


@pytest.mark.parametrize("distribution", ["sgl-kernel==0.3.21", "sglang-kernel==0.4.10"])
def test_sgl_kernel_flash_attn_with_kvcache(libraries, distribution):
    libraries(distribution)
    import sgl_kernel.flash_attn as fa
    from sgl_kernel.flash_attn import flash_attn_with_kvcache

    assert getattr(flash_attn_with_kvcache, "__fmha_guard__", None) is not None
    for page_size in (1, 16):
        out = flash_attn_with_kvcache(**_sgl_extend(page_size))
        assert out.shape == (5, HEADS, HEAD_DIM)
    # DECODE with a scheduler planned for the batch, FP8 descales [batch, kv_heads] (expanded)
    scale = torch.ones(1, 1).expand(2, KV_HEADS)
    if hasattr(fa, "get_scheduler_metadata"):  # sglang-kernel 0.4 (not in sgl-kernel 0.3.21)
        schedule = fa.get_scheduler_metadata(2, 1, 18, HEADS, KV_HEADS, HEAD_DIM, _i32([6, 18]),
                                             cu_seqlens_q=_i32([0, 1, 2]), page_size=16, causal=True)
    else:
        schedule = torch.zeros(3, dtype=torch.int32)
    decode = dict(_sgl_extend(16), q=torch.zeros(2, HEADS, HEAD_DIM, dtype=torch.float16),
                  cache_seqlens=_i32([6, 18]), cu_seqlens_q=_i32([0, 1, 2]), max_seqlen_q=1,
                  scheduler_metadata=schedule, q_descale=scale, k_descale=scale, v_descale=scale)
    decode.pop("cu_seqlens_k_new")
    flash_attn_with_kvcache(**decode)
    # q [batch, seqlen_q, heads, head_dim] without cu_seqlens_q (a uniform launch)
    flash_attn_with_kvcache(**dict(decode, q=torch.zeros(2, 1, HEADS, HEAD_DIM, dtype=torch.float16),
                                   cu_seqlens_q=None))
    # cu_seqlens_k_new is read only with new keys to append: SGLang's zeros at capture pass
    flash_attn_with_kvcache(**dict(_sgl_extend(16), cu_seqlens_k_new=_i32([0, 0, 0])))
    _clean()

    bad = _sgl_extend(16)
    bad["page_table"] = _i32([[3, 0], [8, 11]])  # 11 == num_blocks
    _fault("page-id-range", flash_attn_with_kvcache, **bad)
    _fault("page-table-capacity", flash_attn_with_kvcache, **dict(_sgl_extend(16), cache_seqlens=_i32([8, 40])))
    # SGLang #37785: descales expanded to forward_batch.batch_size (padded to 4)
    padded = torch.ones(1, 1).expand(4, KV_HEADS)
    error = _fault("batch-size", flash_attn_with_kvcache, **dict(decode, k_descale=padded, v_descale=padded))
    assert error.fields["k_descale.shape[0]"] == 4 and error.fields["cu_seqlens_q.shape[0] - 1"] == 2
    _fault("cu-seqlens-monotone", flash_attn_with_kvcache, **dict(_sgl_extend(1), cu_seqlens_q=_i32([0, 6, 5])))
    _fault("max-seq-len", flash_attn_with_kvcache, **dict(_sgl_extend(1), max_seqlen_q=2))
    assert STATE.internal_errors == set()


@pytest.mark.parametrize("distribution", ["sgl-kernel==0.3.21", "sglang-kernel==0.4.10"])
def test_sgl_kernel_varlen_and_scheduler_metadata(libraries, distribution):
    libraries(distribution)
    import sgl_kernel.flash_attn as fa

    q = torch.zeros(5, HEADS, HEAD_DIM, dtype=torch.float16)
    kv = torch.zeros(27, KV_HEADS, HEAD_DIM, dtype=torch.float16)
    # positions from the installed signature: (q, k, v, cu_seqlens_q, cu_seqlens_k, max_q, max_k)
    fa.flash_attn_varlen_func(q, kv, kv, _i32([0, 3, 5]), _i32([0, 8, 27]), 3, 19, causal=True)
    fa.flash_attn_varlen_func(q=q, k=kv, v=kv, cu_seqlens_q=_i32([0, 3, 5]), cu_seqlens_k=_i32([0, 8, 27]),
                              max_seqlen_q=3, max_seqlen_k=19, page_table=_i32([[0]]))  # FA3 drops it
    if distribution == "sglang-kernel==0.4.10":
        fa.get_scheduler_metadata(4, 1, 64, HEADS, KV_HEADS, HEAD_DIM, _i32([6, 18, 1, 1]),
                                  cu_seqlens_q=_i32([0, 1, 2, 3, 4]), page_size=1)
    _clean()

    error = _fault("cu-seqlens-monotone", fa.flash_attn_varlen_func, q, kv[:20], kv[:20],
                   _i32([0, 3, 5]), _i32([0, 8, 27]), 3, 19)
    assert error.fields["num_kv_rows"] == 20
    _fault("max-seq-len", fa.flash_attn_varlen_func, q, kv, kv, _i32([0, 3, 5]), _i32([0, 8, 27]), 3, 18)
    if distribution == "sglang-kernel==0.4.10":
        # a scheduler planned for the padded batch size against the real batch's lengths
        error = _fault("batch-size", fa.get_scheduler_metadata, 4, 1, 64, HEADS, KV_HEADS, HEAD_DIM,
                       _i32([6, 18]), cu_seqlens_q=_i32([0, 1, 2]), page_size=1)
        assert error.fields["batch_size"] == 4
        _fault("max-seq-len", fa.get_scheduler_metadata, 2, 1, 16, HEADS, KV_HEADS, HEAD_DIM,
               _i32([6, 18]), cu_seqlens_q=_i32([0, 1, 2]), page_size=1)


# ---------------------------------------------------------------- FlashMLA

MLA_HEADS, MLA_DIM, MLA_PAGE = 16, 576, 64


def _mla_decode(batch: int = 2):
    seq_lens = [6, 18, 1, 1][:batch]
    return dict(
        q=torch.zeros(batch, 1, MLA_HEADS, MLA_DIM, dtype=torch.float16),
        k_cache=torch.zeros(5, MLA_PAGE, 1, MLA_DIM, dtype=torch.float16),
        block_table=torch.arange(1, 2 * batch + 1, dtype=torch.int32).reshape(batch, 2)[:, :1],  # row pitch 2
        cache_seqlens=_i32(seq_lens), head_dim_v=512, softmax_scale=0.04, causal=True,
    )


@pytest.mark.parametrize("distribution", ["sgl-kernel==0.3.21", "sglang-kernel==0.4.10"])
def test_sgl_kernel_flash_mla(libraries, distribution):
    libraries(distribution)
    from sgl_kernel.flash_mla import flash_mla_with_kvcache, get_mla_metadata

    args = _mla_decode()
    tiles, splits = get_mla_metadata(args["cache_seqlens"], MLA_HEADS, 1)
    out, lse = flash_mla_with_kvcache(**args, tile_scheduler_metadata=tiles, num_splits=splits)
    assert out.shape == (2, 1, MLA_HEADS, 512)
    _clean()

    # a stale schedule: computed for the 4-request captured batch, launched with 2 requests
    stale_tiles, stale_splits = get_mla_metadata(_i32([6, 18, 1, 1]), MLA_HEADS, 1)
    error = _fault("scheduler-metadata", flash_mla_with_kvcache, **args,
                   tile_scheduler_metadata=stale_tiles, num_splits=stale_splits)
    assert error.fields["num_splits.shape[0]"] == 5 and error.fields["batch_size + 1"] == 3
    _fault("scheduler-metadata", flash_mla_with_kvcache, **args, tile_scheduler_metadata=tiles,
           num_splits=splits.long())
    _fault("page-id-range", flash_mla_with_kvcache, **dict(args, block_table=_i32([[1], [5]])),
           tile_scheduler_metadata=tiles, num_splits=splits)
    _fault("page-table-capacity", flash_mla_with_kvcache, **dict(args, cache_seqlens=_i32([6, 65])),
           tile_scheduler_metadata=tiles, num_splits=splits)
    _fault("metadata-dtype-device", get_mla_metadata, args["cache_seqlens"].long(), MLA_HEADS, 1)


def test_flash_mla_sched_meta_api(libraries):
    """sgl-flash-mla 1.0.0 (SGLang 0.5.23): the legacy schedule rides on a FlashMLASchedMeta."""
    libraries("sgl-flash-mla==1.0.0")
    import flash_mla

    args = _mla_decode()
    tiles, splits = flash_mla.get_mla_decoding_metadata(args["cache_seqlens"], MLA_HEADS, 1, use_legacy=True)
    sched = kr.FlashMLASchedMeta(tile_scheduler_metadata=tiles, num_splits=splits)
    flash_mla.flash_mla_with_kvcache(**args, tile_scheduler_metadata=sched, use_legacy=True)
    flash_mla.flash_mla_with_kvcache(**args, tile_scheduler_metadata=kr.FlashMLASchedMeta(), use_legacy=True)
    assert flash_mla.get_mla_metadata()[1] is None  # the new API: nothing to check
    _clean()

    # the schedule of the 4-request captured batch, launched with 2 requests
    stale_tiles, stale_splits = flash_mla.get_mla_decoding_metadata(_i32([6, 18, 1, 1]), MLA_HEADS, 1)
    stale = kr.FlashMLASchedMeta(tile_scheduler_metadata=stale_tiles, num_splits=stale_splits)
    _fault("scheduler-metadata", flash_mla.flash_mla_with_kvcache, **args, tile_scheduler_metadata=stale)
    # TARGET_VERIFY: 3 draft tokens per request, the KV lengths must cover them
    verify = dict(args, q=torch.zeros(2, 3, MLA_HEADS, MLA_DIM, dtype=torch.float16), cache_seqlens=_i32([8, 2]))
    _fault("seq-len-covers-query", flash_mla.flash_mla_with_kvcache, **verify, tile_scheduler_metadata=sched)
    _fault("batch-size", flash_mla.flash_mla_with_kvcache, **dict(args, cache_seqlens=_i32([6, 18, 1])),
           tile_scheduler_metadata=kr.FlashMLASchedMeta())
    # the dense varlen prefill (cu_seqlens_qo / cu_seqlens_kv)
    q = torch.zeros(5, MLA_HEADS, 192, dtype=torch.bfloat16)
    kv = torch.zeros(27, MLA_HEADS, 192, dtype=torch.bfloat16)
    flash_mla.flash_attn_varlen_func(q, kv, kv, _i32([0, 3, 5]), _i32([0, 8, 27]), 3, 19, causal=True)
    _fault("cu-seqlens-monotone", flash_mla.flash_attn_varlen_func, q, kv, kv, _i32([0, 3, 4]),
           _i32([0, 8, 27]), 3, 19)


# ---------------------------------------------------------------- vLLM

VLLM_HEADS, VLLM_KV_HEADS, VLLM_DIM, BLOCK = 16, 4, 128, 16


def _vllm_paged(seq_lens, q_lens, *, padded_rows: int = 0, fa_version: int = 3):
    """vLLM's FLASH_ATTN launch: K/V strided views of one [num_blocks, 2, ...] buffer,
    block-table rows of the persistent [max_num_reqs, max_blocks] table, descales
    expanded to [num_reqs, num_kv_heads]."""
    kv = torch.zeros(512, 2, BLOCK, VLLM_KV_HEADS, VLLM_DIM, dtype=torch.bfloat16)
    table = torch.zeros(16, 64, dtype=torch.int32)
    for i, n in enumerate(seq_lens):
        pages = -(-n // BLOCK)
        table[i, :pages] = torch.arange(10 * i, 10 * i + pages, dtype=torch.int32)
    offsets = [0]
    for n in q_lens:
        offsets.append(offsets[-1] + n)
    scale = torch.ones(1, 1).expand(len(seq_lens), VLLM_KV_HEADS)
    return dict(
        q=torch.zeros(offsets[-1] + padded_rows, VLLM_HEADS, VLLM_DIM, dtype=torch.bfloat16),
        k=kv[:, 0], v=kv[:, 1], max_seqlen_q=max(q_lens), cu_seqlens_q=_i32(offsets),
        max_seqlen_k=max(seq_lens), seqused_k=_i32(seq_lens), block_table=table[: len(seq_lens)],
        softmax_scale=0.088, causal=True, q_descale=scale, k_descale=scale, v_descale=scale,
        fa_version=fa_version,
    )


def test_vllm_flash_attn(libraries):
    libraries(vllm=True)
    from vllm.vllm_flash_attn.flash_attn_interface import flash_attn_varlen_func, get_scheduler_metadata

    decode = _vllm_paged([32, 40, 57], [1, 1, 1])
    flash_attn_varlen_func(**decode)
    flash_attn_varlen_func(**_vllm_paged([32, 40, 48, 56], [1, 1, 5, 9]))  # mixed
    # full CUDA graph replay: 3 requests padded to the captured 4 (a zero-length one),
    # the query padded to the captured 4 tokens; the kernel reads cu_seqlens_q[-1] rows
    flash_attn_varlen_func(**_vllm_paged([30, 45, 61, 0], [1, 1, 1, 0], padded_rows=1))
    # positions from the installed signature: (q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k)
    flash_attn_varlen_func(decode["q"], decode["k"], decode["v"], 1, decode["cu_seqlens_q"], 57,
                           seqused_k=decode["seqused_k"], block_table=decode["block_table"], fa_version=3)
    # MLA prefill: ragged K/V with cu_seqlens_k
    q = torch.zeros(8, VLLM_HEADS, 192, dtype=torch.bfloat16)
    flash_attn_varlen_func(q, q, q[..., :128], 24, _i32([0, 8]), 24, cu_seqlens_k=_i32([0, 8]), fa_version=3)
    get_scheduler_metadata(4, 1, 61, VLLM_HEADS, VLLM_KV_HEADS, VLLM_DIM, _i32([30, 45, 61, 0]),
                           cu_seqlens_q=_i32([0, 1, 2, 3, 3]), page_size=BLOCK, causal=True)
    # FA2 ignores descales: a mismatch there is not a launch bug
    padded_scale = torch.ones(1, 1).expand(4, VLLM_KV_HEADS)
    flash_attn_varlen_func(**dict(_vllm_paged([32, 40, 57], [1, 1, 1], fa_version=2), k_descale=padded_scale))
    _clean()

    _fault("batch-size", flash_attn_varlen_func, **dict(decode, k_descale=padded_scale, v_descale=padded_scale))
    bad = _vllm_paged([32, 40, 57], [1, 1, 1])
    bad["block_table"][2, 1] = 512  # == num_blocks
    _fault("page-id-range", flash_attn_varlen_func, **bad)
    _fault("page-table-capacity", flash_attn_varlen_func,
           **dict(decode, seqused_k=_i32([32, 40, 64 * BLOCK + 1]), max_seqlen_k=64 * BLOCK + 1))
    # padding rows are allowed, a cu_seqlens_q ending past the query is not
    error = _fault("cu-seqlens-monotone", flash_attn_varlen_func, **dict(decode, cu_seqlens_q=_i32([0, 1, 2, 5])))
    assert error.fields["cu_seqlens_q[-1]"] == 5 and error.fields["q.shape[0]"] == 3
    _fault("cu-seqlens-monotone", flash_attn_varlen_func, **dict(decode, cu_seqlens_q=_i32([0, 2, 1, 3])))
    _fault("batch-size", get_scheduler_metadata, 4, 1, 61, VLLM_HEADS, VLLM_KV_HEADS, VLLM_DIM,
           _i32([30, 45, 61]), cu_seqlens_q=_i32([0, 1, 2, 3]), page_size=BLOCK)
    _fault("metadata-dtype-device", flash_attn_varlen_func, **dict(decode, seqused_k=decode["seqused_k"].long()))


def test_vllm_flash_mla(libraries):
    libraries(vllm=True)
    from vllm.third_party.flashmla import flash_mla_interface as fmla

    sched = kr.FlashMLASchedMeta()  # what vLLM's get_mla_metadata(*args) returns
    args = dict(_mla_decode(), q=torch.zeros(2, 1, MLA_HEADS, MLA_DIM, dtype=torch.bfloat16))
    fmla.flash_mla_with_kvcache(**args, tile_scheduler_metadata=sched, is_fp8_kvcache=False)
    # vLLM routes a 24-token prefill of one request through the uniform decode kernel
    prefill = dict(_mla_decode(1), q=torch.zeros(1, 24, MLA_HEADS, MLA_DIM, dtype=torch.bfloat16),
                   cache_seqlens=_i32([24]))
    fmla.flash_mla_with_kvcache(**prefill, tile_scheduler_metadata=sched)
    _clean()
    _fault("seq-len-covers-query", fmla.flash_mla_with_kvcache, **dict(prefill, cache_seqlens=_i32([23])),
           tile_scheduler_metadata=sched)
    filled = kr.FlashMLASchedMeta(have_initialized=True, num_splits=torch.zeros(5, dtype=torch.int32))
    _fault("scheduler-metadata", fmla.flash_mla_with_kvcache, **args, tile_scheduler_metadata=filled)


def test_recorder_signatures_match_the_extracted_vllm():
    """The stand-in signatures are vLLM's own (checked where the engine kit extracted vLLM)."""
    import ast

    roots = sorted((REPO / ".cache" / "engines").glob("vllm-0.3[34].0/vllm"))
    if not roots:
        pytest.skip("no vLLM extracted under .cache/engines (the engine kits do that)")
    for root in roots:
        for qualname, text in vr.PYTHON_SIGNATURES.items():
            module, _, name = qualname.rpartition(".")
            source = root.parent / (module.replace(".", "/") + ".py")
            node = next(n for n in ast.parse(source.read_text()).body
                        if isinstance(n, ast.FunctionDef) and n.name == name)
            published = kr._signature(ast.unparse(_without_annotations(node.args))
                                      .replace("DEFAULT_FA_VERSION", "2"))
            assert published == kr._signature(text), (root, qualname)


def _without_annotations(arguments):
    for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg):
        if arg is not None:
            arg.annotation = None
    return arguments


# ---------------------------------------------------------------- activation

def test_missing_libraries_are_not_patched_with_one_debug_line(monkeypatch, caplog):
    monkeypatch.setattr(activation, "_missing_reported", set())
    with caplog.at_level(logging.DEBUG, logger="fmha_guard"):
        try:
            runtime_checks.install("shapes")
            runtime_checks.install("values")  # once per process, not per install
        finally:
            runtime_checks.uninstall()
    lines = [r.getMessage() for r in caplog.records if "is not installed" in r.getMessage()]
    assert lines == [
        "fmha-guard: sgl_kernel is not installed; its entry points are not patched",
        "fmha-guard: flash_mla is not installed; its entry points are not patched",
        "fmha-guard: vllm.vllm_flash_attn, vllm.third_party.flashmla is not installed; "
        "its entry points are not patched",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "is not installed" in r.getMessage())


def test_every_entry_point_is_in_a_guarded_library():
    from runtime_checks.kernel_specs import ENTRY_POINTS

    assert all(armed.is_guarded_module(entry.module) for entry in ENTRY_POINTS)
    assert {entry.module.partition(".")[0] for entry in ENTRY_POINTS} == {"flashinfer", *_LIBRARIES}


def test_armed_guard_fires_on_every_guarded_library_root():
    fired = []
    guard = armed.ArmedGuard(config=None, install=lambda config: fired.append(config))
    for name in ("vllm", "vllm.v1.attention", "sgl_kernels", "flashinfer_bench", "torch", "flash_mla_x"):
        assert guard.find_spec(name) is None and not fired, name
    for name in ("sgl_kernel", "flash_mla.flash_mla_interface", "vllm.vllm_flash_attn",
                 "vllm.third_party.flashmla.flash_mla_interface", "flashinfer.decode"):
        guard = armed.ArmedGuard(config=name, install=lambda config: fired.append(config))
        guard.find_spec(name)
        assert guard.fired and fired[-1] == name


_FAKE_SGL_FLASH_ATTN = '''
def flash_attn_with_kvcache({signature}):
    return "ran"
'''


def test_armed_guard_patches_sgl_kernel_and_vllm_at_their_first_import(tmp_path):
    """``FMHA_GUARD=values`` at interpreter start: ``import vllm`` does not fire the guard,
    the first import of sgl_kernel / vllm.vllm_flash_attn does, and their entry points
    are the guarded ones (the .pth in this environment arms it)."""
    fake = tmp_path / "fake"
    (fake / "sgl_kernel").mkdir(parents=True)
    (fake / "sgl_kernel" / "__init__.py").write_text("")
    (fake / "sgl_kernel" / "flash_attn.py").write_text(_FAKE_SGL_FLASH_ATTN.format(
        signature=kr.SIGNATURES["sglang-kernel==0.4.10"]["sgl_kernel.flash_attn.flash_attn_with_kvcache"]))
    interface = fake / "vllm" / "vllm_flash_attn"
    interface.mkdir(parents=True)
    (fake / "vllm" / "__init__.py").write_text("")
    (interface / "__init__.py").write_text(
        "from vllm.vllm_flash_attn.flash_attn_interface import flash_attn_varlen_func\n")
    (interface / "flash_attn_interface.py").write_text(
        "import torch\n\n\ndef flash_attn_varlen_func("
        + vr.PYTHON_SIGNATURES["vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func"]
        + "):\n    return 'ran'\n")
    proc = run_script(tmp_path, textwrap.dedent("""
        import sys
        armed = lambda: type(sys.meta_path[0]).__name__ == "ArmedGuard"
        assert armed(), sys.meta_path
        import vllm
        assert armed(), "import vllm fired the guard"
        import vllm.vllm_flash_attn as fa
        assert not armed()
        assert fa.flash_attn_varlen_func.__fmha_guard__.module == "vllm.vllm_flash_attn.flash_attn_interface"
        import sgl_kernel.flash_attn as sgl
        assert sgl.flash_attn_with_kvcache.__fmha_guard__ is not None
        import torch
        q = torch.zeros(3, 4, 64)
        from guardrails import FmhaInvariantError
        try:
            sgl.flash_attn_with_kvcache(q, torch.zeros(8, 16, 2, 64), torch.zeros(8, 16, 2, 64),
                                        cache_seqlens=torch.tensor([4, 4], dtype=torch.int32),
                                        page_table=torch.tensor([[0], [9]], dtype=torch.int32),
                                        cu_seqlens_q=torch.tensor([0, 2, 3], dtype=torch.int32))
        except FmhaInvariantError as exc:
            print("RESULT", exc.invariant)
    """), fake=fake, env=clean_env(FMHA_GUARD="values"))
    assert "RESULT page-id-range" in proc.stdout, proc.stdout + proc.stderr


# ---------------------------------------------------------------- the model extensions

def test_padded_query_bakes_no_token_total_into_a_cuda_graph():
    """vLLM's padded replay refills cu_seqlens_q with fewer tokens than the captured rows:
    legal for a padded_query launch (FA varlen reads the offsets at replay), a
    graph-replay-layout violation for a strict one."""
    from guardrails import AttentionBatch, GraphLayout, find_violations

    cu_q = _i32([0, 1, 2, 3, 4])
    strict = AttentionBatch(forward_mode="extend", kernel="prefill", query=torch.zeros(4, 2, 8),
                            cu_seqlens_q=cu_q, seq_lens=_i32([1, 1, 1, 1]))
    padded = strict.replace(padded_query=True)
    layouts = {name: GraphLayout.capture(batch) for name, batch in (("strict", strict), ("padded", padded))}
    assert (layouts["strict"].sum_seq_lens_q, layouts["strict"].cu_seqlens_q_stride) == (4, 1)
    assert (layouts["padded"].sum_seq_lens_q, layouts["padded"].cu_seqlens_q_stride) == (None, None)
    cu_q.copy_(_i32([0, 1, 2, 3, 3]))  # the replay refills the captured buffer in place
    assert find_violations(padded, captured=layouts["padded"]) == []
    # what a padded launch's replay met when its capture baked in the total and the stride
    assert [e.invariant for e in find_violations(padded, captured=layouts["strict"])] == ["graph-replay-layout"]
    assert [e.invariant for e in find_violations(strict, captured=layouts["strict"])] == ["cu-seqlens-monotone"]


def test_descales_and_schedule_in_the_catalog():
    from guardrails import AttentionBatch, find_violations

    batch = AttentionBatch(forward_mode="decode", kernel="decode", batch_size=2, seq_lens=_i32([3, 4]),
                           descales={"q_descale": torch.ones(2, 4)}, num_splits=_i32([0, 1, 2]),
                           tile_scheduler_metadata=torch.zeros(4, 8, dtype=torch.int32))
    assert batch.batch_size_sources() == {"batch_size": 2, "seq_lens.shape[0]": 2, "q_descale.shape[0]": 2}
    assert find_violations(batch) == []
    errors = find_violations(batch.replace(num_splits=_i32([0, 1, 2, 3]),
                                           tile_scheduler_metadata=torch.zeros(4, dtype=torch.int32)))
    assert [e.invariant for e in errors] == ["scheduler-metadata"]
    assert errors[0].fields["tile_scheduler_metadata.shape"] == (4,)
    assert errors[0].source.startswith("vLLM #21691")
