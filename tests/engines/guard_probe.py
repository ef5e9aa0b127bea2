"""What the runtime guard did during one entry-point call, read from its counters.

The driver never asserts on the guard (its coverage is being rebuilt): it only reports,
per recorded entry point, the change in ``runtime_checks.state.STATE``'s counters
(launches checked, memo hits, capture skips, warnings) and the entry points or checks
that failed internally. Read defensively: a guard that is not installed, or a
``STATE`` with other fields, gives ``None`` / only the fields present.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _state():
    if not os.environ.get("FMHA_GUARD"):
        return None
    module = sys.modules.get("runtime_checks.state")
    if module is None:
        return None
    return getattr(module, "STATE", None)


def snapshot() -> dict[str, Any] | None:
    state = _state()
    if state is None:
        return None
    out: dict[str, Any] = {}
    for name, value in vars(state).items():
        if isinstance(value, bool) or name.startswith("_"):
            continue
        if isinstance(value, int):
            out[name] = value
        elif isinstance(value, (set, frozenset)):
            out[name] = set(value)
    totals = getattr(state, "totals", None)  # counters kept per entry point, summed here
    if callable(totals):
        out.update({k: v for k, v in totals().items() if isinstance(v, int)})
    return out


def delta(before: dict[str, Any] | None) -> dict[str, Any] | None:
    """Counters that changed since ``before`` (new set members as sorted lists)."""
    after = snapshot()
    if before is None or after is None:
        return None
    out: dict[str, Any] = {}
    for name, value in after.items():
        old = before.get(name)
        if isinstance(value, int) and value != (old or 0):
            out[name] = value - (old or 0)
        elif isinstance(value, set):
            new = value - (old or set())
            if new:
                out[name] = sorted(map(str, new))
    return out


def guard_status() -> dict[str, Any]:
    """Whether the guard is installed in this process, its level and action."""
    if not os.environ.get("FMHA_GUARD"):
        return {"enabled": False}
    state = _state()
    installed = None
    try:
        import runtime_checks

        installed = bool(runtime_checks.is_installed())
    except Exception as exc:  # the guard package mid-restructure
        return {"enabled": True, "error": f"{type(exc).__name__}: {exc}"[:300]}
    state = _state()
    return {
        "enabled": True,
        "installed": installed,
        "level": str(getattr(state, "level", None)),
        "action": getattr(state, "action", None),
        "totals": {k: (sorted(map(str, v)) if isinstance(v, set) else v)
                   for k, v in (snapshot() or {}).items()},
        "entries": per_entry_point(),
    }


def per_entry_point() -> dict[str, dict[str, Any]] | None:
    """``STATE``'s counters of each guarded entry point, by its name
    (``flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper.run``: launches, memo hits,
    violations, internal errors, unchecked calls); ``None`` without per-entry counters."""
    entries = getattr(_state(), "entries", None)
    if not isinstance(entries, dict):
        return None
    out = {}
    for name, counters in entries.items():
        as_dict = getattr(counters, "as_dict", None)
        out[name] = as_dict() if callable(as_dict) else dict(vars(counters))
    return out
