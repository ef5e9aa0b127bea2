"""Turn the runtime guard on and off: patch the kernel libraries' entry points, and put them back.

The libraries are those of :data:`runtime_checks.armed.ROOT_PACKAGES` (FlashInfer,
``sgl_kernel``, ``flash_mla``, vLLM's ``vllm_flash_attn`` and ``third_party.flashmla``);
one that is not installed is not patched (one debug line per process says so).

:func:`install` sets the level and action (read by
:meth:`guardrails.config.GuardConfig.resolve`, set by :func:`runtime_checks.state.configure`)
and wraps every entry point of :data:`runtime_checks.kernel_specs.ENTRY_POINTS`
with :func:`runtime_checks.launch_guard.make_guard`:

* entry points whose module is already imported are patched at once;
* the others are patched right after their module is imported, by a
  :class:`runtime_checks.import_hook.PostImportFinder` put first on
  ``sys.meta_path`` (so ``import flashinfer`` and a later
  ``from flashinfer.decode import X`` both see the guarded object).

``FMHA_GUARD=shapes|values`` gets here through :mod:`runtime_checks.startup`,
which arms the guard at interpreter start (:mod:`runtime_checks.armed`); the armed
guard calls :func:`install` at the first import of one of those libraries. This module does not
import the startup module: it settles or drops the armed guard through
:mod:`runtime_checks.armed`.

A function (``flashinfer.decode.trtllm_batch_decode_with_kv_cache``) is replaced
in its module, and every other reference to the very same function object is
rebound: any attribute of an imported module of a guarded library (re-exports such as
``flashinfer.mla._core`` / ``flashinfer.mla`` / ``flashinfer.decode`` for the MLA
function, or top-level ``flashinfer.X``), and an attribute of the same name in any
other imported module (an engine's ``from flashinfer.decode import X`` that ran
before :func:`install`). A method (``BatchDecodeWithPagedKVCacheWrapper.run``) is
replaced on its class, and each ``functools.partialmethod`` alias of it
(``run_return_lse``) is re-created over the guarded method with the same
arguments, a plain alias (``begin_forward = plan``) pointed at the guarded method,
so subclasses and re-exports of the class see both.

Each :func:`install`, and each import of a kernel library's top-level package while
installed, logs one INFO line on the ``fmha_guard`` logger: the level, the action,
the entry points patched and the modules still to be patched when imported
(:func:`_announce`). An entry point this FlashInfer does not have (another release's
layout) is skipped with one debug line on the ``fmha_guard`` logger; one that cannot be
wrapped is skipped with one warning. Patching never raises into an import.

:func:`install` is idempotent (a second call only reconfigures);
:func:`uninstall` puts every original object back (identity, aliases included),
removes the import hook and sets the level to OFF. :func:`guarded` is a context
manager (and decorator) that installs and restores the previous state on exit.
All of it is process-wide and serialized by one lock.

This module imports neither torch nor FlashInfer; :mod:`runtime_checks.launch_guard`
is imported when the first entry point is wrapped (FlashInfer, hence torch, is
then already imported).
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from guardrails.config import Action, GuardConfig, Level

from . import armed
from .armed import ROOT_PACKAGE, ROOT_PACKAGES, is_guarded_module
from .import_hook import PostImportFinder
from .kernel_specs import ENTRY_POINTS, EntryPoint
from .state import STATE, GuardState, configure, log

__all__ = ["install", "uninstall", "guarded", "is_installed", "import_hook_finder", "ROOT_PACKAGE"]

_MISSING = object()
_lock = threading.RLock()
_finder: Optional[PostImportFinder] = None
_patches: list[Union["_FunctionPatch", "_MethodPatch"]] = []
_reported: set[tuple[EntryPoint, str]] = set()


# ---------------------------------------------------------------- public API

def install(level: Union[Level, str, int, None] = None, action: Union[Action, str, None] = None) -> None:
    """Guard every FlashInfer entry point, now and when its module is imported.

    Args:
        level: ``"off"``/``"shapes"``/``"values"`` (any case, or 0/1/2, or a :class:`Level`);
            ``None`` reads ``FMHA_GUARD``. At OFF the entry points are still patched
            but pass straight through until the level is raised.
        action: ``"raise"`` or ``"warn"`` (any case, or an :class:`Action`); ``None``
            reads ``FMHA_GUARD_ACTION`` (default ``raise``).

    Levels (and actions) parse as :func:`guardrails.config.parse_level` (``parse_action``)
    does, from the environment too (:meth:`guardrails.config.GuardConfig.resolve`).

    Calling it again only reconfigures (no double wrapping) and patches entry
    points whose modules were imported or reloaded since. It replaces a guard
    armed at interpreter start (:mod:`runtime_checks.startup`).

    An unknown ``FMHA_GUARD`` / ``FMHA_GUARD_ACTION`` read from the environment fails
    closed (``shapes`` / ``raise``) with one :class:`guardrails.errors.FmhaGuardConfigWarning`.

    Raises:
        GuardConfigError: an unknown ``level`` or ``action`` argument (a ``ValueError``;
            nothing is patched then).
    """
    config = GuardConfig.resolve(level, action)
    global _finder
    with _lock:
        configure(config.level, config.action)
        armed.disarm()
        if _finder is None:
            _finder = PostImportFinder({*ROOT_PACKAGES, *(e.module for e in ENTRY_POINTS)}, _on_module_executed)
            _finder.register()
        for entry in ENTRY_POINTS:
            module = sys.modules.get(entry.module)
            if module is not None:
                _patch_entry(entry, module)
        for patch in _patches:
            if isinstance(patch, _FunctionPatch):
                patch.rebind()
        _report_missing_libraries()
        _announce()


def uninstall() -> None:
    """Remove the guard: restore every patched object, drop the import hook, level OFF.

    Module attributes and class attributes (``partialmethod`` aliases included) get
    back the very objects they held before :func:`install`; a reference to a
    guarded function that an imported module took while installed is restored too
    (same name, or any name in a ``flashinfer*`` module; one taken under another
    name keeps the wrapper, which passes straight through at level OFF). The CUDA
    graph hooks and the Triton launch hook that :mod:`runtime_checks.launch_guard` installs
    are removed too (``graph_hooks.uninstall``, ``refills.uninstall``). A guard armed at
    interpreter start is dropped.
    Safe to call when not installed.
    """
    global _finder
    with _lock:
        armed.disarm()
        if _finder is not None:
            _finder.unregister()
            _finder = None
        while _patches:
            _patches.pop().restore()
        for hooks in ("graph_hooks", "refills"):  # installed by launch_guard.make_guard
            module = sys.modules.get(f"{__package__}.{hooks}")
            if module is not None and hasattr(module, "uninstall"):
                module.uninstall()
        configure(Level.OFF, STATE.action)


def is_installed() -> bool:
    """Whether :func:`install` is in effect (import hook registered).

    A guard armed at interpreter start that has not fired yet (no ``flashinfer``
    import so far) is installed by this call, so the answer is True for it.
    """
    armed.settle()
    return _finder is not None


def import_hook_finder() -> Optional[PostImportFinder]:
    """The registered import hook while installed, else ``None``."""
    return _finder


@contextmanager
def guarded(level: Union[Level, str, int] = Level.SHAPES, action: Union[Action, str] = Action.RAISE) -> Iterator[GuardState]:
    """Install the guard at ``level``/``action`` for a ``with`` block (or a decorated call).

    Yields :data:`runtime_checks.state.STATE` (level, action, counters). On exit the
    previous state comes back: uninstalled if it was not installed before, else the
    previous level and action. Blocks nest.

    Raises:
        GuardConfigError: an unknown level or action (a ``ValueError``; on entry).
    """
    with _lock:
        was_installed = is_installed()
        previous = (STATE.level, STATE.action)
        install(level, action)
    try:
        yield STATE
    finally:
        with _lock:
            if not was_installed:
                uninstall()
            configure(*previous)


# ---------------------------------------------------------------- patch records

@dataclass
class _FunctionPatch:
    """A module-level function replaced by its guard, and every place now holding the guard."""

    entry: EntryPoint
    original: Any
    guard: Any
    places: list[tuple[types.ModuleType, str]] = field(default_factory=list)

    def rebind(self) -> None:
        """Point every imported reference to ``original`` at ``guard``."""
        for module, namespace, key in _references(self.original, self.entry.qualname):
            namespace[key] = self.guard
            self.places.append((module, key))

    def restore(self) -> None:
        """Put ``original`` back wherever ``guard`` is (recorded places, then a scan)."""
        for module, key in self.places:
            namespace = _namespace(module)
            if namespace is not None and namespace.get(key) is self.guard:
                namespace[key] = self.original
        for _module, namespace, key in _references(self.guard, self.entry.qualname):
            namespace[key] = self.original


@dataclass
class _MethodPatch:
    """A class attribute replaced by its guard, plus its re-created ``partialmethod`` aliases."""

    entry: EntryPoint
    cls: type
    name: str
    original: Any
    guard: Any
    had_own: bool
    aliases: list[tuple[str, Any, Any]] = field(default_factory=list)  # (alias, original, new)

    def restore(self) -> None:
        namespace = self.cls.__dict__
        for alias, original, new in self.aliases:
            if namespace.get(alias) is new:
                setattr(self.cls, alias, original)
        if namespace.get(self.name) is self.guard:
            if self.had_own:
                setattr(self.cls, self.name, self.original)
            else:
                delattr(self.cls, self.name)


# ---------------------------------------------------------------- patching

def _on_module_executed(module: types.ModuleType) -> None:
    """Import-hook callback: patch the entry points of a just-executed module. Never raises."""
    try:
        with _lock:
            if _finder is None:
                return
            name = module.__name__
            for entry in ENTRY_POINTS:
                if entry.module == name:
                    _patch_entry(entry, module)
            if name in ROOT_PACKAGES:  # top-level re-exports made by the package's __init__
                for patch in _patches:
                    if isinstance(patch, _FunctionPatch):
                        patch.rebind()
                _announce()
    except Exception as exc:  # the guard must never break an import
        log.warning("fmha-guard: patching %s failed (%s: %s); it is not guarded", module.__name__, type(exc).__name__, exc)


def _patch_entry(entry: EntryPoint, module: types.ModuleType) -> None:
    """Patch one entry point in its (imported) module; skip and log what cannot be patched."""
    try:
        if entry.is_method:
            _patch_method(entry, module)
        else:
            _patch_function(entry, module)
    except Exception as exc:
        _report(entry, "warning", f"could not be wrapped ({type(exc).__name__}: {exc}); its launches are not checked")


def _patch_function(entry: EntryPoint, module: types.ModuleType) -> None:
    current = vars(module).get(entry.qualname, _MISSING)
    if current is _MISSING:
        _report(entry, "debug", f"is not in this {_library(entry)} ({entry.module} has no {entry.qualname}); skipped")
        return
    if _is_guard(current):
        return
    patch = _FunctionPatch(entry, current, _make_guard(entry, current))
    vars(module)[entry.qualname] = patch.guard
    patch.places.append((module, entry.qualname))
    _patches.append(patch)
    patch.rebind()


def _patch_method(entry: EntryPoint, module: types.ModuleType) -> None:
    class_name, _, name = entry.qualname.partition(".")
    cls = vars(module).get(class_name)
    if not isinstance(cls, type):
        _report(entry, "debug", f"is not in this {_library(entry)} ({entry.module} has no class {class_name}); skipped")
        return
    had_own = name in cls.__dict__
    current = next((base.__dict__[name] for base in cls.__mro__ if name in base.__dict__), _MISSING)
    if current is _MISSING:
        _report(entry, "debug", f"is not in this {_library(entry)} ({class_name} has no {name}); skipped")
        return
    if _is_guard(current):
        return
    if not isinstance(current, types.FunctionType):
        _report(entry, "debug", f"is a {type(current).__name__}, not a plain method; skipped")
        return
    patch = _MethodPatch(entry, cls, name, current, _make_guard(entry, current), had_own)
    setattr(cls, name, patch.guard)
    _patches.append(patch)
    for alias in entry.aliases:
        partial = cls.__dict__.get(alias)
        if isinstance(partial, functools.partialmethod) and partial.func is current:
            new = functools.partialmethod(patch.guard, *partial.args, **partial.keywords)
            setattr(cls, alias, new)
            patch.aliases.append((alias, partial, new))
        elif partial is current:  # a plain alias (``begin_forward = plan``)
            setattr(cls, alias, patch.guard)
            patch.aliases.append((alias, partial, patch.guard))
        else:
            _report(entry, "debug", f"alias {class_name}.{alias} is not a partialmethod of {name}; left alone")


def _make_guard(entry: EntryPoint, original: Callable[..., Any]) -> Callable[..., Any]:
    from .launch_guard import make_guard  # imports the checks (and what they need) on first use

    return make_guard(entry, original)


def _is_guard(obj: Any) -> bool:
    try:
        return getattr(obj, "__fmha_guard__", None) is not None
    except Exception:
        return False


def _announce() -> None:
    """The INFO line saying the guard is active: level, action, the libraries and entry
    points patched, and the modules of those libraries whose entry points are patched
    when imported."""
    if not log.isEnabledFor(logging.INFO):
        return
    state = f"level={STATE.level}, action={STATE.action}{': launches pass unchecked' if STATE.level is Level.OFF else ''}"
    if not _patches:
        log.info("fmha-guard: guard active (%s); nothing patched yet: entry points are patched when %s is imported",
                 state, " / ".join(ROOT_PACKAGES))
        return
    libraries = list(dict.fromkeys(_library(p.entry) for p in _patches))
    pending = sorted({e.module for e in ENTRY_POINTS if e.module not in sys.modules and _library(e) in libraries})
    log.info(
        "fmha-guard: guard active (%s) for %s; %d entry points patched: %s%s",
        state, ", ".join(libraries), len(_patches), ", ".join(f"{p.entry.module}.{p.entry.qualname}" for p in _patches),
        f"; patched when imported: {', '.join(pending)}" if pending else "",
    )


def _library(entry: EntryPoint) -> str:
    """The guarded library (:data:`ROOT_PACKAGES`) an entry point belongs to."""
    module = entry.module
    return next((root for root in ROOT_PACKAGES if module == root or module.startswith(root + ".")),
                module.partition(".")[0])


_missing_reported: set[str] = set()


def _report_missing_libraries() -> None:
    """One debug line per process for each guarded library that is not installed (its
    entry points stay unpatched: nothing to do, not an error). Only top-level packages
    are looked up, never imported (``vllm`` stands for its two vendored libraries)."""
    import importlib.util

    for top in dict.fromkeys(root.partition(".")[0] for root in ROOT_PACKAGES):
        if top in sys.modules or top in _missing_reported:
            continue
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = True  # odd, but present: its modules are patched when imported
        if not found:
            _missing_reported.add(top)
            roots = [root for root in ROOT_PACKAGES if root.partition(".")[0] == top]
            log.debug("fmha-guard: %s is not installed; its entry points are not patched", ", ".join(roots))


def _report(entry: EntryPoint, level: str, what: str) -> None:
    """Log ``entry`` ``what`` once per process at ``level`` (``debug`` / ``warning``)."""
    key = (entry, what)
    if key not in _reported:
        _reported.add(key)
        getattr(log, level)("fmha-guard: %s.%s %s", entry.module, entry.qualname, what)


# ---------------------------------------------------------------- module scans

def _namespace(module: Any) -> Optional[dict[str, Any]]:
    """A module's ``__dict__`` without triggering lazy-module machinery; ``None`` if odd."""
    if not isinstance(module, types.ModuleType):
        return None
    try:
        namespace = object.__getattribute__(module, "__dict__")
    except Exception:
        return None
    return namespace if type(namespace) is dict else None


def _references(obj: Any, name: str) -> list[tuple[types.ModuleType, dict[str, Any], str]]:
    """``(module, its __dict__, attribute)`` for every imported module attribute holding
    ``obj``: any attribute of a module of a guarded library (:data:`ROOT_PACKAGES`), the
    attribute ``name`` of any other module."""
    found = []
    for module_name, module in list(sys.modules.items()):
        namespace = _namespace(module)
        if namespace is None:
            continue
        if is_guarded_module(module_name):
            found.extend((module, namespace, key) for key, value in list(namespace.items()) if value is obj)
        elif namespace.get(name) is obj:
            found.append((module, namespace, name))
    return found
