"""Which recorded FlashInfer entry points the runtime guard checks (for the engine tests).

The kits record every FlashInfer function or wrapper method engine code calls, by its
defining module (``flashinfer.mla._core.trtllm_batch_decode_with_kv_cache_mla``). A call is
*guarded* when it reaches a guarded entry point of :data:`runtime_checks.kernel_specs.ENTRY_POINTS`:
the function itself, or a wrapper method that is the guarded one, one of its aliases
(``begin_forward``, ``run_return_lse``) or a deprecated method that calls it
(``forward`` / ``forward_return_lse`` call ``run`` / ``run_return_lse``).
"""

from __future__ import annotations

from runtime_checks.kernel_specs import ENTRY_POINTS

#: wrapper methods that call the guarded one: name -> the guarded method it reaches
CALLS_INTO = {"forward": "run", "forward_return_lse": "run", "run_return_lse": "run", "begin_forward": "plan"}

#: FlashInfer entry points an engine calls that launch no FMHA kernel on index metadata
NOT_FMHA = {
    "__init__": "a wrapper's constructor",
    "flashinfer.cascade.merge_state": "merges two partial outputs by their LSE: no index metadata",
    "flashinfer.xqa.xqa": "called by FlashInfer's own xqa_batch_decode_with_kv_cache, which is checked",
}


def _guarded_qualnames() -> set[str]:
    names = set()
    for entry in ENTRY_POINTS:
        if not entry.module.startswith("flashinfer"):
            continue
        names.add(entry.qualname)
        if entry.is_method:
            cls, _, method = entry.qualname.partition(".")
            names.update(f"{cls}.{alias}" for alias in entry.aliases)
            names.update(f"{cls}.{caller}" for caller, callee in CALLS_INTO.items() if callee == method)
    return names


GUARDED = frozenset(_guarded_qualnames())


def classify(recorded: str) -> str:
    """``"guarded"``, ``"not-fmha"`` or ``"unguarded"`` for a recorded FlashInfer entry name."""
    parts = recorded.split(".")
    if parts[-1] == "__init__" or recorded in NOT_FMHA:
        return "not-fmha"
    if ".".join(parts[-1:]) in GUARDED or ".".join(parts[-2:]) in GUARDED:
        return "guarded"
    return "unguarded"
