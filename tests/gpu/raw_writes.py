"""Writes into CUDA metadata buffers that PyTorch does not see, for the GPU proofs.

* :func:`alias_of`: a second tensor over the same device memory, built from
  ``data_ptr()`` through ``__cuda_array_interface__``: it has its own storage object and
  version counter, so writing through it leaves the original tensor's ``_version`` (and
  its storage, which :mod:`runtime_checks.refills` marks) untouched, as a custom CUDA
  op or a CUTLASS kernel writing into a reused buffer would;
* :func:`triton_store_int32`: a Triton kernel handed a raw address (an object with
  ``data_ptr()`` and ``dtype``, no tensor), so the Triton launch hook of
  :mod:`runtime_checks.refills` has no tensor to mark;
* :func:`triton_copy_int32`: a plain Triton copy kernel (tensors), the refill a graph
  may capture before its attention layers (SGLang's ``create_flashinfer_kv_indices_triton``,
  vLLM's ``_copy_page_indices_kernel``): at replay it runs without any Python.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["alias_of", "triton_store_int32", "triton_copy_int32"]

_TYPESTR = {torch.int32: "<i4", torch.int64: "<i8"}


class _Interface:
    def __init__(self, t: torch.Tensor) -> None:
        self.__cuda_array_interface__ = {
            "shape": tuple(t.shape),
            "typestr": _TYPESTR[t.dtype],
            "data": (t.data_ptr(), False),
            "strides": tuple(s * t.element_size() for s in t.stride()),
            "version": 3,
        }


def alias_of(t: torch.Tensor) -> torch.Tensor:
    """A tensor over ``t``'s bytes (int32/int64 CUDA) with its own storage and ``_version``."""
    alias = torch.as_tensor(_Interface(t), device=t.device)
    assert alias.data_ptr() == t.data_ptr() and alias.untyped_storage().data_ptr() != 0
    return alias


class RawPointer:
    """What Triton's launcher takes as a pointer argument: ``data_ptr()`` and ``dtype``."""

    def __init__(self, address: int, dtype: torch.dtype = torch.int32) -> None:
        self.address, self.dtype = address, dtype

    def data_ptr(self) -> int:
        return self.address


@triton.jit
def _store_kernel(ptr, value):
    tl.store(ptr, value)


@triton.jit
def _copy_kernel(src, dst, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst + offs, tl.load(src + offs, mask=mask), mask=mask)


def triton_store_int32(address: int, value: int) -> None:
    """Store one int32 ``value`` at device ``address`` (bytes), on the current stream."""
    _store_kernel[(1,)](RawPointer(address), value)


def triton_copy_int32(src: torch.Tensor, dst: torch.Tensor) -> None:
    """``dst.view(-1)[:] = src.view(-1)`` (contiguous int32 CUDA tensors of one size) in Triton."""
    assert src.is_contiguous() and dst.is_contiguous() and src.numel() == dst.numel()
    n = src.numel()
    _copy_kernel[(triton.cdiv(n, 1024),)](src, dst, n, BLOCK=1024)
