"""Every rule's own VALID / INVALID examples, run as tests (Fixit's convention)."""

from __future__ import annotations

import textwrap

import pytest

from lint_rules import ALL_RULES, LintConfig, lint_source


def _cases(kind: str):
    for rule in ALL_RULES:
        for i, case in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, case, id=f"{rule.CODE}-{kind.lower()}-{i}")


def _lint(rule, code: str):
    findings, errors, _ = lint_source("example.py", textwrap.dedent(code).strip("\n"), [rule], LintConfig())
    assert errors == []
    return findings


@pytest.mark.parametrize("rule, case", list(_cases("VALID")))
def test_valid_example_is_not_flagged(rule, case):
    assert _lint(rule, case.code) == []


@pytest.mark.parametrize("rule, case", list(_cases("INVALID")))
def test_invalid_example_is_flagged(rule, case):
    findings = _lint(rule, case.code)
    assert findings, "the rule missed its own INVALID example"
    assert {f.rule for f in findings} == {rule.CODE}
    if case.line is not None:
        assert case.line in {f.line for f in findings}


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.CODE)
def test_rule_is_documented_like_ruff(rule):
    doc = rule.doc()
    for heading in ("What it does:", "Why is this bad?", "Example:", "Use instead:"):
        assert heading in doc
    assert rule.VALID and rule.INVALID
    assert rule.NAME == rule.NAME.lower() and " " not in rule.NAME
    assert rule.CODE.startswith("GR") and rule.CODE[2:].isdigit()


def test_codes_and_names_are_unique():
    assert len({r.CODE for r in ALL_RULES}) == len(ALL_RULES)
    assert len({r.NAME for r in ALL_RULES}) == len(ALL_RULES)
