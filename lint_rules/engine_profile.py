"""Which engine a file belongs to, and the names each engine's attention code uses.

The rules were written against SGLang: an attention backend is a class named
``*Backend``, its per-layer forward methods take a ``forward_batch`` (``ForwardBatch``),
and the DP-padded size is ``forward_batch.batch_size``. vLLM's v1 attention code
(``vllm/v1/attention/backends/*.py``, ``.../mla/*.py``; older releases also
``vllm/attention/backends``) is shaped differently:

* planning lives in ``*MetadataBuilder`` classes (``build``, ``_build_decode``,
  ``_build_prefill``, ``build_for_cudagraph_capture``), which read a
  ``CommonAttentionMetadata`` (``common_attn_metadata``: ``num_actual_tokens``,
  ``num_reqs``, ``max_query_len``, ``query_start_loc``, ``seq_lens``,
  ``block_table_tensor``, ``slot_mapping``);
* the kernels are launched from ``*AttentionImpl.forward(layer, query, key, value,
  kv_cache, attn_metadata, output=...)`` (MLA: ``forward_mqa`` / ``forward_mha``,
  ``_forward_decode`` / ``_forward_prefill``);
* the padded sizes are CUDA-graph padding: ``query`` / ``output`` hold
  ``num_input_tokens`` rows (padded to a captured size), full graphs also pad the
  request count (``num_reqs_padded``), while the metadata holds ``num_actual_tokens`` /
  ``num_reqs`` (vLLM #25265, #28579, #34187).

A *profile* picks which of these the rules expect: ``sglang``, ``vllm``, or ``auto``
(the default: per file, from the engine packages it imports; a file importing neither
gets both, so hand-written snippets and vendored copies are still checked).

Neither libcst nor pydantic is imported at module level: the pre-filter runs on text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import libcst as cst

SGLANG, VLLM = "sglang", "vllm"
ENGINES = frozenset({SGLANG, VLLM})

#: ``import vllm...`` / ``from vllm... import`` (also relative-free vendored names such as
#: ``vllm_flash_attn`` do not count: only the engine package itself).
_IMPORTS = re.compile(r"^[ \t]*(?:from|import)[ \t]+(sglang|vllm)\b", re.MULTILINE)

#: vLLM metadata-builder classes: backend-scoped in the vLLM profile (lower-cased fnmatch).
VLLM_BUILDER_CLASS_PATTERNS: tuple[str, ...] = ("*metadatabuilder*",)
#: The textual pre-filter for :data:`VLLM_BUILDER_CLASS_PATTERNS`.
VLLM_BUILDER_CLASS_TEXT = re.compile(r"class\s+\w*metadatabuilder|class\s+\w+\s*\([^)]*metadatabuilder", re.IGNORECASE)

#: The ``CommonAttentionMetadata`` fields that hold the batch as the kernel sees it
#: (unpadded): what a kernel argument should be sized from.
COMMON_METADATA_FIELDS: tuple[str, ...] = (
    "num_actual_tokens",
    "num_reqs",
    "max_query_len",
    "max_seq_len",
    "query_start_loc",
    "query_start_loc_cpu",
    "seq_lens",
    "block_table_tensor",
    "slot_mapping",
)
#: Parameters that hold the per-step attention metadata in vLLM's builders and impls.
METADATA_PARAMS: tuple[str, ...] = ("attn_metadata", "common_attn_metadata", "metadata", "m", "cm")


def imported_engines(source: str) -> frozenset[str]:
    """The engine packages (``sglang``, ``vllm``) that ``source`` imports."""
    return frozenset(m.group(1) for m in _IMPORTS.finditer(source))


def module_engines(module: "cst.Module") -> frozenset[str]:
    """:func:`imported_engines` from a parsed module (top-level statements, and the
    ``if`` / ``try`` blocks among them), without its text."""
    import libcst as cst

    found: set[str] = set()

    def root(node: cst.BaseExpression | None) -> str | None:
        while isinstance(node, cst.Attribute):
            node = node.value
        return node.value if isinstance(node, cst.Name) else None

    def scan(body) -> None:
        for stmt in body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.ImportFrom) and not small.relative:
                        found.add(root(small.module) or "")
                    elif isinstance(small, cst.Import):
                        found.update(root(alias.name) or "" for alias in small.names)
            elif isinstance(stmt, (cst.If, cst.Try)):
                scan(stmt.body.body)
                for handler in getattr(stmt, "handlers", ()):
                    scan(handler.body.body)
                orelse = getattr(stmt, "orelse", None)
                if orelse is not None and hasattr(orelse, "body") and hasattr(orelse.body, "body"):
                    scan(orelse.body.body)

    scan(module.body)
    return frozenset(found) & ENGINES


def _choose(profile: str, imported: frozenset[str]) -> frozenset[str]:
    if profile in ENGINES:
        return frozenset({profile})
    return imported or ENGINES


def engines_for(profile: str, source: str) -> frozenset[str]:
    """The engines whose names apply to a file: the configured ``profile`` (``sglang`` /
    ``vllm``), or for ``auto`` the engines it imports (both when it imports neither)."""
    return _choose(profile, imported_engines(source) if profile not in ENGINES else frozenset())


def module_engines_for(profile: str, module: "cst.Module") -> frozenset[str]:
    """:func:`engines_for` from a parsed module."""
    return _choose(profile, module_engines(module) if profile not in ENGINES else frozenset())


def has_vllm_builder_class(source: str) -> bool:
    """Whether the text defines a vLLM ``*MetadataBuilder`` class (pre-filter)."""
    return VLLM_BUILDER_CLASS_TEXT.search(source) is not None


def padded_words(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Literal words a file must contain one of for a padded-count pattern to match:
    the longest literal part of each fnmatch pattern (``num_padded_*`` -> ``num_padded_``)."""
    words = []
    for pattern in patterns:
        parts = [p for p in re.split(r"[*?\[\]]", pattern) if p]
        if parts:
            words.append(max(parts, key=len))
    return tuple(words)
