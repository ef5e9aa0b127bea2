"""The FlashInfer entry points the runtime guard wraps, and how to read their arguments."""

from __future__ import annotations

from dataclasses import dataclass

from .launch_specs import (
    DecodePlanSpec,
    LaunchSpec,
    PrefillPlanSpec,
    TrtllmContextSpec,
    TrtllmDecodeSpec,
    TrtllmMlaDecodeSpec,
    TrtllmRaggedDeepseekSpec,
    WrapperRunSpec,
)


@dataclass(frozen=True)
class EntryPoint:
    """One guarded FlashInfer callable.

    ``module`` is where it is defined (``flashinfer.decode``); ``qualname`` is a
    function name or ``Class.method``; ``aliases`` are the class's
    ``functools.partialmethod`` aliases of that method (``run_return_lse``), which
    must be re-pointed at the guarded method.
    """

    module: str
    qualname: str
    spec: type[LaunchSpec]
    aliases: tuple[str, ...] = ()

    @property
    def is_method(self) -> bool:
        return "." in self.qualname


ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("flashinfer.decode", "trtllm_batch_decode_with_kv_cache", TrtllmDecodeSpec),
    EntryPoint("flashinfer.prefill", "trtllm_batch_context_with_kv_cache", TrtllmContextSpec),
    EntryPoint("flashinfer.prefill", "trtllm_ragged_attention_deepseek", TrtllmRaggedDeepseekSpec),
    EntryPoint("flashinfer.mla", "trtllm_batch_decode_with_kv_cache_mla", TrtllmMlaDecodeSpec),
    EntryPoint("flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper.plan", PrefillPlanSpec),
    EntryPoint(
        "flashinfer.prefill", "BatchPrefillWithPagedKVCacheWrapper.run", WrapperRunSpec, aliases=("run_return_lse",)
    ),
    EntryPoint("flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.plan", DecodePlanSpec),
    EntryPoint(
        "flashinfer.decode", "BatchDecodeWithPagedKVCacheWrapper.run", WrapperRunSpec, aliases=("run_return_lse",)
    ),
)
