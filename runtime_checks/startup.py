"""Interpreter-start activation of the runtime guard: what the ``.pth`` / ``.start`` files call.

The package installs two files at the root of site-packages (both with
``pip install .`` and ``pip install -e .``; how: :mod:`runtime_checks.startup_files`):

* ``fmha_guardrails.pth``: one ``import`` line, executed by ``site`` at every
  interpreter start on Python < 3.15. It checks ``FMHA_GUARD`` itself, so with the
  variable unset it imports nothing; otherwise it calls :func:`activate_from_pth`.
* ``fmha_guardrails.start``: the PEP 829 startup entry point
  ``runtime_checks.startup:activate`` (Python >= 3.15). PEP 829 deprecates
  ``import`` lines in ``.pth`` files (still run in 3.15-3.17, silently ignored in
  3.18-3.19, warned about after) and makes a ``<name>.start`` file next to
  ``<name>.pth`` suppress that file's ``import`` lines. So on 3.15+ only the
  ``.start`` entry point runs, and older interpreters use the ``.pth`` line.

Activation happens once per process: on 3.15+ ``site`` suppresses the ``.pth``
line and :func:`activate_from_pth` is a no-op there anyway
(:data:`START_FILES_SUPPORTED`); and :func:`activate` acts at most once (a venv's
``lib64 -> lib`` symlink makes ``site`` read the same directory twice).

:func:`activate` returns at once unless ``FMHA_GUARD`` is ``shapes`` / ``values``
(``1`` / ``2``). Otherwise it checks ``FMHA_GUARD_ACTION`` and *arms* the guard:
it puts a small finder first on ``sys.meta_path`` (standard library only) and
returns. ``site`` runs ``.pth`` lines while it is still building ``sys.path`` (a
``--system-site-packages`` venv or a user-site install adds the directories with
pydantic or torch later), so nothing else is imported then. The first import of
``flashinfer`` (or of a ``flashinfer.*`` module) fires the armed finder, which
calls :func:`runtime_checks.activation.install` and hands the import to the
guard's own hook, so FlashInfer's entry points are patched as they load; a call
to the explicit API (:func:`runtime_checks.is_installed`, ``install``,
``uninstall``, ``guarded``) settles it first too. A process that never imports
FlashInfer pays for one set lookup per import.

It never imports torch or FlashInfer and never raises: an unknown ``FMHA_GUARD``
or ``FMHA_GUARD_ACTION`` value prints one line to stderr and leaves the guard
off, as does a failure when the armed guard fires. Worker processes started by
``multiprocessing`` (spawn, forkserver) or ``subprocess`` inherit the environment
and therefore the guard; forked ones inherit the patched process. ``python -S``
(no ``site``) skips both files: call :func:`runtime_checks.install` there.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing's: imported at every interpreter start, keep it to os and sys
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Optional

__all__ = ["activate", "activate_from_pth", "START_FILES_SUPPORTED", "LEVEL_NAMES", "ACTION_NAMES"]

START_FILES_SUPPORTED = sys.version_info >= (3, 15)
"""Whether ``site`` runs PEP 829 ``.start`` entry points (and suppresses our ``.pth`` line)."""

# The values runtime_checks.level accepts (a test keeps them equal), read here
# without importing it: it needs guardrails (pydantic), not yet on sys.path.
LEVEL_NAMES = {"": "off", "off": "off", "0": "off", "shapes": "shapes", "1": "shapes", "values": "values", "2": "values"}
"""``FMHA_GUARD`` value (stripped, lower case) -> level name."""
ACTION_NAMES = {"": "raise", "raise": "raise", "warn": "warn"}
"""``FMHA_GUARD_ACTION`` value (stripped, lower case) -> action."""

_ROOT = "flashinfer"
_activated = False
_armed: Optional["_ArmedGuard"] = None


def activate() -> None:
    """Arm the guard if ``FMHA_GUARD`` asks for it; at most once per process. Never raises."""
    global _activated, _armed
    if _activated:
        return
    _activated = True
    try:
        raw_level = os.environ.get("FMHA_GUARD")
        level = LEVEL_NAMES.get((raw_level or "").strip().lower())
        if level is None:
            _say(
                f"FMHA_GUARD={raw_level!r} is not a guard level; allowed values: off (or unset/empty/0), "
                f"shapes (1), values (2); the runtime guard stays off"
            )
            return
        if level == "off":
            return
        raw_action = os.environ.get("FMHA_GUARD_ACTION")
        action = ACTION_NAMES.get((raw_action or "").strip().lower())
        if action is None:
            _say(
                f"FMHA_GUARD_ACTION={raw_action!r} is not a guard action; allowed values: raise (default), "
                f"warn; the runtime guard stays off"
            )
            return
        _armed = _ArmedGuard(level, action)
        sys.meta_path.insert(0, _armed)
    except Exception as exc:
        _say(f"cannot arm the runtime guard ({type(exc).__name__}: {exc}); it stays off")


def activate_from_pth() -> None:
    """What ``fmha_guardrails.pth`` calls: :func:`activate`, except where ``.start`` files run."""
    if not START_FILES_SUPPORTED:
        activate()


def settle() -> None:
    """Install now if the guard is armed and has not fired yet (the explicit API calls this)."""
    armed = _armed
    if armed is not None:
        armed.fire()


def disarm() -> None:
    """Drop an armed guard that has not fired (:func:`runtime_checks.install` / ``uninstall``)."""
    global _armed
    armed, _armed = _armed, None
    if armed is not None:
        armed.fired = True
        armed.unregister()


class _ArmedGuard:
    """Meta path finder that installs the guard at the first ``flashinfer`` import."""

    def __init__(self, level: str, action: str) -> None:
        self.level = level
        self.action = action
        self.fired = False

    def find_spec(self, fullname: str, path: Optional[Any] = None, target: Optional[ModuleType] = None) -> Any:
        if self.fired or fullname.partition(".")[0] != _ROOT:
            return None
        finder = self.fire()
        # hand this very import to the guard's hook (now first on sys.meta_path)
        return finder.find_spec(fullname, path, target) if finder is not None else None

    def fire(self) -> Any:
        """Install the guard; returns its import hook, or ``None`` if that failed (one stderr line)."""
        global _armed
        self.fired = True
        self.unregister()
        if _armed is self:
            _armed = None
        try:
            from . import activation

            activation.install(self.level, self.action)
            return activation.import_hook_finder()
        except Exception as exc:
            _say(f"cannot install the runtime guard ({type(exc).__name__}: {exc}); it stays off")
            return None

    def unregister(self) -> None:
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self]

    def invalidate_caches(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<fmha-guard armed at FMHA_GUARD={self.level}, waiting for 'import flashinfer'>"


def _say(message: str) -> None:
    try:
        print(f"fmha-guardrails: {message}", file=sys.stderr)
    except Exception:
        pass
