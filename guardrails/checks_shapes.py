"""SHAPES-level checks: shapes, dtypes, devices, strides, data pointers and
Python scalars only. Nothing here reads tensor contents, so these run on
``meta`` tensors and inside CUDA-graph capture. Statements, causes and fixes
live in :mod:`guardrails.invariants`.
"""

from __future__ import annotations

from typing import Any, Optional

from .check_registry import CheckContext, Finding, register
from .forward_mode import Kernel
from .invariants import Level
from .models import BufferLayout
from .tensor_facts import device_name, dtype_name, is_int_dtype, same_device, shape_of, strides_of

_ONE_D = ("cu_seqlens_q", "cu_seqlens_kv", "seq_lens", "kv_indptr", "kv_indices", "kv_last_page_len")
_TWO_D = ("page_table", "swa_page_table")


def _layout_problems(name: str, t: Any) -> list[tuple[str, Any, str]]:
    """(field, value seen, expectation) for one index tensor."""
    problems: list[tuple[str, Any, str]] = []
    if dtype_name(t) != "int32":
        problems.append((f"{name}.dtype", dtype_name(t), "int32"))
    shape = shape_of(t)
    want_ndim = 1 if name in _ONE_D else 2
    if len(shape) != want_ndim:
        problems.append((f"{name}.ndim", len(shape), str(want_ndim)))
        return problems
    strides = strides_of(t)
    if strides is not None:
        if want_ndim == 1 and shape[0] > 1 and strides[0] != 1:
            problems.append((f"{name}.stride(0)", strides[0], "1 (contiguous)"))
        if want_ndim == 2 and shape[1] > 1 and strides[1] != 1:
            problems.append((f"{name}.stride(-1)", strides[1], "1 (contiguous rows)"))
    return problems


@register("metadata-dtype-device", Level.SHAPES)
def check_metadata_dtype_device(ctx: CheckContext) -> Optional[Finding]:
    """``metadata-dtype-device``: index tensors are int32, 1-D and contiguous
    (cu_seqlens_*, seq_lens and FlashInfer's CSR kv_indptr / kv_indices /
    kv_last_page_len: ``[batch_size + 1]`` / ``[>= kv_indptr[-1]]`` /
    ``[batch_size]``) or 2-D with last-dim
    stride 1 (page tables, ``[batch_size, max_pages_per_req]``); the
    full->SWA table is a 1-D integer tensor; all sit on the query's device
    (else the KV cache's). Source: FlashInfer kernel contract."""
    batch = ctx.batch
    problems: list[tuple[str, Any, str]] = []
    tensors = batch.index_tensors()
    for name, t in tensors.items():
        problems.extend(_layout_problems(name, t))
    swa_map = ctx.swa_pool.full_to_swa if ctx.swa_pool is not None else None
    if swa_map is not None:
        if not is_int_dtype(swa_map):
            problems.append(("full_to_swa.dtype", dtype_name(swa_map), "an integer dtype"))
        if len(shape_of(swa_map)) != 1:
            problems.append(("full_to_swa.ndim", len(shape_of(swa_map)), "1"))
        tensors = {**tensors, "full_to_swa": swa_map}

    if batch.query is not None:
        ref_name, ref_device = "q.device", device_name(batch.query)
    elif ctx.kv_cache is not None and ctx.kv_cache.device is not None:
        ref_name, ref_device = "kv_cache.device", ctx.kv_cache.device
    elif tensors:
        first = next(iter(tensors))
        ref_name, ref_device = f"{first}.device", device_name(tensors[first])
    else:
        ref_name = ref_device = None
    if ref_device is not None:
        if (
            ctx.kv_cache is not None
            and ctx.kv_cache.device is not None
            and not same_device(ctx.kv_cache.device, ref_device)
        ):
            problems.append(("kv_cache.device", ctx.kv_cache.device, ref_device))
        for name, t in tensors.items():
            if not same_device(device_name(t), ref_device):
                problems.append((f"{name}.device", device_name(t), ref_device))
    if not problems:
        return None
    fields = {field: seen for field, seen, _ in problems}
    if any(f.endswith(".device") for f in fields):
        fields[ref_name] = ref_device
    expectations = "; ".join(f"{field} should be {want}" for field, _, want in problems)
    return Finding(f"index tensors have the wrong dtype, rank, layout or device ({expectations})", fields)


@register("batch-size", Level.SHAPES)
def check_batch_size(ctx: CheckContext) -> Optional[Finding]:
    """``batch-size`` (SGLang #21649): batch_size == cu_seqlens_q.shape[0] - 1
    == cu_seqlens_kv.shape[0] - 1 == seq_lens.shape[0] == page_table.shape[0]
    (== swa_page_table.shape[0]) == kv_indptr.shape[0] - 1 ==
    kv_last_page_len.shape[0] for those present. Records the agreed value in
    ``ctx.batch_size``."""
    sources = ctx.batch.batch_size_sources()
    negative = {k: v for k, v in sources.items() if v < 0}
    if negative:
        return Finding(
            "an empty indptr tensor (cu_seqlens_q/kv, kv_indptr) states a negative batch size (it needs batch_size + 1 entries)",
            sources,
        )
    if len(set(sources.values())) > 1:
        return Finding("the batch sizes stated by the launch disagree", sources)
    ctx.batch_size = next(iter(sources.values()), None)
    return None


def _rows_field(ctx: CheckContext) -> str:
    return "q.shape[0]" if ctx.batch.query is not None else "num_query_rows"


@register("query-rows", Level.SHAPES, needs=("batch-size",))
def check_query_rows(ctx: CheckContext) -> Optional[Finding]:
    """``query-rows`` (SGLang #21649, #24856): on a decode kernel the query has
    batch_size * q_len_per_req rows (q_len_per_req defaults to 1); a given
    query tensor and num_query_rows agree. (The ragged ``cu_seqlens_q[-1]``
    part runs in ``cu-seqlens-monotone``.)"""
    batch = ctx.batch
    if batch.query is not None and batch.num_query_rows is not None:
        q_rows = shape_of(batch.query)[0] if shape_of(batch.query) else None
        if q_rows != batch.num_query_rows:
            return Finding(
                "the query tensor and num_query_rows disagree",
                {"q.shape[0]": q_rows, "num_query_rows": batch.num_query_rows},
            )
    rows = batch.query_row_count()
    if batch.kernel is Kernel.DECODE and rows is not None and ctx.batch_size is not None:
        q_len = batch.decode_q_len()
        if rows != ctx.batch_size * q_len:
            return Finding(
                "the decode kernel reads batch_size * q_len_per_req query rows but the query has a different count",
                {
                    _rows_field(ctx): rows,
                    "batch_size": ctx.batch_size,
                    "q_len_per_req": q_len,
                    "batch_size * q_len_per_req": ctx.batch_size * q_len,
                },
            )
    return None


@register("forward-mode-kernel", Level.SHAPES, needs=("batch-size",))
def check_forward_mode_kernel(ctx: CheckContext) -> Optional[Finding]:
    """``forward-mode-kernel`` (SGLang #24856): ragged forward modes (EXTEND,
    MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2) never go to a decode kernel; IDLE
    launches are empty (batch size 0, no query rows)."""
    batch = ctx.batch
    mode = batch.forward_mode
    if batch.kernel is Kernel.DECODE and mode.is_ragged():
        return Finding(
            f"forward mode {mode.name} has ragged per-request query lengths but was routed to the decode kernel",
            {"forward_mode": mode.name, "kernel": batch.kernel.value},
        )
    if mode.is_idle():
        rows = batch.query_row_count()
        if (ctx.batch_size or 0) != 0 or (rows or 0) != 0:
            return Finding(
                "an IDLE launch must be empty",
                {"forward_mode": mode.name, "batch_size": ctx.batch_size, _rows_field(ctx): rows},
            )
    return None


@register("kv-layout", Level.SHAPES)
def check_kv_layout(ctx: CheckContext) -> Optional[Finding]:
    """``kv-layout``: the KV cache's page size (tokens) equals
    ``batch.page_size``, its head_dim axis has stride 1, and a given query
    ``[num_tokens, num_qo_heads, head_dim]`` has the cache's head_dim and a
    head count divisible by num_kv_heads."""
    batch, kv = ctx.batch, ctx.kv_cache
    problems: dict[str, Any] = {}
    details: list[str] = []
    if kv is not None:
        if batch.page_size is not None and batch.page_size != kv.page_size:
            details.append(
                f"the KV cache's page size (read under layout {kv.layout.value}) differs from the page size the page table was built with"
            )
            problems.update({"kv_cache.page_size": kv.page_size, "page_size": batch.page_size, "kv_cache.layout": kv.layout.value})
        if kv.head_dim_stride not in (None, 1):
            details.append("the KV cache's head_dim axis is not contiguous")
            problems["kv_cache.stride(-1)"] = kv.head_dim_stride
    if batch.query is not None:
        q_shape = shape_of(batch.query)
        if len(q_shape) != 3:
            details.append("the query must be [num_tokens, num_qo_heads, head_dim]")
            problems["q.shape"] = q_shape
        elif kv is not None:
            if q_shape[-1] != kv.head_dim:
                details.append("the query head_dim differs from the KV cache head_dim")
                problems.update({"q.shape[-1]": q_shape[-1], "kv_cache.head_dim": kv.head_dim, "kv_cache.layout": kv.layout.value})
            if q_shape[1] % kv.num_kv_heads != 0:
                details.append("the query head count is not a multiple of num_kv_heads")
                problems.update({"q.shape[1]": q_shape[1], "kv_cache.num_kv_heads": kv.num_kv_heads, "kv_cache.layout": kv.layout.value})
    if not details:
        return None
    return Finding("; ".join(details), problems)


def _graph_buffers(ctx: CheckContext) -> dict[str, Any]:
    buffers = dict(ctx.batch.index_tensors())
    if ctx.batch.query is not None:
        buffers["query"] = ctx.batch.query
    return buffers


@register("graph-replay-layout", Level.SHAPES)
def check_graph_replay_shapes(ctx: CheckContext) -> Optional[Finding]:
    """``graph-replay-layout``, shapes part (SGLang #21987): the replayed
    launch passes the buffers captured (same shape, dtype, stride, device,
    data_ptr), the same forward mode, kernel, batch size, query rows and
    q_len_per_req, and needs no larger max_seq_len_q / max_seq_len_kv than
    the graph baked in."""
    cap = ctx.captured
    if cap is None:
        return None
    batch = ctx.batch
    fields: dict[str, Any] = {}
    details: list[str] = []
    now = _graph_buffers(ctx)
    missing = sorted(set(cap.buffers) - set(now))
    extra = sorted(set(now) - set(cap.buffers))
    if missing or extra:
        details.append("the replay passes a different set of metadata buffers than capture")
        fields.update({"buffers missing at replay": missing, "buffers new at replay": extra})
    for name, t in now.items():
        before = cap.buffers.get(name)
        if before is None:
            continue
        after = BufferLayout.of(t)
        for attr in ("shape", "dtype", "stride", "device", "data_ptr"):
            a, b = getattr(before, attr), getattr(after, attr)
            if attr in ("stride", "data_ptr") and (a is None or b is None):
                continue
            if a != b:
                label = f"{name}.{attr}"
                if attr == "data_ptr":
                    a, b = hex(a), hex(b)
                    details.append(f"{name} was rebound to a new tensor instead of refilled in place")
                else:
                    details.append(f"{name} changed {attr} since capture")
                fields[f"captured {label}"] = a
                fields[label] = b
    for attr, now_value in (
        ("forward_mode", batch.forward_mode.name),
        ("kernel", batch.kernel.value if batch.kernel else None),
        ("batch_size", ctx.batch_size),
        ("num_query_rows", batch.query_row_count()),
        ("q_len_per_req", batch.q_len_per_req),
    ):
        before = getattr(cap, attr)
        if attr == "forward_mode":
            before = before.name
        elif attr == "kernel":
            before = before.value if before else None
        if attr in ("batch_size", "num_query_rows") and (before is None or now_value is None):
            continue
        if before != now_value:
            details.append(f"{attr} differs from the value baked in at capture")
            fields[f"captured {attr}"] = before
            fields[attr] = now_value
    for attr in ("max_seq_len_q", "max_seq_len_kv"):
        before, now_value = getattr(cap, attr), getattr(batch, attr)
        if before is not None and now_value is not None and now_value > before:
            details.append(f"the replayed batch needs {attr}={now_value} but the graph baked in {before}")
            fields[f"captured {attr}"] = before
            fields[attr] = now_value
    if not details:
        return None
    return Finding("; ".join(dict.fromkeys(details)), fields)
