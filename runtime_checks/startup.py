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
(``1`` / ``2``, any case). Otherwise it checks ``FMHA_GUARD_ACTION`` and *arms* the guard:
it puts a small finder first on ``sys.meta_path`` (standard library only) and
returns. ``site`` runs ``.pth`` lines while it is still building ``sys.path`` (a
``--system-site-packages`` venv or a user-site install adds the directories with
pydantic or torch later), so nothing else is imported then. The first import of
``flashinfer`` (or of a ``flashinfer.*`` module) fires the armed finder, which
calls :func:`runtime_checks.activation.install` and hands the import to the
guard's own hook, so FlashInfer's entry points are patched as they load; a call
to the explicit API (:func:`runtime_checks.is_installed`, ``install``,
``uninstall``, ``guarded``) settles it first too (the armed guard:
:mod:`runtime_checks.armed`). A process that never imports FlashInfer pays for one
string comparison per import.

The settings are read by :meth:`guardrails.config.GuardConfig.from_env` (standard
library only, like this module and :mod:`runtime_checks.armed`). It never imports
torch, pydantic or FlashInfer and never raises: an unknown ``FMHA_GUARD`` or
``FMHA_GUARD_ACTION`` value prints one line to stderr and leaves the guard off, as
does a failure when the armed guard fires. Worker processes started by
``multiprocessing`` (spawn, forkserver) or ``subprocess`` inherit the environment and
therefore the guard; forked ones inherit the patched process. ``python -S`` (no
``site``) skips both files: call :func:`runtime_checks.install` there.
"""

from __future__ import annotations

import sys

from guardrails.config import GuardConfig, GuardConfigError, Level

from . import armed

__all__ = ["activate", "activate_from_pth", "START_FILES_SUPPORTED"]

START_FILES_SUPPORTED = sys.version_info >= (3, 15)
"""Whether ``site`` runs PEP 829 ``.start`` entry points (and suppresses our ``.pth`` line)."""

_activated = False


def activate() -> None:
    """Arm the guard if ``FMHA_GUARD`` asks for it; at most once per process. Never raises."""
    global _activated
    if _activated:
        return
    _activated = True
    try:
        try:
            config = GuardConfig.from_env()
        except GuardConfigError as exc:
            _say(f"{exc}; the runtime guard stays off")
            return
        if config.level is not Level.OFF:
            armed.arm(config, _install)
    except Exception as exc:
        _say(f"cannot arm the runtime guard ({type(exc).__name__}: {exc}); it stays off")


def activate_from_pth() -> None:
    """What ``fmha_guardrails.pth`` calls: :func:`activate`, except where ``.start`` files run."""
    if not START_FILES_SUPPORTED:
        activate()


def _install(config: GuardConfig):
    """The armed guard fired: install the guard; its import hook, or ``None`` (one stderr line)."""
    try:
        from . import activation

        activation.install(config.level, config.action)
        return activation.import_hook_finder()
    except Exception as exc:
        _say(f"cannot install the runtime guard ({type(exc).__name__}: {exc}); it stays off")
        return None


def _say(message: str) -> None:
    try:
        print(f"fmha-guardrails: {message}", file=sys.stderr)
    except Exception:
        pass
