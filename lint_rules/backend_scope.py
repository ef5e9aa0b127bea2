"""Which classes are attention backends, and which of their methods run at forward time."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import libcst as cst

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


def is_backend_class(cls: cst.ClassDef) -> bool:
    """An attention backend: its name or a base name says Backend / AttentionImpl."""
    names = [cls.name.value, *_base_names(cls)]
    return any(fnmatch.fnmatchcase(n.lower(), p) for n in names for p in BACKEND_CLASS_PATTERNS)


def iter_backend_classes(module: cst.Module) -> Iterator[cst.ClassDef]:
    """Backend classes at any nesting depth, in source order."""
    found: list[cst.ClassDef] = []

    class _Classes(cst.CSTVisitor):
        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            if is_backend_class(node):
                found.append(node)

    module.visit(_Classes())
    return iter(found)


def iter_methods(cls: cst.ClassDef) -> Iterator[cst.FunctionDef]:
    """Functions defined directly in the class body (decorated ones included)."""
    body = cls.body
    if isinstance(body, cst.IndentedBlock):
        for stmt in body.body:
            if isinstance(stmt, cst.FunctionDef):
                yield stmt


def param_names(fn: cst.FunctionDef) -> list[cst.Param]:
    p = fn.params
    return [*p.posonly_params, *p.params, *p.kwonly_params]


def annotation_name(param: cst.Param) -> str | None:
    if param.annotation is None:
        return None
    ann = param.annotation.annotation
    if isinstance(ann, cst.SimpleString):  # "ForwardBatch"
        return ann.value.strip("\"'").split(".")[-1]
    if isinstance(ann, cst.Name):
        return ann.value
    if isinstance(ann, cst.Attribute):
        return ann.attr.value
    return None
