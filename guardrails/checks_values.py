"""VALUES-level checks: they read the contents of the index tensors through
``ctx.host`` (one packed device-to-host copy per validation run) and, for the
SWA translation table, gather only the entries actually used.

Every check here needs ``metadata-dtype-device`` and ``batch-size`` to have
passed (so tensors have the expected rank and rows line up), plus the extra
dependencies listed in its ``register`` call. Statements, causes and fixes live
in :mod:`guardrails.invariants`.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Optional, Sequence

from .check_registry import CheckContext, Finding, register
from .forward_mode import Kernel
from .invariants import Level
from .models import pages_needed
from .tensor_facts import HostRows, gather_host_ints, shape_of

_BASE = ("metadata-dtype-device", "batch-size")


def _rows_field(ctx: CheckContext) -> str:
    return "q.shape[0]" if ctx.batch.query is not None else "num_query_rows"


def _q_len_label(ctx: CheckContext, i: int) -> str:
    if "cu_seqlens_q" in ctx.host:
        return f"cu_seqlens_q[{i + 1}] - cu_seqlens_q[{i}]"
    return "q_len_per_req"


def _indptr_problems(name: str, offsets: list[int], fields: dict, details: list) -> None:
    if not offsets:
        return
    if offsets[0] != 0:
        details.append(f"{name} does not start at 0")
        fields[f"{name}[0]"] = offsets[0]
    for i in range(len(offsets) - 1):
        if offsets[i + 1] < offsets[i]:
            details.append(f"{name} decreases")
            fields[f"{name}[{i}]"] = offsets[i]
            fields[f"{name}[{i + 1}]"] = offsets[i + 1]
            break


def _csr_page_count_problems(ctx: CheckContext, offsets: list[int], fields: dict, details: list) -> None:
    """kv_indptr (well-formed) gives request i exactly ceil(kv_len[i] / page_size)
    pages, where kv_len is stated in tokens (seq_lens, else cu_seqlens_kv)."""
    stated = ctx.token_kv_lens()
    page_size = ctx.agreed_page_size()
    if stated is None or page_size is None:
        return
    source, lens = stated
    for i, kv_len in enumerate(lens[: len(offsets) - 1]):
        if kv_len < 0:  # seq-len-covers-query reports negative lengths
            continue
        pages, want = offsets[i + 1] - offsets[i], pages_needed(kv_len, page_size)
        if pages != want:
            details.append(f"kv_indptr gives a request a different number of pages than its {source} needs")
            fields[f"kv_indptr[{i + 1}] - kv_indptr[{i}]"] = pages
            fields.update(ctx.kv_len_fields(i))
            fields["page_size"] = page_size
            fields[f"pages needed for request {i}"] = want
            return


@register("cu-seqlens-monotone", Level.VALUES, needs=(*_BASE, "query-rows"))
def check_cu_seqlens_monotone(ctx: CheckContext) -> Optional[Finding]:
    """``cu-seqlens-monotone``: cu_seqlens_q / cu_seqlens_kv (int32,
    ``[batch_size + 1]``, tokens) and kv_indptr (int32, ``[batch_size + 1]``,
    pages) start at 0 and never decrease; cu_seqlens_q[-1] equals the query
    rows; cu_seqlens_kv differences equal seq_lens and cu_seqlens_kv[-1] <=
    num_kv_rows (ragged K/V); kv_indptr[-1] <= kv_indices.shape[0] and, when
    KV lengths are stated in tokens, kv_indptr differences equal
    ceil(kv_len / page_size)."""
    host = ctx.host
    fields: dict[str, Any] = {}
    details: list[str] = []
    q_offsets = host.get("cu_seqlens_q")
    if q_offsets:
        _indptr_problems("cu_seqlens_q", q_offsets, fields, details)
        rows = ctx.batch.query_row_count()
        if rows is not None and q_offsets[-1] != rows:
            details.append("cu_seqlens_q does not end at the number of query rows")
            fields["cu_seqlens_q[-1]"] = q_offsets[-1]
            fields[_rows_field(ctx)] = rows
    kv_offsets = host.get("cu_seqlens_kv")
    if kv_offsets:
        _indptr_problems("cu_seqlens_kv", kv_offsets, fields, details)
        seq_lens = host.get("seq_lens")
        if seq_lens is not None:
            for i, s in enumerate(seq_lens):
                d = kv_offsets[i + 1] - kv_offsets[i]
                if d != s:
                    details.append("cu_seqlens_kv differences do not match seq_lens")
                    fields[f"cu_seqlens_kv[{i + 1}] - cu_seqlens_kv[{i}]"] = d
                    fields[f"seq_lens[{i}]"] = s
                    fields["cu_seqlens_kv[-1]"] = kv_offsets[-1]
                    fields["sum(seq_lens)"] = sum(seq_lens)
                    break
        num_kv_rows = ctx.batch.num_kv_rows
        if num_kv_rows is not None and kv_offsets[-1] > num_kv_rows:
            details.append("cu_seqlens_kv ends past the rows of the ragged K/V (the kernel reads past key/value)")
            fields["cu_seqlens_kv[-1]"] = kv_offsets[-1]
            fields["num_kv_rows"] = num_kv_rows
    page_offsets = host.get("kv_indptr")
    if page_offsets:
        before = len(details)
        _indptr_problems("kv_indptr", page_offsets, fields, details)
        indices = ctx.batch.kv_indices
        if indices is not None and page_offsets[-1] > shape_of(indices)[0]:
            details.append("kv_indptr ends past kv_indices (the kernel reads page ids beyond the buffer)")
            fields["kv_indptr[-1]"] = page_offsets[-1]
            fields["kv_indices.shape[0]"] = shape_of(indices)[0]
        if len(details) == before:
            _csr_page_count_problems(ctx, page_offsets, fields, details)
    if not details:
        return None
    return Finding("; ".join(dict.fromkeys(details)), fields)


@register("last-page-len", Level.VALUES, needs=_BASE)
def check_last_page_len(ctx: CheckContext) -> Optional[Finding]:
    """``last-page-len`` (FlashInfer paged-KV layout): kv_last_page_len[i]
    (tokens) is in 1..page_size for a request with pages, in 0..page_size for
    one without (ignored by the kernel); with KV lengths stated in tokens, a
    request whose page count is right has kv_last_page_len[i] == kv_len[i] -
    (pages - 1) * page_size. Skipped when kv_indptr is malformed
    (``cu-seqlens-monotone`` reports it)."""
    last = ctx.host.get("kv_last_page_len")
    counts = ctx.prefix_lens("kv_indptr")
    page_size = ctx.agreed_page_size()
    if last is None or counts is None or page_size is None:
        return None
    bad = [
        i for i, (n, v) in enumerate(zip(counts, last))
        if not (1 if n > 0 else 0) <= v <= page_size
    ]
    if bad:
        i = bad[0]
        n, v = counts[i], last[i]
        if v > page_size:
            detail = "kv_last_page_len exceeds page_size: the kernel reads past the last page into the next page's tokens"
        elif n > 0:
            detail = "kv_last_page_len is below 1 for a request that has pages"
        else:
            detail = "kv_last_page_len is negative"
        return Finding(detail, {
            f"kv_last_page_len[{i}]": v,
            "page_size": page_size,
            f"kv_indptr[{i + 1}] - kv_indptr[{i}]": n,
            "requests with a bad last_page_len": len(bad),
        })
    stated = ctx.token_kv_lens()
    if stated is None:
        return None
    source, lens = stated
    for i, (n, v, kv_len) in enumerate(zip(counts, last, lens)):
        if n == 0 or n != pages_needed(kv_len, page_size):
            continue  # a wrong page count is cu-seqlens-monotone's
        want = kv_len - (n - 1) * page_size
        if v != want:
            fields: dict[str, Any] = {f"kv_last_page_len[{i}]": v}
            fields.update(ctx.kv_len_fields(i))
            fields.update({
                "page_size": page_size,
                f"kv_indptr[{i + 1}] - kv_indptr[{i}]": n,
                f"tokens in the last page per {source}": want,
            })
            return Finding(
                f"kv_indptr and kv_last_page_len describe a different KV length than {source}", fields
            )
    return None


@register("uniform-q-len", Level.VALUES, needs=(*_BASE, "cu-seqlens-monotone"))
def check_uniform_q_len(ctx: CheckContext) -> Optional[Finding]:
    """``uniform-q-len`` (SGLang #24856): on a decode kernel every
    ``cu_seqlens_q[i+1] - cu_seqlens_q[i]`` equals q_len_per_req (default 1)."""
    if ctx.batch.kernel is not Kernel.DECODE or "cu_seqlens_q" not in ctx.host:
        return None
    q_len = ctx.batch.decode_q_len()
    lens = ctx.q_lens() or []
    bad = [i for i, n in enumerate(lens) if n != q_len]
    if not bad:
        return None
    i = bad[0]
    return Finding(
        "the decode kernel assumes q_len_per_req query rows for every request but the per-request query lengths vary",
        {
            "forward_mode": ctx.batch.forward_mode.name,
            "q_len_per_req": q_len,
            f"cu_seqlens_q[{i + 1}] - cu_seqlens_q[{i}]": lens[i],
            "per-request q lengths": lens,
            "requests off q_len_per_req": len(bad),
        },
    )


@register("max-seq-len", Level.VALUES, needs=(*_BASE, "cu-seqlens-monotone"))
def check_max_seq_len(ctx: CheckContext) -> Optional[Finding]:
    """``max-seq-len`` (SGLang #21987): max_seq_len_q >= every per-request
    query length and max_seq_len_kv >= every KV length (tokens; seq_lens, else
    cu_seqlens_kv differences, else the CSR length)."""
    batch = ctx.batch
    fields: dict[str, Any] = {}
    details: list[str] = []
    q_lens = ctx.q_lens()
    if batch.max_seq_len_q is not None and q_lens:
        longest = max(q_lens)
        if longest > batch.max_seq_len_q:
            i = q_lens.index(longest)
            details.append("max_seq_len_q is below the longest query")
            fields["max_seq_len_q"] = batch.max_seq_len_q
            fields[_q_len_label(ctx, i)] = longest
    kv_lens = ctx.kv_lens()
    if batch.max_seq_len_kv is not None and kv_lens:
        longest = max(kv_lens)
        if longest > batch.max_seq_len_kv:
            i = kv_lens.index(longest)
            details.append("max_seq_len_kv is below the longest KV sequence")
            fields["max_seq_len_kv"] = batch.max_seq_len_kv
            fields.update(ctx.kv_len_fields(i))
    if not details:
        return None
    return Finding("; ".join(details), fields)


@register("seq-len-covers-query", Level.VALUES, needs=(*_BASE, "cu-seqlens-monotone"))
def check_seq_len_covers_query(ctx: CheckContext) -> Optional[Finding]:
    """``seq-len-covers-query``: kv_len[i] >= q_len[i] >= 0 (tokens), with
    kv_len from seq_lens (else cu_seqlens_kv differences, else the CSR
    length) and q_len from cu_seqlens_q or q_len_per_req on a decode kernel."""
    kv_lens = ctx.kv_lens()
    if kv_lens is None:
        return None
    q_lens = ctx.q_lens()
    bad = []
    for i, s in enumerate(kv_lens):
        q = q_lens[i] if q_lens is not None and i < len(q_lens) else 0
        if s < 0 or s < q:
            bad.append(i)
    if not bad:
        return None
    i = bad[0]
    fields: dict[str, Any] = ctx.kv_len_fields(i)
    if q_lens is not None:
        fields[_q_len_label(ctx, i)] = q_lens[i]
    fields["requests with seq_len < q_len"] = len(bad)
    return Finding("a request's KV length is shorter than its new query tokens", fields)


def _tables(ctx: CheckContext):
    """(field name, rows, page size) for each page table present."""
    host = ctx.host
    out = []
    if "page_table" in host and ctx.page_size is not None:
        out.append(("page_table", host["page_table"], ctx.page_size))
    if "swa_page_table" in host:
        ps = ctx.swa_pool.page_size if ctx.swa_pool is not None else ctx.page_size
        if ps is not None:
            out.append(("swa_page_table", host["swa_page_table"], ps))
    return out


@register("page-table-capacity", Level.VALUES, needs=(*_BASE, "kv-layout"))
def check_page_table_capacity(ctx: CheckContext) -> Optional[Finding]:
    """``page-table-capacity`` (H200 xqa measurement): ceil(seq_lens[i] /
    page_size) <= page_table.shape[1] (and swa_page_table.shape[1]) for
    every request."""
    seq_lens = ctx.host.get("seq_lens")
    if seq_lens is None:
        return None
    for name, _rows, page_size in _tables(ctx):
        width = shape_of(getattr(ctx.batch, name))[1]
        bad = [i for i, s in enumerate(seq_lens) if pages_needed(s, page_size) > width]
        if bad:
            i = bad[0]
            return Finding(
                f"a request needs more pages than its {name} row holds",
                {
                    f"seq_lens[{i}]": seq_lens[i],
                    "page_size": page_size,
                    f"ceil(seq_lens[{i}] / page_size)": pages_needed(seq_lens[i], page_size),
                    f"{name}.shape[1]": width,
                    "requests that overflow their row": len(bad),
                },
            )
    return None


@register("page-id-range", Level.VALUES, needs=(*_BASE, "kv-layout"))
def check_page_id_range(ctx: CheckContext) -> Optional[Finding]:
    """``page-id-range`` (H200 xqa measurement): the first ceil(seq_lens[i] /
    page_size) entries of each page-table row, and FlashInfer's used
    ``kv_indices[:kv_indptr[-1]]``, are in [0, kv_cache.num_pages)."""
    if ctx.kv_cache is None:
        return None
    finding = _page_table_range(ctx)
    return finding if finding is not None else _csr_page_range(ctx)


def _csr_page_range(ctx: CheckContext) -> Optional[Finding]:
    """CSR part of ``page-id-range``; skipped when kv_indptr is malformed or
    ends past kv_indices (``cu-seqlens-monotone`` reports both)."""
    kv = ctx.kv_cache
    offsets = ctx.host.get("kv_indptr")
    indices = ctx.host.get("kv_indices")
    if offsets is None or indices is None or ctx.prefix_lens("kv_indptr") is None:
        return None
    end = offsets[-1]
    if end > len(indices):
        return None
    used = indices[:end]
    if not used or (min(used) >= 0 and max(used) < kv.num_pages):  # C-speed fast path
        return None
    bad = [k for k in range(end) if not 0 <= indices[k] < kv.num_pages]
    k = bad[0]
    i = bisect_right(offsets, k) - 1  # request whose pages hold position k
    return Finding(
        "kv_indices points outside the KV cache",
        {
            f"kv_indices[{k}]": indices[k],
            "kv_cache.num_pages": kv.num_pages,
            f"kv_indptr[{i}]": offsets[i],
            f"kv_indptr[{i + 1}]": offsets[i + 1],
            "out-of-range page ids": len(bad),
        },
    )


def _table_out_of_range(
    table: HostRows, seq_lens: Sequence[int], page_size: int, num_pages: int
) -> tuple[Optional[tuple[int, int, int]], int]:
    """Vectorized scan of the used entries of a host page table: the first
    out-of-range (row, column, page id) and how many there are (~40 us for a
    64 x 256 decode table, where a Python loop takes ~1.5 ms)."""
    import torch  # a HostRows only comes from torch tensors

    t = table.tensor
    needed = torch.tensor([pages_needed(s, page_size) for s in seq_lens], dtype=torch.int64)
    used = torch.arange(t.shape[1]).unsqueeze(0) < needed.unsqueeze(1)
    bad = used & ((t < 0) | (t >= num_pages))
    count = int(bad.sum())
    if not count:
        return None, 0
    i, j = (int(x) for x in bad.nonzero()[0])
    return (i, j, int(t[i, j])), count


def _page_table_range(ctx: CheckContext) -> Optional[Finding]:
    """Page-table part of ``page-id-range``."""
    kv = ctx.kv_cache
    seq_lens = ctx.host.get("seq_lens")
    table = ctx.host.get("page_table")
    if seq_lens is None or table is None:
        return None
    first: Optional[tuple[int, int, int]] = None
    count = 0
    if isinstance(table, HostRows):
        first, count = _table_out_of_range(table, seq_lens, kv.page_size, kv.num_pages)
        rows: Sequence[Any] = ()
    else:
        rows = table
    for i, (row, s) in enumerate(zip(rows, seq_lens)):
        used = row[: pages_needed(s, kv.page_size)]
        # min/max run in C: a 64 x 256 decode table costs ~0.1 ms, not ~1.5 ms
        if not used or (min(used) >= 0 and max(used) < kv.num_pages):
            continue
        for j, page in enumerate(used):
            if not 0 <= page < kv.num_pages:
                count += 1
                if first is None:
                    first = (i, j, page)
    if first is None:
        return None
    i, j, page = first
    return Finding(
        "the page table points outside the KV cache",
        {
            f"page_table[{i}][{j}]": page,
            "kv_cache.num_pages": kv.num_pages,
            f"seq_lens[{i}]": seq_lens[i],
            "page_size": kv.page_size,
            "out-of-range page ids": count,
        },
    )


def _swa_window(ctx: CheckContext, i: int, seq_len: int, page_size: int) -> tuple[int, int]:
    """[first, last) page indices of request ``i`` that an SWA layer reads."""
    end = pages_needed(seq_len, page_size)
    window = ctx.swa_pool.window_left if ctx.swa_pool is not None else None
    if window is None:
        return 0, end
    q_lens = ctx.q_lens()
    q = q_lens[i] if q_lens is not None else 1
    first_token = max(0, seq_len - max(q, 1) - window)
    return min(first_token // page_size, end), end


@register("swa-page-id-range", Level.VALUES, needs=(*_BASE, "cu-seqlens-monotone", "page-id-range"))
def check_swa_page_id_range(ctx: CheckContext) -> Optional[Finding]:
    """``swa-page-id-range`` (SGLang #26966): page ids the SWA layers read
    (swa_page_table, else the untranslated page_table), restricted to the
    window when ``window_left`` is set, are in [0, num_swa_pages); with a
    full->SWA table, used entries exist, map into the SWA pool and agree
    with what the SWA layers read (one gather of the used entries only)."""
    pool = ctx.swa_pool
    seq_lens = ctx.host.get("seq_lens")
    if pool is None or seq_lens is None:
        return None
    full_table = ctx.host.get("page_table")
    swa_table = ctx.host.get("swa_page_table")
    read_name = "swa_page_table" if swa_table is not None else "page_table"
    read_table = swa_table if swa_table is not None else full_table
    if read_table is None:
        return None
    ps = pool.page_size
    width = len(read_table[0]) if read_table else 0

    # (request, column) pairs the SWA layers read.
    used: list[tuple[int, int]] = []
    for i, s in enumerate(seq_lens):
        lo, hi = _swa_window(ctx, i, s, ps)
        used.extend((i, j) for j in range(lo, min(hi, width)))

    bad = [(i, j) for i, j in used if not 0 <= read_table[i][j] < pool.num_swa_pages]
    if bad:
        i, j = bad[0]
        detail = "the SWA layers read page ids outside the SWA pool"
        if swa_table is None:
            detail += " (no swa_page_table: raw full-pool page ids reach the SWA layers)"
        return Finding(
            detail,
            {
                f"{read_name}[{i}][{j}]": read_table[i][j],
                "num_swa_pages": pool.num_swa_pages,
                f"seq_lens[{i}]": seq_lens[i],
                "out-of-range SWA page ids": len(bad),
            },
        )

    if pool.full_to_swa is None or full_table is None:
        return None
    # Translation entries of the used full-pool pages must exist and land in the pool.
    map_len = shape_of(pool.full_to_swa)[0]
    full_width = len(full_table[0]) if full_table else 0
    used_full = [(i, j) for i, j in used if j < full_width]
    for i, j in used_full:
        page = full_table[i][j]
        if not 0 <= page * ps < map_len:
            return Finding(
                "a used full-pool page has no entry in the full->SWA translation table",
                {f"page_table[{i}][{j}]": page, "page_size": ps, "full_to_swa.shape[0]": map_len},
            )
    token_locs = sorted({full_table[i][j] * ps for i, j in used_full})
    mapped = dict(zip(token_locs, gather_host_ints(pool.full_to_swa, token_locs)))
    for i, j in used_full:
        page = full_table[i][j]
        swa_loc = mapped[page * ps]
        swa_page = swa_loc // ps if swa_loc >= 0 else swa_loc
        if not 0 <= swa_page < pool.num_swa_pages:
            return Finding(
                "the full->SWA translation maps a used page outside the SWA pool",
                {
                    f"page_table[{i}][{j}]": page,
                    f"full_to_swa[{page * ps}]": swa_loc,
                    "num_swa_pages": pool.num_swa_pages,
                    "page_size": ps,
                },
            )
        if read_table[i][j] != swa_page:
            what = (
                "swa_page_table disagrees with the full->SWA translation of page_table"
                if swa_table is not None
                else "the SWA layers read untranslated full-pool page ids (no swa_page_table) but full_to_swa maps them elsewhere"
            )
            return Finding(
                what,
                {
                    f"{read_name}[{i}][{j}]": read_table[i][j],
                    f"full_to_swa[page_table[{i}][{j}] * page_size] // page_size": swa_page,
                    f"page_table[{i}][{j}]": page,
                },
            )
    return None


@register("graph-replay-layout", Level.VALUES, needs=(*_BASE, "graph-replay-layout", "cu-seqlens-monotone"))
def check_graph_replay_values(ctx: CheckContext) -> Optional[Finding]:
    """``graph-replay-layout``, values part (SGLang #21987): a captured uniform
    cu_seqlens_q stride is kept at replay, cu_seqlens_q[-1] equals the
    captured total, and replayed q lengths / seq_lens fit the captured
    max_seq_len_q / max_seq_len_kv."""
    cap = ctx.captured
    if cap is None:
        return None
    fields: dict[str, Any] = {}
    details: list[str] = []
    offsets = ctx.host.get("cu_seqlens_q")
    if offsets:
        lens = [b - a for a, b in zip(offsets, offsets[1:])]
        if cap.cu_seqlens_q_stride is not None:
            off = [i for i, n in enumerate(lens) if n != cap.cu_seqlens_q_stride]
            if off:
                details.append(
                    "capture built cu_seqlens_q with a uniform stride but replay refilled it with a different one"
                )
                fields["captured cu_seqlens_q stride"] = cap.cu_seqlens_q_stride
                fields["replayed per-request q lengths"] = lens
        if cap.sum_seq_lens_q is not None and offsets[-1] != cap.sum_seq_lens_q:
            details.append("the replayed query token total differs from capture")
            fields["captured sum_seq_lens_q"] = cap.sum_seq_lens_q
            fields["cu_seqlens_q[-1]"] = offsets[-1]
        if cap.max_seq_len_q is not None and lens and max(lens) > cap.max_seq_len_q:
            details.append("a replayed query is longer than the max_seq_len_q baked in at capture")
            fields["captured max_seq_len_q"] = cap.max_seq_len_q
            fields["max replayed q length"] = max(lens)
    kv_lens = ctx.kv_lens()
    if cap.max_seq_len_kv is not None and kv_lens and max(kv_lens) > cap.max_seq_len_kv:
        details.append("a replayed KV sequence is longer than the max_seq_len_kv baked in at capture")
        fields["captured max_seq_len_kv"] = cap.max_seq_len_kv
        fields["max(seq_lens)" if "seq_lens" in ctx.host else "max KV length"] = max(kv_lens)
    if not details:
        return None
    return Finding("; ".join(details), fields)
