"""Runs a rule's own ``VALID`` / ``INVALID`` examples (Fixit's convention), for this
repository's tests or a project's own rules.

Each example is dedented and stripped of its leading and trailing blank lines, then
linted alone. A lint rule runs by itself and must report exactly its own code; a
pseudo-rule (GR900 / GR901) runs with every default rule, and only its own findings
count. An ``Invalid`` with ``line`` must have a finding on that line; one with
``expected_replacement`` must turn into exactly that code under the rule's autofix.
"""

from __future__ import annotations

import textwrap

from .config import LintConfig
from .engine import lint_source
from .finding import Finding
from .registry import select_rules
from .rule_info import Invalid, PseudoRule, RuleInfo


def _example(code: str) -> str:
    return textwrap.dedent(code).strip("\n")


def _lint(rule: type[RuleInfo], code: str, config: LintConfig) -> list[Finding]:
    if issubclass(rule, PseudoRule):
        findings, errors, _ = lint_source("example.py", code, select_rules(), config)
        findings = [f for f in findings if f.rule == rule.CODE]
    else:
        findings, errors, _ = lint_source("example.py", code, [rule], config)  # type: ignore[list-item]
    if errors:
        raise AssertionError(f"{rule.CODE}: the example fails to lint: {errors}\n{code}")
    return findings


def _invalid_problems(rule: type[RuleInfo], case: Invalid, config: LintConfig) -> list[str]:
    code = _example(case.code)
    findings = _lint(rule, code, config)
    if not findings:
        return ["the rule missed it"]
    problems = []
    if {f.rule for f in findings} != {rule.CODE}:
        problems.append(f"findings of other rules: {sorted({f.rule for f in findings})}")
    if case.line is not None and case.line not in {f.line for f in findings}:
        problems.append(f"no finding on line {case.line} (found on {sorted({f.line for f in findings})})")
    if case.expected_replacement is not None:
        from .autofix import fix_source  # late: the engine that applies rules' fixes

        fixed = fix_source(code, findings, config)
        expected = _example(case.expected_replacement)
        if fixed != expected:
            problems.append(f"the autofix gave\n{fixed}\ninstead of\n{expected}")
    return problems


def check_examples(rule: type[RuleInfo], config: LintConfig | None = None) -> None:
    """Lint each of ``rule``'s examples; raises ``AssertionError`` naming every example
    that a ``VALID`` finding, a missed ``INVALID``, a wrong line or a wrong autofix broke."""
    config = config or LintConfig()
    failures: list[str] = []
    for i, valid in enumerate(rule.VALID):
        found = _lint(rule, _example(valid.code), config)
        if found:
            failures.append(f"VALID[{i}] is flagged: {[(f.rule, f.line, f.message) for f in found]}")
    for i, invalid in enumerate(rule.INVALID):
        failures.extend(f"INVALID[{i}]: {problem}" for problem in _invalid_problems(rule, invalid, config))
    if failures:
        raise AssertionError(f"{rule.CODE} {rule.NAME}:\n" + "\n".join(failures))
