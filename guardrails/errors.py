"""The one exception type the guardrails raise for bad attention metadata.

Every violated invariant surfaces as :class:`FmhaInvariantError`, a
``ValueError`` subclass, so existing ``except ValueError`` handlers in a serving
engine still see it. The message has a fixed shape that reads well in a log::

    [batch-size] batch sizes disagree: batch_size=12, cu_seqlens_q.shape[0] - 1=10,
    page_table.shape[0]=10. Likely cause: <...>. Fix: <...> (source: SGLang #21649)

Programs should not parse the message: ``.invariant`` carries the stable
kebab-case id (see :mod:`guardrails.invariants`) and ``.fields`` the offending
field names mapped to their values.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["FmhaInvariantError", "format_fields"]

# Lists longer than this are shortened in messages (``.fields`` keeps them whole).
_MAX_LIST_ITEMS = 16


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > _MAX_LIST_ITEMS:
        head = ", ".join(repr(v) for v in value[: _MAX_LIST_ITEMS // 2])
        tail = ", ".join(repr(v) for v in value[-(_MAX_LIST_ITEMS // 4) :])
        opener, closer = ("[", "]") if isinstance(value, list) else ("(", ")")
        return f"{opener}{head}, ... ({len(value)} items) ..., {tail}{closer}"
    if isinstance(value, str):
        return value
    return repr(value)


def format_fields(fields: Mapping[str, Any]) -> str:
    """Render ``{"batch_size": 12, "page_table.shape[0]": 10}`` as
    ``batch_size=12, page_table.shape[0]=10`` (long lists are shortened)."""
    return ", ".join(f"{name}={_format_value(value)}" for name, value in fields.items())


def _sentence(text: str) -> str:
    return text.strip().rstrip(".")


class FmhaInvariantError(ValueError):
    """Attention metadata violates an invariant an FMHA kernel relies on.

    Raised by :func:`guardrails.validate` (first violation) and returned in bulk
    by :func:`guardrails.find_violations`.

    Attributes:
        invariant: stable kebab-case id from :data:`guardrails.invariants.CATALOG`,
            e.g. ``"batch-size"``. Safe to match on in code and in CI.
        fields: offending field names (as an engineer would write them, e.g.
            ``"cu_seqlens_q.shape[0] - 1"`` or ``"seq_lens[3]"``) mapped to the
            values that were seen. Ints for sizes/lengths/page ids, strings for
            dtypes/devices, tuples for shapes.
        detail: what is wrong in this launch, one clause without the fields.
        cause: the likely engine-side cause, from the catalog entry.
        fix: how such bugs were fixed, from the catalog entry.
        source: where the invariant comes from, e.g. ``"SGLang #21649"``.
    """

    def __init__(
        self,
        invariant: str,
        detail: str,
        fields: Mapping[str, Any] | None = None,
        *,
        cause: str = "",
        fix: str = "",
        source: str = "",
    ) -> None:
        self.invariant = invariant
        self.detail = detail
        self.fields: dict[str, Any] = dict(fields or {})
        self.cause = cause
        self.fix = fix
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"[{self.invariant}] {_sentence(self.detail)}"
        if self.fields:
            text += f": {format_fields(self.fields)}"
        text += "."
        if self.cause:
            text += f" Likely cause: {_sentence(self.cause)}."
        if self.fix:
            text += f" Fix: {_sentence(self.fix)}"
            text += f" (source: {self.source})" if self.source else "."
        elif self.source:
            text += f" (source: {self.source})"
        return text

    def __reduce__(self):  # keep the error picklable (multiprocessing, pytest-xdist)
        return (
            _rebuild,
            (self.invariant, self.detail, self.fields, self.cause, self.fix, self.source),
        )


def _rebuild(invariant, detail, fields, cause, fix, source) -> FmhaInvariantError:
    return FmhaInvariantError(invariant, detail, fields, cause=cause, fix=fix, source=source)
