"""The runtime guard's configuration: one place for the level, the action, their names and messages.

Two settings decide what the runtime guard does at every FMHA launch:

* the **level** (``FMHA_GUARD``), how much is checked: :class:`Level`;
* the **action** (``FMHA_GUARD_ACTION``), what a violation does: :class:`Action`.

Every reader goes through this module: the interpreter-start activation
(:mod:`runtime_checks.startup`, which must not import pydantic or torch, so this module
is standard library only), :func:`runtime_checks.install`, :func:`runtime_checks.check_launch`
and the reference backend. Values are matched case-insensitively after stripping
white space; an unknown value raises :class:`GuardConfigError` (a ``ValueError``) whose
message names the variable, the value and the values allowed.

    >>> GuardConfig.from_env({"FMHA_GUARD": "Values", "FMHA_GUARD_ACTION": " warn"})
    GuardConfig(level=<Level.VALUES: 2>, action=<Action.WARN: 'warn'>)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Mapping, Optional, Union

__all__ = [
    "LEVEL_ENV_VAR",
    "ACTION_ENV_VAR",
    "Level",
    "Action",
    "GuardConfig",
    "GuardConfigError",
    "parse_level",
    "parse_action",
]

LEVEL_ENV_VAR = "FMHA_GUARD"
"""The environment variable holding the guard level."""

ACTION_ENV_VAR = "FMHA_GUARD_ACTION"
"""The environment variable holding the guard action."""


class GuardConfigError(ValueError):
    """An unknown level or action. The message names the setting, the value and the values allowed."""


class Level(IntEnum):
    """How much checking to do; ordered ``OFF < SHAPES < VALUES``.

    Parsed from ``FMHA_GUARD`` by :func:`parse_level` (and :meth:`parse`).
    """

    OFF = 0
    """No checks."""
    SHAPES = 1
    """Shapes, dtypes, devices, strides, data pointers and Python scalars only;
    never reads tensor contents, so no device sync and capture-safe."""
    VALUES = 2
    """Also reads index-tensor contents (one packed device-to-host copy)."""

    @classmethod
    def parse(cls, value: "str | int | Level", *, setting: str = LEVEL_ENV_VAR) -> "Level":
        """:func:`parse_level`."""
        return parse_level(value, setting=setting)

    def __str__(self) -> str:
        return self.name.lower()


class Action(str, Enum):
    """What a violation does."""

    RAISE = "raise"
    """Raise :class:`guardrails.FmhaInvariantError` before the kernel runs."""
    WARN = "warn"
    """Log it once per invariant and call site, then let the launch through."""

    @classmethod
    def parse(cls, value: "str | Action", *, setting: str = ACTION_ENV_VAR) -> "Action":
        """:func:`parse_action`."""
        return parse_action(value, setting=setting)

    def __str__(self) -> str:
        return self.value


LEVEL_NAMES: dict[str, Level] = {
    "off": Level.OFF,
    "0": Level.OFF,
    "shapes": Level.SHAPES,
    "1": Level.SHAPES,
    "values": Level.VALUES,
    "2": Level.VALUES,
}
"""Accepted level spellings (stripped, lower case) -> :class:`Level`. In the environment an
unset or empty ``FMHA_GUARD`` also means off (:meth:`GuardConfig.from_env`)."""

ACTION_NAMES: dict[str, Action] = {"raise": Action.RAISE, "warn": Action.WARN}
"""Accepted action spellings (stripped, lower case) -> :class:`Action`. In the environment an
unset or empty ``FMHA_GUARD_ACTION`` means raise."""

_LEVELS_ALLOWED = "off, shapes, values (or 0, 1, 2; unset or empty means off)"
_ACTIONS_ALLOWED = "raise, warn (unset or empty means raise)"


def parse_level(value: "str | int | Level", *, setting: str = LEVEL_ENV_VAR) -> Level:
    """A level from its name (``"off"``, ``"shapes"``, ``"values"``, any case), ``0``/``1``/``2``
    or a :class:`Level`.

    Args:
        value: what was given.
        setting: what to call the setting in the error message (``FMHA_GUARD``, ``level``).

    Raises:
        GuardConfigError: anything else; the message names ``setting``, the value and the
            allowed values.
    """
    if isinstance(value, Level):
        return value
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str):
        level = LEVEL_NAMES.get(text.strip().lower())
        if level is not None:
            return level
    raise GuardConfigError(f"{setting}={value!r} is not a guard level; allowed values: {_LEVELS_ALLOWED}")


def parse_action(value: "str | Action", *, setting: str = ACTION_ENV_VAR) -> Action:
    """An action from its name (``"raise"``, ``"warn"``, any case; empty means raise) or an
    :class:`Action`.

    Raises:
        GuardConfigError: anything else; the message names ``setting``, the value and the
            allowed values.
    """
    if isinstance(value, Action):
        return value
    if isinstance(value, str):
        action = ACTION_NAMES.get(value.strip().lower())
        if action is not None:
            return action
    raise GuardConfigError(f"{setting}={value!r} is not a guard action; allowed values: {_ACTIONS_ALLOWED}")


@dataclass(frozen=True)
class GuardConfig:
    """The guard's level and action.

    Attributes:
        level: how much is checked.
        action: what a violation does.
    """

    level: Level = Level.OFF
    action: Action = Action.RAISE

    @classmethod
    def from_env(
        cls, environ: Optional[Mapping[str, str]] = None, *, default_level: Level = Level.OFF
    ) -> "GuardConfig":
        """Read ``FMHA_GUARD`` and ``FMHA_GUARD_ACTION`` from ``environ`` (default ``os.environ``).

        Args:
            default_level: the level when ``FMHA_GUARD`` is unset (the reference backend
                checks shapes by default; the FlashInfer guard is off by default).

        Raises:
            GuardConfigError: an unknown level or action.
        """
        env = os.environ if environ is None else environ
        raw_level = env.get(LEVEL_ENV_VAR)
        if raw_level is None:
            level = default_level
        else:
            level = Level.OFF if not raw_level.strip() else parse_level(raw_level)
        raw_action = env.get(ACTION_ENV_VAR, "")
        return cls(level, Action.RAISE if not raw_action.strip() else parse_action(raw_action))

    @classmethod
    def resolve(
        cls,
        level: Union[Level, str, int, None] = None,
        action: Union[Action, str, None] = None,
        *,
        environ: Optional[Mapping[str, str]] = None,
        default_level: Level = Level.OFF,
    ) -> "GuardConfig":
        """Explicit arguments where given, the environment for the rest (what ``install()`` does).

        Raises:
            GuardConfigError: an unknown level or action, given or read.
        """
        env = cls.from_env(environ, default_level=default_level) if level is None or action is None else None
        return cls(
            parse_level(level, setting="level") if level is not None else env.level,  # type: ignore[union-attr]
            parse_action(action, setting="action") if action is not None else env.action,  # type: ignore[union-attr]
        )
