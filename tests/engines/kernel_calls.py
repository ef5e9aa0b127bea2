"""The log of kernel calls a backend made: entry points, their arguments, the launches under them.

Two levels are recorded:

* an **entry** is a call from engine code into a kernel library's Python API
  (``flashinfer.decode.trtllm_batch_decode_with_kv_cache``,
  ``BatchPrefillWithPagedKVCacheWrapper.plan``, ``sgl_kernel.flash_attn.flash_attn_with_kvcache``):
  its bound arguments, by name, as the engine passed them;
* a **launch** is a call into the compiled layer underneath (a FlashInfer JIT module's
  ``paged_run``, a trtllm-gen ``trtllm_paged_attention_decode``): argument names from the
  C++ binding's declaration.

Every argument is described, never kept: tensors by shape, dtype, device, strides and
contiguity (plus the values of small integer index tensors, which is what the metadata
checks are about), scalars by value, sequences element-wise.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

#: integer tensors up to this many elements are recorded with their values
SMALL_INDEX_TENSOR = 64


def describe(value: Any, depth: int = 0) -> Any:
    """A JSON-able description of one argument."""
    if isinstance(value, torch.Tensor):
        out = {
            "tensor": list(value.shape),
            "dtype": str(value.dtype).replace("torch.", ""),
            "device": value.device.type,
            "stride": list(value.stride()),
            "contiguous": value.is_contiguous(),
        }
        if getattr(value, "_cpu_kit_pinned", False):
            out["pinned_host"] = True
        if value.dtype in (torch.int32, torch.int64) and value.numel() <= SMALL_INDEX_TENSOR:
            out["values"] = value.flatten().tolist()
        return out
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, (list, tuple)) and depth < 3:
        kind = "tuple" if isinstance(value, tuple) else "list"
        if len(value) > 16 and all(isinstance(v, (int, float, bool)) for v in value):
            return {kind: len(value), "head": list(value[:8])}
        return {kind: [describe(v, depth + 1) for v in value]}
    if isinstance(value, dict) and depth < 2:
        return {"dict": {str(k): describe(v, depth + 1) for k, v in value.items()}}
    return {"object": type(value).__qualname__}


@dataclass
class Launch:
    kernel: str
    args: dict[str, Any]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        out = {"kernel": self.kernel, "args": self.args}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class Entry:
    entry: str
    caller: str
    args: dict[str, Any]
    launches: list[Launch] = field(default_factory=list)
    guard: dict[str, Any] | None = None
    error: str | None = None
    capturing: bool = False
    phase: str = "eager"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entry": self.entry, "phase": self.phase, "caller": self.caller,
                               "args": self.args,
                               "launches": [launch.as_json() for launch in self.launches]}
        if self.capturing:
            out["capturing"] = True
        if self.guard is not None:
            out["guard"] = self.guard
        if self.error:
            out["error"] = self.error
        return out


class CallLog:
    """Where recorders write; one per process, cleared per case by the driver."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        #: backend metadata / forward methods that ran: (phase, Class.method, mode, batch size)
        self.marks: list[dict[str, Any]] = []
        #: "eager", "capture" or "replay": set by the kit's backend-method wrappers
        self.phase = "eager"
        self._local = threading.local()
        #: frames in these files are the libraries' own (not the engine calling in)
        self.library_roots: tuple[str, ...] = ()
        #: frames in these files are the kit's (skipped when naming the engine caller)
        self.kit_roots: tuple[str, ...] = ()
        self.capturing = lambda: False

    def clear(self) -> list[Entry]:
        entries, self.entries = self.entries, []
        self.marks = []
        self.phase = "eager"
        return entries

    @property
    def current(self) -> Entry | None:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else None

    @contextlib.contextmanager
    def entry(self, name: str, args: dict[str, Any], caller: str):
        record = Entry(name, caller, {k: describe(v) for k, v in args.items()},
                       capturing=bool(self.capturing()), phase=self.phase)
        self.entries.append(record)
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(record)
        try:
            yield record
        except BaseException as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            stack.pop()

    def launch(self, kernel: str, args: dict[str, Any]) -> Launch:
        launch = Launch(kernel, {k: describe(v) for k, v in args.items()})
        current = self.current
        if current is None:
            # the engine called the compiled layer directly (no library entry point between)
            current = Entry(f"<direct> {kernel}", self.engine_caller(), {},
                            capturing=bool(self.capturing()), phase=self.phase)
            self.entries.append(current)
        current.launches.append(launch)
        return launch

    def called_from_library(self, depth: int = 2) -> bool:
        """Whether the frame ``depth`` up belongs to a kernel library (an internal call)."""
        filename = sys._getframe(depth).f_code.co_filename
        return filename.startswith(self.library_roots)

    def engine_caller(self) -> str:
        """``module:qualname`` of the innermost engine frame on the stack."""
        frame = sys._getframe(1)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith(self.library_roots + self.kit_roots) and "importlib" not in filename:
                module = frame.f_globals.get("__name__", "?")
                return f"{module}:{frame.f_code.co_qualname}"
            frame = frame.f_back
        return "?"


LOG = CallLog()
