"""Runtime checks of attention launches, switched by ``FMHA_GUARD``.

:func:`check_launch` is the hook a serving engine calls right before an FMHA
kernel launch: it resolves the level from ``FMHA_GUARD`` (see
:mod:`guardrails.config`), returns immediately when the guard is off, and
otherwise runs :func:`guardrails.validate`.

:func:`install` patches the entry points of FlashInfer, SGLang's ``sgl_kernel``
FlashAttention, vLLM's ``vllm_flash_attn`` and FlashMLA so every launch is checked
without engine changes (:mod:`runtime_checks.activation`); :func:`uninstall`
restores them, :func:`guarded` is the context-manager form and
:func:`is_installed` tells. With ``FMHA_GUARD=shapes|values`` in the environment
the installed package does this at interpreter start (:mod:`runtime_checks.startup`).

Importing this package is cheap (standard library only): the names above are
loaded on first access, because the startup files import
:mod:`runtime_checks.startup` in every interpreter of the environment. Of the
subpackages only :mod:`runtime_checks.reference_backend` (a reference attention
backend with SGLang's interface) imports torch, when imported itself.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the startup files import this package, keep it stdlib-light
if TYPE_CHECKING:
    from typing import Any, Optional, Union

    from guardrails.config import Level
    from guardrails.models import AttentionBatch, GraphLayout, PagedKVCache, SlidingWindowPool

    from .activation import guarded, install, is_installed, uninstall

__all__ = [
    "check_launch",
    "install",
    "uninstall",
    "guarded",
    "is_installed",
]

_LAZY = {
    "install": ".activation",
    "uninstall": ".activation",
    "guarded": ".activation",
    "is_installed": ".activation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
        level: explicit level (as :func:`guardrails.config.parse_level` reads it);
            ``None`` (default) reads ``FMHA_GUARD`` on every call
            (:meth:`guardrails.config.GuardConfig.from_env`: unset means off, an unknown
            value fails closed at shapes with one warning), so it can be flipped in a
            running process.

    Returns immediately (no work at all) when the level is OFF.

    Raises:
        FmhaInvariantError: the first violated invariant.
        GuardConfigError: ``level`` is not a level (a ``ValueError``).
    """
    from guardrails.config import GuardConfig, Level, parse_level

    resolved = GuardConfig.from_env().level if level is None else parse_level(level, setting="level")
    if resolved is Level.OFF:
        return
    from guardrails.validation import validate

    validate(batch, kv_cache, swa_pool, level=resolved, captured=captured)
