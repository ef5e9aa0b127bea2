"""``scheduler-metadata``: split-KV scheduling metadata was computed for the batch it is launched with.

Statement: FlashMLA's ``num_splits`` (``get_mla_metadata`` / ``get_mla_decoding_metadata``
output, the cumulative split counts per request) is a 1-D int32 tensor of
``batch_size + 1`` entries for the launch's batch (``q.shape[0]`` ==
``cache_seqlens.shape[0]``); its ``tile_scheduler_metadata`` is a 2-D int32
``[num_sm_parts, 8]`` tensor; both on the KV cache's device.

Source: vLLM #21691: under full CUDA graphs with DP attention, FlashMLA's
``get_mla_metadata`` ran on the unpadded batch while the captured kernel ran the padded
one; the kernel read split metadata past the batch it was computed for (an illegal
memory access). A schedule of another batch size (CUDA-graph replay handing the kernel
the metadata captured for another batch, or the metadata of a previous step) does the
same: the kernel trusts it and checks neither its length nor its contents.

Shape part (:func:`check_scheduler_metadata`): dtypes, ranks, ``num_splits.shape[0]``
against the agreed batch size, devices. Value part: none.
"""

from __future__ import annotations

from typing import Any, Optional

from ..catalog_entry import Invariant
from ..check_context import CheckContext, Finding, register
from ..config import Level
from ..tensor_facts import device_name, dtype_name, same_device, shape_of

INVARIANT = Invariant(
    id="scheduler-metadata",
    statement=(
        "Split-KV scheduling metadata computed before the launch belongs to the "
        "launch's batch: FlashMLA's num_splits (from get_mla_metadata / "
        "get_mla_decoding_metadata on this batch's cache_seqlens) is a 1-D int32 "
        "tensor of batch_size + 1 entries (batch_size = q.shape[0] = "
        "cache_seqlens.shape[0]), its tile_scheduler_metadata a 2-D int32 "
        "[num_sm_parts, 8] tensor, both on the KV cache's device. The kernel reads "
        "the schedule as given and checks neither its length nor its contents."
    ),
    level=Level.SHAPES,
    source="vLLM #21691 (FlashMLA split metadata computed for another batch than the launch: an illegal memory access)",
    url="https://github.com/vllm-project/vllm/pull/21691",
    cause=(
        "the metadata was computed for another batch: before CUDA-graph padding (the "
        "graph launches the padded batch), at capture for another captured batch "
        "size, or at a previous step, and reused for this launch"
    ),
    fix=(
        "call get_mla_metadata on the cache_seqlens of the batch the kernel launches "
        "with (after padding), and under CUDA graphs refill the captured schedule "
        "buffers of this batch size in place at every replay"
    ),
)


@register(INVARIANT, Level.SHAPES, needs=("batch-size",))
def check_scheduler_metadata(ctx: CheckContext) -> Optional[Finding]:
    """``scheduler-metadata`` (vLLM #21691): FlashMLA's ``num_splits`` is 1-D int32
    ``[batch_size + 1]`` for the launch's batch, ``tile_scheduler_metadata`` 2-D int32
    ``[num_sm_parts, 8]``, both on the KV cache's device."""
    batch = ctx.batch
    splits, tiles = batch.num_splits, batch.tile_scheduler_metadata
    if splits is None and tiles is None:
        return None
    fields: dict[str, Any] = {}
    details: list[str] = []
    for name, t, ndim in (("num_splits", splits, 1), ("tile_scheduler_metadata", tiles, 2)):
        if t is None:
            continue
        if dtype_name(t) != "int32":
            details.append(f"{name} must be int32")
            fields[f"{name}.dtype"] = dtype_name(t)
        if len(shape_of(t)) != ndim:
            details.append(f"{name} must be {ndim}-D")
            fields[f"{name}.shape"] = shape_of(t)
        kv = ctx.kv_cache
        if kv is not None and kv.device is not None and not same_device(device_name(t), kv.device):
            details.append(f"{name} is not on the KV cache's device")
            fields[f"{name}.device"] = device_name(t)
            fields["kv_cache.device"] = kv.device
    if splits is not None and len(shape_of(splits)) == 1 and ctx.batch_size is not None:
        if shape_of(splits)[0] != ctx.batch_size + 1:
            details.append("num_splits was computed for another batch size than the launch's")
            fields["num_splits.shape[0]"] = shape_of(splits)[0]
            fields["batch_size + 1"] = ctx.batch_size + 1
            fields.update(batch.batch_size_sources())
    if not details:
        return None
    return Finding("; ".join(dict.fromkeys(details)), fields)
