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
