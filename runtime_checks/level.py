"""Parse the ``FMHA_GUARD`` environment variable into a guard level.

``FMHA_GUARD`` selects how much the runtime guard checks per attention launch:

* unset, empty, ``off`` or ``0``: no checks (:attr:`Level.OFF`);
* ``shapes`` (or ``1``): shapes/dtypes/devices/strides only, no device sync,
  safe inside CUDA-graph capture (:attr:`Level.SHAPES`);
* ``values`` (or ``2``): also read the index tensors' contents with one
  device-to-host copy per launch (:attr:`Level.VALUES`).

``FMHA_GUARD_ACTION`` (:func:`action_from_env`) selects what a violation does:
``raise`` (default) or ``warn`` (log once per invariant and call site, then let the
launch through).

Matching is case-insensitive and ignores surrounding whitespace.
"""

from __future__ import annotations

import os
from typing import Mapping

from guardrails.invariants import Level

from .state import ACTIONS

__all__ = ["ENV_VAR", "ACTION_ENV_VAR", "level_from_env", "action_from_env"]

ENV_VAR = "FMHA_GUARD"
"""Name of the environment variable read by :func:`level_from_env`."""

ACTION_ENV_VAR = "FMHA_GUARD_ACTION"
"""Name of the environment variable read by :func:`action_from_env`."""

_ALIASES = {
    "": Level.OFF,
    "off": Level.OFF,
    "0": Level.OFF,
    "shapes": Level.SHAPES,
    "1": Level.SHAPES,
    "values": Level.VALUES,
    "2": Level.VALUES,
}


def level_from_env(environ: Mapping[str, str] = os.environ) -> Level:
    """Read ``FMHA_GUARD`` from ``environ`` (default ``os.environ``).

    Returns:
        :class:`guardrails.Level`: OFF when unset/empty/``off``/``0``,
        SHAPES for ``shapes``/``1``, VALUES for ``values``/``2``.

    Raises:
        ValueError: any other value; the message names ``FMHA_GUARD``, the
            value and the allowed values.
    """
    raw = environ.get(ENV_VAR)
    if raw is None:
        return Level.OFF
    try:
        return _ALIASES[raw.strip().lower()]
    except KeyError:
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not a guard level; allowed values: off (or unset/empty/0), "
            f"shapes (1), values (2)"
        ) from None


def action_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """Read ``FMHA_GUARD_ACTION`` from ``environ`` (default ``os.environ``).

    Returns:
        ``"raise"`` when unset or empty, else ``"raise"`` or ``"warn"``.

    Raises:
        ValueError: any other value; the message names ``FMHA_GUARD_ACTION``,
            the value and the allowed values.
    """
    raw = environ.get(ACTION_ENV_VAR)
    if raw is None or not raw.strip():
        return "raise"
    action = raw.strip().lower()
    if action not in ACTIONS:
        raise ValueError(
            f"{ACTION_ENV_VAR}={raw!r} is not a guard action; allowed values: raise (default), warn"
        )
    return action
