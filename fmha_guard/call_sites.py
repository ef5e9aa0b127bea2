"""Every FMHA call site of a codebase, and what each call refers to.

:func:`scan` reads a directory, a ``.py`` file, a wheel or an sdist in place
(:func:`lint_rules.sources.iter_source_files`) and lists each call that reaches an FMHA
kernel of :mod:`fmha_guard.fmha_kernels` (file, line, the entry point it calls, how that
was resolved):

* **import** -- a module-qualified function, through whatever imports bind it
  (``flashinfer.decode.trtllm_batch_decode_with_kv_cache(...)``,
  ``from sgl_kernel.flash_attn import flash_attn_with_kvcache as f; f(...)``, imports
  inside functions and under ``if`` / ``try``, relative imports), resolved with Python's
  scope rules as libcst's ``QualifiedNameProvider`` applies them: the innermost function
  scope that binds the name, then the enclosing functions, then the module (a class body
  is no scope for its methods); every import binding of the name in that scope counts;
* **attribute** -- a kernel kept in an attribute or a local
  (``self.flash_attn_varlen_func = flash_attn_varlen_func`` in ``__init__``, then
  ``self.flash_attn_varlen_func(...)``);
* **constructor** -- a method of a FlashInfer wrapper object whose class is known from
  where it was made: ``self.prefill_wrapper_paged = BatchPrefillWithPagedKVCacheWrapper(...)``,
  a list of them (a comprehension, ``append``), an element of such a list, a loop over
  one, an annotation (``wrappers: List[BatchDecodeWithPagedKVCacheWrapper]``), a field of
  a class of the same file annotated so (``self.forward_metadata.decode_wrappers[0]``);
* **method name** -- a wrapper method on an object of unknown class, matched by name:
  ``begin_forward`` / ``forward_return_lse`` / ``run_return_lse`` on anything, ``plan`` /
  ``run`` / ``forward`` on a receiver whose text says ``wrapper`` in a file that names a
  wrapper class (or imports a module of the codebase that does). The candidates are the
  wrapper classes the audited code makes (of :data:`~fmha_guard.fmha_kernels.FALLBACK_WRAPPERS`),
  narrowed by the receiver's words (``decode_wrapper``: the decode wrapper), else by
  the enclosing class's; such a call is checked only if every candidate is;
* **helper** -- a function of the audited codebase that forwards to a kernel, one level
  deep: a module-level ``def`` whose body calls one directly, a lazy-import assignment
  (vLLM's ``flashinfer_xqa_batch_decode_with_kv_cache =
  _lazy_import_wrapper("flashinfer.decode", "xqa_batch_decode_with_kv_cache")``), or a
  re-export (vLLM's ``fa_utils.flash_attn_varlen_func``). Its source must be among the
  audited files: point the scan at the package root or the wheel, and narrow the listed
  sites with ``include``.

Only files whose text names a kernel library or a wrapper are parsed, with Python's
``ast``: the same analysis on libcst (its parser, one visitor pass, ``QualifiedNameProvider``
and ``PositionProvider``) took 92 s for SGLang 0.5.23's attention directory on the
2-core dev machine, on ``ast`` 7 s with the whole wheel read.

Limits: a call through an object the analysis cannot type and whose method name is
generic (``self._cached_module.plan(...)``: SGLang calling FlashInfer's compiled module
directly), and a kernel handed to another function as an argument
(``_forward(..., trtllm_decode)``), are not call sites; a wrapper method rebound at run
time (``wrapper.begin_forward = partial(fast_decode_plan, wrapper)``) is taken for the
library's.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lint_rules.sources import decode, iter_source_files

from .fmha_kernels import (
    DISTINCTIVE_METHODS,
    FALLBACK_WRAPPERS,
    LIBRARIES,
    WRAPPER_METHODS,
    WRAPPERS,
    Kernel,
    kernel_of,
    wrapper_methods,
)

__all__ = ["CallSite", "Scan", "scan", "module_name"]

#: a file is parsed only if its text matches (a kernel library, an engine interface, a wrapper)
_RELEVANT_TEXT = re.compile(
    "|".join(sorted({re.escape(p.split(".")[-1]) for lib in LIBRARIES for p in lib.packages}
                    | {"flash_attn", "flash_mla", "flashmla", "fa_utils", "wrapper", "Wrapper",
                       *DISTINCTIVE_METHODS}))
)
_WRAPPER_NAMES = re.compile("|".join(sorted(WRAPPERS)))
_IMPORTED_MODULE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import|import[ \t]+([\w.]+))", re.MULTILINE)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
#: words of a receiver that narrow a wrapper call of unknown class
_HINTS = frozenset({"decode", "prefill", "ragged", "paged", "mla", "cascade"})


@dataclass(frozen=True)
class CallSite:
    """One call that reaches an FMHA kernel.

    ``line`` / ``col`` are 1-based; ``symbol`` is ``Class.method``; ``callee`` is the
    called expression (``self.prefill_wrapper_paged.forward_return_lse``); ``target`` what
    it resolved to (``flashinfer.prefill.trtllm_fmha_v2_prefill``,
    ``BatchPrefillWithPagedKVCacheWrapper.forward_return_lse``, a helper's dotted name);
    ``kernels``: the FMHA kernels reached (one, or a helper's, or the candidates of a
    method-name match); ``resolution``: import / attribute / constructor / method name /
    helper; ``via``: what a helper's body calls.
    """

    path: str
    line: int
    col: int
    symbol: str
    callee: str
    target: str
    kernels: tuple[Kernel, ...]
    resolution: str
    via: tuple[str, ...] = ()


@dataclass
class Scan:
    """What :func:`scan` found: the call sites (in file and line order), files read, errors."""

    target: str
    sites: list[CallSite] = field(default_factory=list)
    files_scanned: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: engine-interface kernel key -> the kernels its body calls directly (from the audited source)
    interfaces: dict[str, tuple[Kernel, ...]] = field(default_factory=dict)


def module_name(path: str, packages: set[str]) -> str | None:
    """``sglang/srt/layers/attention/x.py`` -> ``sglang.srt.layers.attention.x``: the path
    from the parent of its topmost package (``packages``: the directories holding an
    ``__init__.py``; namespace directories between that package and the file count, as
    ``sglang/srt`` in SGLang's wheel), or, in no package, the path itself (a wheel's
    members are rooted where they are installed); ``None`` when a part is not an identifier."""
    pure = PurePosixPath(path)
    top = None
    for directory in pure.parents:
        if str(directory) in packages:
            top = directory
    parts = list(pure.relative_to(top.parent).parts) if top is not None else list(pure.parts)
    if parts and parts[-1] == "__init__.py":
        parts.pop()
    elif parts:
        parts[-1] = PurePosixPath(parts[-1]).stem
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


# ---------------------------------------------------------------- one file's scopes


@dataclass(eq=False)
class _Scope:
    kind: str  # module / class / function
    name: str
    parent: "_Scope | None"
    #: name -> dotted names it is imported as in this scope (every import binding)
    imports: dict[str, list[str]] = field(default_factory=dict)
    #: names bound otherwise (assignment, loop, parameter, def, class)
    binds: set[str] = field(default_factory=set)
    calls: list[ast.Call] = field(default_factory=list)
    assigns: list[tuple[ast.expr, ast.expr]] = field(default_factory=list)
    fors: list[tuple[ast.expr, ast.expr]] = field(default_factory=list)
    annotated: list[tuple[str, ast.expr]] = field(default_factory=list)
    children: list["_Scope"] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        names: list[str] = []
        scope: _Scope | None = self
        while scope is not None and scope.kind != "module":
            names.insert(0, scope.name)
            scope = scope.parent
        return ".".join(names) or "<module>"

    @property
    def cls(self) -> "_Scope | None":
        """The class whose method this is (what ``self`` is)."""
        scope: _Scope | None = self
        while scope is not None and scope.kind == "function":
            if scope.parent is not None and scope.parent.kind == "class":
                return scope.parent
            scope = scope.parent
        return None


def _absolute(name: str, module: str | None, is_package: bool) -> str:
    """A dotted name from a relative import (``.flash_attention_v3.f``) made absolute."""
    if not name.startswith(".") or module is None:
        return name
    dots = len(name) - len(name.lstrip("."))
    base = module.split(".") if is_package else module.split(".")[:-1]
    if dots - 1 > len(base):
        return name
    base = base[: len(base) - (dots - 1)]
    rest = name[dots:]
    return ".".join([*base, rest] if rest else base)


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for el in target.elts for n in _target_names(el)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


class _Collector(ast.NodeVisitor):
    """One pass over a file: its scopes with their imports, bindings, calls, assignments, loops."""

    def __init__(self, module: str | None, is_package: bool) -> None:
        self.module_name, self.is_package = module, is_package
        self.root = _Scope("module", "<module>", None)
        self.scope = self.root

    def _child(self, kind: str, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.binds.add(node.name)
        for decorator in node.decorator_list:
            self.visit(decorator)
        scope = _Scope(kind, node.name, self.scope)
        self.scope.children.append(scope)
        outer, self.scope = self.scope, scope
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                self.visit(base)
        else:
            a = node.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is not None:
                    scope.binds.add(arg.arg)
                    if arg.annotation is not None:
                        scope.annotated.append((arg.arg, arg.annotation))
        for statement in node.body:
            self.visit(statement)
        self.scope = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._child("function", node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._child("class", node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.scope.imports.setdefault(alias.asname, []).append(alias.name)
            else:
                root = alias.name.split(".")[0]
                self.scope.imports.setdefault(root, []).append(root)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = "." * node.level + (node.module or "")
        for alias in node.names:
            if alias.name == "*":
                continue
            dotted = f"{base}.{alias.name}" if node.module else f"{base}{alias.name}"
            self.scope.imports.setdefault(alias.asname or alias.name, []).append(
                _absolute(dotted, self.module_name, self.is_package))

    def visit_Call(self, node: ast.Call) -> None:
        self.scope.calls.append(node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assign(target, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.scope.annotated.append((node.target.id, node.annotation))
            self.scope.binds.add(node.target.id)
        if node.value is not None:
            self._assign(node.target, node.value)
            self.visit(node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._assign(node.target, node.value)
        self.generic_visit(node)

    def _assign(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts):
                self._assign(t, v)
            return
        self.scope.assigns.append((target, value))
        self.scope.binds.update(_target_names(target))

    def visit_For(self, node: ast.For) -> None:
        self.scope.fors.append((node.target, node.iter))
        self.scope.binds.update(_target_names(node.target))
        self.generic_visit(node)

    visit_AsyncFor = visit_For  # type: ignore[assignment]

    def visit_comprehension(self, node: ast.comprehension) -> None:
        self.scope.fors.append((node.target, node.iter))
        self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            if item.optional_vars is not None:
                self.scope.binds.update(_target_names(item.optional_vars))
        self.generic_visit(node)

    visit_AsyncWith = visit_With  # type: ignore[assignment]


def _dotted(expr: ast.expr) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> (``a``, [``b``, ``c``]); ``None`` for anything else."""
    attrs: list[str] = []
    while isinstance(expr, ast.Attribute):
        attrs.insert(0, expr.attr)
        expr = expr.value
    return (expr.id, attrs) if isinstance(expr, ast.Name) else None


@dataclass
class _FileInfo:
    path: str
    module: str | None
    root: _Scope
    text: str

    def names(self, expr: ast.expr, scope: _Scope) -> list[str]:
        """The dotted names ``expr`` (a name or an attribute chain) is imported as, seen from ``scope``."""
        dotted = _dotted(expr)
        if dotted is None:
            return []
        root, attrs = dotted
        current: _Scope | None = scope
        first = True
        while current is not None:
            if current.kind != "class" or first:
                imported = current.imports.get(root)
                if imported:
                    return sorted({".".join([name, *attrs]) for name in imported})
                if root in current.binds:
                    return []
            first = False
            current = current.parent
        return []


Type = tuple[str, Any]  # ("obj", class name) / ("list", class name) / ("kernel", Kernel) / ("inst", _Scope)


class _Codebase:
    """The audited files by module name, parsed on demand."""

    def __init__(self, texts: Mapping[str, str], prefix: Sequence[str] = ()) -> None:
        """``texts``: path -> text; ``prefix``: the packages a directory target lies in
        (``("sglang", "srt")`` for ``.../python/sglang/srt``), prepended to module names."""
        self.texts = dict(texts)
        lead = "/".join(prefix)
        virtual = {path: f"{lead}/{path}" if lead else path for path in self.texts}
        packages = {str(PurePosixPath(v).parent) for v in virtual.values() if v.endswith("__init__.py")}
        if prefix:
            packages.add(prefix[0])
        self.modules: dict[str, str] = {}
        self._module_of: dict[str, str] = {}
        self.package_modules: set[str] = set()
        for path, shown in virtual.items():
            name = module_name(shown, packages)
            if name is not None:
                self.modules.setdefault(name, path)
                self._module_of[path] = name
                if path.endswith("__init__.py"):
                    self.package_modules.add(name)
        self._infos: dict[str, _FileInfo | None] = {}
        self._helpers: dict[str, tuple[tuple[Kernel, ...], tuple[str, ...]]] = {}
        self._names_wrappers: dict[str, bool] = {}
        self.errors: list[tuple[str, str]] = []
        made = re.compile(r"\b(" + "|".join(FALLBACK_WRAPPERS) + r")\s*[(\]]")
        #: wrapper classes the audited code makes (``Wrapper(``) or annotates (``List[Wrapper]``)
        self.made: set[str] = {m.group(1) for text in self.texts.values() for m in made.finditer(text)}

    def info(self, path: str) -> _FileInfo | None:
        """The parsed file (``None``: its text names no kernel library, or it does not parse)."""
        if path in self._infos:
            return self._infos[path]
        self._infos[path] = None
        text = self.texts.get(path)
        if text is None or not _RELEVANT_TEXT.search(text):
            return None
        try:
            tree = ast.parse(text, filename=path)
        except (SyntaxError, ValueError) as exc:
            line = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
            self.errors.append((path, f"cannot parse: {exc.msg if isinstance(exc, SyntaxError) else exc}{line}"))
            return None
        module = self._module_of.get(path)
        collector = _Collector(module, module in self.package_modules)
        for statement in tree.body:
            collector.visit(statement)
        info = _FileInfo(path, module, collector.root, text)
        self._infos[path] = info
        return info

    def names_wrappers(self, path: str) -> bool:
        """Whether the file names a FlashInfer wrapper class, or imports a module of the
        codebase that does (a generic ``wrapper.run(...)`` there may be one)."""
        if path not in self._names_wrappers:
            text = self.texts.get(path, "")
            found = bool(_WRAPPER_NAMES.search(text))
            if not found:
                for match in _IMPORTED_MODULE.finditer(text):
                    imported = self.modules.get(match.group(1) or match.group(2) or "")
                    if imported is not None and _WRAPPER_NAMES.search(self.texts.get(imported, "")):
                        found = True
                        break
            self._names_wrappers[path] = found
        return self._names_wrappers[path]

    # ------------------------------------------------------------ helpers (one level)

    def helper(self, qualified: str, depth: int = 0) -> tuple[tuple[Kernel, ...], tuple[str, ...]]:
        """The kernels ``qualified`` (a function of the audited codebase) forwards to, one
        level deep, and their dotted names (``()`` when it is no helper)."""
        if qualified in self._helpers:
            return self._helpers[qualified]
        self._helpers[qualified] = ((), ())
        module, _, name = qualified.rpartition(".")
        path = self.modules.get(module)
        info = self.info(path) if path is not None else None
        found = self._helper_in(info, name, depth) if info is not None else ((), ())
        self._helpers[qualified] = found
        return found

    def _helper_in(self, info: _FileInfo, name: str, depth: int) -> tuple[tuple[Kernel, ...], tuple[str, ...]]:
        """Every module-level binding of ``name`` counts (``if`` / ``try`` branches per platform)."""
        top = info.root
        reached: dict[Kernel, None] = {}
        via: dict[str, None] = {}
        for child in top.children:  # a module-level def calling kernels
            if child.kind == "function" and child.name == name:
                for call in child.calls:
                    for target in info.names(call.func, child):
                        kernel = kernel_of(target)
                        if kernel is not None and not kernel.wrapper:
                            reached[kernel] = via[target] = None
        for target, value in top.assigns:  # NAME = _lazy_import_wrapper("flashinfer.decode", "xqa_...")
            if isinstance(target, ast.Name) and target.id == name and isinstance(value, ast.Call):
                strings = [a.value for a in value.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                kernel = kernel_of(".".join(strings)) if len(strings) == 2 else None
                if kernel is not None:
                    reached[kernel] = via[".".join(strings)] = None
        if depth < 2:  # a re-export: from vllm.vllm_flash_attn import flash_attn_varlen_func
            for target in top.imports.get(name, ()):
                kernel = kernel_of(target)
                if kernel is not None:
                    reached[kernel] = via[target] = None
                elif not _in_library(target):
                    inner, _ = self.helper(target, depth + 1)
                    if inner:
                        reached.update(dict.fromkeys(inner))
                        via[target] = None
        return tuple(reached), tuple(via)


def _in_library(qualified: str) -> bool:
    """Whether a dotted name lies in a kernel library (its internals are not engine helpers)."""
    return any(qualified == p or qualified.startswith(p + ".") for lib in LIBRARIES if not lib.interface
               for p in lib.packages)


# ---------------------------------------------------------------- types of expressions


class _Types:
    """Which wrapper objects / kernels an expression of one file holds (see the module docstring)."""

    def __init__(self, info: _FileInfo, codebase: "_Codebase") -> None:
        self.info, self.codebase = info, codebase
        self.classes = {c.name: c for c in info.root.children if c.kind == "class"}
        self.attrs: dict[_Scope, dict[str, set[Type]]] = {}
        self.locals: dict[_Scope, dict[str, set[Type]]] = {}
        for _ in range(3):  # attributes and locals refer to each other: a small fixpoint
            self._pass(info.root)

    def _pass(self, scope: _Scope) -> None:
        if scope.kind == "class":
            fields_ = self.attrs.setdefault(scope, {})
            for name, annotation in scope.annotated:
                fields_.setdefault(name, set()).update(self.annotation(annotation, scope))
        local = self.locals.setdefault(scope, {})
        if scope.kind == "function":
            for name, annotation in scope.annotated:
                local.setdefault(name, set()).update(self.annotation(annotation, scope))
        cls = scope.cls
        for target, value in scope.assigns:
            types = self.of(value, scope)
            if not types:
                continue
            if isinstance(target, ast.Name):
                local.setdefault(target.id, set()).update(types)
            elif cls is not None and isinstance(target, ast.Attribute) and _is_self(target.value):
                self.attrs.setdefault(cls, {}).setdefault(target.attr, set()).update(types)
        for call in scope.calls:  # self.wrappers.append(Wrapper(...))
            func = call.func
            if cls is not None and isinstance(func, ast.Attribute) and func.attr in ("append", "extend") \
                    and isinstance(func.value, ast.Attribute) and _is_self(func.value.value) and call.args:
                types = self.of(call.args[0], scope)
                if func.attr == "append":
                    types = {("list", t[1]) for t in types if t[0] == "obj"}
                self.attrs.setdefault(cls, {}).setdefault(func.value.attr, set()).update(types)
        for target, iterable in scope.fors:
            self._loop(target, iterable, scope, local)
        for child in scope.children:
            self._pass(child)

    def _loop(self, target: ast.expr, iterable: ast.expr, scope: _Scope, local: dict[str, set[Type]]) -> None:
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and isinstance(target, ast.Tuple):
            if iterable.func.id == "enumerate" and iterable.args and len(target.elts) == 2:
                self._loop(target.elts[1], iterable.args[0], scope, local)
                return
            if iterable.func.id == "zip" and len(target.elts) == len(iterable.args):
                for t, a in zip(target.elts, iterable.args):
                    self._loop(t, a, scope, local)
                return
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) \
                and iterable.func.attr == "values":  # for w in self.wrappers.values()
            iterable = iterable.func.value
        if isinstance(target, ast.Name):
            types = {("obj", t[1]) for t in self.of(iterable, scope) if t[0] == "list"}
            if types:
                local.setdefault(target.id, set()).update(types)

    def annotation(self, annotation: ast.expr, scope: _Scope) -> set[Type]:
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                annotation = ast.parse(annotation.value, mode="eval").body
            except SyntaxError:
                return set()
        if isinstance(annotation, ast.Subscript):
            outer = self.info.names(annotation.value, scope) or [ast.unparse(annotation.value)]
            items = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
            inner: set[Type] = set()
            for item in items:
                inner |= self.annotation(item, scope)
            if any(n.rsplit(".", 1)[-1] in ("List", "list", "Sequence", "Tuple", "tuple", "Iterable", "Dict", "dict")
                   for n in outer):
                return {("list", t[1]) for t in inner if t[0] == "obj"}
            return inner
        if isinstance(annotation, ast.BinOp):  # X | None
            return self.annotation(annotation.left, scope) | self.annotation(annotation.right, scope)
        found = {("obj", k.name) for k in self._kernels(annotation, scope) if k.wrapper and k.method is None}
        if isinstance(annotation, ast.Name) and annotation.id in self.classes:
            found.add(("inst", self.classes[annotation.id]))
        return found

    def _kernels(self, expr: ast.expr, scope: _Scope) -> list[Kernel]:
        """The kernels (or wrapper classes) a name refers to, through a helper of the codebase too."""
        found = []
        for name in self.info.names(expr, scope):
            kernel = kernel_of(name)
            if kernel is not None:
                found.append(kernel)
            elif not _in_library(name) and name.rpartition(".")[0] in self.codebase.modules:
                found.extend(self.codebase.helper(name)[0])
        return found

    def of(self, expr: ast.expr, scope: _Scope) -> set[Type]:
        if isinstance(expr, ast.Call):
            func = expr.func
            made: set[Type] = {("obj", k.name) for k in self._kernels(func, scope) if k.wrapper and k.method is None}
            if isinstance(func, ast.Name) and func.id in self.classes:
                made.add(("inst", self.classes[func.id]))
            if expr.args and (ast.unparse(func) in ("partial", "functools.partial")):  # partial(kernel, ...)
                made |= {t for t in self.of(expr.args[0], scope) if t[0] == "kernel"}
            return made
        if isinstance(expr, ast.Name):
            found: set[Type] = set()
            current: _Scope | None = scope
            while current is not None:
                if current.kind != "class" or current is scope:
                    found |= self.locals.get(current, {}).get(expr.id, set())
                current = current.parent
            return found | {("kernel", k) for k in self._kernels(expr, scope) if not k.wrapper}
        if isinstance(expr, ast.Attribute):
            if _is_self(expr.value):
                cls = scope.cls
                return set(self.attrs.get(cls, {}).get(expr.attr, set())) if cls is not None else set()
            found = {("kernel", k) for k in self._kernels(expr, scope) if not k.wrapper}
            for kind, holder in self.of(expr.value, scope):
                if kind == "inst":
                    found |= self.attrs.get(holder, {}).get(expr.attr, set())
            return found
        if isinstance(expr, ast.Subscript):
            return {("obj", t[1]) for t in self.of(expr.value, scope) if t[0] == "list"}
        if isinstance(expr, (ast.List, ast.Tuple)):
            return {("list", t[1]) for el in expr.elts for t in self.of(el, scope) if t[0] == "obj"}
        if isinstance(expr, (ast.ListComp, ast.GeneratorExp)):
            return {("list", t[1]) for t in self.of(expr.elt, scope) if t[0] == "obj"}
        if isinstance(expr, ast.DictComp):
            return {("list", t[1]) for t in self.of(expr.value, scope) if t[0] == "obj"}
        if isinstance(expr, ast.IfExp):
            return self.of(expr.body, scope) | self.of(expr.orelse, scope)
        if isinstance(expr, ast.BoolOp):
            return set().union(*(self.of(v, scope) for v in expr.values))
        return set()


def _is_self(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Name) and expr.id in ("self", "cls")


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


# ---------------------------------------------------------------- the call sites of one file


class _Classifier:
    def __init__(self, info: _FileInfo, types: _Types, codebase: _Codebase) -> None:
        self.info, self.types, self.codebase = info, types, codebase

    def sites(self, scope: _Scope) -> Iterator[CallSite]:
        for call in scope.calls:
            found = self.classify(call, scope)
            if found is not None:
                target, kernels, resolution, via = found
                yield CallSite(self.info.path, call.lineno, call.col_offset + 1, scope.symbol,
                               ast.unparse(call.func), target, kernels, resolution, via)
        for child in scope.children:
            yield from self.sites(child)

    def classify(self, call: ast.Call, scope: _Scope) -> tuple[str, tuple[Kernel, ...], str, tuple[str, ...]] | None:
        func = call.func
        names = self.info.names(func, scope)
        for name in names:  # 1. a module-qualified function (or an engine interface)
            kernel = kernel_of(name)
            if kernel is not None and not kernel.wrapper:
                return name, (kernel,), "import", ()
        for name in names:  # 2. a helper of the audited codebase
            if kernel_of(name) is None and not _in_library(name) and name.rpartition(".")[0] in self.codebase.modules:
                kernels, via = self.codebase.helper(name)
                if kernels:
                    return name, kernels, "helper", via
        if names:
            return None
        if isinstance(func, (ast.Name, ast.Attribute)):  # 3. a kernel kept in an attribute or a local
            held = tuple(dict.fromkeys(t[1] for t in self.types.of(func, scope) if t[0] == "kernel"))
            if held:
                return " | ".join(k.key for k in held), held, "attribute", ()
        if isinstance(func, ast.Attribute) and func.attr in WRAPPER_METHODS:  # 4. a wrapper method
            return self._method(func, scope)
        return None

    def _method(self, func: ast.Attribute, scope: _Scope) -> tuple[str, tuple[Kernel, ...], str, tuple[str, ...]] | None:
        method = func.attr
        classes = sorted({t[1] for t in self.types.of(func.value, scope) if t[0] == "obj"
                          and method in wrapper_methods(t[1])})
        if classes:
            return (f"{'|'.join(classes)}.{method}", tuple(Kernel("flashinfer", c, method, wrapper=True) for c in classes),
                    "constructor", ())
        receiver = ast.unparse(func.value)
        generic_ok = "wrapper" in receiver.lower() and self.codebase.names_wrappers(self.info.path)
        if method not in DISTINCTIVE_METHODS and not generic_ok:
            return None
        candidates = self._candidates(method, receiver, scope.symbol)
        if not candidates:
            return None
        return (f"{'|'.join(candidates)}.{method}", tuple(Kernel("flashinfer", c, method, wrapper=True) for c in candidates),
                "method name", ())

    def _candidates(self, method: str, receiver: str, symbol: str) -> tuple[str, ...]:
        made = self.codebase.made
        classes = [c for c in FALLBACK_WRAPPERS if method in wrapper_methods(c) and (not made or c in made)]
        for text in (receiver, symbol):
            hints = _words(text) & _HINTS
            narrowed = [c for c in classes if hints and hints <= _words(c)]
            if narrowed:
                return tuple(narrowed)
        return tuple(classes)


# ---------------------------------------------------------------- scan


def _included(path: str, include: Sequence[str]) -> bool:
    if not include:
        return True
    for pattern in include:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatch(path, pattern):
                return True
        elif path == pattern.rstrip("/") or path.startswith(pattern.rstrip("/") + "/"):
            return True
    return False


def _package_prefix(target: Path, levels: int = 8) -> tuple[str, ...]:
    """The packages a directory lies in (``.../python/sglang/srt`` -> ``("sglang", "srt")``,
    ``srt`` a namespace directory of package ``sglang``), so that module names come out
    whole; ``()`` when no directory above it (``levels`` up) is a package."""
    directory = target.resolve()
    chain = [directory, *list(directory.parents)[:levels]]
    tops = [i for i, d in enumerate(chain) if (d / "__init__.py").is_file()]
    if not tops:
        return ()
    top = max(tops)
    while top + 1 < len(chain) and (chain[top + 1] / "__init__.py").is_file():
        top += 1
    names = [d.name for d in reversed(chain[: top + 1])]
    return tuple(names) if all(n.isidentifier() for n in names) else ()


def scan(target: Path, include: Sequence[str] = (), display: str | None = None) -> Scan:
    """The FMHA call sites of ``target`` (a directory, a ``.py`` file, a wheel or an sdist).

    Args:
        include: path prefixes (``sglang/srt/layers/attention/``) or globs, relative to
            ``target``: only call sites in matching files are listed; every file is still
            read to resolve helpers. Empty: all files.
        display: the target as the user typed it (for the report).

    Raises:
        FileNotFoundError: ``target`` does not exist.
    """
    result = Scan(display or str(target))
    texts: dict[str, str] = {}
    for src in iter_source_files(target, display):
        if src.error is not None:
            result.errors.append((src.path, src.error))
            continue
        try:
            data = src.read()
        except OSError as exc:
            result.errors.append((src.path, f"cannot read: {exc}"))
            continue
        text = decode(src.path, data)
        if text.text is None:
            result.errors.append((src.path, text.error or "cannot decode"))
            continue
        texts[src.path] = text.text
    codebase = _Codebase(texts, _package_prefix(target) if target.is_dir() else ())
    reported = [p for p in sorted(texts) if _included(p, include)]
    result.files_scanned = len(reported)
    for path in reported:
        info = codebase.info(path)
        if info is not None:
            result.sites.extend(_Classifier(info, _Types(info, codebase), codebase).sites(info.root))
    for kernel in {k for s in result.sites for k in s.kernels if k.interface}:
        result.interfaces[kernel.key] = codebase.helper(kernel.name)[0]
    result.errors.extend(codebase.errors)
    result.sites.sort(key=lambda s: (s.path, s.line, s.col))
    return result
