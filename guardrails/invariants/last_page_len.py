"""``last-page-len``: FlashInfer's ``kv_last_page_len`` holds each request's token tail.

Statement: ``kv_last_page_len[i]`` is in ``1..page_size`` for a request with pages (0 is
allowed only for one without); with ``seq_lens`` (else ``cu_seqlens_kv``) given, the
CSR length ``(pages_i - 1) * page_size + kv_last_page_len[i]`` equals it.

Source: the FlashInfer paged KV-cache layout (``paged_kv_last_page_len``).

Shape part: none. Value part (:func:`check_last_page_len`): reads ``kv_last_page_len``,
``kv_indptr`` and the token lengths from the host copy.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..models import pages_needed

INVARIANT = Invariant(
    id="last-page-len",
    statement=(
        "FlashInfer's kv_last_page_len ([batch_size] int32, tokens in each request's "
        "last page) is in 1..page_size for every request with at least one page "
        "(kv_indptr[i+1] > kv_indptr[i]); 0 is allowed only for a request with no "
        "pages, whose entry the kernel ignores (any value in 0..page_size passes "
        "there). The KV length the kernel reads is (kv_indptr[i+1] - kv_indptr[i] - "
        "1) * page_size + kv_last_page_len[i]; when seq_lens (else cu_seqlens_kv) is "
        "also given, that length equals it, i.e. kv_last_page_len[i] == seq_lens[i] "
        "- (num_pages_i - 1) * page_size (the page count itself is checked by "
        "cu-seqlens-monotone)."
    ),
    level=Level.VALUES,
    source="FlashInfer paged KV-cache layout (paged_kv_last_page_len)",
    url="https://docs.flashinfer.ai/tutorials/kv_layout.html",
    cause=(
        "kv_last_page_len was computed as seq_len % page_size (0 for a full last "
        "page) or from a length other than the one that built kv_indptr (stale, "
        "padded, or before the new tokens were appended); a value above page_size "
        "makes the kernel read past the last page into the next page's tokens, a 0 "
        "silently drops the tokens of the last page"
    ),
    fix=(
        "compute kv_last_page_len = (seq_lens - 1) % page_size + 1 and kv_indptr from "
        "cumsum(ceil(seq_lens / page_size)), both from the same seq_lens"
    ),
)


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size"))
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
