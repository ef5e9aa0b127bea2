"""SGLang's real attention backends on CPU, built the way SGLang's own test kits build them.

* SGLang 0.5.23 ships ``sglang/test/kits/attention_unittest``: a ``MockModelRunner``
  subclassing the real ``ModelRunner``, real ``ReqToTokenPool`` / ``MHATokenToKVPool`` /
  ``MLATokenToKVPool``, fixture builders (:func:`build_dense_attention_fixture`,
  :func:`build_mla_attention_fixture`) and runners for CUDA-graph decode, EAGLE target
  verify and draft-extend-v2 (capture through ``init_forward_metadata_out_graph(...,
  in_capture=True)`` / ``init_forward_metadata_in_graph``, replay with a padded batch).
  The kit is called as it is, with ``device="cpu"``; its numeric comparisons against the
  torch reference (``torch.testing.assert_close``) are counted, not enforced, because the
  kernel recorders return zeros. Its metadata checks (``assert_cg_metadata_well_formed``)
  run.
* SGLang 0.5.9 ships ``sglang/test/attention/test_flashattn_backend.py`` and
  ``test_trtllm_mla_backend.py``: a duck-typed ``MockModelRunner`` (model config type, a
  ``req_to_token`` tensor pool, a real KV pool, ``ServerArgs(model_path="dummy")`` as the
  global server args) and hand-built ``ForwardBatch`` objects. :class:`MockModelRunner09`
  follows them (adding the attributes the other backends read), and CUDA graphs go through
  ``init_cuda_graph_state`` / ``init_forward_metadata_capture_cuda_graph`` /
  ``init_forward_metadata_replay_cuda_graph`` with a replay batch smaller than the
  captured one.

Every case is one (backend, mode, page size); the result holds the backend methods that
ran (:data:`LOG.marks`, with the phase: eager / capture / replay) and every kernel entry
point and launch recorded under them.
"""

from __future__ import annotations

import contextlib
import functools
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import cuda_on_cpu
from .kernel_calls import LOG

#: float16: the kits' default, and on this CPU bf16 / fp32 matmuls are ~100x slower than fp16
DTYPE = torch.float16

#: the modes a case can run; CUDA_GRAPH_* run the capture and replay metadata paths
MODES = ("EXTEND", "DECODE", "TARGET_VERIFY", "DRAFT_EXTEND", "DRAFT_EXTEND_V2", "IDLE",
         "CUDA_GRAPH_DECODE", "CUDA_GRAPH_TARGET_VERIFY", "CUDA_GRAPH_DRAFT_EXTEND",
         "CUDA_GRAPH_DRAFT_EXTEND_V2")


@dataclass(frozen=True)
class BackendSpec:
    """One backend to run: the class SGLang's registry builds, on which simulated SM."""

    name: str            # class name, as reported
    registry: str        # ATTENTION_BACKENDS key / server-arg attention_backend
    arch: str            # "mha" or "mla"
    capability: tuple[int, int]
    page_sizes: tuple[int, ...]
    modes: tuple[str, ...]
    dtype: torch.dtype = DTYPE


_NO_V1 = tuple(m for m in MODES if not m.endswith("DRAFT_EXTEND"))  # 0.5.23: no DRAFT_EXTEND mode
_NO_V2 = tuple(m for m in MODES if "V2" not in m)       # 0.5.9's has no DRAFT_EXTEND_V2
_EAGER_AND_DECODE_GRAPH = ("EXTEND", "DECODE", "IDLE", "CUDA_GRAPH_DECODE")

SPECS: dict[str, tuple[BackendSpec, ...]] = {
    "0.5.23": (
        BackendSpec("FlashInferAttnBackend", "flashinfer", "mha", (9, 0), (1,), _NO_V1),
        BackendSpec("FlashInferAttnBackend", "flashinfer", "mha", (9, 0), (16,), _EAGER_AND_DECODE_GRAPH),
        # FlashInferMLAAttnBackend has no DRAFT_EXTEND_V2 CUDA graph: its capture raises
        # ValueError("Invalid mode: forward_mode=DRAFT_EXTEND_V2") (eager V2 runs)
        BackendSpec("FlashInferMLAAttnBackend", "flashinfer", "mla", (9, 0), (1,),
                    tuple(m for m in _NO_V1 if m != "CUDA_GRAPH_DRAFT_EXTEND_V2")),
        BackendSpec("TRTLLMHAAttnBackend", "trtllm_mha", "mha", (10, 0), (16,), _NO_V1),
        # bf16: the backend casts q to bf16 for trtllm-gen (fp16 weights would not match)
        BackendSpec("TRTLLMMLABackend", "trtllm_mla", "mla", (10, 0), (32,), _NO_V1, torch.bfloat16),
        BackendSpec("FlashAttentionBackend", "fa3", "mha", (9, 0), (1,), _NO_V1),
        BackendSpec("FlashAttentionBackend", "fa3", "mha", (9, 0), (16,), _EAGER_AND_DECODE_GRAPH),
        BackendSpec("FlashMLABackend", "flashmla", "mla", (9, 0), (64,), _NO_V1),
        BackendSpec("TritonAttnBackend", "triton", "mha", (9, 0), (1,),
                    ("EXTEND", "DECODE", "TARGET_VERIFY", "IDLE", "CUDA_GRAPH_DECODE")),
    ),
    "0.5.9": (
        BackendSpec("FlashInferAttnBackend", "flashinfer", "mha", (9, 0), (1, 16), _NO_V2),
        BackendSpec("FlashInferMLAAttnBackend", "flashinfer", "mla", (9, 0), (1,), _NO_V2),
        BackendSpec("TRTLLMHAAttnBackend", "trtllm_mha", "mha", (10, 0), (16,), _NO_V2),
        BackendSpec("TRTLLMMLABackend", "trtllm_mla", "mla", (10, 0), (32,), _NO_V2, torch.bfloat16),
        BackendSpec("FlashAttentionBackend", "fa3", "mha", (9, 0), (1, 16), _NO_V2),
        # 0.5.9 FlashMLABackend has no DRAFT_EXTEND CUDA graph (no cuda_graph_qo_indptr)
        BackendSpec("FlashMLABackend", "flashmla", "mla", (9, 0), (64,),
                    tuple(m for m in _NO_V2 if m != "CUDA_GRAPH_DRAFT_EXTEND")),
        BackendSpec("TritonAttnBackend", "triton", "mha", (9, 0), (1,),
                    ("EXTEND", "DECODE", "TARGET_VERIFY", "IDLE", "CUDA_GRAPH_DECODE")),
    ),
}

# request shapes (small; the KV pool is real)
PREFIX_LENS = (5, 17)
EXTEND_LENS = (3, 2)
DRAFT_TOKENS = 3
CAPTURE_BS = 4
MHA_HEADS, MHA_KV_HEADS, MHA_HEAD_DIM = 4, 2, 64
MLA_HEADS, KV_LORA_RANK, QK_ROPE_HEAD_DIM = 16, 512, 64  # DeepSeek's latent dims (FlashInfer MLA needs 512/64)


class _TestCase:
    """The ``testcase`` the kits take (they call ``skipTest`` when a backend is unavailable)."""

    def skipTest(self, reason):  # noqa: N802 - unittest's name
        raise CaseUnsupported(reason)


class CaseUnsupported(RuntimeError):
    """The engine's own kit declined the case (``skipTest``)."""


@dataclass
class CaseResult:
    backend: str
    mode: str
    page_size: int
    status: str = "ok"
    error: str | None = None
    seconds: float = 0.0
    marks: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    numeric_checks_skipped: int = 0

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- backend method tracking (phases) -----------------------------------------------

TRACKED_METHODS = (
    "init_forward_metadata", "init_forward_metadata_out_graph", "init_forward_metadata_in_graph",
    "init_forward_metadata_capture_cuda_graph", "init_forward_metadata_replay_cuda_graph",
    "init_cuda_graph_state", "forward_extend", "forward_decode",
)
_DEPTH = {"value": 0}


def _phase_for(method: str, args: tuple, kwargs: dict) -> str | None:
    if method == "init_forward_metadata":
        return "eager"
    if method == "init_forward_metadata_capture_cuda_graph":
        return "capture"
    if method == "init_forward_metadata_replay_cuda_graph":
        return "replay"
    if method == "init_forward_metadata_out_graph":
        in_capture = kwargs.get("in_capture", args[1] if len(args) > 1 else False)  # (batch, in_capture)
        return "capture" if in_capture else ("replay" if LOG.phase in ("capture", "replay") else None)
    return None


def _describe_batch(args: tuple, kwargs: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    batch = args[0] if args else None
    for value in list(args) + list(kwargs.values()):
        if hasattr(value, "forward_mode") and hasattr(value, "batch_size"):
            batch = value
            break
    if batch is not None and hasattr(batch, "forward_mode"):
        out["forward_mode"] = getattr(batch.forward_mode, "name", str(batch.forward_mode))
        out["batch_size"] = int(batch.batch_size)
    for key in ("bs", "num_tokens", "max_bs", "max_num_tokens", "forward_mode"):
        if key in kwargs:
            value = kwargs[key]
            out[key] = getattr(value, "name", value) if not isinstance(value, torch.Tensor) else list(value.shape)
    return out


def _tracked(cls_name: str, method: str, function: Callable) -> Callable:
    @functools.wraps(function)
    def wrapper(self, *args, **kwargs):
        outer = _DEPTH["value"] == 0
        if outer:
            phase = _phase_for(method, args, kwargs)
            if phase is not None:
                LOG.phase = phase
            LOG.marks.append({"phase": LOG.phase, "method": f"{cls_name}.{method}",
                              **_describe_batch(args, kwargs)})
        _DEPTH["value"] += 1
        try:
            if outer and LOG.phase == "capture" and method not in ("init_cuda_graph_state",):
                with cuda_on_cpu.capturing():
                    return function(self, *args, **kwargs)
            return function(self, *args, **kwargs)
        finally:
            _DEPTH["value"] -= 1

    wrapper.__cpu_kit_original__ = function
    return wrapper


def track_backend_classes(classes) -> None:
    """Wrap the metadata / forward methods of the backend classes (idempotent)."""
    for cls in classes:
        for method in TRACKED_METHODS:
            function = getattr(cls, method, None)
            if function is None or hasattr(function, "__cpu_kit_original__"):
                continue
            setattr(cls, method, _tracked(cls.__name__, method, function))


@contextlib.contextmanager
def numeric_checks_counted(counter: list[int]):
    """The kits' ``torch.testing.assert_close`` against the reference, counted, not enforced."""
    original = torch.testing.assert_close

    def assert_close(actual, expected, *args, **kwargs):
        counter[0] += 1

    torch.testing.assert_close = assert_close
    try:
        yield
    finally:
        torch.testing.assert_close = original


def run_case(spec: BackendSpec, mode: str, page_size: int, runner: Callable[..., None]) -> CaseResult:
    result = CaseResult(spec.name, mode, page_size)
    cuda_on_cpu.set_capability(spec.capability)
    LOG.clear()
    counter = [0]
    started = time.perf_counter()
    try:
        with torch.no_grad(), numeric_checks_counted(counter):
            runner(spec, mode, page_size)
    except CaseUnsupported as exc:
        result.status, result.error = "unsupported", str(exc)[:500]
    except Exception as exc:  # reported, the next case runs
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}"[:800] + "\n" + "".join(
            traceback.format_exception(exc, limit=-6))[-3000:]
    result.seconds = round(time.perf_counter() - started, 3)
    result.marks = list(LOG.marks)
    result.entries = [entry.as_json() for entry in LOG.clear()]
    result.numeric_checks_skipped = counter[0]
    if result.status == "ok" and not any(m["method"].endswith(("forward_extend", "forward_decode"))
                                         for m in result.marks) and mode != "IDLE":
        result.status, result.error = "error", "no forward_extend / forward_decode ran"
    return result
