"""Where a method reads ``forward_batch.batch_size`` (shared by GR001 and GR101)."""

from __future__ import annotations

import libcst as cst

from .cst_analysis import annotation_name, param_names

FORWARD_BATCH_NAMES = ("forward_batch",)
FORWARD_BATCH_TYPES = ("ForwardBatch",)


def forward_batch_params(fn: cst.FunctionDef) -> frozenset[str]:
    """Parameters that hold the ForwardBatch: named ``forward_batch`` or annotated so."""
    return frozenset(
        p.name.value
        for p in param_names(fn)
        if p.name.value in FORWARD_BATCH_NAMES or annotation_name(p) in FORWARD_BATCH_TYPES
    )


def is_batch_size_read(node: cst.CSTNode, holders: frozenset[str]) -> bool:
    """``<holder>.batch_size`` where ``<holder>`` is a ForwardBatch parameter."""
    return (
        isinstance(node, cst.Attribute)
        and node.attr.value == "batch_size"
        and isinstance(node.value, cst.Name)
        and node.value.value in holders
    )
