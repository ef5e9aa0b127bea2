"""What in ``__init__`` derives from the engine's swappable KV pool (GR002, GR102)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import libcst as cst

from .backend_scope import iter_methods
from .config import LintConfig
from .cst_analysis import self_attribute, self_targets
from .dataflow import FlowState, Verdict


def reads_pool(node: cst.CSTNode, config: LintConfig) -> bool:
    """``node`` contains an ``<x>.token_to_kv_pool`` read (any pool attribute)."""
    found = False

    class _Scan(cst.CSTVisitor):
        def visit_Attribute(self, attr: cst.Attribute) -> None:
            nonlocal found
            if config.is_pool_attribute(attr.attr.value):
                found = True

    node.visit(_Scan())
    return found


def mentions_swap(node: cst.CSTNode, config: LintConfig) -> bool:
    """``node`` consults a swap-aware marker (``is_frozen_kv_mtp``, the shared allocator)."""
    found = False

    class _Scan(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            nonlocal found
            found = found or config.is_swap_aware_marker(name.value)

    node.visit(_Scan())
    return found


def pool_reading_helpers(cls: cst.ClassDef, config: LintConfig) -> Callable[[str], bool]:
    """A predicate: is ``name`` a method of the class (not ``__init__``) whose body reads
    the pool without handling the draft worker's swap? Each method is scanned only when
    ``__init__`` calls it. A resolver that also consults a swap-aware marker (SGLang
    #27491's ``_resolve_swa_kv_pool`` falls back to ``token_to_kv_pool_allocator``) is
    trusted."""
    methods = {fn.name.value: fn for fn in iter_methods(cls) if fn.name.value != "__init__"}

    @cache
    def reads(name: str) -> bool:
        fn = methods.get(name)
        return fn is not None and reads_pool(fn.body, config) and not mentions_swap(fn.body, config)

    return reads


def _string_arg(call: cst.Call, index: int) -> str | None:
    if len(call.args) > index and isinstance(call.args[index].value, cst.SimpleString):
        value = call.args[index].value.evaluated_value
        return value if isinstance(value, str) else None
    return None


def _is_getattr(node: cst.CSTNode) -> bool:
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value == "getattr"


def pool_attribute_read(node: cst.CSTNode, config: LintConfig) -> bool:
    """``x.token_to_kv_pool`` or ``getattr(x, "token_to_kv_pool", ...)``."""
    if isinstance(node, cst.Attribute):
        return config.is_pool_attribute(node.attr.value)
    if _is_getattr(node):
        name = _string_arg(node, 1)
        return name is not None and config.is_pool_attribute(name)
    return False


def _is_trailing_shape_dim(node: cst.CSTNode) -> bool:
    """``buf.shape[-1]`` / ``buf.shape[2]``: head counts and head dims, not the token count."""
    if not (
        isinstance(node, cst.Subscript)
        and isinstance(node.value, cst.Attribute)
        and node.value.attr.value == "shape"
        and len(node.slice) == 1
        and isinstance(node.slice[0].slice, cst.Index)
    ):
        return False
    index = node.slice[0].slice.value
    if isinstance(index, cst.UnaryOperation) and isinstance(index.operator, cst.Minus):
        return isinstance(index.expression, cst.Integer)
    return isinstance(index, cst.Integer) and int(index.value) > 0


def make_classifier(config: LintConfig, is_pool_helper: Callable[[str], bool], sanitize: bool):
    """A :data:`~lint_rules.dataflow.Classifier` for pool-derived values.

    Sources: a pool attribute read; a call of a ``self`` helper that reads the pool.
    With ``sanitize``, an immutable fact of a pool-derived value (``pool.dtype``,
    ``getattr(pool, "page_size")``) is clean.
    """

    def classify(node: cst.CSTNode, state: FlowState) -> Verdict:
        if pool_attribute_read(node, config):
            return "source"
        if sanitize:
            if isinstance(node, cst.Attribute) and config.is_immutable_pool_fact(node.attr.value):
                return "clean"
            if _is_trailing_shape_dim(node):
                return "clean"
            if isinstance(node, cst.Call) and isinstance(node.func, cst.Name):
                if config.is_immutable_pool_fact(node.func.value):  # `_pool_is_vec5d(pool)`
                    return "clean"
            if _is_getattr(node):
                name = _string_arg(node, 1)
                if name is not None and config.is_immutable_pool_fact(name):
                    return "clean"
        if isinstance(node, cst.Call):
            helper = self_attribute(node.func)
            if helper is not None and is_pool_helper(helper):
                return "source"
        return None

    return classify


def assignment_parts(node: cst.CSTNode) -> tuple[list[cst.Attribute], cst.BaseExpression] | None:
    """(``self.*`` targets, value) of an Assign / AnnAssign / AugAssign statement."""
    if isinstance(node, cst.Assign):
        return [t for tgt in node.targets for t in self_targets(tgt.target)], node.value
    if isinstance(node, cst.AnnAssign) and node.value is not None:
        return self_targets(node.target), node.value
    if isinstance(node, cst.AugAssign):
        return self_targets(node.target), node.value
    return None


def is_plain_alias(target: cst.Attribute, value: cst.BaseExpression, config: LintConfig) -> bool:
    """``self.token_to_kv_pool = model_runner.token_to_kv_pool``: the engine's swap point."""
    if not config.is_swap_point(target.attr.value) or not pool_attribute_read(value, config):
        return False
    base = value.value if isinstance(value, cst.Attribute) else value.args[0].value  # type: ignore[union-attr]
    return not reads_pool(base, config)
