"""Runtime checks of attention launches, switched by ``FMHA_GUARD``.

:func:`check_launch` is the hook a serving engine calls right before an FMHA
kernel launch: it resolves the level from ``FMHA_GUARD`` (see
:mod:`runtime_checks.level`), returns immediately when the guard is off, and
otherwise runs :func:`guardrails.validate`.

Patching FlashInfer's entry points so every launch is checked without engine
changes arrives with the runtime-guard issue; this module is the small core it
will build on.
"""

from __future__ import annotations

from typing import Optional, Union

from guardrails.invariants import Level
from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache, SlidingWindowPool
from guardrails.validation import validate

from .level import ENV_VAR, level_from_env

__all__ = ["check_launch", "level_from_env", "ENV_VAR"]


def check_launch(
    batch: AttentionBatch,
    kv_cache: Optional[PagedKVCache] = None,
    swa_pool: Optional[SlidingWindowPool] = None,
    *,
    level: Union[Level, str, None] = None,
    captured: Optional[GraphLayout] = None,
) -> None:
    """Validate one launch at the configured guard level.

    Args:
        batch, kv_cache, swa_pool, captured: as :func:`guardrails.validate`
            (index tensors int32 ``[batch_size + 1]`` / ``[batch_size]`` /
            ``[batch_size, max_pages_per_req]``, lengths in tokens).
        level: explicit level; ``None`` (default) reads ``FMHA_GUARD`` on every
            call, so it can be flipped in a running process.

    Returns immediately (no work at all) when the level is OFF.

    Raises:
        FmhaInvariantError: the first violated invariant.
        ValueError: ``FMHA_GUARD`` (or ``level``) holds an unknown value.
    """
    resolved = level_from_env() if level is None else Level.parse(level)
    if resolved is Level.OFF:
        return
    validate(batch, kv_cache, swa_pool, level=resolved, captured=captured)
