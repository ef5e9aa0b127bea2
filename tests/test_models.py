"""Typed metadata models: construction-time validation, KV-cache shape
reading, forward modes, graph snapshots, and a torch-free import."""

from __future__ import annotations

import enum
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from guardrails import (
    AttentionBatch,
    ForwardMode,
    GraphLayout,
    Kernel,
    KVLayout,
    PagedKVCache,
    SlidingWindowPool,
)
from tests.strategies import build_case, i32

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- import

def test_import_guardrails_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import guardrails, runtime_checks
        from guardrails import AttentionBatch, ForwardMode, Level, CATALOG, validate
        from guardrails import FmhaInvariantError, PagedKVCache, find_violations

        class Fake:  # duck-typed tensor: shape, dtype, device, stride(), tolist()
            dtype, device = "int32", "cpu"
            def __init__(self, rows):
                self.rows = rows
                self.shape = (len(rows), len(rows[0])) if rows and isinstance(rows[0], list) else (len(rows),)
            def stride(self):
                return (self.shape[1], 1) if len(self.shape) == 2 else (1,)
            def tolist(self):
                return self.rows

        b = AttentionBatch(
            forward_mode="decode", kernel="decode", batch_size=2, num_query_rows=2,
            cu_seqlens_q=Fake([0, 1, 2]), seq_lens=Fake([3, 5]), page_table=Fake([[0, 9], [1, 2]]),
        )
        kv = PagedKVCache(num_pages=4, page_size=4, num_kv_heads=1, head_dim=8)
        validate(b, kv, level="values")
        bad = b.replace(page_table=Fake([[0, 9], [1, 4]]))
        assert [e.invariant for e in find_violations(bad, kv)] == ["page-id-range"]
        # FlashInfer CSR: pages [2] and [0, 3]; kv_indices is a longer buffer (99 unread)
        csr = AttentionBatch(
            forward_mode="decode", kernel="decode", num_query_rows=2, page_size=4,
            kv_indptr=Fake([0, 1, 3]), kv_indices=Fake([2, 0, 3, 99]), kv_last_page_len=Fake([3, 4]),
        )
        validate(csr, kv, level="values")
        bad = csr.replace(kv_last_page_len=Fake([3, 5]))
        assert [e.invariant for e in find_violations(bad, kv)] == ["last-page-len"]
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(len(CATALOG))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 11


def test_every_guardrails_module_imports_without_torch_and_config_without_pydantic():
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        sys.modules["torch"] = None
        sys.modules["pydantic"] = None  # guardrails.config runs at interpreter start
        import guardrails.config
        del sys.modules["pydantic"]
        import guardrails, guardrails.invariants
        names = [m.name for package in (guardrails, guardrails.invariants)
                 for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
        for name in names:
            importlib.import_module(name)
        assert {"guardrails.validation", "guardrails.invariants.page_id_range"} <= set(names), names
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_version_is_the_installed_distributions(monkeypatch):
    import importlib.metadata

    import guardrails

    assert guardrails.__version__ == importlib.metadata.version("fmha-guardrails")
    assert "__version__" in dir(guardrails)

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.delitem(vars(guardrails), "__version__", raising=False)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert guardrails.__version__ == "0+unknown"


# ----------------------------------------------------------- forward modes

class SglangForwardMode(enum.IntEnum):  # stands in for sglang's ForwardMode
    EXTEND = 1
    DECODE = 2
    TARGET_VERIFY = 4
    DRAFT_EXTEND_V2 = 7
    IDLE = 6


@pytest.mark.parametrize(
    "value, expected",
    [
        ("draft_extend_v2", ForwardMode.DRAFT_EXTEND_V2),
        ("DRAFT_EXTEND_V2", ForwardMode.DRAFT_EXTEND_V2),
        (SglangForwardMode.TARGET_VERIFY, ForwardMode.TARGET_VERIFY),
        (ForwardMode.IDLE, ForwardMode.IDLE),
    ],
)
def test_forward_mode_parse(value, expected):
    assert ForwardMode.parse(value) is expected
    assert AttentionBatch(forward_mode=value).forward_mode is expected


def test_forward_mode_rejects_unknown_and_classifies_layouts():
    with pytest.raises(ValueError, match="DRAFT_EXTEND_V2"):
        ForwardMode.parse("draft_extend_v3")
    with pytest.raises(ValidationError):
        AttentionBatch(forward_mode="prefill")
    assert {m for m in ForwardMode if m.is_uniform_q_len()} == {
        ForwardMode.DECODE, ForwardMode.TARGET_VERIFY, ForwardMode.IDLE}
    assert ForwardMode.DRAFT_EXTEND_V2.is_ragged() and ForwardMode.EXTEND.is_ragged()
    assert ForwardMode.DECODE.value == "decode" and Kernel("prefill") is Kernel.PREFILL


# ---------------------------------------------------------- AttentionBatch

def test_batch_field_validators_are_cheap_python_checks():
    with pytest.raises(ValidationError, match="batch_size"):
        AttentionBatch(forward_mode="decode", batch_size=-1)
    with pytest.raises(ValidationError, match="q_len_per_req"):
        AttentionBatch(forward_mode="decode", q_len_per_req=0)
    with pytest.raises(ValidationError, match="tensor"):
        AttentionBatch(forward_mode="decode", seq_lens=[1, 2, 3])
    with pytest.raises(ValidationError, match="extra"):
        AttentionBatch(forward_mode="decode", seq_len=i32([1]))
    with pytest.raises(ValidationError, match="kernel"):
        AttentionBatch(forward_mode="decode", kernel="xqa")


def test_buggy_batches_can_be_built_then_validated():
    b = AttentionBatch(
        forward_mode="extend", batch_size=12, cu_seqlens_q=torch.arange(11, dtype=torch.int64),
        page_table=torch.zeros(10, 3, dtype=torch.int32),
    )
    assert b.batch_size_sources() == {
        "batch_size": 12, "cu_seqlens_q.shape[0] - 1": 10, "page_table.shape[0]": 10}


def test_batch_is_frozen_and_replace_revalidates():
    b = AttentionBatch(forward_mode="decode", batch_size=2)
    with pytest.raises(ValidationError):
        b.batch_size = 3
    assert b.replace(forward_mode="IDLE").forward_mode is ForwardMode.IDLE
    with pytest.raises(ValidationError):
        b.replace(batch_size=-2)


def test_csr_and_ragged_fields():
    indptr, indices, last = i32([0, 3, 4, 4]), i32([7, 1, 2, 5, 0, 0]), i32([2, 4, 0])
    b = AttentionBatch(
        forward_mode="extend", batch_size=3, cu_seqlens_q=i32([0, 1, 2, 2]),
        kv_indptr=indptr, kv_indices=indices, kv_last_page_len=last, page_size=4,
    )
    # kv_indices is sized by pages, not requests: it states no batch size
    assert b.batch_size_sources() == {
        "batch_size": 3, "cu_seqlens_q.shape[0] - 1": 3,
        "kv_indptr.shape[0] - 1": 3, "kv_last_page_len.shape[0]": 3}
    assert list(b.index_tensors()) == ["cu_seqlens_q", "kv_indptr", "kv_indices", "kv_last_page_len"]
    assert b.index_tensors()["kv_indices"] is indices
    ragged = AttentionBatch(forward_mode="extend", cu_seqlens_kv=i32([0, 5, 9]), num_kv_rows=9)
    assert ragged.num_kv_rows == 9 and ragged.batch_size_sources() == {"cu_seqlens_kv.shape[0] - 1": 2}
    with pytest.raises(ValidationError, match="num_kv_rows"):
        AttentionBatch(forward_mode="extend", num_kv_rows=-1)
    with pytest.raises(ValidationError, match="tensor"):
        AttentionBatch(forward_mode="decode", kv_indptr=[0, 1])
    for name in ("kv_indptr", "kv_indices", "kv_last_page_len", "num_kv_rows"):
        assert f"        {name}: " in AttentionBatch.__doc__, name  # documented like the others
    cap = GraphLayout.capture(b)  # CSR buffers are baked into a CUDA graph too
    assert {"kv_indptr", "kv_indices", "kv_last_page_len"} <= set(cap.buffers)
    assert cap.buffers["kv_indices"].shape == (6,)


def test_query_row_count_prefers_the_query_tensor():
    b = AttentionBatch(forward_mode="extend", query=torch.empty(7, 4, 8), num_query_rows=9)
    assert b.query_row_count() == 7
    assert AttentionBatch(forward_mode="extend", num_query_rows=9).query_row_count() == 9
    assert AttentionBatch(forward_mode="extend").query_row_count() is None
    assert AttentionBatch(forward_mode="decode").decode_q_len() == 1


# ------------------------------------------------------------ PagedKVCache

@pytest.mark.parametrize("layout", ["NHD", "HND"])
def test_kv_cache_from_tuple_5d_and_4d(layout):
    num_pages, page_size, heads, head_dim = 11, 16, 4, 64
    page = (page_size, heads, head_dim) if layout == "NHD" else (heads, page_size, head_dim)
    k = torch.empty(num_pages, *page, dtype=torch.bfloat16)
    for kv in ((k, k.clone()), torch.empty(num_pages, 2, *page), k):
        cache = PagedKVCache.from_tensor(kv, layout=layout)
        assert (cache.num_pages, cache.page_size, cache.num_kv_heads, cache.head_dim) == (
            num_pages, page_size, heads, head_dim)
        assert cache.layout is KVLayout(layout) and cache.device == "cpu"
        assert cache.head_dim_stride == 1 and cache.num_tokens == num_pages * page_size
    assert PagedKVCache.from_tensor(k, layout=layout.lower()).layout is KVLayout(layout)


def test_kv_cache_from_tensor_reads_shapes_only():
    cache = PagedKVCache.from_tensor(torch.empty(1000, 2, 8, 64, 128, device="meta"), "HND")
    assert (cache.num_pages, cache.num_kv_heads, cache.page_size, cache.device) == (1000, 8, 64, "meta")


def test_kv_cache_from_tensor_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ"):
        PagedKVCache.from_tensor((torch.empty(4, 2, 16, 8), torch.empty(4, 2, 16, 4)))
    with pytest.raises(ValueError, match=r"\[num_pages, 1 or 2"):
        PagedKVCache.from_tensor(torch.empty(4, 3, 2, 16, 8))
    with pytest.raises(ValueError, match="4-D or 5-D"):
        PagedKVCache.from_tensor(torch.empty(4, 16, 8))
    with pytest.raises(ValueError):
        PagedKVCache.from_tensor(torch.empty(4, 2, 16, 8), layout="NDH")


def test_kv_cache_noncontiguous_head_dim_is_recorded():
    k = torch.empty(4, 2, 8, 16).transpose(-1, -2)  # head_dim axis strided
    assert PagedKVCache.from_tensor(k, "HND").head_dim_stride != 1


# ------------------------------------------------------- SlidingWindowPool

def test_sliding_window_pool():
    pool = SlidingWindowPool.from_tensor(
        torch.empty(20, 2, 2, 4, 8), "HND", full_to_swa=torch.zeros(50, dtype=torch.int64),
        window_left=-1, swa_layer_ids=(0, 2),
    )
    assert (pool.num_swa_pages, pool.page_size, pool.window_left, pool.swa_layer_ids) == (20, 4, None, (0, 2))
    assert SlidingWindowPool(num_swa_pages=3, page_size=1, window_left=128).window_left == 128
    with pytest.raises(ValidationError):
        SlidingWindowPool(num_swa_pages=3, page_size=1, window_left=-5)
    with pytest.raises(ValidationError):
        SlidingWindowPool(num_swa_pages=3, page_size=0)


# ------------------------------------------------------------- GraphLayout

def test_graph_layout_records_buffers_scalars_and_uniform_stride():
    case = build_case("target_verify", [3, 3], [5, 7], kernel="decode", with_query=True)
    cap = GraphLayout.capture(case.batch)
    assert set(cap.buffers) == {"cu_seqlens_q", "cu_seqlens_kv", "seq_lens", "page_table", "query"}
    pt = cap.buffers["page_table"]
    assert pt.shape == tuple(case.batch.page_table.shape) and pt.dtype == "int32"
    assert pt.data_ptr == case.batch.page_table.data_ptr() and pt.stride == case.batch.page_table.stride()
    assert (cap.cu_seqlens_q_stride, cap.sum_seq_lens_q, cap.q_len_per_req, cap.batch_size) == (3, 6, 3, 2)


def test_graph_layout_ragged_capture_has_no_stride_and_meta_capture_reads_nothing():
    ragged = build_case("extend", [3, 1], [5, 7])
    assert GraphLayout.capture(ragged.batch).cu_seqlens_q_stride is None
    meta = ragged.batch.replace(cu_seqlens_q=torch.empty(3, dtype=torch.int32, device="meta"))
    cap = GraphLayout.capture(meta)
    assert cap.cu_seqlens_q_stride is None and cap.sum_seq_lens_q == 4  # query rows
    uniform = build_case("decode", [1, 1], [5, 7], kernel="decode")
    no_read = GraphLayout.capture(uniform.batch, read_values=False)
    assert no_read.cu_seqlens_q_stride is None  # decode kernel, q_len_per_req unset: unknown
    assert GraphLayout.capture(uniform.batch.replace(q_len_per_req=1), read_values=False).cu_seqlens_q_stride == 1
