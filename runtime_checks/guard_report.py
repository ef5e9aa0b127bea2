"""What the runtime guard did, per entry point: one log line at exit, and a JSON report.

Every guarded entry point counts what it did in its
:class:`~runtime_checks.state.EntryCounters` (``STATE.entries``). At interpreter exit
(:func:`register`, done when the first entry point is wrapped) the guard logs one line
on the ``fmha_guard`` logger (INFO when every launch was checked and passed, WARNING
when there were violations, internal errors or calls it could not check) and, with
``FMHA_GUARD_REPORT=FILE`` in the environment, writes :func:`report` to ``FILE`` as JSON
(atomically: a temporary file in the same directory, then ``os.replace``; ``{pid}`` in
the name is replaced by the process id, so the workers of one engine do not overwrite
each other's report). Writing never raises: a report that cannot be written is logged.

The report (``"format": "fmha-guard-report/1"``)::

    {"format", "pid", "level", "action",
     "entry_points": {"flashinfer.decode.trtllm_batch_decode_with_kv_cache": {
         "launches",          # launches whose arguments were checked (memo hits included)
         "shape_memo_hits",   # launches whose shape key was already known good
         "value_memo_hits",   # launches whose metadata contents were already known good
         "shape_checks", "value_checks",   # catalog runs (memo misses)
         "capture_skips",     # value checks skipped while a CUDA graph was captured
         "violations",        # raised, or let through under FMHA_GUARD_ACTION=warn
         "internal_errors",   # checks that failed on their own (the launch went through)
         "unchecked",         # calls seen but not checked (no spec, or checks off)
         "checkable", "disabled"}, ...},   # disabled: the error that switched checks off
     "totals": {...the counts summed...},
     "warned": ...,            # violations let through (warn)
     "refills": {"triton_hooked", "triton_launches_marked", ...}}   # runtime_checks.refills

Imports only the standard library and the guard's state.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .state import STATE, GuardState, log

__all__ = ["REPORT_ENV", "FORMAT", "report", "summary_line", "write", "register"]

#: environment variable naming the JSON report's file
REPORT_ENV = "FMHA_GUARD_REPORT"
FORMAT = "fmha-guard-report/1"
_COUNTS = ("launches", "shape_memo_hits", "value_memo_hits", "shape_checks", "value_checks", "capture_skips",
           "violations", "internal_errors", "unchecked")
_registered = False


def report(state: GuardState = STATE) -> dict[str, Any]:
    """What the guard did so far, per entry point and in total (see the module docstring)."""
    entries = {name: counters.as_dict() for name, counters in sorted(state.entries.items())}
    totals = {key: sum(int(e[key]) for e in entries.values()) for key in _COUNTS}
    refills = sys.modules.get(f"{__package__}.refills")
    return {
        "format": FORMAT,
        "pid": os.getpid(),
        "level": str(state.level),
        "action": str(state.action),
        "entry_points": entries,
        "totals": totals,
        "warned": state.warned,
        "refills": refills.stats() if refills is not None else {"triton_hooked": False},
    }


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 'es' if word.endswith('h') else 's'}"


def summary_line(data: dict[str, Any]) -> str:
    """One line: launches checked, memo hits, violations, internal errors, unchecked calls."""
    t = data["totals"]
    active = [n for n, e in data["entry_points"].items() if e["launches"] or e["unchecked"]]
    line = (f"fmha-guard ({data['level']}, {data['action']}): {_plural(t['launches'], 'launch')} checked"
            f" at {_plural(len(active), 'entry point')} ({t['shape_memo_hits']:,} shape / {t['value_memo_hits']:,}"
            f" value memo hits, {_plural(t['capture_skips'], 'capture skip')}), {_plural(t['violations'], 'violation')}")
    if t["internal_errors"]:
        off = [n for n, e in data["entry_points"].items() if e["disabled"]]
        line += f", {_plural(t['internal_errors'], 'internal error')} (checks off: {', '.join(off)})"
    if t["unchecked"]:
        names = [n for n, e in data["entry_points"].items() if e["unchecked"]]
        line += f", {_plural(t['unchecked'], 'call')} not checked ({', '.join(names)})"
    return line


def _target(path: str | os.PathLike[str]) -> Path:
    return Path(str(path).replace("{pid}", str(os.getpid())))


def write(path: str | os.PathLike[str], data: dict[str, Any] | None = None) -> Path:
    """Write ``data`` (default :func:`report`) to ``path`` as JSON, atomically; the path
    written (``{pid}`` replaced). Raises ``OSError`` when it cannot be written."""
    target = _target(path)
    payload = json.dumps(report() if data is None else data, indent=1, sort_keys=True) + "\n"
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def _at_exit() -> None:
    """The exit report: the log line, and the JSON file when ``FMHA_GUARD_REPORT`` is set. Never raises."""
    try:
        data = report()
        path = os.environ.get(REPORT_ENV, "").strip()
        written = None
        if path:
            try:
                written = write(path, data)
            except OSError as exc:
                log.warning("fmha-guard: could not write the report to %s (%s)", path, exc)
        t = data["totals"]
        if not (t["launches"] or t["unchecked"] or t["internal_errors"] or written):
            return  # the guard saw nothing: say nothing
        trouble = t["violations"] or t["internal_errors"] or t["unchecked"]
        line = summary_line(data) + (f"; report: {written}" if written else "")
        log.log(logging.WARNING if trouble else logging.INFO, "%s", line)
    except Exception:  # at exit, never a traceback from the guard
        pass


def register() -> None:
    """Run the exit report at interpreter exit (once per process; idempotent)."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(_at_exit)
