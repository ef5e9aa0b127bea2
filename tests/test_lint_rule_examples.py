"""Every rule's own VALID / INVALID examples, run as tests (Fixit's convention), and its docs."""

from __future__ import annotations

import pytest

from lint_rules import ALL_RULES, PSEUDO_RULES, check_examples
from lint_rules.rule_info import DOC_SECTIONS, doc_sections

EVERY_RULE = [*ALL_RULES, *PSEUDO_RULES.values()]


@pytest.mark.parametrize("rule", EVERY_RULE, ids=lambda r: r.CODE)
def test_rule_examples(rule):
    assert rule.VALID and rule.INVALID
    check_examples(rule)


@pytest.mark.parametrize("rule", EVERY_RULE, ids=lambda r: r.CODE)
def test_rule_is_documented_like_ruff(rule):
    doc = rule.doc()
    assert doc_sections(doc) == list(DOC_SECTIONS)
    summary, blank, first_heading = doc.splitlines()[:3]
    assert summary == rule.summary() and blank == "" and first_heading == "## What it does"
    for heading in ("Example", "Use instead"):  # each holds a fenced python block
        section = doc.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        assert "```python\n" in section and section.rstrip().endswith("```"), (heading, section)
    options = doc.split("## Options\n", 1)[1].split("\n## ", 1)[0].strip()
    assert options.startswith("None") or "`extra-" in options
    assert "https://" in doc.split("## References\n", 1)[1]
    assert not [line for line in doc.splitlines() if line.startswith("    ") and not _in_fence(doc, line)]
    assert rule.NAME == rule.NAME.lower() and " " not in rule.NAME
    assert rule.CODE.startswith("GR") and rule.CODE[2:].isdigit()


def _in_fence(doc: str, wanted: str) -> bool:
    fenced = False
    for line in doc.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line == wanted:
            return fenced
    return False


def test_codes_and_names_are_unique():
    assert len({r.CODE for r in EVERY_RULE}) == len(EVERY_RULE)
    assert len({r.NAME for r in EVERY_RULE}) == len(EVERY_RULE)


def test_rule_files_are_named_after_their_rule():
    import inspect
    from pathlib import Path

    for rule in EVERY_RULE:
        stem = Path(inspect.getfile(rule)).stem
        assert stem == f"{rule.CODE.lower()}_{rule.NAME.replace('-', '_')}", (rule.CODE, stem)
