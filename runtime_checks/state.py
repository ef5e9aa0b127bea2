"""The runtime guard's process-wide settings and counters.

Guarded FlashInfer entry points read :data:`STATE` on every call: ``STATE.level``
decides how much is checked (``Level.OFF`` = pass straight through) and
``STATE.action`` what a violation does (:class:`~guardrails.config.Action`: raise, or
warn: log once per invariant and call site, then let the launch through).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from guardrails.config import Action, Level, parse_action, parse_level

__all__ = ["CheckCounters", "GuardState", "STATE", "configure", "log"]

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
class GuardState(CheckCounters):
    """Current level and action, plus the counters of every guarded entry point."""

    level: Level = Level.OFF
    action: Action = Action.RAISE
    #: launches whose arguments were checked (memo hits included)
    launches: int = 0
    #: violations let through because action is warn
    warned: int = 0
    #: (invariant id, call-site file, call-site line) already warned about
    warned_sites: set[tuple[str, str, int]] = field(default_factory=set)
    #: entry points or checks that failed internally (guard let the call through)
    internal_errors: set[str] = field(default_factory=set)

    def reset_counters(self) -> None:
        self.launches = self.shape_memo_hits = self.value_memo_hits = 0
        self.shape_checks = self.value_checks = 0
        self.capture_skips = self.warned = 0
        self.warned_sites.clear()
        self.internal_errors.clear()


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
    STATE.level, STATE.action = resolved
