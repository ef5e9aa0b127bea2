"""Every rule this package ships, by code and by name.

The pseudo-rules GR900 / GR901 are not here: they check suppression comments and live
with that machinery (``lint_rules.suppressions.PSEUDO_RULES``), so that a cached audit
can name them without importing libcst.
"""

from __future__ import annotations

from .config import normalize_code
from .gr001_padded_batch_size_in_kernel_call import PaddedBatchSizeInKernelCall
from .gr002_stale_kv_pool_state import StaleKvPoolState
from .gr003_draft_extend_routed_to_decode_kernel import DraftExtendRoutedToDecodeKernel
from .gr004_cuda_graph_replay_layout import CudaGraphReplayLayout
from .gr008_fresh_tensor_on_graph_metadata import FreshTensorOnGraphMetadata
from .gr009_cumulative_tail_breaks_monotonicity import CumulativeTailBreaksMonotonicity
from .gr010_stale_per_mode_state import StalePerModeState
from .gr006_token_slots_in_page_table import TokenSlotsInPageTable
from .gr101_forward_batch_size_in_backend import ForwardBatchSizeInBackend
from .gr102_kv_pool_read_in_init import KvPoolReadInInit
from .rule import LintRule

ALL_RULES: tuple[type[LintRule], ...] = (
    PaddedBatchSizeInKernelCall,
    StaleKvPoolState,
    DraftExtendRoutedToDecodeKernel,
    CudaGraphReplayLayout,
    FreshTensorOnGraphMetadata,
    CumulativeTailBreaksMonotonicity,
    StalePerModeState,
    TokenSlotsInPageTable,
    ForwardBatchSizeInBackend,
    KvPoolReadInInit,
)


class UnknownRuleError(KeyError):
    """A rule code or name that no shipped rule has."""

    def __str__(self) -> str:
        known = ", ".join(f"{r.CODE} ({r.NAME})" for r in ALL_RULES)
        return f"unknown rule {self.args[0]!r}; known rules: {known}"


def find_rule(key: str) -> type[LintRule]:
    """A rule by code (``GR001``, any case) or kebab-case name."""
    code = normalize_code(key)
    for rule in ALL_RULES:
        if code == rule.CODE or key == rule.NAME:
            return rule
    raise UnknownRuleError(key)


def select_rules(select: list[str] | None = None, ignore: list[str] | None = None) -> list[type[LintRule]]:
    """Default-enabled rules, or exactly ``select``; minus ``ignore``. Codes or names."""
    chosen = [find_rule(k) for k in select] if select else [r for r in ALL_RULES if r.DEFAULT_ENABLED]
    dropped = {find_rule(k) for k in ignore or []}
    return [r for r in chosen if r not in dropped]
