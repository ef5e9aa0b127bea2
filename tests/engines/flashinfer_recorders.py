"""FlashInfer on CPU: its Python code real, its compiled layer replaced by recorders.

Cut points (read from flashinfer 0.7.2.post1's package):

* ``flashinfer.jit.core.JitSpec.build_and_load``: every JIT module (batch prefill fa2/fa3,
  batch decode, MLA, cascade, page, xqa, fmha_v2, ...) is a ``JitSpec`` whose
  ``build_and_load()`` compiles and loads a tvm-ffi module. Patched to return a
  :class:`RecorderModule` over the spec's sources (the spec's ``post_load_adapter``,
  FlashInfer's own Python, is still applied).
* ``flashinfer.jit.**.gen_*`` spec generators that need downloaded artifacts (the
  trtllm-gen FMHA cubins' checksums and meta-info header): when the real generator
  raises, a :class:`RecorderSpec` stands in; its functions are looked up by export name
  among all bindings.

A recorder function's argument names are the C++ parameter names of the function the
binding exports (``TVM_FFI_DLL_EXPORT_TYPED_FUNC(export, CxxFunction)`` and the
declaration of ``CxxFunction`` in the spec's sources under ``flashinfer/data/csrc`` or the
generated ``.inc`` config that defines ``ADDITIONAL_FUNC_PARAMS``). Calls are bound to
those names and written to :data:`tests.engines.kernel_calls.LOG`; output tensors the
Python side allocated (``o``, ``out``, ``lse``, ...) are zero-filled; functions returning
``Array<int64_t>`` (plan info) return a list of zeros, ``int64_t`` returns 0 (a workspace
size) or 1 (a divisor).

:func:`install` also wraps FlashInfer's public attention API (the functions and wrapper
class methods of the modules in :data:`FMHA_MODULES`) so that a call from engine code is
recorded as an *entry* with its bound arguments, and the launches under it attach to it.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from . import faults
from .kernel_calls import LOG

#: FlashInfer modules whose public functions and classes are the FMHA entry points
FMHA_MODULES = (
    "flashinfer.prefill", "flashinfer.decode", "flashinfer.mla", "flashinfer.xqa",
    "flashinfer.cascade", "flashinfer.page", "flashinfer.cudnn", "flashinfer.attention",
    "flashinfer.sparse", "flashinfer.pod",
)
#: C++ parameter names of outputs a kernel writes (zero-filled by the recorder)
OUTPUT_NAMES = frozenset({"o", "out", "output", "lse", "maybe_lse", "s_merged", "v_merged",
                          "softmax_lse", "out_lse"})

_EXPORT = re.compile(r"TVM_FFI_DLL_EXPORT_TYPED_FUNC\(\s*(\w+)\s*,\s*([\w:]+)\s*\)")
_DEFINE_PARAMS = re.compile(r"#define\s+ADDITIONAL_FUNC_PARAMS((?:[^\n]*\\\n)*[^\n]*)")
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def _strip(text: str) -> str:
    return _COMMENTS.sub("", text)


def _split_params(params: str) -> list[str]:
    out, depth, current = [], 0, ""
    for char in params:
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        out.append(current)
    return [p.strip() for p in out if p.strip()]


def _param_name(param: str) -> tuple[str, str]:
    param = param.split("=")[0].strip()
    match = re.search(r"(\w+)\s*(\[\s*\])?$", param)
    name = match.group(1) if match else param
    return name, param[: match.start()].strip() if match else ""


class Signature:
    """One exported function: its C++ return type and parameter (name, type) pairs."""

    def __init__(self, export: str, cxx: str, ret: str, params: list[tuple[str, str]], source: str):
        self.export, self.cxx, self.ret, self.params, self.source = export, cxx, ret, params, source

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.params]


def _declaration(text: str, cxx: str) -> tuple[str, str] | None:
    """(return type, parameter text) of ``cxx``'s declaration or definition in ``text``.

    A plain scan (no backtracking regex: the launcher sources are large): each
    ``name(`` whose line starts with a return type and whose closing parenthesis is
    followed by ``{`` or ``;``.
    """
    last = cxx.split("::")[-1]
    for match in re.finditer(r"\b" + re.escape(last) + r"\s*\(", text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        ret = text[line_start:match.start()].strip()
        if not ret:  # return type on the line before
            previous = text.rfind("\n", 0, max(line_start - 1, 0)) + 1
            ret = text[previous:line_start].strip()
        ret = ret.removesuffix("::").strip()
        if ret.endswith("::"):
            continue
        if (not ret or any(t in ret for t in ("return", "=", "(", ".", "->", "#"))
                or not re.match(r"^[\w:<>,\s\*&]+$", ret)):
            continue
        depth, index = 0, match.end() - 1
        while index < len(text):
            char = text[index]
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        tail = text[index + 1:index + 40].lstrip()
        if tail.startswith("const"):
            tail = tail[5:].lstrip()
        if not tail.startswith(("{", ";")):
            continue
        return ret, text[match.end():index]
    return None


def _additional_params(paths: list[Path]) -> str:
    """The ``ADDITIONAL_FUNC_PARAMS`` macro a generated config ``.inc`` beside ``paths`` defines."""
    for directory in {p.parent for p in paths}:
        for inc in sorted(directory.glob("*.inc")):
            match = _DEFINE_PARAMS.search(inc.read_text(errors="replace"))
            if match:
                return match.group(1).replace("\\\n", " ")
    return ""


@functools.cache
def _raw_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


@functools.cache
def _file_text(path: str) -> str:
    return _strip(_raw_text(path))


def signatures_from_sources(paths: list[Path]) -> dict[str, Signature]:
    """Exported functions of the sources of one JIT module, with their parameter names."""
    paths = [Path(p) for p in paths]
    texts = {str(p): _file_text(str(p)) for p in paths}
    extra = _additional_params(paths)
    corpus = "\n".join(texts.values()).replace("ADDITIONAL_FUNC_PARAMS", extra)
    found: dict[str, Signature] = {}
    for path, text in texts.items():
        for export, cxx in _EXPORT.findall(text):
            decl = _declaration(text.replace("ADDITIONAL_FUNC_PARAMS", extra), cxx) or _declaration(corpus, cxx)
            if decl is None:
                decl = _declaration_in_csrc(cxx)
            if decl is None:
                continue
            ret, params = decl
            found[export] = Signature(export, cxx, ret,
                                      [_param_name(p) for p in _split_params(params)],
                                      Path(path).name)
    return found


@functools.cache
def _csrc_dir() -> Path:
    import flashinfer

    return Path(flashinfer.__file__).parent / "data" / "csrc"


@functools.cache
def _csrc_files() -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(_csrc_dir().rglob("*.cu")))


@functools.cache
def exports_named(export: str) -> tuple[Signature, ...]:
    """Bindings under ``flashinfer/data/csrc`` exporting ``export`` (for specs with no sources)."""
    pattern = re.compile(r"TVM_FFI_DLL_EXPORT_TYPED_FUNC\(\s*" + re.escape(export) + r"\s*,")
    found = []
    for path in _csrc_files():
        if pattern.search(_raw_text(path)):
            signature = signatures_from_sources([Path(path)]).get(export)
            if signature is not None:
                found.append(signature)
    return tuple(found)


def _declaration_in_csrc(cxx: str) -> tuple[str, str] | None:
    last = cxx.split("::")[-1]
    for path in _csrc_files():
        if last not in _raw_text(path):
            continue
        text = _file_text(path)
        if last in text:
            decl = _declaration(text, cxx)
            if decl is not None:
                return decl
    return None


def _value_for_type(cxx_type: str, export: str):
    cxx_type = cxx_type.replace("tvm::ffi::", "").replace("ffi::", "").strip()
    if cxx_type.startswith("Tuple<") and cxx_type.endswith(">"):
        return tuple(_value_for_type(t, export) for t in _split_params(cxx_type[6:-1]))
    if cxx_type.startswith("Array"):
        return [0] * 16
    if cxx_type.endswith(("int64_t", "int", "int32_t")):
        return 1 if "divisor" in export else 0
    if cxx_type.endswith("bool"):
        return True
    if cxx_type.endswith(("double", "float")):
        return 0.0
    if "Tensor" in cxx_type:
        raise NotImplementedError(f"recorder for {export} would have to allocate its result")
    return None


def _return_value(signature: Signature | None, bound: dict[str, Any]):
    if signature is None:
        return None
    return _value_for_type(signature.ret, signature.export)


def _zero_outputs(bound: dict[str, Any]) -> None:
    for name, value in bound.items():
        if name in OUTPUT_NAMES and isinstance(value, torch.Tensor) and value.is_floating_point():
            value.zero_()


class RecorderFunction:
    """A compiled function's stand-in: binds the call to the C++ parameter names and records it."""

    def __init__(self, module: str, export: str, signature: Signature | None):
        self.module, self.export, self.signature = module, export, signature
        self.__name__ = export

    def __call__(self, *args, **kwargs):
        if self.signature is not None:
            names = self.signature.names
            bound = dict(zip(names, args))
            if len(args) > len(names):
                bound.update({f"extra{i}": a for i, a in enumerate(args[len(names):])})
        else:
            bound = {f"arg{i}": a for i, a in enumerate(args)}
        bound.update(kwargs)
        launch = LOG.launch(f"{self.module}:{self.export}", bound)
        if self.signature is not None and len(args) != len(self.signature.names):
            launch.error = (f"arity: called with {len(args)} positional arguments, "
                            f"{self.signature.cxx} declares {len(self.signature.names)}")
        if self.signature is None:
            launch.error = "signature not found in the binding sources"
        _zero_outputs(bound)
        return _return_value(self.signature, bound)


class RecorderModule:
    """What ``JitSpec.build_and_load()`` returns on CPU: recorder functions by export name."""

    def __init__(self, name: str, sources: list[Path] | None):
        self.name = name
        self.sources = list(sources or [])
        self.signatures = signatures_from_sources(self.sources) if self.sources else {}
        self._functions: dict[str, RecorderFunction] = {}

    def _signature(self, export: str) -> Signature | None:
        if export in self.signatures:
            return self.signatures[export]
        candidates = exports_named(export)
        return candidates[0] if len(candidates) == 1 else None

    def __getattr__(self, export: str) -> RecorderFunction:
        if export.startswith("__"):
            raise AttributeError(export)
        if export not in self._functions:
            self._functions[export] = RecorderFunction(self.name, export, self._signature(export))
        return self._functions[export]

    def __getitem__(self, export: str) -> RecorderFunction:
        return getattr(self, export)

    def __repr__(self) -> str:
        return f"<recorder module {self.name}: {sorted(self.signatures)}>"


class RecorderSpec:
    """Stands in for a ``JitSpec`` whose generator needed downloaded artifacts."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason, self.sources = name, reason, []

    def build_and_load(self):
        return RecorderModule(self.name, None)

    def build(self):
        return None

    def load(self):
        return RecorderModule(self.name, None)

    def try_load(self):
        return RecorderModule(self.name, None)

    def get_library_paths(self):
        # trtllm-gen FMHA modules hand their .so paths to setup_cubin_loader: none here
        return ()

    is_compiled = True


#: which spec generators fell back to a RecorderSpec, and why (printed in the report)
GENERATOR_FALLBACKS: dict[str, str] = {}
#: entry points wrapped (qualified names)
WRAPPED: list[str] = []


def _recording_build_and_load(self):
    module = RecorderModule(getattr(self, "name", type(self).__name__), getattr(self, "sources", None))
    adapter = getattr(self, "post_load_adapter", None)
    return adapter(module) if adapter is not None else module


def _fallback_generator(generator: Callable) -> Callable:
    @functools.wraps(generator)
    def wrapper(*args, **kwargs):
        try:
            return generator(*args, **kwargs)
        except Exception as exc:  # artifacts that need a download, a missing toolchain probe
            name = generator.__name__.removeprefix("gen_")
            GENERATOR_FALLBACKS[generator.__name__] = f"{type(exc).__name__}: {exc}"[:200]
            return RecorderSpec(name, str(exc))

    wrapper.__cpu_kit_original__ = generator
    return wrapper


def _replace_everywhere(original: Any, replacement: Any, prefix: str = "flashinfer") -> None:
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        namespace = getattr(module, "__dict__", {})
        for attr, value in list(namespace.items()):
            if value is original:
                setattr(module, attr, replacement)


def _caller_name() -> str:
    return LOG.engine_caller()


def _entry_wrapper(qualname: str, function: Callable) -> Callable:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        signature = None

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if LOG.called_from_library():
            return function(*args, **kwargs)
        args, kwargs = faults.apply(qualname, signature, args, kwargs, LOG.phase)  # FMHA_KIT_FAULT
        if signature is not None:
            try:
                bound_args = signature.bind(*args, **kwargs)
                bound = dict(bound_args.arguments)
                for key in [k for k, p in signature.parameters.items() if p.kind is p.VAR_KEYWORD]:
                    bound.update(bound.pop(key, {}))
            except TypeError:
                bound = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
        else:
            bound = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
        bound.pop("self", None)
        from . import guard_probe

        before = guard_probe.snapshot()
        with LOG.entry(qualname, bound, _caller_name()) as record:
            try:
                return function(*args, **kwargs)
            finally:
                record.guard = guard_probe.delta(before)

    wrapper.__cpu_kit_original__ = function
    return wrapper


def _wrap_entry_points() -> None:
    import importlib

    for module_name in FMHA_MODULES:
        try:
            importlib.import_module(module_name)
        except Exception:
            continue
    modules = {name: m for name, m in list(sys.modules.items())
               if m is not None and name.startswith(FMHA_MODULES)}
    seen: set[int] = set()
    for module_name, module in sorted(modules.items()):
        for attr, value in list(vars(module).items()):
            if attr.startswith("_") or id(value) in seen:
                continue
            owner = getattr(value, "__module__", "") or ""
            if not owner.startswith(FMHA_MODULES):
                continue
            if inspect.isclass(value):
                seen.add(id(value))
                for method_name, method in list(vars(value).items()):
                    if not inspect.isfunction(method) or (method_name.startswith("_") and method_name != "__init__"):
                        continue
                    if hasattr(method, "__cpu_kit_original__"):
                        continue
                    qualname = f"{owner}.{value.__qualname__}.{method_name}"
                    setattr(value, method_name, _entry_wrapper(qualname, method))
                    WRAPPED.append(qualname)
            elif inspect.isfunction(value) and not hasattr(value, "__cpu_kit_original__"):
                if attr.startswith(("gen_", "get_")) or attr.endswith("_module"):
                    continue
                seen.add(id(value))
                qualname = f"{owner}.{value.__qualname__}"
                wrapper = _entry_wrapper(qualname, value)
                _replace_everywhere(value, wrapper)
                WRAPPED.append(qualname)


def _device_facts() -> dict[str, Callable]:
    """``flashinfer.utils`` helpers that refuse non-CUDA devices, answered from the CPU shim."""
    from . import cuda_on_cpu

    return {
        "get_compute_capability": lambda device=None: cuda_on_cpu.capability(),
        "device_support_pdl": lambda device=None: cuda_on_cpu.capability()[0] >= 9,
        "get_gpu_memory_bandwidth": lambda device=None: 3350.0,
    }


#: the ``flashinfer.utils`` device helpers replaced (reported)
DEVICE_FACTS: list[str] = []


def _validate_workspace_on_host(int_workspace, page_locked_workspace) -> None:
    """``_BatchMLAModuleProxy._validate_workspace`` without its device-type checks (CPU kit)."""
    if not page_locked_workspace.is_contiguous():
        raise ValueError("page_locked_workspace must be a pinned, contiguous CPU tensor.")
    if not int_workspace.is_contiguous():
        raise ValueError("int_workspace must be a contiguous CUDA tensor.")


def install() -> None:
    """Patch FlashInfer's compiled layer and wrap its attention entry points (idempotent)."""
    import flashinfer
    from flashinfer.jit import core

    if getattr(core.JitSpec, "__cpu_kit__", False):
        return
    core.JitSpec.build_and_load = _recording_build_and_load
    for cls in list(core.JitSpec.__subclasses__()):
        if "build_and_load" in vars(cls):
            cls.build_and_load = _recording_build_and_load
    core.JitSpec.__cpu_kit__ = True
    from flashinfer import utils

    for name, fact in _device_facts().items():
        original = getattr(utils, name, None)
        if original is not None:
            _replace_everywhere(original, fact)
            DEVICE_FACTS.append(f"flashinfer.utils.{name}")
    from flashinfer.jit.attention import modules as attention_modules

    proxy = getattr(attention_modules, "_BatchMLAModuleProxy", None)
    if proxy is not None:
        proxy._validate_workspace = staticmethod(_validate_workspace_on_host)
        DEVICE_FACTS.append("flashinfer.jit.attention.modules._BatchMLAModuleProxy._validate_workspace")
    root = str(Path(flashinfer.__file__).parent)
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("flashinfer.jit"):
            continue
        for attr, value in list(vars(module).items()):
            if attr.startswith("gen_") and inspect.isfunction(value) and not hasattr(value, "__cpu_kit_original__"):
                _replace_everywhere(value, _fallback_generator(value))
    LOG.library_roots = tuple(sorted(set(LOG.library_roots) | {root}))
    _wrap_entry_points()
