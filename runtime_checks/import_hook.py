"""A ``sys.meta_path`` finder that runs a callback right after chosen modules execute.

The runtime guard must patch FlashInfer's entry points before any other code can
take a reference to them. :class:`PostImportFinder` sits first on
``sys.meta_path``; for a watched module name (``flashinfer``, ``flashinfer.decode``,
...) it asks the other finders for the spec, exactly as the import system would,
and wraps the spec's loader so that right after ``exec_module`` has run the
module's body the callback receives the module. That happens inside the import
statement that loaded the module, so:

* ``import flashinfer`` runs ``flashinfer/__init__.py``, whose
  ``from .decode import X`` first executes ``flashinfer.decode``; the callback
  patches ``flashinfer.decode.X`` before control returns to ``from .decode import X``,
  which therefore binds the patched object in ``flashinfer`` too;
* ``from flashinfer.decode import X`` executed later (vLLM's style) reads the
  already patched attribute;
* a lazy module ``__getattr__`` that imports a submodule on first access goes
  through the same import system and finds the submodule patched.

After the module has executed, its ``__loader__`` and ``__spec__.loader`` are put
back to the original loader, so nothing of the hook stays visible on the module
(``importlib.reload``, ``inspect.getsource``, ``importlib.resources`` see the
original). Every other module is left to the other finders (``find_spec``
returns ``None`` after one set lookup). Importing this module imports only the
standard library.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Optional

__all__ = ["PostImportFinder"]


class _CallbackLoader:
    """Delegates everything to ``loader``; after ``exec_module`` calls ``on_executed(module)``.

    ``create_module``, ``get_code``, ``get_resource_reader``, ``is_package``... are
    the original loader's (attribute delegation).
    """

    def __init__(self, loader: Any, on_executed: Callable[[ModuleType], None]) -> None:
        self._fmha_loader = loader
        self._fmha_on_executed = on_executed

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_fmha_"):  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self._fmha_loader, name)

    def exec_module(self, module: ModuleType) -> None:
        loader = self._fmha_loader
        try:
            loader.exec_module(module)
        finally:
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.loader is self:
                spec.loader = loader
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = loader
        self._fmha_on_executed(module)

    def __repr__(self) -> str:
        return f"<fmha-guard post-import wrapper of {self._fmha_loader!r}>"


class PostImportFinder:
    """Meta path finder calling ``on_executed(module)`` right after a watched module runs.

    Args:
        names: full module names to watch (``"flashinfer.decode"``).
        on_executed: called with the freshly executed module, inside the import that
            loaded it. Exceptions it raises propagate into that import, so it should
            not raise (the guard's callback catches everything).

    :meth:`register` inserts the finder at the front of ``sys.meta_path``;
    :meth:`unregister` removes it. Modules already imported are not affected.
    """

    def __init__(self, names: Iterable[str], on_executed: Callable[[ModuleType], None]) -> None:
        self.names = frozenset(names)
        self.on_executed = on_executed
        self._busy = threading.local()

    # -- registration ---------------------------------------------------------
    def register(self) -> None:
        """Put this finder first on ``sys.meta_path`` (no-op if already there)."""
        if not any(finder is self for finder in sys.meta_path):
            sys.meta_path.insert(0, self)

    def unregister(self) -> None:
        """Remove this finder from ``sys.meta_path`` (no-op if absent)."""
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self]

    @property
    def registered(self) -> bool:
        return any(finder is self for finder in sys.meta_path)

    # -- importlib protocol ---------------------------------------------------
    def find_spec(self, fullname: str, path: Optional[Any] = None, target: Optional[ModuleType] = None) -> Any:
        """The spec the other finders give for a watched name, its loader wrapped; else ``None``."""
        if fullname not in self.names:
            return None
        busy = self._busy.__dict__.setdefault("names", set())
        if fullname in busy:  # another finder delegating back to sys.meta_path
            return None
        busy.add(fullname)
        try:
            spec = self._find_with_other_finders(fullname, path, target)
        finally:
            busy.discard(fullname)
        if spec is None:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _CallbackLoader):
            spec.loader = _CallbackLoader(loader, self.on_executed)
        return spec

    def _find_with_other_finders(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self) -> None:
        """Nothing cached here (``importlib.invalidate_caches`` calls it)."""

    def __repr__(self) -> str:
        return f"<fmha-guard PostImportFinder watching {sorted(self.names)}>"
