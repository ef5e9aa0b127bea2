"""The runtime guard's configuration: one place for the level, the action, their names and messages.

Two settings decide what the runtime guard does at every FMHA launch:

* the **level** (``FMHA_GUARD``), how much is checked: :class:`Level`;
* the **action** (``FMHA_GUARD_ACTION``), what a violation does: :class:`Action`.

Every reader goes through this module: the interpreter-start activation
(:mod:`runtime_checks.startup`, which must not import pydantic or torch, so this module
is standard library only), :func:`runtime_checks.install`, :func:`runtime_checks.check_launch`,
the reference backend and ``fmha-guard status``. Values are matched case-insensitively
after stripping white space (:data:`LEVEL_NAMES`, :data:`ACTION_NAMES`; ``true`` / ``on`` /
``yes`` / ``enable(d)`` mean ``shapes``, ``false`` / ``no`` / ``disable(d)`` mean ``off``).

Bad values are handled by where they come from:

* an explicit argument (``install(level="bogus")``, :func:`parse_level`,
  :func:`parse_action`) is a programmer error: :class:`GuardConfigError` (a
  ``ValueError``) naming the setting, the value and the values allowed;
* the environment fails closed (:meth:`GuardConfig.from_env`): an unknown
  ``FMHA_GUARD`` turns the guard on at ``shapes`` (:data:`FALLBACK_LEVEL`, the level
  that never syncs the device) and an unknown ``FMHA_GUARD_ACTION`` raises
  (:data:`FALLBACK_ACTION`); each says so once per process with a
  :class:`guardrails.errors.FmhaGuardConfigWarning` (and the ``fmha_guard`` logger),
  issued when the guard is used, i.e. in the process that loads a guarded kernel
  library, never at interpreter start (:meth:`GuardConfig.warn_fallbacks`).

    >>> GuardConfig.from_env({"FMHA_GUARD": "Values", "FMHA_GUARD_ACTION": " warn"})
    GuardConfig(level=<Level.VALUES: 2>, action=<Action.WARN: 'warn'>)
    >>> GuardConfig.from_env({"FMHA_GUARD": "bogus"}, warn=False).fallbacks[0][:40]
    "FMHA_GUARD='bogus' is not a guard level;"
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Mapping, Optional, Union

if TYPE_CHECKING:
    from .warning_channel import CallSite

__all__ = [
    "LEVEL_ENV_VAR",
    "ACTION_ENV_VAR",
    "Level",
    "Action",
    "GuardConfig",
    "GuardConfigError",
    "FALLBACK_LEVEL",
    "FALLBACK_ACTION",
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
    "false": Level.OFF,
    "no": Level.OFF,
    "disable": Level.OFF,
    "disabled": Level.OFF,
    "shapes": Level.SHAPES,
    "1": Level.SHAPES,
    "true": Level.SHAPES,
    "on": Level.SHAPES,
    "yes": Level.SHAPES,
    "enable": Level.SHAPES,
    "enabled": Level.SHAPES,
    "values": Level.VALUES,
    "2": Level.VALUES,
}
"""Accepted level spellings (stripped, lower case) -> :class:`Level`; the boolean ones
switch the guard on at ``shapes`` (never syncs) or off. In the environment an unset or
empty ``FMHA_GUARD`` also means off (:meth:`GuardConfig.from_env`)."""

ACTION_NAMES: dict[str, Action] = {"raise": Action.RAISE, "warn": Action.WARN}
"""Accepted action spellings (stripped, lower case) -> :class:`Action`. In the environment an
unset or empty ``FMHA_GUARD_ACTION`` means raise."""

FALLBACK_LEVEL = Level.SHAPES
"""What an unknown ``FMHA_GUARD`` value means: on, at the level that never syncs the device."""

FALLBACK_ACTION = Action.RAISE
"""What an unknown ``FMHA_GUARD_ACTION`` value means."""

_LEVELS_ALLOWED = (
    "off, shapes, values (or 0, 1, 2; true/on/yes/enable(d) mean shapes, false/no/disable(d) off; "
    "unset or empty means off)"
)
_ACTIONS_ALLOWED = "raise, warn (unset or empty means raise)"
_warned_fallbacks: set[str] = set()  # FmhaGuardConfigWarning messages issued in this process


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
        fallbacks: one message per environment value that was not understood and fell
            back (:data:`FALLBACK_LEVEL`, :data:`FALLBACK_ACTION`); empty when both parsed.
    """

    level: Level = Level.OFF
    action: Action = Action.RAISE
    fallbacks: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_env(
        cls, environ: Optional[Mapping[str, str]] = None, *, default_level: Level = Level.OFF, warn: bool = True
    ) -> "GuardConfig":
        """Read ``FMHA_GUARD`` and ``FMHA_GUARD_ACTION`` from ``environ`` (default ``os.environ``).

        Never raises :class:`GuardConfigError`: an unknown value fails closed
        (:data:`FALLBACK_LEVEL`, :data:`FALLBACK_ACTION`) and is listed in :attr:`fallbacks`
        (its warning raises only where a filter makes it an error).

        Args:
            default_level: the level when ``FMHA_GUARD`` is unset (the reference backend
                checks shapes by default; the FlashInfer guard is off by default).
            warn: issue the fallbacks' warnings now (:meth:`warn_fallbacks`); the
                interpreter-start activation passes ``False`` and warns when the guard
                fires, so a process that never loads a kernel library prints nothing.
        """
        env = os.environ if environ is None else environ
        fallbacks = []
        raw_level = env.get(LEVEL_ENV_VAR)
        if raw_level is None:
            level = default_level
        elif not raw_level.strip():
            level = Level.OFF
        else:
            try:
                level = parse_level(raw_level)
            except GuardConfigError as exc:
                level = FALLBACK_LEVEL
                fallbacks.append(
                    f"{exc}; the guard fails closed and checks at {FALLBACK_LEVEL} "
                    "(the level that never syncs the device)"
                )
        raw_action = env.get(ACTION_ENV_VAR, "")
        action = Action.RAISE
        if raw_action.strip():
            try:
                action = parse_action(raw_action)
            except GuardConfigError as exc:
                action = FALLBACK_ACTION
                fallbacks.append(f"{exc}; the guard fails closed: violations {FALLBACK_ACTION}")
        config = cls(level, action, tuple(fallbacks))
        if warn:
            config.warn_fallbacks()
        return config

    def warn_fallbacks(self, site: Optional[CallSite] = None) -> None:
        """One :class:`guardrails.errors.FmhaGuardConfigWarning` per message of
        :attr:`fallbacks` not issued yet in this process, located at ``site`` (default:
        the first frame outside the guard; :func:`guardrails.warning_channel.call_site`).

        Raises:
            FmhaGuardConfigWarning: where a warnings filter turns it into an error.
        """
        fresh = [message for message in self.fallbacks if message not in _warned_fallbacks]
        if not fresh:
            return
        from .errors import FmhaGuardConfigWarning
        from .warning_channel import call_site, emit

        where = site if site is not None else call_site(depth=2)
        for message in fresh:
            _warned_fallbacks.add(message)
            emit(message, FmhaGuardConfigWarning, where)

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
            GuardConfigError: an unknown level or action given as an argument (the
                environment's fail closed, :meth:`from_env`, and warn).
        """
        explicit_level = parse_level(level, setting="level") if level is not None else None
        explicit_action = parse_action(action, setting="action") if action is not None else None
        if explicit_level is not None and explicit_action is not None:
            return cls(explicit_level, explicit_action)
        env = os.environ if environ is None else environ
        if explicit_level is not None:  # only the action's setting is read (and warned about)
            env = {k: v for k, v in env.items() if k == ACTION_ENV_VAR}
        elif explicit_action is not None:
            env = {k: v for k, v in env.items() if k == LEVEL_ENV_VAR}
        read = cls.from_env(env, default_level=default_level, warn=False)
        read.warn_fallbacks()
        return cls(
            explicit_level if explicit_level is not None else read.level,
            explicit_action if explicit_action is not None else read.action,
            read.fallbacks,
        )
