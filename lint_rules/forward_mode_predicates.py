"""What a test made of ``forward_mode.is_*()`` predicates says about draft extend (GR003, GR004).

Modes are named by the predicate word after ``is_``: ``is_draft_extend_v2()`` ->
``draft_extend_v2``; ``is_draft_extend(include_v2=True)`` -> ``draft_extend+v2``. The
draft-extend modes a word is true for are ``v1`` (DRAFT_EXTEND) and ``v2``
(DRAFT_EXTEND_V2, variable accept lengths).
"""

from __future__ import annotations

import libcst as cst


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


def positive_modes(expr: cst.CSTNode) -> frozenset[str]:
    """Draft-extend modes of the predicates in ``expr`` that are not negated."""
    negated: set[int] = set()

    class _Nots(cst.CSTVisitor):
        def visit_UnaryOperation(self, node: cst.UnaryOperation) -> None:
            if isinstance(node.operator, cst.Not):
                negated.update(id(c) for _, c in mode_predicates(node.expression))

    expr.visit(_Nots())
    modes: set[str] = set()
    for word, call in mode_predicates(expr):
        if id(call) not in negated:
            modes |= draft_extend_modes(word)
    return frozenset(modes)


def positive_names(expr: cst.CSTNode) -> list[str]:
    """Plain names in ``expr`` not under ``not`` (local flags such as ``uses_decode_kernel``)."""
    names: list[str] = []

    class _Names(cst.CSTVisitor):
        def visit_UnaryOperation(self, node: cst.UnaryOperation) -> bool:
            return not isinstance(node.operator, cst.Not)

        def visit_Attribute(self, node: cst.Attribute) -> bool:
            return False

        def visit_Call(self, node: cst.Call) -> bool:
            return False

        def visit_Name(self, node: cst.Name) -> None:
            names.append(node.value)

    expr.visit(_Names())
    return names


def _disjuncts(expr: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(expr, cst.BooleanOperation) and isinstance(expr.operator, cst.Or):
        return [*_disjuncts(expr.left), *_disjuncts(expr.right)]
    return [expr]


def is_mode_only_test(test: cst.BaseExpression) -> bool:
    """Every ``or``-disjunct of the test is a forward-mode predicate, one of them a
    draft-extend one: a branch dedicated to the mode, not a generic extend branch."""
    return bool(positive_modes(test)) and all(mode_predicates(p) for p in _disjuncts(test))


# --- forward modes as sets (GR010) ---------------------------------------------------
#
# A test is evaluated for one forward mode at a time, three-valued: True, False or None
# (unknown: the test also depends on something that is not the mode). SGLang's
# ``ForwardMode`` predicates (``model_executor/forward_batch_info.py``, 0.5.9-0.5.23) give
# the sets below; rarer modes (SPLIT_PREFILL, DLLM_EXTEND, PREBUILT) are not modeled.

#: The forward modes GR010 reasons about, in SGLang's ``ForwardMode`` names.
MODES: tuple[str, ...] = (
    "EXTEND", "MIXED", "DECODE", "IDLE", "TARGET_VERIFY", "DRAFT_EXTEND", "DRAFT_EXTEND_V2",
)
#: The modes a CUDA graph is captured and replayed for (``init_forward_metadata_*_cuda_graph``).
GRAPH_MODES: frozenset[str] = frozenset({"DECODE", "IDLE", "TARGET_VERIFY", "DRAFT_EXTEND", "DRAFT_EXTEND_V2"})

_EXTEND = frozenset({"EXTEND", "MIXED", "TARGET_VERIFY", "DRAFT_EXTEND"})
#: ``is_<word>()`` -> (modes it is true for, the keyword that adds DRAFT_EXTEND_V2 when True)
_PREDICATES: dict[str, tuple[frozenset[str], str | None]] = {
    "extend": (_EXTEND, "include_draft_extend_v2"),
    "prefill": (_EXTEND, "include_draft_extend_v2"),
    "decode": (frozenset({"DECODE"}), None),
    "mixed": (frozenset({"MIXED"}), None),
    "idle": (frozenset({"IDLE"}), None),
    "decode_or_idle": (frozenset({"DECODE", "IDLE"}), None),
    "target_verify": (frozenset({"TARGET_VERIFY"}), None),
    "draft_extend": (frozenset({"DRAFT_EXTEND"}), "include_v2"),
    "draft_extend_v2": (frozenset({"DRAFT_EXTEND_V2"}), None),
    "extend_or_draft_extend_or_mixed": (frozenset({"EXTEND", "MIXED", "DRAFT_EXTEND"}), "include_draft_extend_v2"),
    "extend_without_speculative": (frozenset({"EXTEND", "MIXED", "DRAFT_EXTEND"}), None),
    "context_parallel_extend": (frozenset({"EXTEND", "MIXED"}), "include_draft_extend_v2"),
    "cpu_graph": (frozenset({"DECODE"}), None),
    "split_prefill": (frozenset(), None),
    "dllm_extend": (frozenset(), None),
    "prebuilt": (frozenset(), None),
}


def _is_mode_receiver(node: cst.BaseExpression) -> bool:
    """``forward_mode``, ``forward_batch.forward_mode``, ``mode``: a value that is a forward mode."""
    last = node.attr.value if isinstance(node, cst.Attribute) else node.value if isinstance(node, cst.Name) else ""
    return "mode" in last.lower()


def predicate_modes(call: cst.Call) -> frozenset[str] | None:
    """The modes ``<mode>.is_<word>(...)`` is true for; ``None``: not a known mode predicate."""
    func = call.func
    if not (isinstance(func, cst.Attribute) and func.attr.value.startswith("is_") and _is_mode_receiver(func.value)):
        return None
    entry = _PREDICATES.get(func.attr.value[3:])
    if entry is None:
        return None
    modes, keyword = entry
    if keyword is not None and any(
        a.keyword is not None and a.keyword.value == keyword and isinstance(a.value, cst.Name) and a.value.value == "True"
        for a in call.args
    ):
        modes = modes | {"DRAFT_EXTEND_V2"}
    return modes


def _enum_mode(node: cst.BaseExpression) -> str | None:
    """``ForwardMode.DECODE`` -> ``DECODE``."""
    if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "ForwardMode":
        return node.attr.value
    return None


def mode_value(expr: cst.BaseExpression, mode: str, flags: dict[str, cst.BaseExpression] | None = None) -> bool | None:
    """Whether ``expr`` is true when the batch's forward mode is ``mode``: True, False, or
    None (it depends on more than the mode). ``flags``: local names bound once to a test
    (``uses_decode_kernel = forward_mode.is_target_verify() or ...``), followed."""
    if flags is None:
        flags = {}
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
        inner = mode_value(expr.expression, mode, flags)
        return None if inner is None else not inner
    if isinstance(expr, cst.BooleanOperation):
        left = mode_value(expr.left, mode, flags)
        right = mode_value(expr.right, mode, flags)
        if isinstance(expr.operator, cst.And):
            if left is False or right is False:
                return False
            return True if left is True and right is True else None
        if left is True or right is True:
            return True
        return False if left is False and right is False else None
    if isinstance(expr, cst.Call):
        modes = predicate_modes(expr)
        return None if modes is None else mode in modes
    if isinstance(expr, cst.Comparison) and len(expr.comparisons) == 1 and _is_mode_receiver(expr.left):
        target = expr.comparisons[0]
        op = target.operator
        if isinstance(op, (cst.Equal, cst.Is, cst.NotEqual, cst.IsNot)):
            named = _enum_mode(target.comparator)
            if named is not None:
                return (named == mode) == isinstance(op, (cst.Equal, cst.Is))
        if isinstance(op, (cst.In, cst.NotIn)) and isinstance(target.comparator, (cst.Tuple, cst.List, cst.Set)):
            named_all = [_enum_mode(e.value) for e in target.comparator.elements]
            if all(n is not None for n in named_all):
                return (mode in named_all) == isinstance(op, cst.In)
        return None
    if isinstance(expr, cst.Name) and expr.value in ("True", "False"):
        return expr.value == "True"
    if isinstance(expr, cst.Name) and expr.value in flags:
        bound = flags.pop(expr.value)  # no cycles: each flag is followed once per evaluation
        try:
            return mode_value(bound, mode, flags)
        finally:
            flags[expr.value] = bound
    return None


def may_be_true(expr: cst.BaseExpression, modes: frozenset[str], flags=None) -> frozenset[str]:
    """The modes of ``modes`` for which ``expr`` may be true."""
    return frozenset(m for m in modes if mode_value(expr, m, flags) is not False)


def may_be_false(expr: cst.BaseExpression, modes: frozenset[str], flags=None) -> frozenset[str]:
    """The modes of ``modes`` for which ``expr`` may be false."""
    return frozenset(m for m in modes if mode_value(expr, m, flags) is not True)
