"""``graph-replay-layout``: metadata refilled for CUDA-graph replay keeps the layout baked in at capture.

Statement: a replay passes the same index buffers (shape, dtype, stride, device, data
pointer: refilled in place with ``copy_``, not rebound), the same batch size, query rows
and ``q_len_per_req``, and data that fits the scalars the graph baked in
(``max_seq_len_q``, ``max_seq_len_kv``). Checked only when ``validate(...,
captured=GraphLayout)`` is given.

Source: SGLang #21987: replay filled ``cu_seqlens_q`` with a variable stride where
capture used a uniform one.

Shape part (:func:`check_graph_replay_shapes`): buffer fingerprints
(:class:`~guardrails.models.BufferLayout`), forward mode, kernel, batch size, rows and
scalars against the :class:`~guardrails.models.GraphLayout`. Value part
(:func:`check_graph_replay_values`): the replayed ``cu_seqlens_q`` stride and total and
the replayed lengths against the captured ones.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant, sglang_pr, sglang_url
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..models import BufferLayout

INVARIANT = Invariant(
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
    source=sglang_pr(21987),
    url=sglang_url(21987),
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
)


def _graph_buffers(ctx: CheckContext) -> dict[str, Any]:
    """The buffers a CUDA graph bakes in, by field name: the index tensors and the query
    (the keys of :attr:`GraphLayout.buffers <guardrails.models.GraphLayout.buffers>`)."""
    buffers = dict(ctx.batch.index_tensors())
    if ctx.batch.query is not None:
        buffers["query"] = ctx.batch.query
    return buffers


@register(INVARIANT, Level.SHAPES)
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


@register(INVARIANT, Level.VALUES, needs=("metadata-dtype-device", "batch-size", "graph-replay-layout", "cu-seqlens-monotone"))
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
