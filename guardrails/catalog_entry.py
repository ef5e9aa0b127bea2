"""What one invariant of the catalog is: :class:`Invariant`, and how its source is named.

Each catalog entry lives in its own module of :mod:`guardrails.invariants`, named after
its id (``page-id-range`` -> ``guardrails/invariants/page_id_range.py``), next to the
checks that verify it; :attr:`Invariant.module` gives that module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .config import Level

__all__ = ["Invariant", "sglang_pr", "sglang_url", "H200_XQA_MEASUREMENT"]

INVARIANTS_PACKAGE = "guardrails.invariants"
"""The package holding one module per invariant."""


@dataclass(frozen=True)
class Invariant:
    """One catalog entry.

    Attributes:
        id: stable kebab-case id, e.g. ``"batch-size"``.
        statement: what must hold, in the field's terms.
        level: the lowest :class:`~guardrails.config.Level` at which (part of) it is checked.
        source: where it comes from, e.g. ``"SGLang #21649"``.
        cause: how engines usually end up violating it.
        fix: what fixed it upstream / what to do.
        values_part: for invariants checked at both levels, what the ``VALUES``
            part adds; ``None`` when the whole invariant runs at ``level``.
        url: link to the source, when there is one.
        measured: what sending such metadata to a real kernel did (``fmha-guard
            explain`` prints it; :class:`~guardrails.errors.FmhaInvariantError`
            messages leave it out); ``None`` when it was not measured.
    """

    id: str
    statement: str
    level: Level
    source: str
    cause: str
    fix: str
    values_part: Optional[str] = None
    url: Optional[str] = None
    measured: Optional[str] = None

    @property
    def levels(self) -> tuple[Level, ...]:
        """Every level at which a part of this invariant runs."""
        return (self.level, Level.VALUES) if self.values_part else (self.level,)

    @property
    def module(self) -> str:
        """Dotted name of the module that defines this entry and its checks, e.g.
        ``"guardrails.invariants.page_id_range"`` for ``page-id-range``."""
        return f"{INVARIANTS_PACKAGE}.{self.id.replace('-', '_')}"

    @property
    def module_path(self) -> str:
        """:attr:`module` as a path relative to the directory holding ``guardrails/``
        (the repository root or ``site-packages``), e.g.
        ``"guardrails/invariants/page_id_range.py"``."""
        return self.module.replace(".", "/") + ".py"


def sglang_pr(pr: int) -> str:
    """``"SGLang #<pr>"``: the :attr:`Invariant.source` of an invariant an SGLang fix defined."""
    return f"SGLang #{pr}"


def sglang_url(pr: int) -> str:
    """The GitHub address of SGLang pull request ``pr``."""
    return f"https://github.com/sgl-project/sglang/pull/{pr}"


H200_XQA_MEASUREMENT = "H200 xqa measurement"
"""Source of the invariants found by sending bad metadata to FlashInfer's xqa decode
kernel on an H200 (flashinfer 0.7.2); each entry's :attr:`Invariant.measured` says what
the kernel did."""
