"""Wraps one FlashInfer entry point so its arguments are checked before the launch.

Per call, at ``STATE.level``:

* ``shapes``: read the arguments by name, build their shape key (shapes, dtypes,
  devices, strides, scalars: what the shape checks read) and look it up; only an
  unseen key pays for the typed models and the catalog's shape checks.
* ``values``: additionally, unless the stream is capturing a CUDA graph, look up the
  metadata's content key (identity, ``_version``, data pointer, shape of each index
  tensor); an unseen one is validated in full with one packed device-to-host copy.
  During capture the value checks are skipped and counted, and the launch is
  recorded so that :mod:`runtime_checks.graph_hooks` checks it at each replay.

Limit of the content key: a kernel that writes a metadata buffer through its raw
pointer (a Triton kernel filling ``cu_seqlens_q`` in place) does not bump ``_version``;
if the same tensor object is reused that way, the next launch hits the memo and its
new contents go unchecked until the key changes. PyTorch ops (``copy_``, ``cumsum(out=)``)
bump it.

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

from guardrails.errors import FmhaInvariantError
from guardrails.invariants import Level
from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache
from guardrails.tensor_facts import stream_is_capturing
from guardrails.validation import find_violations, validate

from . import graph_hooks
from .entry_points import EntryPoint
from .launch_memo import LaunchMemo, version_key
from .launch_specs import LaunchSpec, WrapperPlanSpec
from .state import STATE, log

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
    if STATE.action == "raise":
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


def _check(spec: LaunchSpec, memo: LaunchMemo, args: tuple, kwargs: dict, level: Level, is_plan: bool) -> None:
    ns = spec.read(args, kwargs)
    shape_key = spec.shape_key(ns)
    described: tuple[AttentionBatch | None, PagedKVCache | None] | None = None
    if shape_key in memo.shapes:
        STATE.shape_memo_hits += 1
    else:
        described = spec.describe(ns)
        if described[0] is not None:
            validate(described[0], described[1], level=Level.SHAPES)
        memo.add_shape(shape_key)
    if graph_hooks.capturing:  # torch.cuda.CUDAGraph capture: record for the replay check
        if level >= Level.VALUES:
            STATE.capture_skips += 1
        described = described or spec.describe(ns)
        if described[0] is not None:
            graph_hooks.record(described[0], described[1])
    elif level >= Level.VALUES:
        value_key = (shape_key, spec.value_key(ns))
        if memo.value_ok(value_key):
            STATE.value_memo_hits += 1
        elif stream_is_capturing():  # a raw stream capture: reading values would break it
            STATE.capture_skips += 1
        else:
            described = described or spec.describe(ns)
            if described[0] is not None:
                validate(described[0], described[1], level=Level.VALUES)
            memo.add_value(value_key, spec.value_refs(ns))
    if is_plan:
        described = described or spec.describe(ns)
        spec.remember(ns, described[0])


def make_guard(entry: EntryPoint, original: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapper of ``original`` (a function, or a plain function taking ``self`` for a
    method) that checks the launch at ``STATE.level`` and then calls ``original``.

    The wrapper carries ``__wrapped__`` (the original) and ``__fmha_guard__`` (the
    entry). If ``original``'s signature cannot be read, the wrapper passes every call
    through unchecked (logged once).
    """
    name = f"{entry.module}.{entry.qualname}"
    graph_hooks.install()
    try:
        spec: LaunchSpec | None = entry.spec(original)
    except Exception as exc:  # an unknown FlashInfer signature
        internal_error(name, exc)
        spec = None
    memo = LaunchMemo()
    is_plan = isinstance(spec, WrapperPlanSpec)

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        level = STATE.level
        if level and spec is not None:
            STATE.launches += 1
            try:
                _check(spec, memo, args, kwargs, level, is_plan)
            except FmhaInvariantError as exc:
                report(exc, name)
            except Exception as exc:
                internal_error(name, exc)
        return original(*args, **kwargs)

    guarded.__fmha_guard__ = entry  # type: ignore[attr-defined]
    return guarded


_replay_memo = LaunchMemo()


def check_replay(batch: AttentionBatch, cache: PagedKVCache | None, layout: GraphLayout) -> None:
    """Validate one captured launch against its refilled buffers (before ``replay()``)."""
    tensors = tuple(batch.index_tensors().values())
    key = (id(layout), tuple(version_key(t) for t in tensors))
    if _replay_memo.value_ok(key):
        STATE.value_memo_hits += 1
        return
    try:
        errors = find_violations(batch, cache, level=Level.VALUES, captured=layout)
    except Exception as exc:
        internal_error("torch.cuda.CUDAGraph.replay", exc)
        return
    if errors:
        # name the capture/replay mismatch first: it is the cause (SGLang #21987)
        errors.sort(key=lambda e: e.invariant != "graph-replay-layout")
        report(errors[0], "torch.cuda.CUDAGraph.replay")
        return
    _replay_memo.add_value(key, (*tensors, layout))


graph_hooks.replay_checker = check_replay
