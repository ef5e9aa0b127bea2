"""The libcst questions every rule asks: calls and their names, ``self`` attributes,
bound names, parameters.

Walks stay inside one scope: :func:`iter_calls` / :func:`iter_ifs` never descend into a
nested function, class or lambda (those run at another time, if at all).

Callee names come in two strengths. :func:`callee_name` is syntactic: the last name of
the called expression. :class:`CalleeNames` (``ModuleContext.callee``) resolves
``from flashinfer.prefill import trtllm_batch_context_with_kv_cache as context_kernel``
so that ``context_kernel(...)`` is named ``trtllm_batch_context_with_kv_cache``, through
libcst's ``QualifiedNameProvider``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

import libcst as cst
from libcst.metadata import MetadataWrapper, QualifiedNameProvider

N = TypeVar("N", bound=cst.CSTNode)


#: Nested scopes a walk does not enter (libcst node classes are final: ``type()`` tests them).
_NESTED_SCOPES = frozenset({cst.FunctionDef, cst.ClassDef, cst.Lambda})


def iter_nodes(node: cst.CSTNode, kind: type[N] | tuple[type[cst.CSTNode], ...]) -> list[N]:
    """Every ``kind`` node inside ``node`` in source order, not inside nested functions,
    lambdas or classes (``node`` itself counts if it is one)."""
    found: list[N] = []
    wanted = frozenset(kind) if isinstance(kind, tuple) else frozenset((kind,))

    class _Collect(cst.CSTVisitor):
        def on_visit(self, inner: cst.CSTNode) -> bool:
            cls = type(inner)  # not isinstance: libcst's ABC instance checks are slow
            if cls in wanted:
                found.append(inner)  # type: ignore[arg-type]
            return cls not in _NESTED_SCOPES

    node.visit(_Collect())
    return found


def iter_calls(node: cst.CSTNode) -> Iterator[cst.Call]:
    """Every call inside ``node``, not descending into nested functions, lambdas or classes."""
    return iter(iter_nodes(node, cst.Call))


def iter_ifs(node: cst.CSTNode) -> list[cst.If]:
    """Every ``if`` / ``elif`` inside ``node``, not inside nested functions or classes."""
    return iter_nodes(node, cst.If)


def callee_name(call: cst.Call) -> str | None:
    """The last name of the called expression: ``flashinfer.decode.f(...)`` -> ``f``."""
    func = call.func
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


def keyword_arg(call: cst.Call, keyword: str) -> cst.Arg | None:
    """The ``keyword=...`` argument of ``call``, if it passes one."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg
    return None


def self_attribute(node: cst.CSTNode) -> str | None:
    """``self.<name>`` -> ``name``; anything else -> None."""
    if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
        return node.attr.value
    return None


def self_method(call: cst.Call, methods: Mapping[str, cst.FunctionDef]) -> cst.FunctionDef | None:
    """The method of this class that ``self.<method>(...)`` calls, if ``methods`` has it."""
    name = self_attribute(call.func)
    return methods.get(name) if name is not None else None


def target_names(target: cst.BaseExpression) -> list[str]:
    """Local names bound by an assignment target (tuples and starred unpacked)."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for el in target.elements for n in target_names(el.value)]
    if isinstance(target, cst.StarredElement):
        return target_names(target.value)
    return []


def self_targets(target: cst.BaseExpression) -> list[cst.Attribute]:
    """``self.x`` targets of an assignment (tuples unpacked)."""
    if self_attribute(target) is not None:
        return [target]  # type: ignore[list-item]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [t for el in target.elements for t in self_targets(el.value)]
    return []


def param_names(fn: cst.FunctionDef) -> list[cst.Param]:
    """Positional-only, ordinary and keyword-only parameters, in order (``self`` included)."""
    p = fn.params
    return [*p.posonly_params, *p.params, *p.kwonly_params]


def annotation_name(param: cst.Param) -> str | None:
    """The last name of a parameter's annotation: ``fb: "ForwardBatch"`` -> ``ForwardBatch``."""
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


#: ``from M import a as b, c`` (one line, or a parenthesized list): group 1 is the list.
_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]*(\([^)]*\)|[^\n]*)", re.MULTILINE)
_ALIAS = re.compile(r"\b(\w+)\s+as\s+(\w+)")


def _bound_function(value: cst.BaseExpression) -> str | None:
    """The last name of ``f`` / ``pkg.mod.f`` / ``partial(f, ...)`` / ``functools.partial(f, ...)``."""
    if isinstance(value, cst.Call) and callee_name(value) == "partial" and value.args and value.args[0].keyword is None:
        value = value.args[0].value
    if isinstance(value, cst.Name):
        return value.value
    if isinstance(value, cst.Attribute):
        return value.attr.value
    return None


def module_aliases(module: cst.Module, matters: Callable[[str], bool]) -> dict[str, str]:
    """``alias -> function`` for top-level ``alias = pkg.mod.function`` (or a ``partial`` of
    it) where the function's name matters to the rules and the alias's own does not."""
    found: dict[str, str] = {}
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
                alias = small.targets[0].target.value
                real = _bound_function(small.value)
                if real is not None and real != alias and matters(real) and not matters(alias):
                    found[alias] = real
    return found


class CalleeNames:
    """Called names with ``from M import f as g`` aliases resolved to ``f``.

    Resolution is libcst's ``QualifiedNameProvider``, which needs scope analysis: over a
    4,000-line backend that costs about as much as parsing it. So it runs only when
    needed (for a file that has an aliased from-import of a name the rules look for,
    found in the text, on the first call of one of those aliases), and over a module made of just what can bind or use
    an alias: the file's top-level statements that define no class or function (imports,
    assignments, ``if`` / ``try`` blocks of imports) and the methods whose text names an
    alias. A method's names resolve there as in the file (a class body is no enclosing
    scope for its methods). Every other call is named by :func:`callee_name`.
    """

    def __init__(
        self,
        module: cst.Module,
        source: str,
        methods: Callable[[], Iterable[tuple[cst.FunctionDef, str]]],
        matters: Callable[[str], bool],
    ) -> None:
        """``methods``: (method, its source text) of the file's classes, asked for only
        when an alias must be resolved; ``matters``: whether a name is one the rules
        look for (a kernel, say). Only an alias whose own or imported name matters is
        resolved: for any other, either name answers the rules alike."""
        self.module = module
        self.aliases: frozenset[str] = frozenset(
            alias.group(2)
            for imported in _FROM_IMPORT.finditer(source)
            for alias in _ALIAS.finditer(imported.group(1))
            if matters(alias.group(1)) or matters(alias.group(2))
        )
        self._methods = methods
        self._qualified: Mapping[cst.CSTNode, object] | None = None
        #: module-level ``kernel = flashinfer.prefill.trtllm_...`` / ``= partial(f, ...)``
        self.assigned: dict[str, str] = module_aliases(module, matters)

    def name(self, call: cst.Call) -> str | None:
        """The called function's own name (the import alias resolved), else :func:`callee_name`."""
        name = callee_name(call)
        if name is not None and isinstance(call.func, cst.Name) and name in self.assigned:
            return self.assigned[name]
        if name is None or name not in self.aliases or not isinstance(call.func, cst.Name):
            return name
        if self._qualified is None:
            self._qualified = self._resolve()
        names = self._qualified.get(call.func, ())
        if callable(names):  # libcst computes qualified names lazily
            names = names()
        real = sorted(q.name.rsplit(".", 1)[-1] for q in names)  # type: ignore[union-attr]
        return next((r for r in real if r != name), name)

    def _resolve(self) -> Mapping[cst.CSTNode, object]:
        body: list[cst.BaseStatement] = [
            stmt for stmt in self.module.body if not iter_nodes(stmt, (cst.ClassDef, cst.FunctionDef))
        ]
        body += [fn for fn, text in self._methods() if any(alias in text for alias in self.aliases)]
        alone = cst.Module(body=body, default_indent=self.module.default_indent, default_newline=self.module.default_newline)
        return MetadataWrapper(alone, unsafe_skip_copy=True).resolve(QualifiedNameProvider)
