"""The invariant catalog: what attention metadata must satisfy before an FMHA launch.

Each :class:`Invariant` has a stable kebab-case id (used in
:class:`~guardrails.errors.FmhaInvariantError.invariant`, in CI output and by
``fmha-guard explain <id>``), a one-paragraph statement, the
:class:`Level` at which it runs, where it comes from, the usual cause and the
fix.

Levels: ``SHAPES`` checks read only shapes, dtypes, devices, strides, data
pointers and Python ints, so they cost microseconds and are safe inside CUDA
graph capture. ``VALUES`` checks copy the index tensors to the host once (one
device sync) and read their contents. An invariant whose ``level`` is
``SHAPES`` but has ``values_part`` runs its shape part at ``SHAPES`` and the
rest at ``VALUES``.

Why all of this matters: measured on an H200, of five kinds of bad metadata
sent to the xqa decode kernel (2 extra rows in seq_lens/block_tables; a page
id 3 past the pool; a seq_len longer than its page-table row; variable-length
draft-extend queries on the decode kernel; a page id 100000 past the pool)
only the last crashed. The other four returned wrong attention silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator, Optional

__all__ = ["Level", "Invariant", "CATALOG", "get", "ids"]


class Level(IntEnum):
    """How much checking to do; ordered ``OFF < SHAPES < VALUES``.

    The runtime flag ``FMHA_GUARD=off|shapes|values`` parses into this
    (see :func:`runtime_checks.level.level_from_env`).
    """

    OFF = 0
    """No checks."""
    SHAPES = 1
    """Shapes, dtypes, devices, strides, data pointers and Python scalars only;
    never reads tensor contents, so no device sync and capture-safe."""
    VALUES = 2
    """Also reads index-tensor contents (one packed device-to-host copy)."""

    @classmethod
    def parse(cls, value: "str | int | Level") -> "Level":
        """``"off"``/``"shapes"``/``"values"`` (any case), ``0``/``1``/``2`` or a
        :class:`Level` -> :class:`Level`.

        Raises:
            ValueError: anything else; the message lists the allowed values.
        """
        if isinstance(value, Level):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        if isinstance(value, str):
            key = value.strip().lower()
            for member in cls:
                if key == member.name.lower() or key == str(int(member)):
                    return member
        raise ValueError(f"unknown guard level {value!r}; expected one of off, shapes, values")

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Invariant:
    """One catalog entry.

    Attributes:
        id: stable kebab-case id, e.g. ``"batch-size"``.
        statement: what must hold, in the field's terms.
        level: the lowest :class:`Level` at which (part of) it is checked.
        source: where it comes from, e.g. ``"SGLang #21649"``.
        cause: how engines usually end up violating it.
        fix: what fixed it upstream / what to do.
        values_part: for invariants checked at both levels, what the ``VALUES``
            part adds; ``None`` when the whole invariant runs at ``level``.
        url: link to the source, when there is one.
    """

    id: str
    statement: str
    level: Level
    source: str
    cause: str
    fix: str
    values_part: Optional[str] = None
    url: Optional[str] = None

    @property
    def levels(self) -> tuple[Level, ...]:
        """Every level at which a part of this invariant runs."""
        return (self.level, Level.VALUES) if self.values_part else (self.level,)


def _sglang(pr: int) -> tuple[str, str]:
    return f"SGLang #{pr}", f"https://github.com/sgl-project/sglang/pull/{pr}"


_XQA_FINDING = (
    "H200 xqa measurement: the kernel returned wrong attention without crashing"
)

_ENTRIES = [
    Invariant(
        id="batch-size",
        statement=(
            "Every place the launch states the batch size agrees: the explicit batch_size "
            "argument == cu_seqlens_q.shape[0] - 1 == cu_seqlens_kv.shape[0] - 1 == "
            "seq_lens.shape[0] == page_table.shape[0] (== swa_page_table.shape[0]) == "
            "kv_indptr.shape[0] - 1 == kv_last_page_len.shape[0] (FlashInfer's CSR "
            "paged-KV arguments), for those present."
        ),
        level=Level.SHAPES,
        source=_sglang(21649)[0],
        url=_sglang(21649)[1],
        cause=(
            "a DP-attention padded batch size (forward_batch.batch_size, padded to the "
            "largest rank) was passed while the per-request metadata held only the real "
            "requests; the kernel then walks rows that do not exist (2 extra rows in "
            "seq_lens/block_tables made xqa return wrong numbers, not crash); or a "
            "CUDA-graph index buffer sized for the largest batch (e.g. FlashInfer's "
            "kv_indptr with max_bs + 1 entries) was passed without slicing it to this batch"
        ),
        fix=(
            "derive the batch size from the metadata the kernel reads, e.g. "
            "cu_seqlens_q.shape[0] - 1, instead of forward_batch.batch_size"
        ),
    ),
    Invariant(
        id="forward-mode-kernel",
        statement=(
            "The kernel can run the forward mode's query layout: ragged modes (EXTEND, "
            "MIXED, DRAFT_EXTEND, DRAFT_EXTEND_V2 with variable accept lengths) go to a "
            "prefill/context kernel, never to a decode kernel that assumes a uniform "
            "q_len_per_req; an IDLE launch is empty (batch size 0, no query rows)."
        ),
        level=Level.SHAPES,
        source=_sglang(24856)[0],
        url=_sglang(24856)[1],
        cause=(
            "a dispatch like `if forward_mode.is_decode_or_idle() or "
            "forward_mode.is_draft_extend(...)` sent DRAFT_EXTEND_V2 to the decode "
            "kernel; variable-length draft-extend queries on xqa returned wrong numbers "
            "without crashing"
        ),
        fix=(
            "route every ragged forward mode to forward_extend / the context kernel "
            "(trtllm_batch_context_with_kv_cache); only DECODE and TARGET_VERIFY may use "
            "the decode kernel"
        ),
    ),
    Invariant(
        id="query-rows",
        statement=(
            "The number of query rows (q.shape[0], num_query_rows) matches the metadata: "
            "on a decode kernel it is batch_size * q_len_per_req (q_len_per_req defaults "
            "to 1); a given query tensor and num_query_rows agree. For ragged (prefill "
            "kernel) launches the row count must equal cu_seqlens_q[-1]; that value part "
            "is checked by cu-seqlens-monotone ('ends at the token count')."
        ),
        level=Level.SHAPES,
        source=f"{_sglang(21649)[0]}, {_sglang(24856)[0]}",
        url=_sglang(21649)[1],
        cause=(
            "the query was padded (CUDA graph or DP padding) or flattened from a "
            "different layout than the metadata describes, or q_len_per_req does not "
            "match the number of draft tokens"
        ),
        fix=(
            "slice the query to the real token count, or pass the q_len_per_req and "
            "batch size that produced it"
        ),
    ),
    Invariant(
        id="metadata-dtype-device",
        statement=(
            "Index tensors handed to the kernel (cu_seqlens_q, cu_seqlens_kv, seq_lens, "
            "page_table, swa_page_table and FlashInfer's CSR kv_indptr, kv_indices, "
            "kv_last_page_len) are int32; cu_seqlens_*, seq_lens and the CSR tensors are "
            "1-D and contiguous, page tables are 2-D with last-dim stride 1 (a row-strided "
            "slice of a bigger buffer is fine); the SWA full->SWA translation table is a "
            "1-D integer tensor; all of them sit on one device: the query's when a query "
            "is given, else the KV cache's."
        ),
        level=Level.SHAPES,
        source="FlashInfer trtllm-gen/xqa/fa2/fa3 kernel contract (int32 indptr and block tables)",
        cause=(
            "an index tensor was built with torch.arange/cumsum defaults (int64), "
            "transposed or sliced along the last dim, or left on the CPU; the kernel "
            "reinterprets the bytes and reads garbage offsets"
        ),
        fix=(
            "build index tensors with dtype=torch.int32 on the attention device and "
            "keep them contiguous (.to(torch.int32).contiguous())"
        ),
    ),
    Invariant(
        id="kv-layout",
        statement=(
            "The KV cache matches the declared layout and the query: its page size equals "
            "the page size the page table was built with, its head_dim equals "
            "q.shape[-1], the query head count is a multiple of num_kv_heads, and the "
            "head_dim axis is contiguous (stride 1). NHD is [num_pages, page_size, "
            "num_kv_heads, head_dim], HND is [num_pages, num_kv_heads, page_size, head_dim]."
        ),
        level=Level.SHAPES,
        source="FlashInfer paged KV-cache layout contract (kv_layout='NHD'/'HND')",
        cause=(
            "an NHD cache was passed where HND is declared (trtllm-gen expects HND) or "
            "vice versa, so page_size and num_kv_heads are swapped; or the per-layer "
            "buffer of another layer/pool was passed"
        ),
        fix=(
            "pass kv_layout matching the tensor (or .permute to it) and the per-layer "
            "buffer of the pool that built the page table"
        ),
    ),
    Invariant(
        id="cu-seqlens-monotone",
        statement=(
            "cu_seqlens_q (qo_indptr), cu_seqlens_kv (token-granular kv indptr) and "
            "kv_indptr (FlashInfer's page-granular paged_kv_indptr) are exclusive prefix "
            "sums: they start at 0 and never decrease. cu_seqlens_q ends at the number of "
            "query rows. cu_seqlens_kv[i+1] - cu_seqlens_kv[i] == seq_lens[i] (so it ends "
            "at sum(seq_lens)), and with a ragged K/V cu_seqlens_kv[-1] <= num_kv_rows "
            "(key.shape[0]). kv_indptr[-1] <= kv_indices.shape[0] (only the first "
            "kv_indptr[-1] page ids are read), and when the KV lengths are also given "
            "(seq_lens, else cu_seqlens_kv) each request has exactly the pages they need: "
            "kv_indptr[i+1] - kv_indptr[i] == ceil(seq_lens[i] / page_size). (The "
            "token tail, kv_last_page_len, is checked by last-page-len.)"
        ),
        level=Level.VALUES,
        source="FlashInfer ragged-indptr contract; SGLang #21649 (ends-at-token-count)",
        url=_sglang(21649)[1],
        cause=(
            "offsets were built from stale or padded lengths, built without the leading "
            "0, or only partly refilled (a CUDA-graph buffer holding the previous step's "
            "tail); kv_indptr counted tokens instead of pages, or its kv_indices buffer "
            "was sliced shorter than the pages it points into; a ragged key/value was "
            "sliced to fewer rows than cu_seqlens_kv counts"
        ),
        fix=(
            "rebuild with torch.nn.functional.pad(torch.cumsum(lens, 0, "
            "dtype=torch.int32), (1, 0)) from the same lengths the kernel sees (for "
            "kv_indptr, lens = ceil(seq_lens / page_size) pages), and pass the whole "
            "kv_indices buffer and key/value tensors"
        ),
    ),
    Invariant(
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
    ),
    Invariant(
        id="uniform-q-len",
        statement=(
            "A decode kernel given q_len_per_req needs exactly q_len_per_req query rows "
            "per request: every cu_seqlens_q[i+1] - cu_seqlens_q[i] equals q_len_per_req "
            "(1 when unset). Variable accept lengths (DRAFT_EXTEND_V2) violate it."
        ),
        level=Level.VALUES,
        source=_sglang(24856)[0],
        url=_sglang(24856)[1],
        cause=(
            "a ragged batch (speculative draft-extend with per-request accept lengths) "
            "reached a decode kernel that reshapes q as [batch_size, q_len_per_req, ...]; "
            "rows shift into the wrong requests and xqa returns wrong numbers silently"
        ),
        fix=(
            "send ragged batches to the context/prefill kernel, or pad every request to "
            "q_len_per_req tokens before the decode kernel"
        ),
    ),
    Invariant(
        id="max-seq-len",
        statement=(
            "The scalar bounds cover the data: max_seq_len_q >= the longest per-request "
            "query length, max_seq_len_kv >= the longest KV length (seq_lens; when it is "
            "absent, the cu_seqlens_kv differences or the CSR length (kv_indptr[i+1] - "
            "kv_indptr[i] - 1) * page_size + kv_last_page_len[i]). Kernels size grids and "
            "tiles from these scalars and skip whatever lies beyond them."
        ),
        level=Level.VALUES,
        source=_sglang(21987)[0],
        url=_sglang(21987)[1],
        cause=(
            "the scalar was computed at CUDA-graph capture (or from a previous step / "
            "the CPU copy of other lengths) and not updated for this batch"
        ),
        fix=(
            "compute max_seq_len_* from the same lengths that fill the index tensors, or "
            "use a static upper bound (num_draft_tokens, max_context_len) under CUDA "
            "graphs"
        ),
    ),
    Invariant(
        id="seq-len-covers-query",
        statement=(
            "Every request's KV length includes its new tokens: seq_lens[i] >= q_len[i] "
            ">= 0, where q_len comes from cu_seqlens_q (or is q_len_per_req on a decode "
            "kernel). Without seq_lens the KV length is the cu_seqlens_kv difference or "
            "the CSR length (kv_indptr[i+1] - kv_indptr[i] - 1) * page_size + "
            "kv_last_page_len[i] (0 with no pages)."
        ),
        level=Level.VALUES,
        source="FlashInfer causal-mask contract (query rows are the last q_len KV positions)",
        cause=(
            "seq_lens was taken before the new tokens were appended (prefix length "
            "instead of prefix + extend length), e.g. missing the + q_len_per_req "
            "for TARGET_VERIFY"
        ),
        fix="pass seq_lens = prefix_lens + extend_lens (cache_seqlens after the write)",
    ),
    Invariant(
        id="page-table-capacity",
        statement=(
            "Every request's page-table row is long enough: ceil(seq_lens[i] / page_size) "
            "<= page_table.shape[1] (and swa_page_table.shape[1]) for every request. It "
            "has no CSR counterpart: kv_indptr gives each request exactly its pages (the "
            "CSR bound kv_indptr[-1] <= kv_indices.shape[0] is part of cu-seqlens-monotone)."
        ),
        level=Level.VALUES,
        source=_XQA_FINDING + " (seq_len longer than the page-table row)",
        cause=(
            "the page table was sliced to the pages of a shorter length (max_seq_len "
            "from capture, a previous step, or before the speculative tokens were added)"
        ),
        fix=(
            "size the page table from the max seq_len of this batch (ceil(max_seq_len_kv "
            "/ page_size) columns) or use the full max_context_len-wide buffer"
        ),
    ),
    Invariant(
        id="page-id-range",
        statement=(
            "Every page id the kernel will read, i.e. the first ceil(seq_lens[i] / "
            "page_size) entries of each page-table row, or in FlashInfer's CSR form every "
            "used kv_indices[:kv_indptr[-1]], lies in [0, num_pages) of the KV cache "
            "actually passed. Entries past a request's last page (or past kv_indptr[-1] "
            "in a longer kv_indices buffer) are not read and are not checked."
        ),
        level=Level.VALUES,
        source=_XQA_FINDING + " (a page id 3 past the pool read silently; 100000 past crashed)",
        cause=(
            "the page table indexes a different pool (a draft or SWA pool of another "
            "size), holds token indices instead of page indices (missing // page_size), "
            "or holds stale ids from an earlier batch"
        ),
        fix=(
            "build the page table (or kv_indices) from req_to_token of the pool whose "
            "buffer is passed, dividing token locations by page_size"
        ),
    ),
    Invariant(
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
        source=_sglang(26966)[0],
        url=_sglang(26966)[1],
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
    ),
    Invariant(
        id="graph-replay-layout",
        statement=(
            "Metadata refilled for CUDA-graph replay has exactly the layout baked in at "
            "capture: the same index buffers with the same shapes, dtypes, strides, "
            "devices and data pointers (refilled in place with copy_, not rebound); the "
            "same batch size, query rows and q_len_per_req; and the replayed data fits "
            "the scalars the graph baked in (max_seq_len_q, max_seq_len_kv)."
        ),
        values_part=(
            "when capture used a uniform cu_seqlens_q stride, the replayed cu_seqlens_q "
            "has that same stride; cu_seqlens_q[-1] equals the captured sum_seq_lens_q; "
            "the replayed per-request q lengths and seq_lens stay within the captured "
            "max_seq_len_q / max_seq_len_kv"
        ),
        level=Level.SHAPES,
        source=_sglang(21987)[0],
        url=_sglang(21987)[1],
        cause=(
            "capture built cu_seqlens_q with torch.arange (uniform num_draft_tokens "
            "stride) while replay refilled it with cumsum(accept_length + 1) (variable "
            "stride), and max_seq_len_q was recomputed at replay although the graph had "
            "baked the capture-time value"
        ),
        fix=(
            "refill replay buffers with the capture-time layout (uniform stride, "
            "max_seq_len_q = num_draft_tokens) using in-place copy_ into the captured "
            "buffers"
        ),
    ),
]

CATALOG: dict[str, Invariant] = {inv.id: inv for inv in _ENTRIES}
"""Every invariant, keyed by id, in the order they are checked (SHAPES parts
first, then VALUES parts, each in this order)."""


def get(invariant_id: str) -> Invariant:
    """Look up an invariant by id.

    Raises:
        KeyError: unknown id; the message lists the known ids.
    """
    try:
        return CATALOG[invariant_id]
    except KeyError:
        raise KeyError(
            f"unknown invariant {invariant_id!r}; known: {', '.join(CATALOG)}"
        ) from None


def ids(level: Optional[Level] = None) -> Iterator[str]:
    """Invariant ids in catalog order; with ``level``, only those that run (at
    least partly) at that level or below."""
    for inv in CATALOG.values():
        if level is None or inv.level <= level:
            yield inv.id
