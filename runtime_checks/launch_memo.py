"""Known-good launches, so repeated launches skip the catalog.

Two memos per entry point (or per engine backend):

* shape keys (:func:`tensor_key` of each tensor plus the scalars): a layout seen and
  passed once passes again without building models (the shape checks read nothing
  else);
* content keys (:func:`version_key` of each index tensor: identity, in-place version
  counter, address, shape, and what :func:`runtime_checks.refills.content_part` adds:
  the bytes of a CPU tensor, the Triton write mark of a device tensor's storage): the value checks of one step's metadata run once, however many layers
  share it.

A content key names tensors by ``id()``, which CPython reuses once an object is freed,
and a fresh tensor's version counter starts at 0; a freed index tensor's key could then
match a new tensor at the same address (the caching allocator reuses blocks). The memo
therefore keeps a reference to the tensors of every content key it holds (at most
:data:`VALUE_MEMO_SIZE` entries, LRU), so an id in a live key is never reused.
Writes that do not bump ``_version`` are made visible by :mod:`runtime_checks.refills`:
numpy writes into host tensors (their bytes are in the key) and Triton kernels
(every storage handed to one is marked); a raw CUDA kernel that is not Triton writing into
a reused buffer is the one refill the key cannot see.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

from .refills import content_part

__all__ = ["LaunchMemo", "tensor_key", "version_key", "SHAPE_MEMO_SIZE", "VALUE_MEMO_SIZE"]

#: distinct shape keys remembered before the set is cleared
SHAPE_MEMO_SIZE = 4096
#: distinct metadata contents remembered (LRU)
VALUE_MEMO_SIZE = 64


def tensor_key(t: Any) -> Any:
    """Shape-level fingerprint of a tensor (or a (K, V) tuple of tensors)."""
    if t is None:
        return None
    if t.__class__ is tuple or t.__class__ is list:
        return tuple([tensor_key(x) for x in t])
    return (t.shape, t.dtype, t.device, t.stride())


def version_key(t: Any) -> Any:
    """Content fingerprint: identity, in-place version counter, address, shape, and
    :func:`~runtime_checks.refills.content_part` (host bytes / Triton write mark)."""
    if t is None:
        return None
    return (id(t), t._version, t.data_ptr(), t.shape, content_part(t))


class LaunchMemo:
    """Known-good shape keys and content keys (with the tensors they name)."""

    def __init__(self) -> None:
        self.shapes: set[Any] = set()
        self.values: OrderedDict[Any, tuple] = OrderedDict()

    def shape_ok(self, key: Any) -> bool:
        return key in self.shapes

    def add_shape(self, key: Any) -> None:
        if len(self.shapes) >= SHAPE_MEMO_SIZE:
            self.shapes.clear()
        self.shapes.add(key)

    def value_ok(self, key: Any) -> bool:
        if key in self.values:
            self.values.move_to_end(key)
            return True
        return False

    def add_value(self, key: Any, tensors: Sequence[Any]) -> None:
        """Remember ``key``, holding ``tensors`` (those its ``version_key`` parts name)."""
        self.values[key] = tuple(tensors)
        if len(self.values) > VALUE_MEMO_SIZE:
            self.values.popitem(last=False)
