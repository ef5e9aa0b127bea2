"""Which classes are attention backends, and which of their methods run at forward time.

SGLang's backends are ``*Backend`` classes; vLLM's are ``*AttentionImpl`` (the kernels)
and, in the vLLM profile (:mod:`lint_rules.engine_profile`), its ``*MetadataBuilder``
classes (the planners: ``build``, ``_build_decode``, ``build_for_cudagraph_capture``).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Sequence

import libcst as cst

from .engine_profile import VLLM, VLLM_BUILDER_CLASS_PATTERNS, engines_for, has_vllm_builder_class, module_engines_for

#: Lower-cased fnmatch patterns for a class name or one of its base names.
BACKEND_CLASS_PATTERNS: tuple[str, ...] = ("*backend*", "*attentionimpl*", "*attnimpl*")


def _base_names(cls: cst.ClassDef) -> list[str]:
    names = []
    for base in cls.bases:
        value = base.value
        while isinstance(value, cst.Subscript):  # Generic[T]
            value = value.value
        if isinstance(value, cst.Name):
            names.append(value.value)
        elif isinstance(value, cst.Attribute):
            names.append(value.attr.value)
    return names


def is_backend_class(cls: cst.ClassDef, engines: frozenset[str] = frozenset()) -> bool:
    """An attention backend: its name or a base name says Backend / AttentionImpl; with
    ``vllm`` among ``engines``, also MetadataBuilder (vLLM's planners)."""
    patterns = BACKEND_CLASS_PATTERNS
    if VLLM in engines:
        patterns = (*patterns, *VLLM_BUILDER_CLASS_PATTERNS)
    names = [cls.name.value, *_base_names(cls)]
    return any(fnmatch.fnmatchcase(n.lower(), p) for n in names for p in patterns)


#: A cheap textual pre-filter for :func:`is_backend_class`: some class names a backend
#: (in its name or its bases). Files without a match are never parsed.
BACKEND_CLASS_TEXT = re.compile(
    r"class\s+\w*(?:backend|attentionimpl|attnimpl)|class\s+\w+\s*\([^)]*(?:backend|attentionimpl|attnimpl)",
    re.IGNORECASE,
)


def _statement_blocks(stmt: cst.CSTNode) -> Iterator[cst.BaseSuite]:
    """The nested statement blocks of a compound statement (if/else, try, with, for, ...)."""
    for name in ("body", "orelse", "finalbody"):
        block = getattr(stmt, name, None)
        if isinstance(block, (cst.Else, cst.Finally)):
            block = block.body
        elif isinstance(block, cst.If):  # elif
            yield from _statement_blocks(block)
            continue
        if isinstance(block, cst.BaseSuite):
            yield block
    for handler in getattr(stmt, "handlers", ()):
        yield handler.body


def iter_classes(body: Sequence[cst.CSTNode]) -> Iterator[cst.ClassDef]:
    """Classes defined in a statement list, at any depth (nested classes, ``if`` blocks),
    in source order; walks statements only, never expressions."""
    for stmt in body:
        if isinstance(stmt, cst.ClassDef):
            yield stmt
        if isinstance(stmt, (cst.SimpleStatementLine, cst.FunctionDef)):
            continue
        for block in _statement_blocks(stmt):
            if isinstance(block, cst.IndentedBlock):
                yield from iter_classes(block.body)


def has_backend_class_text(source: str, profile: str = "auto") -> bool:
    """The textual pre-filter of :func:`iter_backend_classes`: some class names a backend,
    or, where the vLLM profile applies (``profile``, or ``auto`` and the file imports
    vLLM or neither engine), a metadata builder."""
    if BACKEND_CLASS_TEXT.search(source) is not None:
        return True
    return has_vllm_builder_class(source) and VLLM in engines_for(profile, source)


def iter_backend_classes(module: cst.Module, profile: str = "auto") -> Iterator[cst.ClassDef]:
    """Attention-backend classes at any nesting depth, in source order (vLLM's
    ``*MetadataBuilder`` classes too where the vLLM profile applies to the module)."""
    engines = module_engines_for(profile, module)
    return (cls for cls in iter_classes(module.body) if is_backend_class(cls, engines))


def iter_methods(cls: cst.ClassDef) -> Iterator[cst.FunctionDef]:
    """Functions defined directly in the class body (decorated ones included)."""
    body = cls.body
    if isinstance(body, cst.IndentedBlock):
        for stmt in body.body:
            if isinstance(stmt, cst.FunctionDef):
                yield stmt
