"""Duck-typed facts about tensors, without importing torch at module load.

A "tensor" here is anything with ``.shape``, ``.dtype`` and ``.device``: torch
tensors in practice (CUDA, CPU or ``meta``), numpy 2 arrays also pass. The
shape-level helpers (:func:`shape_of`, :func:`dtype_name`, :func:`device_name`,
:func:`strides_of`, :func:`data_ptr_of`) never touch tensor contents, so they
work on ``meta`` tensors and inside CUDA-graph capture. :func:`read_host_ints`
is the only function that reads contents; it does so with one packed
device-to-host copy.
"""

from __future__ import annotations

import sys
from collections import abc
from typing import Any, Mapping, Optional, Sequence

__all__ = [
    "is_tensor_like",
    "shape_of",
    "dtype_name",
    "device_name",
    "same_device",
    "strides_of",
    "data_ptr_of",
    "is_int_dtype",
    "has_readable_data",
    "stream_is_capturing",
    "read_host_ints",
    "gather_host_ints",
]

_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def is_tensor_like(obj: Any) -> bool:
    """True for objects exposing ``.shape``, ``.dtype`` and ``.device``."""
    return all(hasattr(obj, attr) for attr in ("shape", "dtype", "device"))


def shape_of(t: Any) -> tuple[int, ...]:
    """``tuple(t.shape)`` as plain ints (``torch.Size`` -> tuple)."""
    return tuple(int(d) for d in t.shape)


def dtype_name(t: Any) -> str:
    """Short dtype name: ``torch.int32`` -> ``"int32"``, numpy ``int64`` -> ``"int64"``."""
    return str(t.dtype).rsplit(".", 1)[-1]


def is_int_dtype(t: Any) -> bool:
    """True for signed/unsigned integer dtypes of any width."""
    return dtype_name(t) in _INT_DTYPES


def device_name(t: Any) -> str:
    """Device as a string, e.g. ``"cuda:0"``, ``"cpu"``, ``"meta"``."""
    return str(t.device)


def same_device(a: str, b: str) -> bool:
    """Device strings name the same device; ``"cuda"`` (no index, as a
    hand-written config may say) matches any ``"cuda:N"``."""
    if a == b:
        return True
    type_a, _, index_a = a.partition(":")
    type_b, _, index_b = b.partition(":")
    return type_a == type_b and (not index_a or not index_b)


def strides_of(t: Any) -> Optional[tuple[int, ...]]:
    """Element strides (torch ``.stride()``), byte strides // itemsize for
    numpy; ``None`` when the object exposes neither."""
    stride = getattr(t, "stride", None)
    if callable(stride):
        return tuple(int(s) for s in stride())
    strides = getattr(t, "strides", None)
    itemsize = getattr(t, "itemsize", None)
    if strides is not None and itemsize:
        return tuple(int(s) // int(itemsize) for s in strides)
    return None


def data_ptr_of(t: Any) -> Optional[int]:
    """Address of the first element (torch ``.data_ptr()``); ``None`` when not
    available. Reading the pointer does not sync or read data."""
    ptr = getattr(t, "data_ptr", None)
    if callable(ptr):
        try:
            return int(ptr())
        except Exception:  # e.g. tensor subclasses without storage
            return None
    return None


def has_readable_data(t: Any) -> bool:
    """False for ``meta`` tensors (no storage: contents cannot be read)."""
    return device_name(t) != "meta"


def stream_is_capturing() -> bool:
    """True while the current CUDA stream is being captured into a CUDA graph.

    Only consults torch when it is already imported (never imports it).
    Reading tensor contents during capture would abort the capture, so
    ``VALUES`` checks are skipped then.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())
    except Exception:
        return False


def _is_torch_tensor(t: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(t, torch.Tensor)


def _to_nested_list(t: Any) -> list:
    if hasattr(t, "detach"):
        return t.detach().cpu().tolist()
    return t.tolist()


def _unflatten(flat: Sequence[int], shape: tuple[int, ...]) -> list:
    if len(shape) <= 1:
        return list(flat)
    width = 1
    for d in shape[1:]:
        width *= d
    return [_unflatten(flat[i * width : (i + 1) * width], shape[1:]) for i in range(shape[0])]


class HostRows(abc.Sequence):
    """A 2-D integer table already copied to the host, read row by row as lists.

    Page tables are the large part of a launch's metadata (64 requests x 256 pages
    is 16k ids): converting all of them to Python lists costs more than the checks.
    ``rows[i]`` converts one row (cached); ``.tensor`` is the host CPU tensor for
    vectorized checks (see ``page-id-range``).
    """

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        self._rows: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        row = self._rows.get(i)
        if row is None:
            if not 0 <= i < len(self):
                raise IndexError(i)
            row = self._rows[i] = self.tensor[i].tolist()
        return row

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, abc.Sequence) else NotImplemented


def read_host_ints(tensors: Mapping[str, Any]) -> dict[str, list]:
    """Copy integer index tensors to the host as nested Python lists.

    When every tensor is a torch tensor on one device, they are flattened,
    concatenated on that device and copied with ONE ``.cpu()`` (one sync), then
    split again; otherwise each is copied on its own.

    Args:
        tensors: name -> integer tensor (any shape; typically the 1-D
            cu_seqlens/seq_lens and 2-D page tables).

    Returns:
        name -> nested list with the tensor's shape (1-D -> list[int],
        2-D -> list[list[int]], or a :class:`HostRows` view of the host copy
        when the tensors went through the packed torch path).

    Raises:
        Whatever the tensor library raises for unreadable data (e.g. ``meta``
        tensors); callers check :func:`has_readable_data` first.
    """
    items = [(name, t) for name, t in tensors.items() if t is not None]
    if not items:
        return {}
    same_device = len({device_name(t) for _, t in items}) == 1
    if len(items) > 1 and same_device and all(_is_torch_tensor(t) for _, t in items):
        torch = sys.modules["torch"]  # torch tensors were passed, so torch is loaded

        dtypes = {t.dtype for _, t in items}
        common = dtypes.pop() if len(dtypes) == 1 else torch.int64
        packed = torch.cat([t.detach().reshape(-1).to(common) for _, t in items]).cpu()
        out: dict[str, list] = {}
        offset = 0
        for name, t in items:
            shape = shape_of(t)
            n = 1
            for d in shape:
                n *= d
            part = packed[offset : offset + n]
            out[name] = HostRows(part.view(shape)) if len(shape) == 2 else _unflatten(part.tolist(), shape)
            offset += n
        return out
    return {name: _to_nested_list(t) for name, t in items}


def gather_host_ints(table: Any, indices: Sequence[int]) -> list[int]:
    """``[table[i] for i in indices]`` for a 1-D integer tensor, gathered on the
    table's device and copied to the host once (so a whole-pool translation
    table is never copied). ``indices`` must already be in range."""
    if not indices:
        return []
    if _is_torch_tensor(table):
        torch = sys.modules["torch"]
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=table.device)
        return table.detach().index_select(0, idx).cpu().tolist()
    flat = _to_nested_list(table)
    return [flat[i] for i in indices]
