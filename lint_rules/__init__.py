"""libcst lint rules that flag attention-metadata bugs in attention-backend source.

Rules: GR001 padded-batch-size-in-kernel-call (SGLang #21649), GR002 stale-kv-pool-state
(SGLang #26966), and their opt-in strict forms GR101 / GR102. ``fmha-guard audit`` and
``fmha-guard lint`` run them; :func:`audit_paths` is the API. Needs no torch.
"""

from .config import LintConfig, load_config
from .engine import AuditResult, FileError, audit_paths, audit_sources, lint_source
from .registry import ALL_RULES, UnknownRuleError, find_rule, select_rules
from .rule import Finding, Invalid, LintRule, Valid

__all__ = [
    "ALL_RULES",
    "AuditResult",
    "FileError",
    "Finding",
    "Invalid",
    "LintConfig",
    "LintRule",
    "UnknownRuleError",
    "Valid",
    "audit_paths",
    "audit_sources",
    "find_rule",
    "lint_source",
    "load_config",
    "select_rules",
]
