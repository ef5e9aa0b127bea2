"""The runtime guard's process-wide settings and counters.

Guarded FlashInfer entry points read :data:`STATE` on every call: ``STATE.level``
decides how much is checked (``Level.OFF`` = pass straight through) and
``STATE.action`` what a violation does (``"raise"`` or ``"warn"``: log once per
invariant and call site, then let the launch through).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from guardrails.invariants import Level

log = logging.getLogger("fmha_guard")

ACTIONS = ("raise", "warn")


@dataclass
class GuardState:
    """Current level and action, plus counters a benchmark or a test can read."""

    level: Level = Level.OFF
    action: str = "raise"
    #: launches whose arguments were checked (memo hits included)
    launches: int = 0
    #: launches whose shape signature / metadata values were already known good
    shape_memo_hits: int = 0
    value_memo_hits: int = 0
    #: value checks skipped because the stream was capturing a CUDA graph
    capture_skips: int = 0
    #: violations let through because action == "warn"
    warned: int = 0
    #: (invariant id, call-site file, call-site line) already warned about
    warned_sites: set[tuple[str, str, int]] = field(default_factory=set)
    #: entry points or checks that failed internally (guard let the call through)
    internal_errors: set[str] = field(default_factory=set)

    def reset_counters(self) -> None:
        self.launches = self.shape_memo_hits = self.value_memo_hits = 0
        self.capture_skips = self.warned = 0
        self.warned_sites.clear()
        self.internal_errors.clear()


STATE = GuardState()


def configure(level: Level | str | int, action: str = "raise") -> None:
    """Set the level and the action for every guarded entry point.

    Raises:
        ValueError: an unknown level, or an action other than ``raise`` / ``warn``.
    """
    if action not in ACTIONS:
        raise ValueError(f"FMHA_GUARD_ACTION={action!r} is not an action; allowed values: raise, warn")
    STATE.level = Level.parse(level)
    STATE.action = action
