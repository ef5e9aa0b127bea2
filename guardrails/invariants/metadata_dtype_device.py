"""``metadata-dtype-device``: index tensors have the dtype, rank, layout and device the kernel reads.

Statement: ``cu_seqlens_q``, ``cu_seqlens_kv``, ``seq_lens``, ``page_table``,
``swa_page_table`` and FlashInfer's CSR ``kv_indptr``, ``kv_indices``,
``kv_last_page_len`` are int32; the 1-D ones contiguous, page tables 2-D (``page_table``
also 3-D ``[batch_size, 2, max_pages]``: separate K and V ids) with last-dim stride 1,
and rows at a pitch of their width (``stride(-2) == shape[-1]``) for kernels that
address row ``i`` at ``i * shape[-1]`` (``page_table_rows_contiguous``: trtllm-gen, xqa,
fmha_v2); the SWA full->SWA table a 1-D integer tensor; all on the query's device (else
the KV cache's).

Source: the FlashInfer trtllm-gen/xqa/fa2/fa3 kernel contract (int32 indptr and block
tables).

Shape part (:func:`check_metadata_dtype_device`): dtype names, ranks, strides and device
strings. Value part: none.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..tensor_facts import device_name, dtype_name, is_int_dtype, same_device, shape_of, strides_of

INVARIANT = Invariant(
    id="metadata-dtype-device",
    statement=(
        "Index tensors handed to the kernel (cu_seqlens_q, cu_seqlens_kv, seq_lens, "
        "page_table, swa_page_table and FlashInfer's CSR kv_indptr, kv_indices, "
        "kv_last_page_len) are int32; cu_seqlens_*, seq_lens and the CSR tensors are "
        "1-D and contiguous, page tables are 2-D (page_table also 3-D [batch_size, 2, "
        "max_pages] with separate K and V ids) with last-dim stride 1; a kernel that "
        "takes the row stride accepts a column-sliced table, but one that addresses row "
        "i at i * shape[-1] (trtllm-gen, xqa, fmha_v2: FlashInfer passes them only the "
        "data pointer and the last dim) needs rows at a pitch of their width, "
        "stride(-2) == shape[-1] (page_table_rows_contiguous); the SWA full->SWA translation table is a "
        "1-D integer tensor; all of them sit on one device: the query's when a query "
        "is given, else the KV cache's (an API that stages them itself, FlashInfer's "
        "wrapper plan, takes them on any device: metadata_copied)."
    ),
    level=Level.SHAPES,
    source=(
        "FlashInfer trtllm-gen/xqa/fa2/fa3 kernel contract (int32 indptr and block "
        "tables; flashinfer/data/csrc/trtllm_fmha_kernel_launcher.cu and "
        "xqa/xqa_wrapper.cu read block_tables.size(-1) and the data pointer, no row "
        "stride); H200 xqa measurement (row pitch)"
    ),
    cause=(
        "an index tensor was built with torch.arange/cumsum defaults (int64), "
        "transposed or sliced along the last dim, or left on the CPU; the kernel "
        "reinterprets the bytes and reads garbage offsets"
    ),
    fix=(
        "build index tensors with dtype=torch.int32 on the attention device and "
        "keep them contiguous (.to(torch.int32).contiguous())"
    ),
)


_ONE_D = ("cu_seqlens_q", "cu_seqlens_kv", "seq_lens", "kv_indptr", "kv_indices", "kv_last_page_len")
_TWO_D = ("page_table", "swa_page_table")


def _dense(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Whether every axis of more than one entry has the stride of a contiguous tensor."""
    expect = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size > 1 and stride != expect:
            return False
        expect *= size
    return True


def _layout_problems(name: str, t: Any, dense_rows: bool = False) -> list[tuple[str, Any, str]]:
    """(field, value seen, expectation) for one index tensor; ``dense_rows``: the
    kernel finds a page-table row at ``i * shape[-1]``."""
    problems: list[tuple[str, Any, str]] = []
    if dtype_name(t) != "int32":
        problems.append((f"{name}.dtype", dtype_name(t), "int32"))
    shape = shape_of(t)
    want_ndim = 1 if name in _ONE_D else 2
    kv_table = name == "page_table" and len(shape) == 3
    if kv_table and shape[1] != 2:
        problems.append((f"{name}.shape[1]", shape[1], "2 (a 3-D page table holds K and V ids)"))
        return problems
    if len(shape) != want_ndim and not kv_table:
        problems.append((f"{name}.ndim", len(shape), str(want_ndim) + (" (or 3)" if name == "page_table" else "")))
        return problems
    strides = strides_of(t)
    if strides is not None:
        if want_ndim == 1 and shape[0] > 1 and strides[0] != 1:
            problems.append((f"{name}.stride(0)", strides[0], "1 (contiguous)"))
        if want_ndim == 2 and shape[-1] > 1 and strides[-1] != 1:
            problems.append((f"{name}.stride(-1)", strides[-1], "1 (contiguous rows)"))
        if want_ndim == 2 and dense_rows and not _dense(shape, strides):
            problems.append((
                f"{name}.stride()", strides,
                f"those of a contiguous table (rows at a pitch of their width {shape[-1]}: the kernel "
                f"addresses row i at i * {name}.shape[-1]; a column-sliced table needs .contiguous())",
            ))
    return problems


@register(INVARIANT, Level.SHAPES)
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
        problems.extend(_layout_problems(name, t, batch.page_table_rows_contiguous and name.endswith("page_table")))
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
            if batch.metadata_copied and name in batch.index_tensors():
                continue  # staged by the API (a wrapper's plan): any device
            if not same_device(device_name(t), ref_device):
                problems.append((f"{name}.device", device_name(t), ref_device))
    if not problems:
        return None
    fields = {field: seen for field, seen, _ in problems}
    if any(f.endswith(".device") for f in fields):
        fields[ref_name] = ref_device
    expectations = "; ".join(f"{field} should be {want}" for field, _, want in problems)
    return Finding(f"index tensors have the wrong dtype, rank, layout or device ({expectations})", fields)
