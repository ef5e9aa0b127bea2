"""libcst lint rules that flag attention-metadata bugs in attention-backend source.

Rules: GR001 padded-batch-size-in-kernel-call (SGLang #21649), GR002 stale-kv-pool-state
(SGLang #26966), GR003 draft-extend-routed-to-decode-kernel (#24856), GR004
cuda-graph-replay-layout (#21987), their opt-in strict forms GR101 / GR102, and the
suppression checks GR900 / GR901 (``fmha-guard rules`` lists them). ``fmha-guard audit``
and ``fmha-guard lint`` run them; :func:`audit_paths` is the API,
:func:`check_examples` runs a rule's own VALID / INVALID examples. Needs no torch.

Names are imported on first use (PEP 562), so that ``fmha-guard`` answering from its
result cache never imports libcst or the rules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "ALL_RULES": "registry",
    "AuditResult": "engine",
    "FileError": "finding",
    "Finding": "finding",
    "Invalid": "rule_info",
    "LintConfig": "config",
    "LintRule": "rule",
    "PSEUDO_RULES": "suppressions",
    "Replacement": "rule",
    "RuleSelection": "engine",
    "UnknownRuleError": "registry",
    "Valid": "rule_info",
    "audit_files": "engine",
    "audit_paths": "engine",
    "audit_sources": "engine",
    "check_examples": "testing",
    "find_rule": "registry",
    "lint_source": "engine",
    "load_config": "config",
    "select_rules": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from .config import LintConfig, load_config
    from .engine import AuditResult, RuleSelection, audit_files, audit_paths, audit_sources, lint_source
    from .finding import FileError, Finding
    from .registry import ALL_RULES, UnknownRuleError, find_rule, select_rules
    from .rule import LintRule, Replacement
    from .rule_info import Invalid, Valid
    from .suppressions import PSEUDO_RULES
    from .testing import check_examples
