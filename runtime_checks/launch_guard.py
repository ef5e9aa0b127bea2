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
(``FMHA_GUARD_ACTION=raise``) or is issued once per invariant and call site as a
:class:`guardrails.errors.FmhaInvariantWarning` located at the call site, and logged
(``warn``; :func:`guardrails.warning_channel.emit`). Either message names the entry
point (``flashinfer.decode.trtllm_batch_decode_with_kv_cache``) and the call site: the
first frame whose module (``__name__``, not the file path) is outside the guard and
the kernel libraries (:func:`runtime_checks.armed.is_guarded_module`: ``vllm.vllm_flash_attn``
is one, the rest of ``vllm`` is not). The guard never breaks a launch it
does not understand: an internal error in a check is logged once per entry point,
switches the checks of that entry point only off (counted, with the calls that then
pass unchecked, in its :class:`~runtime_checks.state.EntryCounters`) and the call goes
through. :mod:`runtime_checks.guard_report` says at exit what each entry point did.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from guardrails.config import Action, Level
from guardrails.errors import FmhaInvariantError, FmhaInvariantWarning
from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache
from guardrails.warning_channel import call_site, emit

from . import graph_hooks, guard_report, refills
from .armed import is_guarded_module
from .kernel_specs import EntryPoint, LaunchSpec
from .launch_checker import LaunchChecker
from .state import STATE, EntryCounters, log

__all__ = ["make_guard", "check_replay", "report", "internal_error", "VIOLATION_LISTENERS"]

_REPLAY = "torch.cuda.CUDAGraph.replay"

VIOLATION_LISTENERS: list[Callable[[FmhaInvariantError], Any]] = []
"""Called with every violation (the error naming its entry point and call site) before
it is raised or warned about; the pytest plugin listens here. A listener must not raise."""


def report(exc: FmhaInvariantError, entry_name: str) -> None:
    """Raise ``exc`` naming ``entry_name`` and the call site or, under
    ``FMHA_GUARD_ACTION=warn``, warn once per invariant and call site."""
    __tracebackhide__ = True  # pytest shows the engine's frames, not the guard's
    site = call_site(is_guarded_module, depth=2)
    located = exc.at(entry_name, str(site) if site is not None else "?")
    for listener in tuple(VIOLATION_LISTENERS):
        listener(located)
    if STATE.action is Action.RAISE:
        raise located from None
    STATE.warned += 1
    key = (exc.invariant, site.filename, site.lineno) if site is not None else (exc.invariant, "?", 0)
    if key not in STATE.warned_sites:
        text = str(located)
        emit(f"{text}{'' if text.endswith('.') else '.'} FMHA_GUARD_ACTION=warn let the launch through.",
             FmhaInvariantWarning, site)
        STATE.warned_sites.add(key)  # after emit: a filter that makes it an error raises at every launch


def internal_error(entry_name: str, exc: BaseException, counters: EntryCounters | None = None) -> None:
    """A check failed on its own: switch that entry point's checks off (counted in its
    :class:`~runtime_checks.state.EntryCounters`; the other entry points keep checking),
    log once per entry point, and let the launch through."""
    (counters if counters is not None else STATE.entry(entry_name)).disable(f"{type(exc).__name__}: {exc}")
    if entry_name not in STATE.internal_errors:
        STATE.internal_errors.add(entry_name)
        log.warning(
            "fmha-guard could not check %s (%s: %s); its checks are off for the rest of the process and its "
            "launches pass unchecked (the other entry points are still checked). Please report this.",
            entry_name, type(exc).__name__, exc,
        )


class _Nesting(threading.local):
    """Per thread: 1 while a guarded entry point runs its original. A guarded entry point
    called from inside another (on SM90 ``trtllm_batch_decode_with_kv_cache`` calls
    ``xqa_batch_decode_with_kv_cache``; a wrapper's ``forward`` calls its ``run``) is the
    same launch, already checked by the outer one: it passes straight through."""

    depth = 0


_nesting = _Nesting()


def make_guard(entry: EntryPoint, original: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapper of ``original`` (a function, or a plain function taking ``self`` for a
    method) that checks the launch at ``STATE.level`` and then calls ``original``.

    The wrapper carries ``__wrapped__`` (the original) and ``__fmha_guard__`` (the
    entry). If ``original``'s signature cannot be read, the wrapper passes every call
    through unchecked (logged once); after an internal error in a check, so does every
    later call of this entry point. What it did is counted in the entry point's
    :class:`~runtime_checks.state.EntryCounters` (``STATE.entry(name)``, held here:
    no lookup per call). Making a guard installs the CUDA-graph hooks
    (:func:`runtime_checks.graph_hooks.install`, with :func:`check_replay`), the Triton
    launch hook (:func:`runtime_checks.refills.install`) and the exit report
    (:func:`runtime_checks.guard_report.register`).
    """
    name = f"{entry.module}.{entry.qualname}"
    graph_hooks.install(replay_check=check_replay)
    refills.install()
    guard_report.register()
    counters = STATE.entry(name)
    try:
        spec: LaunchSpec | None = entry.spec(original)
    except Exception as exc:  # an unknown FlashInfer signature
        internal_error(name, exc, counters)
        spec = None
    counters.set_checkable(spec is not None)
    check = LaunchChecker(counters, graphs=graph_hooks).check
    remembers = spec is not None and spec.REMEMBERS
    values = Level.VALUES

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _nesting.depth:  # called by another guarded entry point, which checked this launch
            return original(*args, **kwargs)
        level = STATE.level
        planned = None
        if level and counters.active:
            counters.launches += 1
            try:
                ns = spec.read(args, kwargs)
                described = check(functools.partial(spec.describe, ns), level, spec.shape_key(ns),
                                  spec.value_refs(ns) if level >= values else ())
                if remembers:
                    spec.remember(ns, (described or spec.describe(ns))[0])
                    planned = ns
            except FmhaInvariantError as exc:
                counters.violations += 1
                report(exc, name)
            except Exception as exc:
                internal_error(name, exc, counters)
        elif level:
            counters.unchecked += 1
        _nesting.depth = 1
        try:
            result = original(*args, **kwargs)
        finally:
            _nesting.depth = 0
        if planned is not None:
            try:  # what the call left behind (a wrapper's planned buffers), for its later runs
                spec.after(planned)
            except Exception as exc:
                internal_error(name, exc, counters)
        return result

    guarded.__fmha_guard__ = entry  # type: ignore[attr-defined]
    return guarded


_replay_counters = STATE.entry(_REPLAY)
_replay_checker = LaunchChecker(_replay_counters)


def check_replay(batch: AttentionBatch, cache: PagedKVCache | None, layout: GraphLayout) -> None:
    """The replay hook's check of one captured launch (before ``replay()``), at ``values``
    only; reported as a launch's violation is (raise or warn), internal errors let the
    replay through."""
    if STATE.level < Level.VALUES:
        return
    if not _replay_counters.active:
        _replay_counters.unchecked += 1
        return
    try:
        _replay_checker.check_replay(batch, cache, layout)
    except FmhaInvariantError as exc:
        _replay_counters.violations += 1
        report(exc, _REPLAY)
    except Exception as exc:
        internal_error(_REPLAY, exc, _replay_counters)
