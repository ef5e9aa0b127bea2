"""Token-slot vs page-id units of KV indices (GR006).

SGLang's ``req_to_token[req, i]`` is the KV-pool *slot* of token ``i`` (a token index);
a page table (FA3 / FlashInfer ``page_table``, FlashMLA ``block_table``, trtllm
``block_tables``) holds *page ids*, one per ``page_size`` tokens. With ``page_size == 1``
the two coincide, so code that skips the conversion passes every test run at page size 1
and reads the wrong pages (or past the pool) at 16, 32 or 64.

This module decides, for one expression at one point of a method, whether it still holds
token slots: a :data:`~lint_rules.dataflow.Classifier` whose sources are the configured
token-slot attributes (``req_to_token``, ``out_cache_loc``, ``slot_mapping``) and the
metadata fields a planner filled from them (``metadata.page_table`` before
``metadata.page_table[:, strided] // page_size``), tracked as dotted names
(``"metadata.page_table"``) in :class:`~lint_rules.dataflow.FlowState`. A division by the
page size converts (clean); ``.shape`` / ``.size()`` / ``.stride()`` carry no slots.
"""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from .config import LintConfig
from .cst_analysis import callee_name
from .dataflow import FlowState, Verdict

#: Attributes and methods of a tensor that carry no slot values (its extent, not its data).
_EXTENT_ATTRS = frozenset({"shape", "dtype", "device", "is_cuda", "ndim"})
_EXTENT_CALLS = frozenset({"size", "stride", "numel", "dim", "len", "max", "item"})
#: Calls whose result keeps the units of their tensor argument (casts, views, gathers,
#: concatenations). Any other call that receives token slots (a builder, a kernel
#: wrapper, a ``self`` helper) returns something of its own: not followed.
_UNIT_KEEPING_CALLS = frozenset({
    "to", "int", "long", "clone", "contiguous", "view", "reshape", "flatten", "squeeze",
    "unsqueeze", "expand", "repeat", "repeat_interleave", "index_select", "gather", "masked_fill",
    "narrow", "cat", "stack", "where", "copy_", "type", "detach",
})


def dotted(node: cst.CSTNode) -> str | None:
    """``metadata.page_table`` -> ``"metadata.page_table"`` (a local name and one attribute);
    anything else (``self.x``, ``a.b.c``, calls) -> None."""
    if (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value != "self"
    ):
        return f"{node.value.value}.{node.attr.value}"
    return None


def _mentions_page_size(node: cst.CSTNode, config: LintConfig) -> bool:
    found = False

    class _Scan(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            nonlocal found
            found = found or config.is_page_size_name(name.value)

    node.visit(_Scan())
    return found


def is_page_conversion(node: cst.CSTNode, config: LintConfig) -> bool:
    """``x // page_size``, ``x // self.page_size``, ``torch.div(x, page_size, ...)``,
    ``x.div(page_size)``: token slots turned into page ids."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.FloorDivide):
        return _mentions_page_size(node.right, config)
    if isinstance(node, cst.Call) and callee_name(node) in ("div", "floor_divide", "div_"):
        return any(_mentions_page_size(a.value, config) for a in node.args)
    return False


def is_page_size_test(test: cst.BaseExpression, config: LintConfig) -> str | None:
    """``page_size > 1`` / ``!= 1`` / ``>= 2`` -> ``"paged"``; ``page_size == 1`` /
    ``<= 1`` -> ``"unit"``; anything else -> None. On the other branch the page size is 1
    and token slots are page ids."""
    if not isinstance(test, cst.Comparison) or len(test.comparisons) != 1:
        return None
    if not _mentions_page_size(test.left, config):
        return None
    target = test.comparisons[0]
    if not isinstance(target.comparator, cst.Integer):
        return None
    value = int(target.comparator.value)
    op = target.operator
    if (isinstance(op, cst.GreaterThan) and value == 1) or (isinstance(op, cst.NotEqual) and value == 1):
        return "paged"
    if isinstance(op, cst.GreaterThanEqual) and value == 2:
        return "paged"
    if (isinstance(op, cst.Equal) and value == 1) or (isinstance(op, cst.LessThanEqual) and value == 1):
        return "unit"
    return None


def make_token_classifier(config: LintConfig) -> Callable[[cst.CSTNode, FlowState], Verdict]:
    """A classifier for values in token-slot units (see the module docstring)."""

    def classify(node: cst.CSTNode, state: FlowState) -> Verdict:
        if isinstance(node, cst.Attribute):
            if node.attr.value in _EXTENT_ATTRS:
                return "clean"
            name = dotted(node)
            if name is not None and name in state.tainted:
                return "source"
            if config.is_token_slot_source(node.attr.value):
                return "source"
            return None
        if isinstance(node, cst.Call):
            name = callee_name(node)
            if name in _EXTENT_CALLS:
                return "clean"
            if is_page_conversion(node, config):
                return "clean"
            if name in _UNIT_KEEPING_CALLS or (name is not None and config.is_swa_translator(name)):
                return None
            return "clean"
        if isinstance(node, cst.BinaryOperation) and is_page_conversion(node, config):
            return "clean"
        return None

    return classify


def page_table_args(call: cst.Call, config: LintConfig, callee: str | None) -> list[cst.Arg]:
    """The arguments of ``call`` that take a page table: keywords named in
    ``page_table_args`` of a kernel call (``kernel_calls`` / ``decode_kernels``), positions
    named in ``page_table_positional`` (``fn:index``) of any call."""
    found: list[cst.Arg] = []
    if callee is not None and (config.is_kernel_call(callee) or config.is_decode_kernel(callee)):
        # a builder's ``build(page_table=...)`` may convert itself (SGLang's local_attn_builder)
        found = [a for a in call.args if a.keyword is not None and config.is_page_table_arg(a.keyword.value)]
    if callee is not None:
        positional = [a for a in call.args if a.keyword is None and not a.star]
        for entry in config.page_table_positional:
            name, _, index = entry.rpartition(":")
            if name == callee and index.isdigit() and int(index) < len(positional):
                found.append(positional[int(index)])
    return found
