"""Which Python entry points the vLLM kit records, and the runtime guard hookup.

Each entry is ``(module, attribute, mode)``: ``pass`` runs the real Python body (down
to the compiled op, recorded by :mod:`tests.engines.vllm_recorders`), ``terminal``
records and returns without running it (the body is an FMHA Triton kernel: running
attention itself in the Triton interpreter would take minutes and tells the guard
nothing; the output buffer stays as the caller allocated it). A name missing from a
version is skipped.

FlashInfer's wrappers and ``trtllm_*`` / ``xqa`` functions run their real Python
bodies; their JIT / cubin kernel modules are replaced by
:mod:`tests.engines.flashinfer_recorders` (shared with the SGLang kit) when it is
installed before vLLM imports FlashInfer. Their entry-point log
(:data:`tests.engines.kernel_calls.LOG`) is merged into the kit's records: the launches
under an entry the kit recorded attach to it, other entries are added as they are.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from . import vllm_recorders as rec

PYTHON_ENTRY_POINTS: tuple[tuple[str, str, str], ...] = (
    # vllm-flash-attn (FA2 / FA3): Python wrappers over torch.ops._vllm_fa{2,3}_C
    ("vllm.vllm_flash_attn.flash_attn_interface", "flash_attn_varlen_func", "pass"),
    ("vllm.vllm_flash_attn.flash_attn_interface", "get_scheduler_metadata", "pass"),
    # FlashMLA (vllm.third_party.flashmla): wrappers over torch.ops._flashmla_C
    ("vllm.third_party.flashmla.flash_mla_interface", "get_mla_metadata", "pass"),
    ("vllm.third_party.flashmla.flash_mla_interface", "flash_mla_with_kvcache", "pass"),
    ("vllm.v1.attention.ops.flashmla", "get_mla_metadata_dense_fp8", "pass"),
    ("vllm.v1.attention.ops.flashmla", "flash_mla_with_kvcache_fp8", "pass"),
    # vLLM's own Triton attention kernels (the FMHA itself: terminal)
    ("vllm.v1.attention.ops.triton_unified_attention", "unified_attention", "terminal"),
    ("vllm.v1.attention.ops.triton_prefill_attention", "context_attention_fwd", "terminal"),
    ("vllm.v1.attention.ops.triton_decode_attention", "decode_attention_fwd", "terminal"),
    ("vllm.v1.attention.ops.merge_attn_states", "merge_attn_states", "terminal"),
    # vLLM's wrappers around FlashInfer (xqa on Hopper, trtllm-gen on Blackwell)
    ("vllm.utils.flashinfer", "flashinfer_xqa_batch_decode_with_kv_cache", "pass"),
    ("vllm.utils.flashinfer", "flashinfer_trtllm_batch_decode_with_kv_cache", "pass"),
    # FlashInfer functions
    ("flashinfer.decode", "trtllm_batch_decode_with_kv_cache", "pass"),
    ("flashinfer.decode", "xqa_batch_decode_with_kv_cache", "pass"),
    ("flashinfer.decode", "fast_decode_plan", "pass"),
    ("flashinfer.prefill", "trtllm_batch_context_with_kv_cache", "pass"),
    ("flashinfer.prefill", "trtllm_ragged_attention_deepseek", "pass"),
    ("flashinfer.mla", "trtllm_batch_decode_with_kv_cache_mla", "pass"),
    ("flashinfer.xqa", "xqa", "pass"),
    ("flashinfer.xqa", "xqa_mla", "pass"),
    ("flashinfer.cascade", "merge_state", "terminal"),
)

#: FlashInfer wrapper classes whose plan / run (and aliases) are recorded
FLASHINFER_WRAPPERS: tuple[tuple[str, str], ...] = (
    ("flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper"),
    ("flashinfer.prefill", "BatchPrefillWithRaggedKVCacheWrapper"),
    ("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper"),
    ("flashinfer.mla", "BatchMLAPagedAttentionWrapper"),
    ("flashinfer.cascade", "MultiLevelCascadeAttentionWrapper"),
)
WRAPPER_METHODS = ("plan", "run", "run_return_lse", "forward", "forward_return_lse")


def _terminal(*args, **kwargs):
    return None


def install() -> dict[str, list[str]]:
    """Wrap every entry point present in this version; what was wrapped."""
    import importlib

    from pathlib import Path

    from . import flashinfer_recorders  # shared with the SGLang kit
    from .kernel_calls import LOG

    wrapped, missing = [], []
    flashinfer_recorders.install()
    LOG.kit_roots = tuple(sorted(set(LOG.kit_roots) | {str(Path(__file__).parent)}))
    backend = "tests.engines.flashinfer_recorders"
    for module_name, attr, mode in PYTHON_ENTRY_POINTS:
        ok = rec.wrap_function(module_name, attr, fake=_terminal if mode == "terminal" else None)
        (wrapped if ok else missing).append(f"{module_name}.{attr}")
    for module_name, cls_name in FLASHINFER_WRAPPERS:
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{cls_name}")
            continue
        for method in WRAPPER_METHODS:
            if method in cls.__dict__ and rec.wrap_method(cls, method):
                wrapped.append(f"{module_name}.{cls_name}.{method}")
    INSTALLED.update(wrapped=wrapped, missing=missing, flashinfer_kernels=[backend])
    return INSTALLED


INSTALLED: dict[str, Any] = {}


# --------------------------------------------------------------------------- guard

def arm_guard() -> dict[str, Any] | None:
    """With ``FMHA_GUARD`` set: install the runtime guard (before vLLM imports FlashInfer)."""
    level = os.environ.get("FMHA_GUARD", "").strip()
    if not level or level.lower() == "off":
        return None
    info: dict[str, Any] = {"FMHA_GUARD": level, "FMHA_GUARD_ACTION": os.environ.get("FMHA_GUARD_ACTION", "raise")}
    try:
        import runtime_checks

        runtime_checks.install()
        info["installed"] = bool(runtime_checks.is_installed())
    except Exception as exc:  # noqa: BLE001 - the guard is being restructured: report, go on
        info["install_error"] = f"{type(exc).__name__}: {exc}"
    return info


def _guard_counters() -> dict[str, Any] | None:
    state_mod = sys.modules.get("runtime_checks.state")
    if state_mod is None:
        return None
    state = state_mod.STATE
    return {
        "launches": state.launches,
        "shape_memo_hits": getattr(state, "shape_memo_hits", 0),
        "value_memo_hits": getattr(state, "value_memo_hits", 0),
        "warned": getattr(state, "warned", 0),
        "internal_errors": sorted(getattr(state, "internal_errors", ())),
    }


def guard_report(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """Totals and, per recorded entry point, what the guard did while it ran."""
    if info is None:
        return None
    per_entry: dict[str, dict[str, Any]] = {}
    for call in rec.CALLS:
        if call.get("layer") != "python" or "guard" not in call and "entry" not in call:
            continue
        delta = call.get("guard") or {}
        entry = per_entry.setdefault(call["entry"], {"calls": 0, "launches": 0, "warned": 0,
                                                     "internal_errors": set()})
        entry["calls"] += 1
        entry["launches"] += delta.get("launches", 0)
        entry["warned"] += delta.get("warned", 0)
        entry["internal_errors"].update(delta.get("internal_errors", ()))
    for entry in per_entry.values():
        entry["internal_errors"] = sorted(entry["internal_errors"])
    from . import guard_probe

    return {**info, "status": guard_probe.guard_status(), "totals": _guard_counters(),
            "per_entry_point": per_entry}
