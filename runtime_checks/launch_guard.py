"""Wraps one FlashInfer entry point so its arguments are checked before the launch.

Per call, at ``STATE.level`` (``off``: straight through), the arguments are read by
name (the entry point's :mod:`kernel spec <runtime_checks.kernel_specs>`) and checked
by the entry point's :class:`~runtime_checks.launch_checker.LaunchChecker`: a known
shape key costs one lookup at ``shapes``; ``values`` adds a content-key lookup and, for
unseen metadata, one packed device-to-host copy. While ``torch.cuda.CUDAGraph``
captures, launches are recorded by :mod:`runtime_checks.graph_hooks`, and at each
``replay()`` at ``values`` :func:`check_replay` checks them against the refilled
buffers (:meth:`LaunchChecker.check_replay <runtime_checks.launch_checker.LaunchChecker.check_replay>`).

A violation raises :class:`guardrails.FmhaInvariantError` before the kernel runs
(``FMHA_GUARD_ACTION=raise``) or is logged once per invariant and call site
(``warn``). The guard never breaks a launch it does not understand: an internal
error in a check is logged once per entry point and the call goes through.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from guardrails.config import Action, Level
from guardrails.errors import FmhaInvariantError
from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache

from . import graph_hooks
from .kernel_specs import EntryPoint, LaunchSpec
from .launch_checker import LaunchChecker
from .state import STATE, log

__all__ = ["make_guard", "check_replay", "report", "internal_error"]

_REPLAY = "torch.cuda.CUDAGraph.replay"


def _call_site() -> tuple[str, int]:
    """File and line of the first frame outside this package and flashinfer."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "runtime_checks" not in name and "flashinfer" not in name:
            return name, frame.f_lineno
        frame = frame.f_back
    return "?", 0


def report(exc: FmhaInvariantError, entry_name: str) -> None:
    """Raise ``exc`` or, under ``FMHA_GUARD_ACTION=warn``, log it once per call site."""
    if STATE.action is Action.RAISE:
        raise exc.with_traceback(None)
    STATE.warned += 1
    site = (exc.invariant, *_call_site())
    if site not in STATE.warned_sites:
        STATE.warned_sites.add(site)
        log.warning("%s (in %s, called from %s:%d; FMHA_GUARD_ACTION=warn lets it through)", exc, entry_name, site[1], site[2])


def internal_error(entry_name: str, exc: BaseException) -> None:
    """A check failed on its own: log once per entry point and let the launch through."""
    if entry_name not in STATE.internal_errors:
        STATE.internal_errors.add(entry_name)
        log.warning(
            "fmha-guard could not check %s (%s: %s); its launches pass unchecked. Please report this.",
            entry_name, type(exc).__name__, exc,
        )


def make_guard(entry: EntryPoint, original: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapper of ``original`` (a function, or a plain function taking ``self`` for a
    method) that checks the launch at ``STATE.level`` and then calls ``original``.

    The wrapper carries ``__wrapped__`` (the original) and ``__fmha_guard__`` (the
    entry). If ``original``'s signature cannot be read, the wrapper passes every call
    through unchecked (logged once). Making a guard installs the CUDA-graph hooks
    (:func:`runtime_checks.graph_hooks.install`, with :func:`check_replay`).
    """
    name = f"{entry.module}.{entry.qualname}"
    graph_hooks.install(replay_check=check_replay)
    try:
        spec: LaunchSpec | None = entry.spec(original)
    except Exception as exc:  # an unknown FlashInfer signature
        internal_error(name, exc)
        spec = None
    check = LaunchChecker(STATE, graphs=graph_hooks).check
    remembers = spec is not None and spec.REMEMBERS
    values = Level.VALUES

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        level = STATE.level
        if level and spec is not None:
            STATE.launches += 1
            try:
                ns = spec.read(args, kwargs)
                described = check(functools.partial(spec.describe, ns), level, spec.shape_key(ns),
                                  spec.value_refs(ns) if level >= values else ())
                if remembers:
                    spec.remember(ns, (described or spec.describe(ns))[0])
            except FmhaInvariantError as exc:
                report(exc, name)
            except Exception as exc:
                internal_error(name, exc)
        return original(*args, **kwargs)

    guarded.__fmha_guard__ = entry  # type: ignore[attr-defined]
    return guarded


_replay_checker = LaunchChecker(STATE)


def check_replay(batch: AttentionBatch, cache: PagedKVCache | None, layout: GraphLayout) -> None:
    """The replay hook's check of one captured launch (before ``replay()``), at ``values``
    only; reported as a launch's violation is (raise or warn), internal errors let the
    replay through."""
    if STATE.level < Level.VALUES:
        return
    try:
        _replay_checker.check_replay(batch, cache, layout)
    except FmhaInvariantError as exc:
        report(exc, _REPLAY)
    except Exception as exc:
        internal_error(_REPLAY, exc)
