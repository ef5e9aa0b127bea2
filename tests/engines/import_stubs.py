"""``sys.modules`` stand-ins for what an engine imports but a CPU test cannot load.

Three kinds, each listed with the reason it is needed (the driver prints the lists):

* **placeholder modules** (:data:`PLACEHOLDER_MODULES`): packages an engine imports at
  module level for code paths the attention backends never run on CPU (servers,
  tokenizers' optional extras, quantization kernels, CUDA-only libraries). Any attribute
  is a :class:`Placeholder`, a permissive object that can be called, subclassed,
  decorated with, iterated (empty) and compared; calling into one from an attention
  path would show up as a recorded ``placeholder`` call, never as a silent success.
* **recorder modules**: kernel libraries the backends do call (``sgl_kernel``,
  ``flash_mla``): built by :mod:`tests.engines.kernel_recorders`, not here.
* **package bypass**: a package whose ``__init__`` drags in a server stack
  (``sglang/__init__.py`` imports the frontend language, HTTP clients, HF patches) is
  registered as a bare namespace over its directory, so ``sglang.srt.*`` imports
  normally without it.

``FMHA_ENGINE_AUTOSTUB=1`` (discovery only, never in tests) turns every failing import
into a placeholder and prints the names, to grow the list.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path


class Placeholder:
    """A permissive stand-in object: every attribute, call and item is another placeholder."""

    def __init__(self, name: str = "placeholder", *args, **kwargs):
        object.__setattr__(self, "_name", name if isinstance(name, str) else "placeholder")

    def __repr__(self) -> str:
        return f"<placeholder {self._name}>"

    def __getattr__(self, item: str):
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        return Placeholder(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        # used as a decorator: hand the decorated function back unchanged
        if len(args) == 1 and not kwargs and (callable(args[0]) or isinstance(args[0], type)):
            return args[0]
        PLACEHOLDER_CALLS.append(self._name)
        return Placeholder(f"{self._name}()")

    def __mro_entries__(self, bases):
        return (_placeholder_base(self._name),)

    def __get_pydantic_core_schema__(self, source, handler):
        return _any_schema(type(self), source, handler)

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return False

    def __getitem__(self, item):
        return Placeholder(f"{self._name}[]")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __or__(self, other):
        return self

    __ror__ = __or__

    def __eq__(self, other):
        return other is self

    def __hash__(self) -> int:
        return id(self)


_BASES: dict[str, type] = {}


def _any_schema(cls, source, handler):
    from pydantic_core import core_schema

    return core_schema.any_schema()


def _placeholder_base(name: str) -> type:
    """A real class to subclass when a module-level ``class X(stub.Base)`` is defined."""
    if name not in _BASES:
        _BASES[name] = type(name.rsplit(".", 1)[-1], (), {
            "__init__": lambda self, *a, **k: None,
            # class X(stub.TypedDictBase, total=False) and the like
            "__init_subclass__": classmethod(lambda cls, **kwargs: None),
            "__class_getitem__": classmethod(lambda cls, item: cls),
            # a field typed with a placeholder class in an engine's pydantic model
            "__get_pydantic_core_schema__": classmethod(_any_schema),
        })
    return _BASES[name]


#: names of placeholder attributes that were called (a backend path reached a stub)
PLACEHOLDER_CALLS: list[str] = []


class PlaceholderModule(types.ModuleType):
    """A module whose every missing attribute is a :class:`Placeholder`."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__path__ = []  # a package: submodules import too
        self.__file__ = f"<placeholder {name}>"
        self.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)

    def __getattr__(self, item: str):
        if item.startswith("__") and item.endswith("__"):
            raise AttributeError(item)
        value = Placeholder(f"{self.__name__}.{item}")
        setattr(self, item, value)
        return value


class _PlaceholderLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return PlaceholderModule(spec.name)

    def exec_module(self, module):
        return None


class PlaceholderFinder(importlib.abc.MetaPathFinder):
    """Serves :class:`PlaceholderModule` for names matching the patterns (and their submodules)."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(patterns)
        self.served: list[str] = []

    def matches(self, fullname: str) -> bool:
        top = fullname.split(".")[0]
        return any(fnmatch(fullname, p) or fnmatch(top, p) for p in self.patterns)

    def find_spec(self, fullname, path=None, target=None):
        if not self.matches(fullname):
            return None
        self.served.append(fullname)
        return importlib.machinery.ModuleSpec(fullname, _PlaceholderLoader(), is_package=True)


class AutoStubFinder(importlib.abc.MetaPathFinder):
    """Discovery mode: a top-level name no other finder resolves becomes a placeholder."""

    def __init__(self, protected: Iterable[str], engine_roots: Iterable[str]):
        self.engine_roots = tuple(engine_roots)
        self.protected = set(protected)
        self.served: list[str] = []
        self.tops: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        # appended last to sys.meta_path: reached only when no real finder found the name
        top = fullname.split(".")[0]
        if top in self.protected or ("." in fullname and top not in self.tops):
            return None
        if not self._imported_from_engine():
            return None  # a library's own optional import (msvcrt, dill, ...): let it fail
        self.tops.add(top)
        self.served.append(fullname)
        print(f"[autostub] {fullname}", file=sys.stderr)
        return importlib.machinery.ModuleSpec(fullname, _PlaceholderLoader(), is_package=True)

    def _imported_from_engine(self) -> bool:
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith("<frozen"):
                return filename.startswith(self.engine_roots)
            frame = frame.f_back
        return False


#: top-level packages (fnmatch patterns) SGLang imports at module level that no attention
#: backend path uses on CPU, each with the reason it is a placeholder and not installed.
PLACEHOLDER_MODULES: dict[str, str] = {}


def bypass_package_init(name: str, directory: Path) -> types.ModuleType:
    """Register ``name`` as a bare package over ``directory`` without running its ``__init__``."""
    module = types.ModuleType(name)
    module.__path__ = [str(directory)]
    module.__file__ = str(directory / "__init__.py")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__spec__.submodule_search_locations = [str(directory)]
    sys.modules[name] = module
    return module


def install_placeholders(patterns: Iterable[str], engine_roots: Iterable[str] = ()) -> PlaceholderFinder:
    finder = PlaceholderFinder(patterns)
    sys.meta_path.insert(0, finder)
    if os.environ.get("FMHA_ENGINE_AUTOSTUB") == "1":
        protected = {"sglang", "flashinfer", "torch", "triton", "tests"}
        sys.meta_path.append(AutoStubFinder(protected, tuple(engine_roots)))
    return finder


def settle_transformers_probes() -> list[str]:
    """Evaluate transformers' cached ``is_*_available()`` probes before any placeholder exists.

    transformers asks ``importlib.util.find_spec`` whether optional packages (torchvision,
    torchcodec, ...) are installed and caches the answer; asked after a placeholder is in
    ``sys.modules`` it would believe the package is there and parse its missing version.
    Evaluated first, every probe sees the real environment. Returns the probes that raised.
    """
    try:
        from transformers.utils import import_utils
    except ImportError:
        return []
    failed = []
    for name in dir(import_utils):
        probe = getattr(import_utils, name)
        if name.startswith("is_") and name.endswith("_available") and hasattr(probe, "cache_info"):
            try:
                probe()
            except Exception:  # a probe needing arguments, or a broken optional package
                failed.append(name)
    return failed
