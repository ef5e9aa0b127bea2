"""The FMHA kernels of the libraries the runtime guard knows: the one list.

``fmha-guard coverage`` (:mod:`fmha_guard.call_sites`) counts a call as an FMHA call
site when it resolves to one of these; whether the installed guard checks it is computed
from :data:`runtime_checks.kernel_specs.ENTRY_POINTS` (:func:`guarded_keys`). Listed are
the libraries' public attention functions and the planning calls whose metadata the
attention launch then reads (a wrapper's ``plan``, ``fast_decode_plan``, the
FlashAttention / FlashMLA scheduler metadata); not listed are what reads no attention
metadata (``merge_state``, RoPE, top-k, KV-cache writes, the DSA indexer's logits).

Two kinds of library:

* a **kernel library** (FlashInfer, ``sgl_kernel``, ``flash_mla``, ``vllm.vllm_flash_attn``,
  vLLM's FlashMLA copy) re-exports its functions across its modules
  (``flashinfer.trtllm_batch_decode_with_kv_cache`` is ``flashinfer.decode``'s,
  ``flashinfer.decode.trtllm_batch_decode_with_kv_cache_mla`` is ``flashinfer.mla``'s):
  a kernel is named by library and function (``flashinfer:xqa``), whatever module the
  call reaches it through (``flat``);
* an **engine interface** (SGLang's ``sglang.kernels.ops.attention.flash_attention``,
  vLLM's ``vllm.v1.attention.ops.flashmla``): the engine's own Python front of a kernel
  library, named by module and function. A call to one is checked when the guard patches
  that very function, or when what its body calls directly is all checked
  (:mod:`fmha_guard.call_sites` reads its source when it is in the audited files).

FlashInfer's paged-KV wrapper objects are called through methods; :data:`WRAPPERS` gives,
per class (FlashInfer 0.6 / 0.7), what each method reaches at run time: the method itself,
an alias attribute (``begin_forward = plan``, ``run_return_lse = partialmethod(run)``: the
guard checks it only when the entry point lists the alias), or another method it calls
(``forward`` calls ``self.run``).

Importing this module imports nothing outside the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Kernel",
    "KernelLibrary",
    "LIBRARIES",
    "WRAPPERS",
    "WRAPPER_METHODS",
    "DISTINCTIVE_METHODS",
    "FALLBACK_WRAPPERS",
    "kernel_of",
    "wrapper_methods",
    "guarded_keys",
    "method_checked",
]


@dataclass(frozen=True)
class KernelLibrary:
    """One library's FMHA functions and wrapper classes.

    ``packages``: module prefixes (``flashinfer`` covers ``flashinfer.decode``...).
    ``functions``: for a ``flat`` library, function names; else ``module.function``
    dotted names, modules written as in ``module_aliases``' values.
    """

    name: str
    packages: tuple[str, ...]
    functions: frozenset[str]
    flat: bool = True
    wrappers: frozenset[str] = frozenset()
    #: a module that re-exports another one's functions -> that module (non-flat libraries)
    module_aliases: Mapping[str, str] = field(default_factory=dict)
    #: engine interface (its source is followed one level) rather than kernel library
    interface: bool = False


@dataclass(frozen=True)
class Kernel:
    """One FMHA function, or one wrapper class (``method`` None) / wrapper method."""

    library: str
    #: function or wrapper class name (a flat library's), else ``module.function``
    name: str
    method: str | None = None
    wrapper: bool = False
    interface: bool = False
    flat: bool = True

    @property
    def key(self) -> str:
        """``flashinfer:trtllm_batch_decode_with_kv_cache``, ``flashinfer:BatchDecodeWithPagedKVCacheWrapper.run``,
        ``sglang.kernels.ops.attention.flash_attention.flash_attn_with_kvcache``."""
        base = f"{self.library}:{self.name}" if self.flat else self.name
        return f"{base}.{self.method}" if self.method else base

    def with_method(self, method: str) -> "Kernel":
        return Kernel(self.library, self.name, method, self.wrapper, self.interface, self.flat)


# ---------------------------------------------------------------- FlashInfer wrappers

#: how a method reaches the guard: ("method", name) is checked as itself; ("alias", name):
#: a class attribute aliasing ``name`` (checked when the entry point of ``name`` lists it);
#: ("calls", "m" or "Class.m"): the library's method calls that one
_DECODE = {
    "plan": ("method", "plan"), "begin_forward": ("alias", "plan"),
    "run": ("method", "run"), "run_return_lse": ("alias", "run"),
    "forward": ("calls", "run"), "forward_return_lse": ("calls", "run"),
}
_PREFILL = {**_DECODE, "forward_return_lse": ("calls", "run_return_lse")}
_PLAN_RUN = {"plan": ("method", "plan"), "run": ("method", "run")}

WRAPPERS: dict[str, tuple[str | None, dict[str, tuple[str, str]]]] = {
    # class: (base class whose methods it inherits, its own methods)
    "BatchDecodeWithPagedKVCacheWrapper": (None, _DECODE),
    "CUDAGraphBatchDecodeWithPagedKVCacheWrapper": ("BatchDecodeWithPagedKVCacheWrapper", {}),
    "BatchPrefillWithPagedKVCacheWrapper": (None, _PREFILL),
    "BatchPrefillWithRaggedKVCacheWrapper": (None, _PREFILL),
    "BatchAttentionWithAttentionSinkWrapper": ("BatchPrefillWithPagedKVCacheWrapper", {}),
    "BatchPrefillWithCausalBidirectionalRangesWrapper": (None, _DECODE),
    "BatchMLAPagedAttentionWrapper": (None, _PLAN_RUN),
    "MultiLevelCascadeAttentionWrapper": (
        None, {**_PLAN_RUN, "begin_forward": ("alias", "plan"), "forward": ("alias", "run")}),
    "BatchDecodeWithSharedPrefixPagedKVCacheWrapper": (None, {
        "begin_forward": ("calls", "BatchDecodeWithPagedKVCacheWrapper.begin_forward"),
        "forward": ("calls", "BatchDecodeWithPagedKVCacheWrapper.forward_return_lse")}),
    "BatchPrefillWithSharedPrefixPagedKVCacheWrapper": (None, {
        "begin_forward": ("calls", "BatchPrefillWithPagedKVCacheWrapper.begin_forward"),
        "forward": ("calls", "BatchPrefillWithPagedKVCacheWrapper.forward_return_lse")}),
    "BlockSparseAttentionWrapper": (
        None, {**_PLAN_RUN, "begin_forward": ("alias", "plan"), "forward": ("calls", "run")}),
    "VariableBlockSparseAttentionWrapper": (None, {**_PLAN_RUN, "forward": ("calls", "run")}),
    "BatchAttention": (None, _PLAN_RUN),
    "PODWithPagedKVCacheWrapper": (None, {**_PLAN_RUN, "begin_forward": ("alias", "plan")}),
    "BatchPODWithPagedKVCacheWrapper": (None, {**_PLAN_RUN, "begin_forward": ("alias", "plan")}),
}
"""FlashInfer's attention wrapper classes and what each method reaches (FlashInfer 0.6 / 0.7)."""

WRAPPER_METHODS = frozenset(m for _, methods in WRAPPERS.values() for m in methods)
"""Every wrapper method name (``plan``, ``begin_forward``, ``run``, ``forward``, ...)."""
DISTINCTIVE_METHODS = frozenset({"begin_forward", "forward_return_lse", "run_return_lse"})
"""Method names no other API shares: a call of one on an object of unknown class counts as
a wrapper call by name alone; the generic ones (``plan``, ``run``, ``forward``) only on a
receiver whose text says ``wrapper``."""
FALLBACK_WRAPPERS = (
    "BatchDecodeWithPagedKVCacheWrapper",
    "BatchPrefillWithPagedKVCacheWrapper",
    "BatchPrefillWithRaggedKVCacheWrapper",
    "BatchMLAPagedAttentionWrapper",
    "MultiLevelCascadeAttentionWrapper",
)
"""The classes a wrapper call of unknown class may be (matched "by method name": the
receiver's words, ``decode`` / ``prefill`` / ``ragged`` / ``paged`` / ``mla`` /
``cascade``, narrow them; it is checked only if every candidate is)."""


# ---------------------------------------------------------------- the libraries

_FLASHINFER_FUNCTIONS = frozenset({
    # decode / prefill / mla / xqa: trtllm-gen, xqa, fmha_v2, cuDNN, single-request kernels
    "trtllm_batch_decode_with_kv_cache", "trtllm_batch_context_with_kv_cache",
    "trtllm_ragged_attention_deepseek", "trtllm_batch_decode_with_kv_cache_mla",
    "trtllm_batch_decode_sparse_mla_dsv4", "trtllm_fmha_v2_prefill", "trtllm_prefill_with_kv_cache_mla",
    "xqa", "xqa_mla", "xqa_batch_decode_with_kv_cache", "xqa_batch_decode_with_kv_cache_mla",
    "single_decode_with_kv_cache", "single_prefill_with_kv_cache",
    "cudnn_batch_decode_with_kv_cache", "cudnn_batch_prefill_with_kv_cache",
    "fmha_varlen", "fmha_v2_prefill_deepseek", "sm110_gqa_decode",
    "batch_decode_sparse_mla_dsv4", "nvfp4_sparse_mla_decode", "cake_mla_varq_dcp_decode",
    # planning: a decode wrapper's plan without the wrapper's checks (SGLang / vLLM CUDA graphs)
    "fast_decode_plan",
})
_FLASH_ATTN = ("flash_attn_with_kvcache", "flash_attn_varlen_func")
_SGL_ATTENTION = "sglang.kernels.ops.attention"

LIBRARIES: tuple[KernelLibrary, ...] = (
    KernelLibrary("flashinfer", ("flashinfer",), _FLASHINFER_FUNCTIONS, wrappers=frozenset(WRAPPERS)),
    KernelLibrary("sgl_kernel", ("sgl_kernel",), frozenset({
        *_FLASH_ATTN, "get_scheduler_metadata",
        "flash_mla_with_kvcache", "flash_mla_sparse_fwd", "get_mla_metadata",
        "flash_mla_decode", "flash_mla_prefill", "cutlass_mla_decode",
    })),
    KernelLibrary("flash_mla", ("flash_mla",), frozenset({
        "flash_mla_with_kvcache", "flash_mla_sparse_fwd", "flash_attn_varlen_func",
        "get_mla_metadata", "get_mla_decoding_metadata",
    })),
    KernelLibrary("vllm_flash_attn", ("vllm.vllm_flash_attn",), frozenset({
        "vllm.vllm_flash_attn.flash_attn_interface.flash_attn_varlen_func",
        "vllm.vllm_flash_attn.flash_attn_interface.flash_attn_with_kvcache",
        "vllm.vllm_flash_attn.flash_attn_interface.get_scheduler_metadata",
        "vllm.vllm_flash_attn.flash_attn_interface.sparse_attn_func",
        "vllm.vllm_flash_attn.flash_attn_interface.sparse_attn_varlen_func",
        "vllm.vllm_flash_attn.cute.interface.flash_attn_func",
        "vllm.vllm_flash_attn.cute.interface.flash_attn_varlen_func",
        "vllm.vllm_flash_attn.cute.interface._flash_attn_fwd",
    }), flat=False, module_aliases={"vllm.vllm_flash_attn": "vllm.vllm_flash_attn.flash_attn_interface"}),
    KernelLibrary("vllm_flashmla", ("vllm.third_party.flashmla",), frozenset({
        "flash_mla_with_kvcache", "flash_mla_sparse_fwd", "flash_attn_varlen_func", "get_mla_metadata",
    })),
    # engine interfaces: the engines' own fronts of the libraries above
    KernelLibrary("sglang.kernels", (_SGL_ATTENTION,), frozenset({
        *(f"{_SGL_ATTENTION}.{module}.{fn}" for module in (
            "flash_attention", "flash_attention_v3", "flash_attention_v4", "flash_attention_v4_sm120")
          for fn in _FLASH_ATTN),
        f"{_SGL_ATTENTION}.flash_mla_interface.flash_mla_with_kvcache",
        f"{_SGL_ATTENTION}.flash_mla_interface.flash_mla_sparse_fwd",
        f"{_SGL_ATTENTION}.flash_mla_interface.flash_mla_mega_prefill",
        f"{_SGL_ATTENTION}.flash_mla_interface.flash_mla_mega_decode",
        f"{_SGL_ATTENTION}.flash_mla_interface.get_mla_metadata",
        f"{_SGL_ATTENTION}.flash_mla_sm120.flash_mla_with_kvcache_sm120",
        f"{_SGL_ATTENTION}.flash_mla_sm120.flashinfer_sparse_mla_forward",
    }), flat=False, interface=True),
    KernelLibrary("vllm.v1.attention.ops.flashmla", ("vllm.v1.attention.ops.flashmla",), frozenset({
        "vllm.v1.attention.ops.flashmla.flash_mla_with_kvcache_fp8",
        "vllm.v1.attention.ops.flashmla.get_mla_metadata_dense_fp8",
    }), flat=False, interface=True),
)
"""The FMHA kernels, per library (the one list ``fmha-guard coverage`` counts against)."""


def _library(qualified: str) -> tuple[KernelLibrary, str] | None:
    for library in LIBRARIES:
        for package in library.packages:
            if qualified == package or qualified.startswith(package + "."):
                return library, qualified[len(package) + 1:]
    return None


def kernel_of(qualified: str) -> Kernel | None:
    """The FMHA kernel (or wrapper class / method) a dotted name refers to, or ``None``.

    ``flashinfer.decode.trtllm_batch_decode_with_kv_cache`` and
    ``flashinfer.trtllm_batch_decode_with_kv_cache`` are one kernel;
    ``flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper`` is the wrapper class and
    ``...Wrapper.run`` its method (an entry point's ``module.qualname``)."""
    found = _library(qualified)
    if found is None:
        return None
    library, rest = found
    if not library.flat:
        module, _, name = qualified.rpartition(".")
        module = library.module_aliases.get(module, module)
        full = f"{module}.{name}"
        return Kernel(library.name, full, interface=library.interface, flat=False) if full in library.functions else None
    parts = rest.split(".") if rest else []
    for i, part in enumerate(parts):
        if part in library.wrappers:
            kernel = Kernel(library.name, part, wrapper=True)
            tail = parts[i + 1:]
            if not tail:
                return kernel
            return kernel.with_method(tail[0]) if len(tail) == 1 and tail[0] in wrapper_methods(part) else None
    if parts and parts[-1] in library.functions:
        return Kernel(library.name, parts[-1])
    return None


def wrapper_methods(cls: str) -> dict[str, tuple[str, str, str]]:
    """``method -> (how, target, defining class)`` of a wrapper class, inherited ones included."""
    base, own = WRAPPERS.get(cls, (None, {}))
    methods = dict(wrapper_methods(base)) if base else {}
    methods.update({m: (how, target, cls) for m, (how, target) in own.items()})
    return methods


def guarded_keys(entry_points: Iterable[object]) -> dict[str, str]:
    """Kernel key -> guarding entry point (``module.qualname``), for entry points with
    ``module``, ``qualname`` and ``aliases`` (``runtime_checks.kernel_specs.EntryPoint``).

    A method entry point guards its aliases too (``begin_forward`` for ``plan``)."""
    keys: dict[str, str] = {}
    for entry in entry_points:
        module, qualname = getattr(entry, "module"), getattr(entry, "qualname")
        name = f"{module}.{qualname}"
        kernel = kernel_of(name)
        if kernel is None:
            continue
        keys.setdefault(kernel.key, name)
        if kernel.method is not None:
            for alias in getattr(entry, "aliases", ()) or ():
                keys.setdefault(kernel.with_method(alias).key, name)
    return keys


def method_checked(cls: str, method: str, guarded: Mapping[str, str], _seen: frozenset[str] = frozenset()) -> str | None:
    """The entry point that checks ``cls.method`` at run time, or ``None``.

    A method is checked as itself, an alias as itself (the entry point of its target
    lists it), a method that calls another as what it calls."""
    methods = wrapper_methods(cls)
    if method not in methods or f"{cls}.{method}" in _seen:
        return None
    how, target, defining = methods[method]
    if how in ("method", "alias"):
        return guarded.get(Kernel("flashinfer", defining, method, wrapper=True).key)
    target_cls, _, target_method = target.rpartition(".")
    return method_checked(target_cls or cls, target_method, guarded, _seen | {f"{cls}.{method}"})
