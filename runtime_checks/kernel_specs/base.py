"""The launch-spec machinery every kernel family module builds on.

A :class:`LaunchSpec` reads one call's arguments by name (positions taken from the
installed library's real signature once, at patch time), and gives

* :meth:`~LaunchSpec.shape_key`: every shape / dtype / device / stride / scalar the
  ``shapes``-level checks read, as one hashable tuple. The checks are a pure
  function of it, so a key that passed once passes again: the guard memoizes on it
  and pays the full check (pydantic models + catalog) only for a new layout.
* :meth:`~LaunchSpec.value_refs`: the index tensors whose contents the ``values``
  checks read; their :func:`~runtime_checks.launch_memo.version_key` (identity,
  ``_version``, data pointer, shape, in-place refills: :mod:`runtime_checks.refills`)
  is the content key, so 60 layers that share one step's metadata pay for one
  device-to-host copy.
* :meth:`~LaunchSpec.describe`: the :class:`~guardrails.AttentionBatch` and
  :class:`~guardrails.PagedKVCache` the catalog checks.

An :class:`EntryPoint` names one guarded callable and its spec; each family module
(:mod:`.flashinfer_trtllm`, :mod:`.flashinfer_wrappers`) declares its entry points
next to their specs.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardrails.models import AttentionBatch, PagedKVCache

from ..launch_memo import tensor_key

__all__ = ["ArgReader", "EntryPoint", "LaunchSpec", "read_args", "paged_cache"]

_MISSING = object()


class ArgReader:
    """Reads arguments of one callable by name from ``(args, kwargs)``, without
    ``inspect.Signature.bind`` (too slow per launch)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        params = list(inspect.signature(fn).parameters.values())
        self.position: dict[str, int] = {}
        self.default: dict[str, Any] = {}
        for i, p in enumerate(params):
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.position[p.name] = i
            if p.default is not p.empty:
                self.default[p.name] = p.default

    def plan(self, names: Sequence[str]) -> tuple[tuple[str, int, Any], ...]:
        """(name, position or a large number, default) per name: what :func:`read_args` walks."""
        return tuple((n, self.position.get(n, 1 << 30), self.default.get(n)) for n in names)


def read_args(plan: tuple[tuple[str, int, Any], ...], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments named by ``plan`` (see :meth:`ArgReader.plan`) from one call."""
    out: dict[str, Any] = {}
    nargs = len(args)
    for name, pos, default in plan:
        value = kwargs.get(name, _MISSING)
        if value is _MISSING:
            value = args[pos] if pos < nargs else default
        out[name] = value
    return out


class LaunchSpec:
    """Base class: ``TENSORS`` are read for the shape key, ``INDEX_TENSORS`` (a
    subset) also for the content key, ``SCALARS`` join the shape key.

    Args:
        fn: the callable as installed (its signature gives the argument positions).

    Raises:
        TypeError, ValueError: ``fn``'s signature cannot be read.
    """

    TENSORS: tuple[str, ...] = ()
    INDEX_TENSORS: tuple[str, ...] = ()
    SCALARS: tuple[str, ...] = ()

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.reader = ArgReader(fn)
        self._arg_plan = self.reader.plan(self.arg_names())
        self._tensors = _getter(self.TENSORS)
        self._index_tensors = _getter(self.INDEX_TENSORS)
        self._scalars = _getter(self.SCALARS)

    def arg_names(self) -> tuple[str, ...]:
        return (*self.TENSORS, *self.SCALARS)

    def read(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return read_args(self._arg_plan, args, kwargs)

    def shape_key(self, ns: Mapping[str, Any]) -> tuple:
        return tuple([tensor_key(t) for t in self._tensors(ns)]), self._scalars(ns)

    def value_refs(self, ns: Mapping[str, Any]) -> tuple:
        """The index tensors whose contents the value checks read (``None`` where absent);
        their version keys are the content key, and the memo holds them."""
        return self._index_tensors(ns)

    def describe(self, ns: Mapping[str, Any]) -> tuple[AttentionBatch | None, PagedKVCache | None]:
        """``(batch, kv_cache)`` of the launch; ``batch`` is ``None`` when there is nothing to check."""
        raise NotImplementedError

    def remember(self, ns: Mapping[str, Any], batch: AttentionBatch | None) -> None:
        """Called after a checked launch of a :attr:`REMEMBERS` spec (a wrapper's ``plan``),
        before the call runs."""

    def after(self, ns: Mapping[str, Any]) -> None:
        """Called once the call of a :attr:`REMEMBERS` spec remembered above has
        returned (a wrapper's ``plan`` has written its buffers)."""

    #: whether :meth:`remember` must see every launch (the guard then describes each one)
    REMEMBERS = False


@dataclass(frozen=True)
class EntryPoint:
    """One guarded callable.

    ``module`` is where it is defined (``flashinfer.decode``); ``qualname`` is a
    function name or ``Class.method``; ``aliases`` are the class's
    ``functools.partialmethod`` aliases of that method (``run_return_lse``) and its
    plain aliases (``begin_forward = plan``), which must be re-pointed at the guarded
    method.
    """

    module: str
    qualname: str
    spec: type[LaunchSpec]
    aliases: tuple[str, ...] = ()

    @property
    def is_method(self) -> bool:
        return "." in self.qualname


def _getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple]:
    """``ns -> tuple(ns[n] for n in names)``, at C speed (read on every launch)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    return lambda ns: tuple([ns[n] for n in names])


def paged_cache(kv_cache: Any, layout: Any) -> PagedKVCache | None:
    """The :class:`~guardrails.PagedKVCache` of a paged KV tensor (or ``(k, v)`` pair) in
    ``layout`` (default HND); ``None`` for no cache."""
    return None if kv_cache is None else PagedKVCache.from_tensor(kv_cache, layout=str(layout or "HND"))
