"""The runtime guard armed at interpreter start, waiting for the first import of a guarded kernel library.

:func:`runtime_checks.startup.activate` (what the ``.pth`` / ``.start`` files call)
reads ``FMHA_GUARD`` and calls :func:`arm`; the explicit API
(:mod:`runtime_checks.activation`) calls :func:`settle` (install it now) or
:func:`disarm` (drop it). Both import this module and neither imports the other at
module level, so the startup path never loads the activation machinery unless the
guard fires. Standard library only (``sys``): it is imported at interpreter start.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: imported at interpreter start, keep it to sys
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable, Optional

    from guardrails.config import GuardConfig

__all__ = ["ArmedGuard", "ROOT_PACKAGE", "ROOT_PACKAGES", "is_guarded_module", "arm", "settle", "disarm", "pending"]

ROOT_PACKAGES = ("flashinfer", "sgl_kernel", "flash_mla", "vllm.vllm_flash_attn", "vllm.third_party.flashmla")
"""The kernel libraries the guard patches (every entry point of
:data:`runtime_checks.kernel_specs.ENTRY_POINTS` lives in one of them): the first import
of any of them (or of one of their modules) fires the armed guard, and
:mod:`runtime_checks.activation` searches them and their modules for re-exports by
identity. vLLM itself is not one: only its vendored kernel packages are (``import vllm``
does not fire the guard, ``import vllm.vllm_flash_attn`` does)."""

ROOT_PACKAGE = ROOT_PACKAGES[0]
"""FlashInfer, the first of :data:`ROOT_PACKAGES` (kept for callers of the one-library name)."""

_TOP_LEVEL = frozenset(root.partition(".")[0] for root in ROOT_PACKAGES)


def is_guarded_module(fullname: str) -> bool:
    """Whether module ``fullname`` is one of :data:`ROOT_PACKAGES` or inside one (a set
    lookup for every other top-level name: the armed guard asks on every import)."""
    if fullname.partition(".")[0] not in _TOP_LEVEL:
        return False
    return any(fullname == root or fullname.startswith(root + ".") for root in ROOT_PACKAGES)

_pending: Optional["ArmedGuard"] = None


class ArmedGuard:
    """Meta path finder that installs the guard at the first import of a module of
    :data:`ROOT_PACKAGES` (``flashinfer``, ``sgl_kernel.flash_attn``, ``vllm.vllm_flash_attn``...).

    Args:
        config: the level (not OFF) and action to install.
        install: called with ``config`` when the guard fires; returns the guard's own
            import hook (a meta path finder), or ``None`` if installing failed. It
            must not raise (an import is in progress).
    """

    def __init__(self, config: "GuardConfig", install: "Callable[[GuardConfig], Any]") -> None:
        self.config = config
        self.install = install
        self.fired = False

    def find_spec(self, fullname: str, path: Optional[Any] = None, target: Optional[ModuleType] = None) -> Any:
        if self.fired or not is_guarded_module(fullname):
            return None
        finder = self.fire()
        # hand this very import to the guard's hook (now first on sys.meta_path)
        return finder.find_spec(fullname, path, target) if finder is not None else None

    def fire(self) -> Any:
        """Install the guard (once); returns its import hook, or ``None``."""
        global _pending
        self.fired = True
        self.unregister()
        if _pending is self:
            _pending = None
        return self.install(self.config)

    def unregister(self) -> None:
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self]

    def invalidate_caches(self) -> None:
        pass

    def __repr__(self) -> str:
        waiting = ", ".join(ROOT_PACKAGES)
        return f"<fmha-guard armed at FMHA_GUARD={self.config.level}, waiting for an import of {waiting}>"


def arm(config: "GuardConfig", install: "Callable[[GuardConfig], Any]") -> ArmedGuard:
    """Put an :class:`ArmedGuard` first on ``sys.meta_path``; it replaces one not fired yet."""
    global _pending
    disarm()
    _pending = ArmedGuard(config, install)
    sys.meta_path.insert(0, _pending)
    return _pending


def pending() -> Optional[ArmedGuard]:
    """The armed guard that has not fired yet, or ``None``."""
    return _pending


def settle() -> None:
    """Install now if a guard is armed and has not fired yet (the explicit API calls this)."""
    armed = _pending
    if armed is not None:
        armed.fire()


def disarm() -> None:
    """Drop an armed guard that has not fired (:func:`runtime_checks.install` / ``uninstall``)."""
    global _pending
    armed, _pending = _pending, None
    if armed is not None:
        armed.fired = True
        armed.unregister()
