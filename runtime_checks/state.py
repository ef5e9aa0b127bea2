"""The runtime guard's process-wide settings and counters.

Guarded FlashInfer entry points read :data:`STATE` on every call: ``STATE.level``
decides how much is checked (``Level.OFF`` = pass straight through) and
``STATE.action`` what a violation does (:class:`~guardrails.config.Action`: raise, or
warn: log once per invariant and call site, then let the launch through).

Counters are kept per entry point (:class:`EntryCounters`, one object per guarded entry
point, held by its wrapper: no lookup per launch); ``STATE``'s totals
(``STATE.launches``, ``STATE.value_memo_hits``, ...) are their sums.
:mod:`runtime_checks.guard_report` writes them out (``FMHA_GUARD_REPORT``, and one log
line at exit).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, fields

from guardrails.config import Action, Level, parse_action, parse_level

__all__ = ["CheckCounters", "EntryCounters", "GuardState", "STATE", "configure", "log"]

log = logging.getLogger("fmha_guard")


@dataclass
class CheckCounters:
    """What a :class:`~runtime_checks.launch_checker.LaunchChecker` did, for a benchmark or a test."""

    #: catalog runs at the shapes level (shape-memo misses)
    shape_checks: int = 0
    #: catalog runs at the values level (content-memo misses)
    value_checks: int = 0
    #: launches whose shape key was already known good
    shape_memo_hits: int = 0
    #: launches (and replayed launches) whose metadata contents were already known good
    value_memo_hits: int = 0
    #: value checks skipped because the stream was capturing a CUDA graph
    capture_skips: int = 0


@dataclass
class EntryCounters(CheckCounters):
    """What the guard did at one entry point (``flashinfer.decode.trtllm_batch_decode_with_kv_cache``,
    or ``torch.cuda.CUDAGraph.replay`` for the replay checks).

    An internal error (a check that failed on its own) switches the checks of this entry
    point off (:attr:`active` False, :attr:`disabled` says why) and every later call
    passes through, counted in :attr:`unchecked`; the other entry points keep checking.
    :meth:`reset` (``STATE.reset_counters()``) zeroes the counts and switches it back on.
    """

    name: str = ""
    #: launches whose arguments were checked (memo hits included)
    launches: int = 0
    #: violations found (raised, or let through under ``FMHA_GUARD_ACTION=warn``)
    violations: int = 0
    #: checks that failed on their own (the launch went through)
    internal_errors: int = 0
    #: calls seen but not checked: no spec for this library's signature, or checks off
    #: after an internal error
    unchecked: int = 0
    #: whether a spec could read this entry point's arguments at all
    checkable: bool = True
    #: the internal error that switched the checks off (``"TypeError: ..."``), else None
    disabled: str | None = None
    #: read by the wrapper on every call: ``checkable`` and not ``disabled``
    active: bool = True

    def set_checkable(self, checkable: bool) -> None:
        """Whether the wrapper made last for this entry point has a spec (it reads its arguments)."""
        self.checkable = checkable
        self.active = checkable and self.disabled is None

    def disable(self, reason: str) -> None:
        """Count an internal error and switch this entry point's checks off."""
        self.internal_errors += 1
        if self.disabled is None:
            self.disabled = reason
        self.active = False

    def reset(self) -> None:
        for f in fields(CheckCounters):
            setattr(self, f.name, 0)
        self.launches = self.violations = self.internal_errors = self.unchecked = 0
        self.disabled = None
        self.active = self.checkable

    def as_dict(self) -> dict[str, object]:
        """The counts, by name (for the report)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "active")}


#: CheckCounters fields summed over the entry points for ``STATE``'s totals
_TOTALS = ("launches", *(f.name for f in fields(CheckCounters)))


@dataclass
class GuardState:
    """Current level and action, plus the counters of every guarded entry point
    (:attr:`entries`); ``launches``, ``shape_checks``, ``value_checks``,
    ``shape_memo_hits``, ``value_memo_hits`` and ``capture_skips`` are their sums."""

    level: Level = Level.OFF
    action: Action = Action.RAISE
    #: violations let through because action is warn
    warned: int = 0
    #: (invariant id, call-site file, call-site line) already warned about
    warned_sites: set[tuple[str, str, int]] = field(default_factory=set)
    #: entry points or checks that failed internally (guard let the call through)
    internal_errors: set[str] = field(default_factory=set)
    #: entry point name -> its counters (created by :meth:`entry`)
    entries: dict[str, EntryCounters] = field(default_factory=dict)

    def entry(self, name: str) -> EntryCounters:
        """The counters of entry point ``name`` (created on first use; one object per
        name, shared by every wrapper made for it)."""
        counters = self.entries.get(name)
        if counters is None:
            counters = self.entries[name] = EntryCounters(name=name)
        return counters

    def totals(self) -> dict[str, int]:
        """The counts summed over every entry point."""
        return {name: sum(getattr(e, name) for e in self.entries.values()) for name in _TOTALS}

    def reset_counters(self) -> None:
        """Zero every count, and switch back on the entry points an internal error disabled."""
        for counters in self.entries.values():
            counters.reset()
        self.warned = 0
        self.warned_sites.clear()
        self.internal_errors.clear()


def _total(name: str) -> property:
    return property(lambda self: sum(getattr(e, name) for e in self.entries.values()),
                    doc=f"``{name}`` summed over the entry points")


for _name in _TOTALS:
    setattr(GuardState, _name, _total(_name))
del _name


STATE = GuardState()


def configure(level: "Level | str | int", action: "Action | str" = Action.RAISE) -> None:
    """Set the level and the action for every guarded entry point.

    Args:
        level, action: as :func:`guardrails.config.parse_level` / :func:`~guardrails.config.parse_action`
            accept them (any case).

    Raises:
        GuardConfigError: an unknown level or action (a ``ValueError``; nothing is changed).
    """
    resolved = parse_level(level, setting="level"), parse_action(action, setting="action")
    rising = resolved[0] >= Level.VALUES > STATE.level
    STATE.level, STATE.action = resolved
    refills = sys.modules.get(f"{__package__}.refills")
    if rising and refills is not None:  # writes made below values were not marked
        refills.invalidate()
