"""``swa-page-id-range``: the sliding-window layers read page ids of their own pool.

Statement: every page id the SWA layers read (``swa_page_table``, else the untranslated
``page_table``; only inside the window when ``window_left`` is set) is in
``[0, num_swa_pages)``; used full->SWA translation entries exist, map inside the SWA
pool and agree with a given ``swa_page_table``.

Source: SGLang #26966: ``__init__`` cached ``isinstance(token_to_kv_pool, SWAKVPool)``;
the draft worker later swapped that pool and SWA page ids went out of range.

Shape part: none (the full->SWA table's dtype and rank are ``metadata-dtype-device``'s).
Value part (:func:`check_swa_page_id_range`): the tables from the host copy, plus one
gather of the used translation entries.
"""

from __future__ import annotations

from typing import Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..models import pages_needed
from ..tensor_facts import gather_host_ints, shape_of

INVARIANT = Invariant(
    id="swa-page-id-range",
    statement=(
        "With a sliding-window (SWA) pool, every page id the SWA layers read (after "
        "the full->SWA translation; the untranslated page_table when no "
        "swa_page_table is given) is in [0, num_swa_pages); used translation-table "
        "entries exist and map inside the SWA pool; a given swa_page_table equals the "
        "translation of page_table. Only pages inside the window are checked when "
        "window_left is set."
    ),
    level=Level.VALUES,
    source=sglang_pr(26966),
    url=sglang_url(26966),
    cause=(
        "the backend cached isinstance(model_runner.token_to_kv_pool, SWAKVPool) in "
        "__init__; the draft worker later swapped the pool, the translation became "
        "dead code and SWA layers got raw full-pool page ids, reading the smaller SWA "
        "cache out of bounds"
    ),
    fix=(
        "resolve the SWA pool when metadata is built (not once in __init__) and "
        "translate page ids with translate_loc_from_full_to_swa(...) // page_size"
    ),
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


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "cu-seqlens-monotone", "page-id-range"))
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
