"""Lint configuration: the names the rules reason about, and which rules run.

One list of ``fnmatch`` patterns per concept, each a :class:`LintConfig` field with a
default here, each extended by its own ``extra-*`` key in ``setup.cfg``
(``[fmha-guard]``) or ``pyproject.toml`` (``[tool.fmha-guard]``):

- ``extra-kernel-calls``: FMHA kernel entry points (GR001);
- ``extra-ignored-kernel-args``: kernel keywords that carry no batch extent (GR001);
- ``extra-replan-calls``: calls that re-plan the metadata (GR001);
- ``extra-forward-methods``: per-layer forward-time methods (GR001, GR003, GR004);
- ``extra-planning-methods``: metadata planners, never forward-time (GR001, GR003, GR004);
- ``extra-decode-kernels``: kernels that assume one uniform ``q_len_per_req`` (GR003, GR004);
- ``extra-pool-attributes``: the model runner's swappable KV pool (GR002, GR102);
- ``extra-swap-points``: ``self.<pool> = model_runner.<pool>`` aliases kept current (GR002);
- ``extra-immutable-pool-facts``: pool facts a swap never changes (GR002);
- ``extra-padded-counts``: names of CUDA-graph-padded counts, vLLM profile (GR001, GR101);
- ``extra-padding-calls``: calls that return a padded count, vLLM profile (GR001, GR101);
- ``extra-swap-aware-markers``: names that show a resolver handles the swap (GR002, GR102);
- ``extra-mode-planners``: planning paths run for every forward mode (GR010);
- ``extra-graph-mode-planners``: planning paths run for the CUDA-graph modes (GR010);
- ``extra-token-slot-sources`` / ``extra-page-table-args`` / ``extra-page-table-positional`` /
  ``extra-page-size-names``: token-slot attributes, page-table arguments, page-size names (GR006);
- ``extra-swa-allocator-types`` / ``extra-allocator-names`` / ``extra-swa-translators``: the
  allocator, and the full->SWA maps only the kernel's pool may answer (GR011);
- ``extra-graph-capture-methods`` / ``extra-graph-replay-methods`` / ``extra-graph-shared-methods``:
  CUDA-graph capture, replay, and shared ``if in_capture:`` metadata methods (GR004, GR008);
- ``extra-cumulative-arrays``: non-decreasing offset arrays (``cu_seqlens``, ``indptr``) (GR009).

::

    [fmha-guard]
    extra-kernel-calls = my_paged_attention, _launch_*
    extra-forward-methods = run_attention
    extra-immutable-pool-facts = kv_cache_dim

Rule selection lives in the same section::

    [fmha-guard]
    select = GR001, GR002, GR101
    ignore = GR102
    per-path-ignores =
        tests/*: GR001, GR002
        legacy_backend.py: GR002

``select`` / ``ignore`` take codes or names (the command line's ``--select`` /
``--ignore`` replace them); ``per-path-ignores`` maps a glob, matched against the path
relative to the config file's directory (a glob without ``/`` also matches the file
name alone), to codes. In ``pyproject.toml`` it is a table:
``per-path-ignores = {"tests/*" = ["GR001"]}``. ``profile = sglang | vllm | auto`` picks
the engine whose names the rules expect (:mod:`lint_rules.engine_profile`; ``auto``, the
default, decides per file from the engine packages it imports). Any other key is a
:class:`ConfigError` that names the file, the section and the key.

Each file gets the configuration of the nearest ``pyproject.toml`` / ``setup.cfg`` with
an fmha-guard section above it (:class:`ConfigResolver`, one lookup per directory), or
the one file ``--config`` names.

Neither libcst nor pydantic is imported here: a fully cached audit must start fast.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_KERNEL_CALLS: tuple[str, ...] = (
    # FlashInfer trtllm-gen / xqa entry points (flashinfer.prefill / decode / mla / xqa)
    "trtllm_batch_context_with_kv_cache",
    "trtllm_batch_decode_with_kv_cache",
    "trtllm_batch_decode_with_kv_cache_mla",
    "trtllm_ragged_attention_deepseek",
    "trtllm_fmha_v2_prefill",
    "xqa",
    "xqa_mla",
    "xqa_batch_decode_with_kv_cache",
    "xqa_batch_decode_with_kv_cache_mla",
    "cutlass_mla_decode",
    # FlashAttention (fa2/fa3/fa4) and FlashMLA
    "flash_attn_with_kvcache",
    "flash_attn_varlen_func",
    "flash_mla_with_kvcache",
    "flash_mla_sparse_fwd",
    "_flash_mla_with_kvcache",  # SGLang binds a partial of flash_mla_with_kvcache
    # AMD aiter / triton unified kernels and SGLang's own triton kernels
    "unified_attention",
    "unified_attention_3d_mtp_decode_func",
    "unified_attention_3d_mtp_ragged_func",
    "mha_batch_prefill_func",
    "flash_attn_varlen_fp8_pertensor_func",
    "mla_decode_fwd",
    "mla_prefill_fwd",
    "paged_attention_ragged",
    "pa_decode_gluon",
    "extend_attention_fwd",
    "extend_attention_fwd_unified",
    "decode_attention_fwd",
    "attention_decode_fp8",
    "attention_decode_bf16",
    # private launch helpers of a backend class (SGLang's `_run_prefill_kernel`, ...)
    "_run_*_kernel",
    "_launch_*_kernel",
)

#: Calls that re-plan or re-check the metadata for the batch as it is now: after one
#: of them (or after ``if <size mismatch>: <re-plan or raise>``) the sizes agree.
DEFAULT_REPLAN_CALLS: tuple[str, ...] = (
    "init_forward_metadata*",
    "*rebuild*metadata*",
    "*_dp_padding",
)

#: A ``self`` helper that reads the pool but also consults these knows about the
#: draft worker's swap (SGLang #27491's ``_resolve_swa_kv_pool``): not stale state.
DEFAULT_SWAP_AWARE_MARKERS: tuple[str, ...] = ("is_frozen_kv_mtp", "token_to_kv_pool_allocator")

#: Kernel keyword arguments that never carry a batch extent: scalar or per-head scale
#: factors (``softmax_scale``, ``bmm1_scale``, ``k_scale``) and boolean switches
#: (``enable_lean=policy(bs)`` picks a code path, sizes nothing). FlashAttention's
#: ``q_descale`` / ``k_descale`` / ``v_descale`` are *not* among them: FA3/FA4 check their
#: first dimension against the batch that ``cu_seqlens_q`` implies (``(batch_size,
#: num_heads_k)``), so one sized from a padded batch is rejected (SGLang #37785; vLLM
#: sizes them from ``cu_seqlens_q.shape[0] - 1``).
DEFAULT_IGNORED_KERNEL_ARGS: tuple[str, ...] = (
    "scale",
    "*_scale",
    "*_scale_*",
    "*scale_factor*",
    "enable_*",
    "use_*",
    "is_*",
)

#: Names of padded counts (vLLM profile, GR001 / GR101): CUDA-graph padding pads the
#: token count to a captured size (``num_input_tokens``: "number of tokens including
#: padding") and, for full graphs, the request count (``num_reqs_padded``), while the
#: metadata the kernel reads holds ``num_actual_tokens`` / ``num_reqs`` (vLLM #25265,
#: #28579, #34187). A read ``<metadata>.<name>`` or a parameter so named is a padded size.
DEFAULT_PADDED_COUNTS: tuple[str, ...] = (
    "num_input_tokens",
    "num_tokens_padded",
    "num_reqs_padded",
    "num_tokens_after_padding",
    "num_padded_tokens",
    "num_padded_reqs",
    "num_padded_decodes",
    "num_decodes_padded",
    "padded_num_tokens",
    "padded_num_reqs",
)

#: Calls whose result is a CUDA-graph-padded count (vLLM 0.10-0.12 builders:
#: ``num_input_tokens = self.vllm_config.pad_for_cudagraph(num_decodes)``) (GR001, GR101).
DEFAULT_PADDING_CALLS: tuple[str, ...] = ("pad_for_cudagraph", "pad_for_cudagraphs")

#: Methods of an attention backend that run once per layer at forward time.
DEFAULT_FORWARD_METHODS: tuple[str, ...] = ("forward", "forward_*", "_forward_*")

#: Methods that plan metadata: the eager planner, CUDA-graph capture / replay, and the
#: ``_build_*`` / ``_apply_*`` bodies they share. They run before DP padding is final or
#: own the CUDA-graph buffers, so a batch size read there is the planner's business
#: (GR001); a draft-extend branch there builds metadata for that mode (GR003).
DEFAULT_PLANNING_METHODS: tuple[str, ...] = (
    "init_forward_metadata*",
    "*cuda_graph*",
    "*_metadata",
    "*_metadata_*",
    "_apply_*",
    "_build_*",
    # vLLM's attention metadata builders (``*MetadataBuilder.build``, ``_build_decode``,
    # ``build_for_cudagraph_capture``): they size the metadata, never launch a kernel
    "build",
    "build_*",
    "*cudagraph*",
)

#: Kernels that assume one uniform ``q_len_per_req`` for every request of the batch (GR003).
DEFAULT_DECODE_KERNELS: tuple[str, ...] = (
    "trtllm_batch_decode_with_kv_cache",
    "trtllm_batch_decode_with_kv_cache_mla",
    "xqa",
    "xqa_*",
    "cutlass_mla_decode",
    "_run_fixed_q_len_decode",
    "*_fixed_q_len_*",
)

#: Planning paths that run for every forward mode (GR010): one method, or ``a+b``, a path
#: made of two methods run one after the other (SGLang 0.5.13+: ``init_forward_metadata``
#: defaults to ``_out_graph`` + ``_in_graph``).
DEFAULT_MODE_PLANNERS: tuple[str, ...] = (
    "init_forward_metadata",
    "init_forward_metadata_out_graph+init_forward_metadata_in_graph",
)

#: Planning paths that run only for the CUDA-graph modes (DECODE, IDLE, TARGET_VERIFY,
#: draft extend) before a capture (GR010). Replay runs no Python forward code: a state
#: test there never happens, so replay planners are not paths.
DEFAULT_GRAPH_MODE_PLANNERS: tuple[str, ...] = ("init_forward_metadata_capture_cuda_graph",)

#: Attributes of the model runner that name the KV pool a draft worker may swap.
DEFAULT_POOL_ATTRIBUTES: tuple[str, ...] = ("token_to_kv_pool",)

#: ``self.<name> = model_runner.<pool attribute>`` with the same name is the
#: engine's swap point (it is rebound when the pool changes), not a stale copy.
DEFAULT_SWAP_POINTS: tuple[str, ...] = ("token_to_kv_pool",)

#: Pool facts that a swap never changes: reading them in ``__init__`` is safe.
DEFAULT_IMMUTABLE_POOL_FACTS: tuple[str, ...] = (
    "dtype",
    "*_dtype",
    "*_fp8",
    "store_dtype",
    "head_num",
    "head_dim",
    "v_head_dim",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "page_size",
    "device",
    "kv_cache_dim",
    "*layout*",
    "*vec5d*",
    "*interleaved*",
    "*quant_method*",
    "present_ratios",
    "get_v_head_dim",
    "get_head_dim",
    "layer_num",
    "start_layer",
    "end_layer",
)


#: Attributes holding token-slot indices (KV-pool slot per token, not page ids): SGLang's
#: ``req_to_token`` rows and ``out_cache_loc``, vLLM's ``slot_mapping`` (GR006).
DEFAULT_TOKEN_SLOT_SOURCES: tuple[str, ...] = ("req_to_token", "out_cache_loc", "slot_mapping")

#: Keyword arguments that take a page table / block table in page units (GR006):
#: FA3 / FlashInfer ``page_table``, FlashMLA ``block_table``, trtllm ``block_tables``.
DEFAULT_PAGE_TABLE_ARGS: tuple[str, ...] = ("page_table", "block_table", "block_tables")

#: ``function:index`` pairs: a positional argument that takes a page table (GR006).
DEFAULT_PAGE_TABLE_POSITIONAL: tuple[str, ...] = ("make_local_attention_virtual_batches:3",)

#: Names of the page size: ``x // <one of these>`` converts token slots to page ids (GR006).
DEFAULT_PAGE_SIZE_NAMES: tuple[str, ...] = ("page_size", "*_page_size", "block_size", "*_block_size", "PAGE_SIZE")

#: Allocator types whose ``isinstance`` test does not tell what the kernel's pool is (GR011).
DEFAULT_SWA_ALLOCATOR_TYPES: tuple[str, ...] = ("*SWA*Allocator*",)

#: Names of the KV allocator (an object other than the pool the kernel reads, GR011).
DEFAULT_ALLOCATOR_NAMES: tuple[str, ...] = ("*allocator*",)

#: Token-level full->SWA maps: only the pool the kernel reads may answer them (GR011).
DEFAULT_SWA_TRANSLATORS: tuple[str, ...] = ("translate_loc_from_full_to_swa", "full_to_swa_index_mapping")

#: CUDA-graph capture-time metadata builders: SGLang's legacy capture method, vLLM's
#: ``build_for_cudagraph_capture`` (GR004, GR008).
DEFAULT_GRAPH_CAPTURE_METHODS: tuple[str, ...] = (
    "init_forward_metadata_capture_cuda_graph",
    "build_for_cudagraph_capture",
)

#: CUDA-graph replay-time metadata updaters (SGLang's legacy replay method) (GR004, GR008).
DEFAULT_GRAPH_REPLAY_METHODS: tuple[str, ...] = ("init_forward_metadata_replay_cuda_graph",)

#: One method for both paths, split by an ``if in_capture:`` flag (SGLang >= 0.5.13) (GR004, GR008).
DEFAULT_GRAPH_SHARED_METHODS: tuple[str, ...] = ("init_forward_metadata_out_graph",)

#: Cumulative (non-decreasing) offset arrays: a padded tail must repeat the last value (GR009).
DEFAULT_CUMULATIVE_ARRAYS: tuple[str, ...] = (
    "*cu_seqlens*",
    "*cu_seq_lens*",
    "*indptr*",
    "*query_start_loc*",
    "*num_splits*",
)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``name`` matches one of the ``fnmatch`` ``patterns`` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def normalize_code(key: str) -> str:
    """A rule key as the registry spells it: ``gr001`` -> ``GR001``; a name stays as given."""
    return key.upper() if key[:2].upper() == "GR" and key[2:].isdigit() else key


class _NameTest:
    """A method ``config.is_<concept>(name)``: does ``name`` match the field's patterns?"""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, config: "LintConfig | None", owner: type) -> "Callable[[str], bool]":
        if config is None:
            return self  # type: ignore[return-value]
        patterns = getattr(config, self.field)
        return lambda name: matches(name, patterns)


@dataclass(frozen=True)
class LintConfig:
    """Names the rules reason about (tuples of fnmatch patterns), and rule selection.

    One field per concept; the config file extends each with ``extra-<field>`` (dashes
    for underscores: ``extra-decode-kernels``). ``select`` / ``ignore``: rule codes or
    names from the config file (``None``: not set); ``per_path_ignores``: ``(glob,
    codes)`` pairs. The engine applies those; the rules read only the name lists.
    """

    kernel_calls: tuple[str, ...] = DEFAULT_KERNEL_CALLS
    ignored_kernel_args: tuple[str, ...] = DEFAULT_IGNORED_KERNEL_ARGS
    replan_calls: tuple[str, ...] = DEFAULT_REPLAN_CALLS
    swap_aware_markers: tuple[str, ...] = DEFAULT_SWAP_AWARE_MARKERS
    forward_methods: tuple[str, ...] = DEFAULT_FORWARD_METHODS
    planning_methods: tuple[str, ...] = DEFAULT_PLANNING_METHODS
    decode_kernels: tuple[str, ...] = DEFAULT_DECODE_KERNELS
    pool_attributes: tuple[str, ...] = DEFAULT_POOL_ATTRIBUTES
    swap_points: tuple[str, ...] = DEFAULT_SWAP_POINTS
    immutable_pool_facts: tuple[str, ...] = DEFAULT_IMMUTABLE_POOL_FACTS
    padded_counts: tuple[str, ...] = DEFAULT_PADDED_COUNTS
    padding_calls: tuple[str, ...] = DEFAULT_PADDING_CALLS
    #: Which engine's names the rules expect (:mod:`lint_rules.engine_profile`): ``sglang``,
    #: ``vllm``, or ``auto`` (per file, from the engine packages it imports).
    profile: str = "auto"
    mode_planners: tuple[str, ...] = DEFAULT_MODE_PLANNERS
    graph_mode_planners: tuple[str, ...] = DEFAULT_GRAPH_MODE_PLANNERS
    token_slot_sources: tuple[str, ...] = DEFAULT_TOKEN_SLOT_SOURCES
    page_table_args: tuple[str, ...] = DEFAULT_PAGE_TABLE_ARGS
    page_table_positional: tuple[str, ...] = DEFAULT_PAGE_TABLE_POSITIONAL
    page_size_names: tuple[str, ...] = DEFAULT_PAGE_SIZE_NAMES
    swa_allocator_types: tuple[str, ...] = DEFAULT_SWA_ALLOCATOR_TYPES
    allocator_names: tuple[str, ...] = DEFAULT_ALLOCATOR_NAMES
    swa_translators: tuple[str, ...] = DEFAULT_SWA_TRANSLATORS
    graph_capture_methods: tuple[str, ...] = DEFAULT_GRAPH_CAPTURE_METHODS
    graph_replay_methods: tuple[str, ...] = DEFAULT_GRAPH_REPLAY_METHODS
    graph_shared_methods: tuple[str, ...] = DEFAULT_GRAPH_SHARED_METHODS
    cumulative_arrays: tuple[str, ...] = DEFAULT_CUMULATIVE_ARRAYS
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    per_path_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Where it was read: the file and its section (error messages), and the directory
    #: the ``per-path-ignores`` globs are relative to. Not compared: two files saying the
    #: same thing are the same configuration (``cache_key`` still tells them apart).
    origin: str | None = field(default=None, compare=False)
    section: str | None = field(default=None, compare=False)
    base_dir: str | None = field(default=None, compare=False)
    #: The absolute directory the engine's paths are relative to (the audited root), set
    #: per target by :meth:`anchored`; ``None``: paths are matched as given.
    anchor: str | None = field(default=None, compare=False)

    is_kernel_call = _NameTest("kernel_calls")
    is_ignored_kernel_arg = _NameTest("ignored_kernel_args")
    is_replan_call = _NameTest("replan_calls")
    is_swap_aware_marker = _NameTest("swap_aware_markers")
    is_planning_method = _NameTest("planning_methods")
    is_decode_kernel = _NameTest("decode_kernels")
    is_pool_attribute = _NameTest("pool_attributes")
    is_swap_point = _NameTest("swap_points")
    is_immutable_pool_fact = _NameTest("immutable_pool_facts")
    is_padded_count = _NameTest("padded_counts")
    is_padding_call = _NameTest("padding_calls")
    is_token_slot_source = _NameTest("token_slot_sources")
    is_page_table_arg = _NameTest("page_table_args")
    is_page_size_name = _NameTest("page_size_names")
    is_swa_allocator_type = _NameTest("swa_allocator_types")
    is_allocator_name = _NameTest("allocator_names")
    is_swa_translator = _NameTest("swa_translators")
    is_graph_capture_method = _NameTest("graph_capture_methods")
    is_graph_replay_method = _NameTest("graph_replay_methods")
    is_graph_shared_method = _NameTest("graph_shared_methods")
    is_cumulative_array = _NameTest("cumulative_arrays")

    def __post_init__(self) -> None:
        for f in fields(self):  # lists from callers become tuples (hashable, picklable)
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def ignored_for(self, path: str) -> frozenset[str]:
        """Codes (upper-cased) that ``per_path_ignores`` switches off for ``path``: a path
        relative to :attr:`anchor`, matched relative to :attr:`base_dir` (the config
        file's directory) when both are known, as given otherwise."""
        if not self.per_path_ignores:
            return frozenset()
        if self.base_dir is not None and self.anchor is not None:
            path = os.path.relpath(os.path.join(self.anchor, path), self.base_dir).replace(os.sep, "/")
        base = path.rsplit("/", 1)[-1]
        out: set[str] = set()
        for glob, codes in self.per_path_ignores:
            if fnmatch.fnmatchcase(path, glob) or ("/" not in glob and fnmatch.fnmatchcase(base, glob)):
                out.update(c.upper() for c in codes)
        return frozenset(out)

    def anchored(self, anchor: str | None) -> "LintConfig":
        """This configuration for paths relative to ``anchor`` (an absolute directory;
        ``None`` for archive members, matched as they are)."""
        if not self.per_path_ignores or self.base_dir is None or anchor == self.anchor:
            return self
        return replace(self, anchor=anchor)

    def where(self, key: str) -> str:
        """``setup.cfg: [fmha-guard] select``: where a key of this configuration was read."""
        return f"{self.origin}: [{self.section}] {key}" if self.origin else key

    def cache_key(self) -> str:
        """A stable text of every field (the result cache's key)."""
        return repr(tuple((f.name, getattr(self, f.name)) for f in fields(self)))

    def is_forward_method(self, name: str) -> bool:
        """True for a per-layer forward-time method that is not a metadata planner."""
        return matches(name, self.forward_methods) and not matches(name, self.planning_methods)

    @cached_property
    def pool_words(self) -> tuple[str, ...]:
        """Literal words a file must contain for the pool rules to look at it."""
        return tuple(p.split("*")[0] for p in self.pool_attributes if p.split("*")[0])

    @classmethod
    def extended(cls, **extra: list[str]) -> "LintConfig":
        """The defaults plus ``extra`` names per field (``kernel_calls=[...]``)."""
        base = cls()
        values = {k: tuple(getattr(base, k)) + tuple(v) for k, v in extra.items() if v}
        return cls(**values)


_SELECTION_KEYS = ("select", "ignore", "per-path-ignores", "profile")
#: ``extra-kernel-calls`` -> ``kernel_calls``: one key per name-list field.
_KEYS = {
    f"extra-{f.name.replace('_', '-')}": f.name
    for f in fields(LintConfig)
    if f.name.replace("_", "-") not in _SELECTION_KEYS and f.compare
}
#: The section each kind of file holds: ``[tool.fmha-guard]`` in TOML, ``[fmha-guard]`` in INI.
TOML_SECTION, INI_SECTION = "tool.fmha-guard", "fmha-guard"


class ConfigError(ValueError):
    """A configuration file that cannot be read, names an unknown key or holds a
    malformed value; the message names the file, the section and the key."""


def _split(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.replace("\n", ",").split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where}: expected a list of names, got {value!r}")


def _codes(value: object, where: str) -> tuple[str, ...]:
    return tuple(normalize_code(n) for n in _split(value, where))


#: The values of the ``profile`` key (see :mod:`lint_rules.engine_profile`).
PROFILES = ("auto", "sglang", "vllm")


def _profile(value: object, where: str) -> str:
    if not isinstance(value, str) or value.strip().lower() not in PROFILES:
        raise ConfigError(f"{where}: expected one of {', '.join(PROFILES)}, got {value!r}")
    return value.strip().lower()


def _per_path(value: object, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    pairs: list[tuple[str, object]] = []
    if isinstance(value, dict):  # pyproject.toml table
        pairs = list(value.items())
    elif isinstance(value, str):  # setup.cfg: one "glob: CODES" per line
        for line in value.splitlines():
            if not line.strip():
                continue
            if ":" not in line:
                raise ConfigError(f"{where}: expected 'GLOB: CODES', got {line.strip()!r}")
            glob, codes = line.rsplit(":", 1)
            pairs.append((glob.strip(), codes))
    else:
        raise ConfigError(f"{where}: expected a table of glob = codes, got {value!r}")
    out = []
    for glob, codes in pairs:
        glob = glob.strip().removeprefix("./")
        parsed = _codes(codes, f"{where} {glob!r}")
        if not glob or not parsed:
            raise ConfigError(f"{where}: {glob!r} needs a glob and at least one code")
        out.append((glob, parsed))
    return tuple(out)


def _from_mapping(section: dict[str, object], origin: str, name: str, base_dir: str | None) -> LintConfig:
    extra: dict[str, list[str]] = {}
    selection: dict[str, object] = {}
    for key, value in section.items():
        norm = key.replace("_", "-")
        where = f"{origin}: [{name}] {key}"
        if norm in ("select", "ignore"):
            selection[norm] = _codes(value, where)
            continue
        if norm == "per-path-ignores":
            selection["per_path_ignores"] = _per_path(value, where)
            continue
        if norm == "profile":
            selection["profile"] = _profile(value, where)
            continue
        field_name = _KEYS.get(norm)
        if field_name is None:
            known = ", ".join([*_SELECTION_KEYS, *_KEYS])
            raise ConfigError(f"{origin}: [{name}]: unknown key {key!r}; known keys: {known}")
        extra[field_name] = _split(value, where)
    base = LintConfig.extended(**extra)
    where_from = {"origin": origin, "section": name, "base_dir": base_dir}
    return LintConfig(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **selection, **where_from})


def _is_toml(path: Path) -> bool:
    return path.suffix == ".toml"


def read_config_file(path: Path, base_dir: Path | None = None, *, required: bool = False) -> LintConfig | None:
    """The configuration in one file: ``[tool.fmha-guard]`` of a TOML file (``pyproject.toml``,
    or a table ``[fmha-guard]`` in any other ``.toml``), ``[fmha-guard]`` of an INI file
    (``setup.cfg``). ``None`` when it has no such section, unless ``required`` (then a
    :class:`ConfigError`). ``base_dir``: what the globs are relative to (default: the
    file's directory)."""
    origin = str(path)
    base = os.path.abspath(base_dir if base_dir is not None else path.parent)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{origin}: cannot read: {exc}") from None
    if _is_toml(path):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
        tool = data.get("tool", {})
        for name, table in ((TOML_SECTION, tool.get("fmha-guard") if isinstance(tool, dict) else None),
                            (INI_SECTION, data.get("fmha-guard") if path.name != "pyproject.toml" else None)):
            if table is None:
                continue
            if not isinstance(table, dict):
                raise ConfigError(f"{origin}: [{name}]: expected a table, got {table!r}")
            return _from_mapping(table, origin, name, base)
        expected = TOML_SECTION
    else:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text, source=origin)
        except configparser.Error as exc:
            raise ConfigError(f"{origin}: not a valid INI file: {exc}") from None
        if parser.has_section(INI_SECTION):
            return _from_mapping(dict(parser.items(INI_SECTION)), origin, INI_SECTION, base)
        expected = INI_SECTION
    if required:
        raise ConfigError(f"{origin}: no [{expected}] section")
    return None


#: Looked for in each directory, in this order (the first with an fmha-guard section wins).
CONFIG_FILES = ("pyproject.toml", "setup.cfg")


def _in_directory(folder: Path) -> LintConfig | None:
    for name in CONFIG_FILES:
        candidate = folder / name
        if candidate.is_file():
            config = read_config_file(candidate)
            if config is not None:
                return config
    return None


def load_config(start: Path) -> LintConfig:
    """The configuration of the nearest ``pyproject.toml`` / ``setup.cfg`` with an
    fmha-guard section: in ``start`` (a directory) or its parents; the defaults when
    none is found. Raises :class:`ConfigError` for a bad file."""
    return ConfigResolver().for_path(start)


class ConfigResolver:
    """Each file's configuration: the nearest config file above it, looked up once per
    directory; or, with ``forced`` (``--config FILE``), that file for every path, its
    globs relative to the current directory (as ruff's ``--config``)."""

    def __init__(self, forced: Path | None = None) -> None:
        self._forced = read_config_file(forced, Path.cwd(), required=True) if forced is not None else None
        self._by_dir: dict[str, LintConfig] = {}

    @classmethod
    def fixed(cls, config: LintConfig) -> "ConfigResolver":
        """A resolver that gives every path ``config`` (reads no file)."""
        resolver = cls()
        resolver._forced = config
        return resolver

    def for_path(self, path: str | os.PathLike[str]) -> LintConfig:
        """The configuration for ``path``: a file (its directory is searched first) or
        a directory."""
        if self._forced is not None:
            return self._forced
        folder = os.path.abspath(path)
        if not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        return self._for_dir(folder)

    def _for_dir(self, folder: str) -> LintConfig:
        visited: list[str] = []
        config: LintConfig | None = None
        while True:
            cached = self._by_dir.get(folder)
            if cached is not None:
                config = cached
                break
            visited.append(folder)
            config = _in_directory(Path(folder))
            parent = os.path.dirname(folder)
            if config is not None or parent == folder:
                break
            folder = parent
        config = config if config is not None else LintConfig()
        for seen in visited:
            self._by_dir[seen] = config
        return config
