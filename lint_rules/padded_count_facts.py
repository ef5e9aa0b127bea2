"""Where a method reads a CUDA-graph-padded count (vLLM profile; shared by GR001 and GR101).

The names come from the config (``padded_counts``: ``num_input_tokens``, ``num_reqs_padded``,
...; ``padding_calls``: ``pad_for_cudagraph``); see :mod:`lint_rules.engine_profile`.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from .cst_analysis import callee_name, param_names


def is_padded_count_read(
    node: cst.CSTNode,
    is_padded: Callable[[str], bool],
    params: frozenset[str],
    is_padding_call: Callable[[str], bool] | None = None,
) -> bool:
    """``<obj>.num_input_tokens`` (any object: ``attn_metadata``, ``common_attn_metadata``,
    ``self``), a parameter named so (``num_reqs_padded``), names per ``is_padded``, or a
    call of a padding function (``self.vllm_config.pad_for_cudagraph(n)``), per
    ``is_padding_call``."""
    if isinstance(node, cst.Attribute):
        return is_padded(node.attr.value)
    if isinstance(node, cst.Call):
        name = callee_name(node)
        return is_padding_call is not None and name is not None and is_padding_call(name)
    return isinstance(node, cst.Name) and node.value in params


def padded_params(fn: cst.FunctionDef, is_padded: Callable[[str], bool]) -> frozenset[str]:
    """Parameters of ``fn`` named as padded counts (``num_input_tokens: int``)."""
    return frozenset(p.name.value for p in param_names(fn) if is_padded(p.name.value))
