"""The one exception type the guardrails raise for bad attention metadata.

Every violated invariant surfaces as :class:`FmhaInvariantError`, a
``ValueError`` subclass, so existing ``except ValueError`` handlers in a serving
engine still see it. The message has a fixed shape that reads well in a log::

    [batch-size] batch sizes disagree: batch_size=12, cu_seqlens_q.shape[0] - 1=10,
    page_table.shape[0]=10. Likely cause: <...>. Fix: <...> (source: SGLang #21649)

Raised by the runtime guard, the message also names the kernel entry point and the
engine's call site (:meth:`FmhaInvariantError.at`), right after the fields::

    ... page_table.shape[0]=10. In flashinfer.prefill.trtllm_batch_context_with_kv_cache,
    called from /srv/engine/backend.py:212 in forward_extend. Likely cause: <...>

Programs should not parse the message: ``.invariant`` carries the stable
kebab-case id (see :mod:`guardrails.invariants`) and ``.fields`` the offending
field names mapped to their values.

The guard's two warning categories live here too, so a filter can name them
(``-W error::guardrails.errors.FmhaInvariantWarning``, pytest's ``filterwarnings``):
:class:`FmhaInvariantWarning` (a violation let through by ``FMHA_GUARD_ACTION=warn``)
and :class:`FmhaGuardConfigWarning` (a setting the guard did not understand).
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["FmhaInvariantError", "FmhaInvariantWarning", "FmhaGuardConfigWarning", "format_fields"]

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
        entry_point: the guarded kernel function, qualified
            (``"flashinfer.decode.trtllm_batch_decode_with_kv_cache"``); empty unless
            the runtime guard raised it.
        call_site: the engine frame that called it, ``"path:line in function"``;
            empty unless the runtime guard raised it.
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
        entry_point: str = "",
        call_site: str = "",
    ) -> None:
        self.invariant = invariant
        self.detail = detail
        self.fields: dict[str, Any] = dict(fields or {})
        self.cause = cause
        self.fix = fix
        self.source = source
        self.entry_point = entry_point
        self.call_site = call_site
        super().__init__(self._render())

    def at(self, entry_point: str, call_site: str) -> "FmhaInvariantError":
        """This error as raised at a launch: the same, naming ``entry_point`` and ``call_site``."""
        return FmhaInvariantError(
            self.invariant, self.detail, self.fields, cause=self.cause, fix=self.fix, source=self.source,
            entry_point=entry_point, call_site=call_site,
        )

    def _render(self) -> str:
        text = f"[{self.invariant}] {_sentence(self.detail)}"
        if self.fields:
            text += f": {format_fields(self.fields)}"
        text += "."
        if self.entry_point:
            text += f" In {self.entry_point}"
            text += f", called from {self.call_site}." if self.call_site else "."
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
            (self.invariant, self.detail, self.fields, self.cause, self.fix, self.source,
             self.entry_point, self.call_site),
        )


def _rebuild(invariant, detail, fields, cause, fix, source, entry_point="", call_site="") -> FmhaInvariantError:
    return FmhaInvariantError(
        invariant, detail, fields, cause=cause, fix=fix, source=source, entry_point=entry_point, call_site=call_site
    )


class FmhaInvariantWarning(UserWarning):
    """A violated invariant that ``FMHA_GUARD_ACTION=warn`` let through to the kernel.

    Issued with :func:`warnings.warn_explicit` at the engine's call site (its file,
    line and module), once per invariant and call site; the message is the
    :class:`FmhaInvariantError`'s. ``python -W error::guardrails.errors.FmhaInvariantWarning``
    (or pytest's ``-W`` / ``filterwarnings``) turns it into an exception raised
    before the launch.
    """


class FmhaGuardConfigWarning(UserWarning):
    """An ``FMHA_GUARD`` / ``FMHA_GUARD_ACTION`` value the guard did not understand.

    The guard fails closed: an unknown level checks at ``shapes``, an unknown action
    raises (:meth:`guardrails.config.GuardConfig.from_env`). Issued once per value, in
    the process that loads a guarded kernel library.
    """
