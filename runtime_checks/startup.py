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

:func:`activate` returns at once unless ``FMHA_GUARD`` asks for a level (``shapes`` /
``values``, ``1`` / ``2``, ``true`` / ``on`` / ``yes``, any case; or a value it does not
know, which fails closed at ``shapes``). Otherwise it reads ``FMHA_GUARD_ACTION`` and
*arms* the guard:
it puts a small finder first on ``sys.meta_path`` (standard library only) and
returns. ``site`` runs ``.pth`` lines while it is still building ``sys.path`` (a
``--system-site-packages`` venv or a user-site install adds the directories with
pydantic or torch later), so nothing else is imported then. The first import of a
guarded kernel library (``flashinfer``, ``sgl_kernel``, ``flash_mla``,
``vllm.vllm_flash_attn``, ``vllm.third_party.flashmla``, or one of their modules:
:data:`runtime_checks.armed.ROOT_PACKAGES`) fires the armed finder, which
calls :func:`runtime_checks.activation.install` and hands the import to the
guard's own hook, so the entry points are patched as they load; a call
to the explicit API (:func:`runtime_checks.is_installed`, ``install``,
``uninstall``, ``guarded``) settles it first too (the armed guard:
:mod:`runtime_checks.armed`). A process that never imports one pays for one
set lookup per import.

The settings are read by :meth:`guardrails.config.GuardConfig.from_env` (standard
library only, like this module and :mod:`runtime_checks.armed`). It never imports
torch, pydantic or FlashInfer and never raises. A value it does not understand
fails closed (level ``shapes``, action ``raise``) and is warned about once
(:class:`guardrails.errors.FmhaGuardConfigWarning` and the ``fmha_guard`` logger)
when the armed guard fires, in the process that imports FlashInfer: at
interpreter start nothing is printed, so ``FMHA_GUARD=bogus pip --version`` stays
quiet. A failure when the armed guard fires prints one line to stderr and leaves the
guard off. Worker processes started by
``multiprocessing`` (spawn, forkserver) or ``subprocess`` inherit the environment and
therefore the guard; forked ones inherit the patched process. ``python -S`` (no
``site``) skips both files: call :func:`runtime_checks.install` there. Where the
files were not installed, ``fmha-guard run -- CMD`` arms the guard through a
``sitecustomize`` instead (:mod:`runtime_checks.bootstrap`), calling :func:`activate`.
"""

from __future__ import annotations

import sys

from guardrails.config import GuardConfig, Level

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
        config = GuardConfig.from_env(warn=False)  # fallbacks are warned about when the guard fires
        if config.level is not Level.OFF:
            armed.arm(config, _install)
    except Exception as exc:
        _say(f"cannot arm the runtime guard ({type(exc).__name__}: {exc}); it stays off")


def activate_from_pth() -> None:
    """What ``fmha_guardrails.pth`` calls: :func:`activate`, except where ``.start`` files run."""
    if not START_FILES_SUPPORTED:
        activate()


def _install(config: GuardConfig):
    """The armed guard fired: install the guard, then warn about settings that fell back;
    returns its import hook, or ``None`` (one stderr line) if installing failed.

    A warnings filter that turns the fallback warning into an error (``-W error::...``)
    makes it raise here, out of the import that fired the guard (installed by then).
    """
    try:
        from . import activation

        activation.install(config.level, config.action)
        finder = activation.import_hook_finder()
    except Exception as exc:
        _say(f"cannot install the runtime guard ({type(exc).__name__}: {exc}); it stays off")
        return None
    config.warn_fallbacks()
    return finder


def _say(message: str) -> None:
    try:
        print(f"fmha-guardrails: {message}", file=sys.stderr)
    except Exception:
        pass
