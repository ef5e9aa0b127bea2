"""Default names GR003 / GR004 reason about: forward modes, decode kernels, metadata paths.

Kept here (not in ``config.py``) because they describe SGLang's attention-backend API,
not a project's kernels; every list holds ``fnmatch`` patterns.
"""

from __future__ import annotations

import fnmatch

import libcst as cst

#: Kernels that assume one uniform ``q_len_per_req`` for every request of the batch.
DECODE_KERNELS: tuple[str, ...] = (
    "trtllm_batch_decode_with_kv_cache",
    "trtllm_batch_decode_with_kv_cache_mla",
    "xqa",
    "xqa_*",
    "cutlass_mla_decode",
    "_run_fixed_q_len_decode",
    "*_fixed_q_len_*",
)

#: Methods that plan metadata: eager, CUDA-graph capture / replay, shared ``_apply_*`` bodies.
METADATA_METHODS: tuple[str, ...] = (
    "init_forward_metadata*",
    "*_metadata",
    "*_metadata_*",
    "*cuda_graph*",
    "_apply_*",
    "_build_*",
)

#: The eager planner (runs when the batch is not served by a captured graph).
EAGER_METHODS: tuple[str, ...] = ("init_forward_metadata", "_compute_forward_metadata")
#: Legacy CUDA-graph API (SGLang <= 0.5.12).
CAPTURE_METHODS: tuple[str, ...] = ("init_forward_metadata_capture_cuda_graph",)
REPLAY_METHODS: tuple[str, ...] = ("init_forward_metadata_replay_cuda_graph",)
#: Current API (SGLang >= 0.5.13): one method, ``if in_capture:`` splits the paths.
OUT_GRAPH_METHODS: tuple[str, ...] = ("init_forward_metadata_out_graph",)
IN_CAPTURE_FLAGS: tuple[str, ...] = ("in_capture", "is_capture", "capturing")


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def mode_predicates(node: cst.CSTNode) -> list[tuple[str, cst.Call]]:
    """``forward_mode.is_xxx(...)`` calls inside ``node``: (mode word, call), in order.

    ``is_draft_extend(include_v2=True)`` yields ``draft_extend+v2``; ``is_draft_extend_v2()``
    yields ``draft_extend_v2``; ``is_draft_extend()`` yields ``draft_extend``.
    """
    found: list[tuple[str, cst.Call]] = []

    class _Visit(cst.CSTVisitor):
        def visit_Call(self, call: cst.Call) -> None:
            func = call.func
            if isinstance(func, cst.Attribute) and func.attr.value.startswith("is_"):
                word = func.attr.value[3:]
                if word == "draft_extend" and any(
                    a.keyword is not None
                    and a.keyword.value == "include_v2"
                    and isinstance(a.value, cst.Name)
                    and a.value.value == "True"
                    for a in call.args
                ):
                    word = "draft_extend+v2"
                found.append((word, call))

    node.visit(_Visit())
    return found


def draft_extend_modes(word: str) -> frozenset[str]:
    """The draft-extend modes a predicate word is true for (empty: not a draft-extend test)."""
    if word == "draft_extend_v2":
        return frozenset({"v2"})
    if word == "draft_extend+v2":
        return frozenset({"v1", "v2"})
    if word == "draft_extend":
        return frozenset({"v1"})
    if word.startswith("draft_extend"):
        return frozenset({"v1", "v2"})
    return frozenset()
