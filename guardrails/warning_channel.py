"""How the runtime guard warns: a :mod:`warnings` category at the engine's call site, plus the log.

Both of the guard's warnings (:class:`guardrails.errors.FmhaInvariantWarning`, a
violation let through by ``FMHA_GUARD_ACTION=warn``, and
:class:`guardrails.errors.FmhaGuardConfigWarning`, a setting that fell back) go
through :func:`emit`:

* :func:`warnings.warn_explicit` with the call site's file, line and module as the
  warning's location, so warning filters apply as to any warning of that code
  (``-W error::guardrails.errors.FmhaInvariantWarning``, pytest's ``filterwarnings``,
  ``warnings.simplefilter("ignore", FmhaInvariantWarning)``);
* a WARNING record on the ``fmha_guard`` logger, when something handles that logger
  (a handler on it or an ancestor: an engine that configured logging, pytest's
  ``caplog``). Without one, logging would only print the same line again on stderr
  (its last-resort handler), so the record is skipped.

The call site (:func:`call_site`) is the first frame whose module (the frame's
``__name__`` global, not its file path) is outside the guard and the libraries it
wraps: ``guardrails``, ``runtime_checks``, ``functools`` (``partialmethod``
aliases), ``importlib`` (an import that fired the guard), plus the kernel
libraries the caller recognizes (the guard: ``flashinfer``, ``sgl_kernel``, vLLM's
``vllm.vllm_flash_attn``, but not the rest of ``vllm``).

Python reads ``-W`` and ``PYTHONWARNINGS`` before site-packages are on ``sys.path``,
so a filter naming one of these categories is dropped at start ("Invalid -W option
ignored: invalid module name: 'guardrails.errors'"). :func:`emit` adds such
filters once per process, before its first warning, so the option works anyway.

Standard library only (:mod:`guardrails.config` uses it; nothing is imported until a
warning is issued).
"""

from __future__ import annotations

import sys
from typing import Callable, NamedTuple, Optional

__all__ = ["LOGGER_NAME", "GUARD_PACKAGES", "CallSite", "call_site", "emit", "honour_warning_options"]

LOGGER_NAME = "fmha_guard"
"""The logger every message of the guard goes to."""

GUARD_PACKAGES = frozenset({"guardrails", "runtime_checks", "functools", "importlib", "warnings"})
"""Top-level modules whose frames are never a call site: the guard itself, the
``partialmethod`` plumbing, the import machinery and the warnings module."""

_OUR_CATEGORIES_PREFIX = "guardrails."  # -W categories Python cannot resolve at start
_ACTIONS = ("default", "always", "ignore", "module", "once", "error")
_options_honoured = False


class CallSite(NamedTuple):
    """Where the engine called a guarded kernel (or imported the library that armed the guard)."""

    filename: str
    lineno: int
    function: str
    module: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


def call_site(is_library: Callable[[str], bool] = lambda module: False, *, depth: int = 1) -> Optional[CallSite]:
    """The first frame ``depth`` frames up or further whose module (its ``__name__``
    global) is neither in :data:`GUARD_PACKAGES` nor a kernel library's (``is_library``
    of the module name); ``None`` when there is none (a guard called from the guard)."""
    frame = sys._getframe(depth)
    while frame is not None:
        module = frame.f_globals.get("__name__")
        root = module.partition(".")[0] if isinstance(module, str) else ""
        if root and root not in GUARD_PACKAGES and not is_library(module):
            return CallSite(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, module)
        frame = frame.f_back
    return None


def emit(message: str, category: type[Warning], site: Optional[CallSite]) -> None:
    """Issue ``message`` as a ``category`` warning located at ``site`` (or at the caller's
    caller when ``site`` is ``None``), then log it (see the module docstring).

    Raises:
        Warning: ``category``, when a filter turns it into an error (``-W error::...``).
    """
    import logging
    import warnings

    honour_warning_options()
    if site is None:
        warnings.warn(message, category, stacklevel=3)
    else:
        warnings.warn_explicit(message, category, site.filename, site.lineno, module=site.module)
    logger = logging.getLogger(LOGGER_NAME)
    if logger.hasHandlers():
        logger.warning("%s", message)


def honour_warning_options(options: Optional[list[str]] = None) -> None:
    """Add the filters of ``options`` (default ``sys.warnoptions``: ``-W`` and
    ``PYTHONWARNINGS``) whose category is one of ours (``guardrails.…``), which Python
    dropped at start; once per process (later filters set in code stay in front).
    Malformed options are skipped: Python already reported them."""
    global _options_honoured
    if options is None:
        if _options_honoured:
            return
        _options_honoured = True
    import importlib
    import re
    import warnings

    for option in sys.warnoptions if options is None else options:
        parts = [part.strip() for part in option.split(":")]
        if len(parts) > 5 or len(parts) < 3 or not parts[2].startswith(_OUR_CATEGORIES_PREFIX):
            continue
        parts += [""] * (5 - len(parts))
        action_text, message, category_name, module, lineno_text = parts
        action = next((a for a in _ACTIONS if action_text and a.startswith(action_text)), None)
        module_name, _, class_name = category_name.rpartition(".")
        try:
            category = getattr(importlib.import_module(module_name), class_name)
            lineno = int(lineno_text) if lineno_text else 0
        except (ImportError, AttributeError, ValueError):
            continue
        if action is None or not (isinstance(category, type) and issubclass(category, Warning)) or lineno < 0:
            continue
        warnings.filterwarnings(
            action, re.escape(message), category, re.escape(module) + r"\Z" if module else "", lineno
        )
